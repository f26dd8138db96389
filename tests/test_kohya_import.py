"""Importing kohya_ss GUI configs: every fixture in tests/fixtures/kohya/ (real files saved by the
GUI) is imported, every key lands in exactly one group of the report, and the numbers carry over."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import tomli_w

from loratui.config import config_to_dict
from loratui.errors import UserError
from loratui.kohya_import import import_kohya, load_kohya_json
from loratui.params import BY_NAME
from loratui.validation import validate

from .conftest import SAMPLE

FIXTURES = Path(__file__).parent / "fixtures" / "kohya"
ALL_FIXTURES = sorted(FIXTURES.glob("*.json"))


def _load(name: str):
    return load_kohya_json(FIXTURES / name)


def test_there_are_fixtures_to_test():
    assert len(ALL_FIXTURES) >= 5


@pytest.mark.parametrize("path", ALL_FIXTURES, ids=lambda p: p.stem)
def test_every_key_of_every_fixture_is_reported_exactly_once(path: Path):
    data = json.loads(path.read_text())
    result = load_kohya_json(path)
    keys = result.report.keys
    assert sorted(keys) == sorted(data), "keys dropped or invented"
    assert len(keys) == len(set(keys)), "a key is listed in two groups"
    # The report text names every key (nothing is hidden from the user).
    text = result.report.text()
    for key in data:
        assert f"{key} = " in text
    # The sections build a RunConfig without a type error.
    cfg = result.to_config(tmp_base := path.parent)
    assert cfg.base_dir == tmp_base.absolute()


def test_sd15_settings_carry_over_with_kohya_strings_converted(monkeypatch):
    from loratui import kohya_import, preflight

    # On a machine with a bf16 GPU and xformers, the model is the only thing the file leaves to set.
    monkeypatch.setattr(preflight, "this_machine", lambda: preflight.Machine("NVIDIA A100", (8, 0)))
    monkeypatch.setattr(kohya_import, "installed", lambda package: True)
    result = _load("sd15 - EDG_LoraOptiSettings.json")
    cfg = result.to_config()
    assert (cfg.network.rank, cfg.network.alpha) == (64, 64.0)
    assert cfg.training.batch_size == 3
    assert cfg.training.seed == 1234  # "1234" in the file
    assert cfg.optimizer.unet_lr == 1e-4  # "0.0001"
    assert cfg.optimizer.text_encoder_lr == 5e-5  # "5e-05"
    assert cfg.training.noise_offset == 0.05  # "0.05"
    assert cfg.dataset.bucket_reso_steps == 64  # 64.0
    assert cfg.dataset.enable_buckets is False
    assert cfg.training.attention == "xformers"  # xformers: true (old GUI)
    assert cfg.model.clip_skip == 2
    assert cfg.optimizer.name == "AdamW8bit"
    # "512,650" is not square: the same-area multiple of 64, with the reason in the report.
    assert cfg.dataset.resolution == 576
    assert "512x650 is not square" in result.report.entry("max_resolution").reason
    assert result.report.group_of("max_resolution") == "changed"
    # "" means "not set": loratui's defaults stay.
    assert cfg.optimizer.scheduler_cycles == 1
    assert result.report.entry("lr_scheduler_num_cycles").converted is None
    # LoRA_type Standard does not train conv layers, so conv_dim = 1 has no effect.
    assert cfg.network.conv_rank == 0
    assert result.report.group_of("conv_dim") == "ignored"
    # kohya's own memory-efficient attention is not supported: listed, with what is used instead.
    assert result.report.group_of("mem_eff_attn") == "unsupported"
    assert not result.report.blockers
    monkeypatch.setattr(preflight, "installed", lambda package: True)
    assert [p.where for p in validate(cfg) if p.severity == "error"] == ["model.path"]  # no model in the file


def test_xformers_becomes_sdpa_where_it_is_not_installed(monkeypatch):
    from loratui import kohya_import

    for value in (True, "xformers"):
        monkeypatch.setattr(kohya_import, "installed", lambda package: False)
        result = import_kohya({"xformers": value})
        assert result.to_config().training.attention == "sdpa"
        assert result.report.group_of("xformers") == "changed"
        assert "xformers is not installed here" in result.report.entry("xformers").reason
        monkeypatch.setattr(kohya_import, "installed", lambda package: package == "xformers")
        kept = import_kohya({"xformers": value})
        assert kept.to_config().training.attention == "xformers" and kept.report.group_of("xformers") == "mapped"
    # Passed as an sd-scripts flag, the same.
    monkeypatch.setattr(kohya_import, "installed", lambda package: False)
    flag = import_kohya({"xformers": "none", "additional_parameters": "--xformers"})
    assert flag.to_config().training.attention == "sdpa" and flag.report.group_of("--xformers") == "changed"


def test_standard_adamw_learning_rate_and_multires_noise():
    result = _load("Standard-AdamW.json")
    cfg = result.to_config()
    # No unet_lr/text_encoder_lr keys: kohya uses learning_rate for both.
    assert cfg.optimizer.unet_lr == cfg.optimizer.text_encoder_lr == 1e-4
    assert cfg.optimizer.name == "AdamW"
    assert cfg.training.batch_size == 4 and cfg.training.epochs == 4
    assert cfg.dataset.cache_latents == "memory"
    # Multires noise: the GUI passes its iterations and discount, and not the plain offset.
    assert cfg.training.noise_offset == 0.0
    assert (cfg.training.multires_noise_iterations, cfg.training.multires_noise_discount) == (8, 0.2)
    report = result.report
    assert report.group_of("noise_offset_type") == "mapped"
    assert report.entry("multires_noise_iterations").target == "training.multires_noise_iterations"
    assert report.group_of("noise_offset") == "ignored"
    assert "only used with noise_offset_type Original" in report.entry("noise_offset").reason
    # The caption options carry over.
    assert cfg.dataset.caption_dropout_rate == 0.05 and report.group_of("caption_dropout_rate") == "mapped"
    # Features at their neutral value are "ignored (no effect)", and still listed.
    assert report.group_of("color_aug") == "ignored"
    assert "off at this value" in report.entry("color_aug").reason
    # The model is a Hugging Face repo id: imported, with the reason loratui cannot use it as is.
    assert "never downloads" in report.entry("pretrained_model_name_or_path").reason
    # DreamBooth's text encoder LRs have no effect on LoRA training.
    assert report.group_of("learning_rate_te") == "ignored"


def test_the_sdxl_preset_becomes_an_sdxl_config_that_check_accepts(tmp_path: Path, monkeypatch, capsys):
    from loratui import cli, preflight

    monkeypatch.setattr(preflight, "this_machine", lambda: preflight.Machine("NVIDIA A100", (8, 0)))
    result = _load("SDXL-Standard-Adafactor.json")
    report = result.report
    assert not report.blockers and "NOT SUPPORTED" not in report.text()
    cfg = result.to_config(tmp_path)
    assert cfg.model.family == "sdxl" and report.entry("sdxl").target == "model.family"
    # The LoRA settings carry over.
    assert (cfg.network.rank, cfg.network.alpha) == (64, 64.0)
    assert cfg.training.max_train_steps == 1600
    assert cfg.dataset.resolution == 1024
    assert (cfg.dataset.bucket_reso_steps, cfg.dataset.max_bucket_reso) == (32, 2048)
    assert cfg.dataset.cache_latents == "disk"
    # The GUI's SDXL checkboxes.
    assert cfg.model.no_half_vae is True and report.entry("sdxl_no_half_vae").target == "model.no_half_vae"
    assert cfg.dataset.cache_text_encoder_outputs == "memory"
    # unet_lr set and text_encoder_lr 0: kohya trains the U-Net only, at one rate for both SDXL encoders.
    assert cfg.optimizer.unet_lr == 1e-3
    assert cfg.optimizer.text_encoder_lr == cfg.optimizer.text_encoder_2_lr == 0.0
    assert "U-Net only" in report.entry("text_encoder_lr").reason
    assert "text_encoder_2_lr" in report.entry("text_encoder_lr").reason
    # Caching needs frozen encoders: said with train_unet_only, and in the report.
    assert cfg.network.train_unet_only is True
    assert "network.train_unet_only set to true" in report.entry("sdxl_cache_text_encoder_outputs").reason
    # With a dataset where the file's train_data_dir points and the built-in tiny SDXL, check passes.
    shutil.copytree(SAMPLE / "img", tmp_path / "test" / "img")
    data = config_to_dict(cfg)
    data["model"]["path"] = "loratui:tiny-sdxl"
    if not preflight.installed("xformers"):
        data["training"]["attention"] = "sdpa"  # the file asks for xformers
    config = tmp_path / "loratui.toml"
    config.write_text(tomli_w.dumps(data))
    assert cli.main(["check", str(config)]) == 0, capsys.readouterr().out
    assert "OK: ready to train." in capsys.readouterr().out


def test_sdxl_settings_of_the_gui_are_read_only_with_sdxl_on():
    sd15 = import_kohya({"sdxl": False, "sdxl_no_half_vae": False, "sdxl_cache_text_encoder_outputs": True})
    assert sd15.report.group_of("sdxl_no_half_vae") == "ignored"
    assert sd15.report.group_of("sdxl_cache_text_encoder_outputs") == "ignored"
    cfg = sd15.to_config()
    assert cfg.model.no_half_vae is True and cfg.dataset.cache_text_encoder_outputs == "off"
    # sd-scripts' names, from a hand-edited file: to-disk wins, as in sd-scripts.
    disk = import_kohya({"sdxl": True, "cache_text_encoder_outputs": True, "cache_text_encoder_outputs_to_disk": True})
    assert disk.to_config().dataset.cache_text_encoder_outputs == "disk"
    # A text encoder that trains is kept: check refuses caching with it, naming the fix.
    training = import_kohya({"sdxl": True, "sdxl_cache_text_encoder_outputs": True, "text_encoder_lr": 1e-5})
    cfg = training.to_config()
    assert cfg.network.train_unet_only is False
    assert cfg.optimizer.text_encoder_lr == cfg.optimizer.text_encoder_2_lr == 1e-5
    (problem,) = [p for p in validate(cfg) if p.where == "dataset.cache_text_encoder_outputs"]
    assert "network.train_unet_only = true" in problem.fix
    # SDXL has no clip skip: the GUI's is reported as having no effect.
    skip = import_kohya({"sdxl": True, "clip_skip": 2})
    assert skip.report.group_of("clip_skip") == "ignored" and skip.to_config().model.clip_skip == 1


def test_sd3_config_is_imported_with_a_not_supported_yet_line():
    # FLUX.1 imports as a run (tests/test_flux_import.py); SD3 is still a model type loratui lacks.
    result = import_kohya({"sd3_checkbox": True, "network_dim": 16, "network_alpha": 16, "max_train_steps": 1000})
    report = result.report
    assert report.blockers[0].startswith("SD3")
    assert "NOT SUPPORTED YET: SD3" in report.text()
    cfg = result.to_config()
    assert cfg.model.family == "sd3"
    assert any(p.where == "model.family" and p.severity == "error" for p in validate(cfg))
    assert cfg.training.max_train_steps == 1000
    assert (cfg.network.rank, cfg.network.alpha) == (16, 16.0)


def test_unknown_keys_and_bad_values_are_listed_not_dropped():
    result = import_kohya(
        {
            "network_dim": "abc",
            "my_custom_flag": True,
            "optimizer": "PagedAdamW8bit",
            "huggingface_token": "hf_secret",
            "lr_scheduler": "cosine_with_restarts",
        }
    )
    report = result.report
    assert report.group_of("my_custom_flag") == "unknown"
    assert "my_custom_flag = true" in report.text()
    assert report.group_of("network_dim") == "unsupported"
    assert "expected a number" in report.entry("network_dim").reason
    # An optimizer loratui lacks is kept as written, so validation shows it at its field.
    assert report.group_of("optimizer") == "unsupported"
    cfg = result.to_config()
    assert any(p.where == "optimizer.name" and p.severity == "error" for p in validate(cfg))
    # Secrets never appear in the report.
    assert "hf_secret" not in report.text()
    assert report.group_of("huggingface_token") == "unsupported"
    assert cfg.optimizer.scheduler == "cosine_with_restarts"


def test_lr_warmup_is_a_percentage_of_the_steps():
    with_steps = import_kohya({"lr_warmup": "10", "max_train_steps": 2000})
    assert with_steps.sections["optimizer"]["warmup_steps"] == 200
    assert "10% of 2000 steps" in with_steps.report.entry("lr_warmup").reason
    # Without max_train_steps the total depends on the dataset: converted when the caller knows it.
    # Unknown here: kept as a ratio of the run's steps (sd-scripts reads a warmup below 1 so).
    unknown_total = import_kohya({"lr_warmup": 5, "max_train_steps": 0})
    assert unknown_total.report.group_of("lr_warmup") == "changed"
    assert unknown_total.to_config().optimizer.warmup_ratio == 0.05
    assert "5% of the run's steps" in unknown_total.report.entry("lr_warmup").reason
    assert with_steps.report.group_of("lr_warmup") == "changed"  # a percentage turned into steps
    known_total = import_kohya({"lr_warmup": 5, "max_train_steps": 0}, total_steps=800)
    assert known_total.sections["optimizer"]["warmup_steps"] == 40
    # lr_warmup_steps (newer GUIs) wins over the percentage.
    both = import_kohya({"lr_warmup": 5, "lr_warmup_steps": 30})
    assert both.sections["optimizer"]["warmup_steps"] == 30
    assert both.report.group_of("lr_warmup") == "ignored"


def test_kohya_locon_maps_conv_layers_and_other_network_types_are_reported():
    locon = import_kohya({"LoRA_type": "Kohya LoCon", "conv_dim": 8, "conv_alpha": 4})
    cfg = locon.to_config()
    assert (cfg.network.conv_rank, cfg.network.conv_alpha) == (8, 4.0)
    assert cfg.network.type == "lora" and locon.report.entry("LoRA_type").target == "network.type"
    # Standard LoRA has no conv layers: conv_dim has no effect there.
    standard = import_kohya({"LoRA_type": "Standard", "conv_dim": 8})
    assert standard.report.group_of("conv_dim") == "ignored" and standard.to_config().network.conv_rank == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON at line 1"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_unusable_files_raise_a_plain_error_naming_the_file(tmp_path: Path, content: str, message: str):
    path = tmp_path / "broken.json"
    path.write_text(content)
    with pytest.raises(UserError) as caught:
        load_kohya_json(path)
    assert message in caught.value.message
    assert caught.value.where == str(path)
    assert caught.value.fix


def test_missing_file_names_the_path(tmp_path: Path):
    with pytest.raises(UserError) as caught:
        load_kohya_json(tmp_path / "nope.json")
    assert caught.value.message == "kohya_ss config not found"


def test_imported_sections_are_config_sections():
    result = _load("Standard-AdamW8bit.json")
    full = config_to_dict(result.to_config())
    for section, values in result.sections.items():
        for key, value in values.items():
            assert full[section][key] == value


@pytest.mark.parametrize("odd", [None, "", "abc", [1, 2], {"a": 1}, 1.5, -3, True])
def test_odd_values_never_crash_the_import(odd):
    """Hand-edited files hold anything: every key, one odd value at a time, is still reported."""
    data = json.loads((FIXTURES / "Standard-AdamW8bit.json").read_text())
    for key in data:
        changed = {**data, key: odd}
        result = import_kohya(changed)
        assert sorted(result.report.keys) == sorted(changed)
        result.to_config()  # every value that was imported has the config's type


@pytest.mark.parametrize(
    "name,prompts,every_n_steps,sampler",
    [
        ("Standard-AdamW.json", ["a painting of man wearing a gas mask , by darius kawasaki"], 20, "euler_a"),
        ("Standard-AdamW8bit.json", ["a painting of man wearing a gas mask , by darius kawasaki"], 20, "euler_a"),
        (
            "flux1D - adamw8bit fp8.json",
            ["saruman posing under a stormy lightning sky, photorealistic --w 832 --h 1216 --s 20 --l 4 --d 42"],
            0,
            "euler",
        ),
        ("SDXL-Standard-Adafactor.json", [], 0, "euler_a"),
    ],
)
def test_the_sample_settings_of_the_fixtures_carry_over(name, prompts, every_n_steps, sampler):
    from loratui.sample_prompts import run_prompts

    result = _load(name)
    cfg = result.to_config()
    assert (cfg.sample.prompts, cfg.sample.every_n_steps, cfg.sample.every_n_epochs) == (prompts, every_n_steps, 0)
    assert cfg.sample.sampler == sampler
    for key, target in [
        ("sample_prompts", "sample.prompts"),
        ("sample_every_n_steps", "sample.every_n_steps"),
        ("sample_every_n_epochs", "sample.every_n_epochs"),
        ("sample_sampler", "sample.sampler"),
        ("log_with", "output.log_with"),
    ]:
        assert result.report.entry(key).target == target, key
    # kohya logs to TensorBoard when log_with is empty and logging_dir set: so does loratui.
    assert cfg.output.log_with == "tensorboard"
    # The options at the end of the prompt are read as kohya reads them.
    rendered = run_prompts(cfg)
    assert [p.prompt for p in rendered] == [line.split(" --")[0] for line in prompts]
    if cfg.model.family == "flux":
        (prompt,) = rendered
        assert (prompt.width, prompt.height, prompt.steps, prompt.cfg_scale, prompt.seed) == (832, 1216, 20, 4.0, 42)


def test_gui_sample_prompts_are_split_into_lines_without_comments():
    result = import_kohya(
        {
            "sample_prompts": "# my prompts\nohwx woman --w 512 --h 768\n\n  a cat, sitting --d 3  \n",
            "sample_every_n_epochs": 1,
            "validation_split": 0.1,
            "validate_every_n_steps": 50,
            "log_with": "tensorboard",
        }
    )
    cfg = result.to_config()
    assert cfg.sample.prompts == ["ohwx woman --w 512 --h 768", "a cat, sitting --d 3"]
    assert "1 comment line left out" in result.report.entry("sample_prompts").reason
    assert (cfg.sample.every_n_epochs, cfg.dataset.validation_split, cfg.training.validate_every_n_steps) == (
        1,
        0.1,
        50,
    )
    assert cfg.output.log_with == "tensorboard"
    assert not result.report.unsupported and not result.report.unknown


# -- LyCORIS, the objective, schedulers, additional_parameters --------------------------


@pytest.mark.parametrize(
    ("lora_type", "network_type"),
    [("LyCORIS/LoCon", "locon"), ("LoCon", "locon"), ("LyCORIS/LoHa", "loha"), ("LyCORIS/LoKr", "lokr")],
)
def test_lycoris_types_carry_their_conv_layers_and_switches(lora_type, network_type):
    data = {
        "LoRA_type": lora_type,
        "network_dim": 16,
        "conv_dim": 8,
        "conv_alpha": 4,
        "LyCORIS_preset": "attn-mlp",
        "dora_wd": True,
        "use_tucker": True,
        "factor": 4,
    }
    result = import_kohya(data)
    cfg = result.to_config()
    net = cfg.network
    assert (net.type, net.rank, net.conv_rank, net.conv_alpha) == (network_type, 16, 8, 4.0)
    assert (net.preset, net.dora, net.use_cp) == ("attn-mlp", True, True)
    assert result.report.entry("conv_dim").target == "network.conv_rank"  # was dropped before issue 13
    # factor is LoKr's alone: the GUI passes it for no other type.
    if network_type == "lokr":
        assert net.lokr_factor == 4 and result.report.entry("factor").target == "network.lokr_factor"
    else:
        assert net.lokr_factor == -1 and result.report.group_of("factor") == "ignored"
    assert not result.report.unsupported and not result.report.unknown


def test_lycoris_keys_under_a_standard_lora_have_no_effect():
    result = import_kohya({"LoRA_type": "Standard", "factor": 8, "use_cp": True, "dora_wd": True, "train_norm": True})
    for key in ("factor", "use_cp", "dora_wd", "train_norm"):
        assert result.report.group_of(key) == "ignored", key
        assert "only used by LyCORIS network types" in result.report.entry(key).reason
    net = result.to_config().network
    assert (net.type, net.lokr_factor, net.use_cp, net.dora) == ("lora", -1, False, False)


def test_lokr_full_matrix_rank_becomes_the_switch_and_a_sane_rank():
    data = {
        "LoRA_type": "LyCORIS/LoKr",
        "network_dim": 100000,
        "network_alpha": 1,
        "conv_dim": 100000,
        "conv_alpha": 1,
        "factor": 6,
    }
    result = import_kohya(data)
    cfg = result.to_config()
    net = cfg.network
    assert net.type == "lokr" and net.lokr_full_matrix is True and net.lokr_factor == 6
    assert net.rank == net.alpha <= 1024 and net.conv_rank == net.conv_alpha  # scale 1, as LyCORIS's full matrices
    report = result.report
    for key in ("network_dim", "network_alpha", "conv_dim", "conv_alpha"):
        assert report.group_of(key) == "changed", key
    assert "full matrices" in report.entry("network_dim").reason
    assert not [p for p in validate(cfg) if p.where.startswith("network.") and p.severity == "error"]


def test_ia3_has_no_rank_and_is_not_trained_on_inputs():
    result = import_kohya(
        {
            "LoRA_type": "LyCORIS/iA3",
            "network_dim": 1024,
            "network_alpha": 1,
            "train_on_input": True,
            "network_dropout": 0.1,
            "LyCORIS_preset": "ia3",
        }
    )
    cfg = result.to_config()
    assert cfg.network.type == "ia3" and cfg.network.train_on_input is False and cfg.network.dropout == 0
    report = result.report
    assert report.group_of("network_dim") == "ignored" and "no rank" in report.entry("network_dim").reason
    assert report.group_of("train_on_input") == "unsupported"
    assert "does not load back" in report.entry("train_on_input").reason
    assert report.group_of("network_dropout") == "ignored"  # LyCORIS's iA3 does not apply it
    assert report.group_of("LyCORIS_preset") == "unsupported" and cfg.network.preset == "full"
    assert not [p for p in validate(cfg) if p.where.startswith("network.") and p.severity == "error"]


@pytest.mark.parametrize(
    ("lora_type", "named"),
    [
        ("LyCORIS/DyLoRA", "DyLoRA"),
        ("LyCORIS/GLoRA", "GLoRA"),
        ("LyCORIS/BOFT", "BOFT"),
        ("LyCORIS/Diag-OFT", "Diag-OFT"),
        ("LyCORIS/Native Fine-Tuning", "native fine-tuning"),
        ("Kohya DyLoRA", "DyLoRA"),
        ("LoRA-FA", "LoRA-FA"),
        ("Something New", "Something New"),
    ],
)
def test_network_types_loratui_does_not_train_are_named(lora_type, named):
    result = import_kohya({"LoRA_type": lora_type, "network_dim": 8})
    entry = result.report.entry("LoRA_type")
    assert result.report.group_of("LoRA_type") == "unsupported" and named in entry.reason
    cfg = result.to_config()
    # Where loratui knows the type by name, check refuses it (a different network is a different LoRA).
    refused = [p for p in validate(cfg) if p.where == "network.type" and p.severity == "error"]
    assert bool(refused) == ("check refuses it" in entry.reason)


def test_noise_types_choose_which_noise_settings_apply():
    original = import_kohya(
        {
            "noise_offset_type": "Original",
            "noise_offset": 0.1,
            "adaptive_noise_scale": 0.01,
            "multires_noise_iterations": 6,
            "multires_noise_discount": 0.3,
        }
    )
    cfg = original.to_config().training
    assert (cfg.noise_offset, cfg.adaptive_noise_scale, cfg.multires_noise_iterations) == (0.1, 0.01, 0)
    assert original.report.group_of("multires_noise_iterations") == "ignored"
    multires = import_kohya(
        {
            "noise_offset_type": "Multires",
            "noise_offset": 0.1,
            "adaptive_noise_scale": 0.01,
            "multires_noise_iterations": 6,
            "multires_noise_discount": 0.3,
        }
    )
    cfg = multires.to_config().training
    assert (cfg.noise_offset, cfg.adaptive_noise_scale) == (0.0, 0.0)
    assert (cfg.multires_noise_iterations, cfg.multires_noise_discount) == (6, 0.3)
    assert "only used with noise_offset_type Original" in multires.report.entry("adaptive_noise_scale").reason


def test_the_guis_zero_max_timestep_is_sd_scripts_1000():
    assert import_kohya({"max_timestep": 0}).to_config().training.max_timestep == 1000
    assert import_kohya({"max_timestep": 900, "min_timestep": 100}).to_config().training.max_timestep == 900
    assert import_kohya({"flux1_checkbox": True, "max_timestep": 900}).report.group_of("max_timestep") == "ignored"


def test_the_learning_rates_decide_what_trains_as_in_the_gui():
    te_only = import_kohya({"unet_lr": 0, "text_encoder_lr": 5e-5, "learning_rate": 1e-4})
    assert te_only.to_config().network.train_text_encoder_only is True
    assert "--network_train_text_encoder_only" in te_only.report.entry("unet_lr").reason
    unet_only = import_kohya({"unet_lr": 1e-4, "text_encoder_lr": 0, "network_train_unet_only": False})
    assert unet_only.to_config().network.train_unet_only is True
    assert unet_only.report.group_of("network_train_unet_only") == "ignored"


def test_schedulers_by_class_name_and_adafactors_own():
    custom = import_kohya(
        {"lr_scheduler": "cosine", "lr_scheduler_type": "CosineAnnealingLR", "lr_scheduler_args": "T_max=100 eta_min=0"}
    )
    opt = custom.to_config().optimizer
    assert (opt.scheduler_type, opt.scheduler_args) == ("CosineAnnealingLR", ["T_max=100", "eta_min=0"])
    adafactor = import_kohya({"optimizer": "Adafactor", "optimizer_args": "", "lr_scheduler": "adafactor"})
    assert adafactor.report.group_of("lr_scheduler") == "mapped"
    assert adafactor.to_config().optimizer.scheduler == BY_NAME["optimizer.scheduler"].default
    # Adafactor without arguments: sd-scripts' defaults, and the report says what they mean.
    assert "relative_step=True" in adafactor.report.entry("optimizer_args").reason
    not_adafactor = import_kohya({"optimizer": "AdamW", "lr_scheduler": "adafactor"})
    assert not_adafactor.report.group_of("lr_scheduler") == "unsupported"


def test_saving_settings_carry_over_and_keep_their_names():
    result = import_kohya(
        {"save_every_n_steps": 100, "save_last_n_steps": 300, "save_last_n_epochs": 2, "save_state_on_train_end": True}
    )
    out = result.to_config().output
    assert (out.save_every_n_steps, out.save_last_n_steps, out.save_last_n_epochs) == (100, 300, 2)
    assert out.save_state_on_train_end is True
    assert not result.report.unsupported


def test_save_every_n_steps_in_the_wrong_section_is_not_called_max_train_steps():
    from loratui.config import config_from_dict

    with pytest.raises(UserError) as caught:
        config_from_dict({"training": {"save_every_n_steps": 100}})
    assert "max_train_steps" not in str(caught.value)
    assert "belongs in [output]" in str(caught.value)


def test_validation_keys_of_the_gui():
    same = import_kohya(
        {
            "seed": 42,
            "validation_seed": 42,
            "validate_every_n_epochs": 1,
            "max_validation_steps": 0,
            "validation_split": 0.1,
        }
    )
    for key in ("validation_seed", "validate_every_n_epochs", "max_validation_steps"):
        assert same.report.group_of(key) == "ignored", key
    assert same.to_config().dataset.validation_split == 0.1
    other = import_kohya({"seed": 42, "validation_seed": 7, "validate_every_n_epochs": 5, "max_validation_steps": 3})
    for key in ("validation_seed", "validate_every_n_epochs", "max_validation_steps"):
        assert other.report.group_of(key) == "unsupported", key


def test_sdxl_bucket_steps_go_up_to_a_multiple_of_32():
    result = import_kohya({"sdxl": True, "bucket_reso_steps": 1})
    assert result.to_config().dataset.bucket_reso_steps == 32
    assert result.report.group_of("bucket_reso_steps") == "changed"
    assert import_kohya({"bucket_reso_steps": 1}).to_config().dataset.bucket_reso_steps == 1  # SD 1.x takes it


def test_a_value_recognised_but_not_done_yet_leaves_the_default():
    result = import_kohya({"log_with": "wandb"})
    assert result.report.group_of("log_with") == "unsupported"
    assert result.to_config().output.log_with == BY_NAME["output.log_with"].default


@pytest.mark.parametrize(
    ("text", "flags"),
    [
        (
            '--max_token_length=150 --lr_scheduler_args "T_max=10" "eta_min=1e-6"',
            {"--max_token_length": "mapped", "--lr_scheduler_args": "mapped"},
        ),
        (
            "--network_train_unet_only --log_prefix=xl",
            {"--network_train_unet_only": "mapped", "--log_prefix": "ignored"},
        ),
        ("--bucket_no_upscale --no_such_thing", {"--bucket_no_upscale": "mapped", "--no_such_thing": "unknown"}),
        ("--max_grad_norm 1 2", {"--max_grad_norm": "unsupported"}),
        ('--network_args "bogus=1"', {"--network_args": "unsupported"}),
    ],
)
def test_additional_parameters_flags_each_land_in_a_group(text, flags):
    result = import_kohya({"additional_parameters": text})
    report = result.report
    for flag, group in flags.items():
        assert report.group_of(flag) == group, (flag, report.text())
    # The key itself is in one group, like any other; the flags are listed apart.
    assert report.keys == ["additional_parameters"]
    # All carried: imported; some: changed on the way; none: not supported.
    missed = [group in ("unsupported", "unknown") for group in flags.values()]
    expected = "unsupported" if all(missed) else "changed" if any(missed) else "mapped"
    assert report.group_of("additional_parameters") == expected
    result.to_config()


def test_additional_parameters_set_the_settings_they_name():
    result = import_kohya(
        {"max_grad_norm": 0.5, "additional_parameters": "--max_grad_norm=1 --network_args conv_dim=4 algo=locon"}
    )
    cfg = result.to_config()
    assert cfg.training.max_grad_norm == 1.0  # after the GUI's own value: it wins, as on the command line
    assert (cfg.network.type, cfg.network.conv_rank) == ("locon", 4)
    line = "additional_parameters: --max_grad_norm 1 -> training.max_grad_norm = 1.0"
    assert line in result.report.text()
    assert import_kohya({"additional_parameters": '--foo "unclosed'}).report.group_of("additional_parameters") == (
        "unsupported"
    )


def test_the_dataset_config_key():
    result = import_kohya({"dataset_config": ""})
    assert result.report.group_of("dataset_config") == "ignored"


def test_a_dataset_config_that_cannot_be_read_is_named(tmp_path: Path):
    result = import_kohya({"dataset_config": str(tmp_path / "nope.toml"), "train_data_dir": "img"})
    report = result.report
    assert report.group_of("dataset_config") == "unsupported"
    assert "nope.toml" in report.entry("dataset_config").reason
    assert report.group_of("train_data_dir") == "ignored"  # sd-scripts ignores it with a dataset config


def test_secrets_in_additional_parameters_are_hidden():
    result = import_kohya({"additional_parameters": '--wandb_api_key=sekrit1 --huggingface_token "sekrit2" --seed 3'})
    text = result.report.text()
    assert "sekrit" not in text and "(hidden)" in text
    assert result.to_config().training.seed == 3
