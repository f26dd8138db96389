"""One declaration per setting (loratui.params) drives everything; these tests fail when a
declaration lacks a part, or when something that should derive from it does not."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from loratui.config import SECTION_CLASSES, RunConfig, config_from_dict, load_config
from loratui.errors import UserError
from loratui.kohya_import import import_kohya
from loratui.params import (
    MODEL_FAMILIES,
    SECTIONS,
    SETTINGS,
    WIDGETS,
    WIZARD_STEPS,
    Absent,
    Setting,
    settings_of,
)
from loratui.params_reference import reference_markdown
from loratui.validation import setting_problems

ROOT = Path(__file__).resolve().parent.parent
IDS = [setting.name for setting in SETTINGS]


@pytest.mark.parametrize("setting", SETTINGS, ids=IDS)
def test_every_setting_is_fully_declared(setting: Setting):
    assert setting.section in SECTIONS
    assert setting.key.isidentifier()
    assert setting.label.strip(), "a label for the wizard"
    assert len(setting.help) >= 20 and setting.help.rstrip().endswith("."), "help text: the guides' advice"
    assert setting.step in WIZARD_STEPS
    assert setting.kind in WIDGETS
    assert (setting.kind == "choice") == bool(setting.choices)
    assert setting.type in (bool, int, float, str, list)
    assert isinstance(setting.default, setting.type) and not (setting.type is int and isinstance(setting.default, bool))
    for names in (setting.kohya, setting.kohya_gui, setting.metadata):
        if isinstance(names, Absent):
            assert len(names.reason) >= 10, "say why there is no such name"
        else:
            assert names and all(
                isinstance(name, str) and name for name in (names if isinstance(names, tuple) else (names,))
            )
    assert all(key.startswith(("ss_", "modelspec.")) for key in setting.metadata_keys)
    assert setting.families and set(setting.families) <= set(MODEL_FAMILIES)
    has_range = setting.minimum is not None or setting.maximum is not None or setting.multiple_of
    if has_range:
        assert setting.type in (int, float) and setting.range_fix, "a range needs the advice given when it is broken"
    if setting.type in (int, float):
        assert has_range, "every number needs its range (the property test feeds huge values)"


@pytest.mark.parametrize("setting", SETTINGS, ids=IDS)
def test_the_default_passes_its_own_declaration(setting: Setting):
    assert setting_problems(setting, RunConfig()) == []


def test_names_are_unique_and_sections_complete():
    assert len({setting.name for setting in SETTINGS}) == len(SETTINGS)
    assert all(settings_of(section) for section in SECTIONS)
    gui_keys = [setting.kohya_gui for setting in SETTINGS if isinstance(setting.kohya_gui, str)]
    assert len(gui_keys) == len(set(gui_keys))


def test_the_config_model_is_generated_from_the_declarations():
    for section, cls in SECTION_CLASSES.items():
        fields = {f.name: f for f in dataclasses.fields(cls)}
        declared = settings_of(section)
        assert list(fields) == [setting.key for setting in declared]
        instance = cls()
        for setting in declared:
            assert getattr(instance, setting.key) == setting.default


def test_toml_lists_the_keys_in_declaration_order(tmp_path):
    from loratui.config import to_toml

    text = to_toml(RunConfig())
    positions = [text.index(f"\n{setting.key} = ", text.index(f"[{setting.section}]")) for setting in SETTINGS]
    for section in SECTIONS:
        section_positions = [p for s, p in zip(SETTINGS, positions, strict=True) if s.section == section]
        assert section_positions == sorted(section_positions)


def test_docs_config_md_is_generated_from_the_declarations():
    written = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert written == reference_markdown(), "run: python -m loratui.params_reference > docs/config.md"
    for setting in SETTINGS:
        assert f"### `{setting.name}`" in written


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.kohya_names], ids=lambda s: s.name)
def test_kohya_command_line_names_are_recognised_in_a_toml(setting: Setting, tmp_path):
    for name in setting.kohya_names:
        if name == setting.key:
            continue
        path = tmp_path / "run.toml"
        path.write_text(f"[{setting.section}]\n{name} = 1\n", encoding="utf-8")
        with pytest.raises(UserError) as raised:
            load_config(path)
        assert f"'{setting.key}'" in raised.value.message, raised.value


# A kohya_ss GUI value for each setting whose GUI key needs the importer's own code, with the
# other keys that code needs. A new special setting must add its line here.
SPECIAL_GUI_SAMPLES: dict[str, dict[str, object]] = {
    "model.path": {"pretrained_model_name_or_path": "models/sd15.safetensors"},
    "model.family": {"v2": True},
    "model.no_half_vae": {"sdxl": True, "sdxl_no_half_vae": False},
    "dataset.caption_extension": {"caption_extension": "caption"},
    "dataset.resolution": {"max_resolution": "768,768"},
    "dataset.cache_latents": {"cache_latents": True, "cache_latents_to_disk": True},
    "dataset.cache_text_encoder_outputs": {"sdxl": True, "sdxl_cache_text_encoder_outputs": True},
    "training.attention": {"xformers": "xformers"},
    "training.noise_offset": {"noise_offset": 0.05, "noise_offset_type": "Original"},
    # the GUI passes multires noise only with noise_offset_type Multires, the offset's options only with Original
    "training.multires_noise_iterations": {"multires_noise_iterations": 8, "noise_offset_type": "Multires"},
    "training.multires_noise_discount": {
        "multires_noise_iterations": 8,
        "multires_noise_discount": 0.5,
        "noise_offset_type": "Multires",
    },
    "training.adaptive_noise_scale": {
        "noise_offset": 0.05,
        "adaptive_noise_scale": 0.01,
        "noise_offset_type": "Original",
    },
    "training.noise_offset_random_strength": {
        "noise_offset": 0.05,
        "noise_offset_random_strength": True,
        "noise_offset_type": "Original",
    },
    "training.max_timestep": {"max_timestep": 900},  # the GUI's 0 means 1000
    "network.conv_rank": {"conv_dim": 8, "LoRA_type": "Kohya LoCon"},
    "network.conv_alpha": {"conv_alpha": 4, "LoRA_type": "Kohya LoCon"},
    "optimizer.name": {"optimizer": "Prodigy"},
    "optimizer.unet_lr": {"unet_lr": 2e-4, "text_encoder_lr": 1e-4},
    "optimizer.text_encoder_lr": {"unet_lr": 2e-4, "text_encoder_lr": 1e-4},
    "optimizer.warmup_steps": {"lr_warmup_steps": 30},
    "sample.prompts": {"sample_prompts": "ohwx woman --w 512 --h 768\n# a comment\n\na cat --d 3"},
    # LoRA_type decides which network keys the GUI passes (and to which network)
    "network.type": {"LoRA_type": "LyCORIS/LoHa"},
    "network.preset": {"LoRA_type": "LyCORIS/LoCon", "LyCORIS_preset": "attn-mlp"},
    "network.dora": {"LoRA_type": "LyCORIS/LoCon", "dora_wd": True},
    "network.lokr_factor": {"LoRA_type": "LyCORIS/LoKr", "factor": 4},
    "network.use_cp": {"LoRA_type": "LyCORIS/LoKr", "use_cp": True},
    "network.train_on_input": {"LoRA_type": "LyCORIS/iA3", "train_on_input": False},
    "network.dropout": {"LoRA_type": "LyCORIS/LoCon", "network_dropout": 0.1},
    "network.rank_dropout": {"LoRA_type": "LyCORIS/LoCon", "rank_dropout": 0.1},
    "network.module_dropout": {"LoRA_type": "LyCORIS/LoCon", "module_dropout": 0.1},
}


@pytest.mark.parametrize("setting", [s for s in SETTINGS if isinstance(s.kohya_gui, str)], ids=lambda s: s.name)
def test_every_kohya_ss_key_imports_into_its_setting(setting: Setting, monkeypatch):
    monkeypatch.setattr("loratui.kohya_import.installed", lambda package: True)  # xformers, where it is asked for
    if setting.kohya_gui_special:
        data = SPECIAL_GUI_SAMPLES[setting.name]
    else:
        sample = {bool: True, int: 3, float: 0.5, list: "weight_decay=0.1", str: "something"}[setting.type]
        other_choices = [choice for choice in setting.choices if choice != setting.default]
        data = {setting.kohya_gui: other_choices[0] if other_choices else sample}
    if setting.families == ("flux",):
        data["flux1_checkbox"] = True  # a FLUX.1 setting is read from a FLUX.1 config
    imported = import_kohya(data)
    targets = {entry.target for entry in imported.report.mapped if entry.key == setting.kohya_gui}
    assert setting.name in targets, imported.report.text()
    cfg = config_from_dict(imported.sections)
    assert cfg.get(setting.name) != setting.default or setting.type is bool


def test_the_metadata_of_every_setting_is_written():
    from engine.metadata import declared_metadata  # torch-free: only loratui imports

    for setting in SETTINGS:
        cfg = RunConfig()
        cfg.model.family = setting.families[0]  # a family it applies to: others do not record it
        cfg.training.noise_offset, cfg.training.min_snr_gamma = 0.05, 5.0  # written only when on
        cfg.training.multires_noise_iterations, cfg.training.adaptive_noise_scale = 6, 0.01
        cfg.training.ip_noise_gamma = 0.1
        written = declared_metadata(cfg)
        for key in setting.metadata_keys:
            assert written.get(key) is not None, key


def test_every_setting_is_a_field_of_exactly_one_wizard_step():
    from loratui.tui.wizard.steps import STEPS

    shown = [name for step in STEPS for name in step.fields]
    assert sorted(shown) == sorted(setting.name for setting in SETTINGS)
    for step in STEPS:
        assert all(setting.step == step.id for setting in step.specs)
