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
    from loratui import preflight

    # On a machine with a bf16 GPU, the model is the only thing the file leaves to set (and
    # xformers, which the GUI turns on, where it is not installed).
    monkeypatch.setattr(preflight, "this_machine", lambda: preflight.Machine("NVIDIA A100", (8, 0)))
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
    # "" means "not set": loratui's defaults stay.
    assert cfg.optimizer.scheduler_cycles == 1
    assert result.report.entry("lr_scheduler_num_cycles").converted is None
    # LoRA_type Standard does not train conv layers, so conv_dim = 1 has no effect.
    assert cfg.network.conv_rank == 0
    assert result.report.group_of("conv_dim") == "ignored"
    # kohya's own memory-efficient attention is not supported: listed, with what is used instead.
    assert result.report.group_of("mem_eff_attn") == "unsupported"
    assert not result.report.blockers
    expected = ["model.path"] + ([] if preflight.installed("xformers") else ["training.attention"])
    assert [p.where for p in validate(cfg) if p.severity == "error"] == expected  # no model in the file


def test_standard_adamw_learning_rate_and_multires_noise():
    result = _load("Standard-AdamW.json")
    cfg = result.to_config()
    # No unet_lr/text_encoder_lr keys: kohya uses learning_rate for both.
    assert cfg.optimizer.unet_lr == cfg.optimizer.text_encoder_lr == 1e-4
    assert cfg.optimizer.name == "AdamW"
    assert cfg.training.batch_size == 4 and cfg.training.epochs == 4
    assert cfg.dataset.cache_latents == "memory"
    # Multires noise replaces the plain offset in kohya; loratui has only the plain one.
    assert cfg.training.noise_offset == 0.0
    report = result.report
    assert report.group_of("noise_offset_type") == "unsupported"
    assert report.group_of("multires_noise_iterations") == "unsupported"
    assert report.group_of("noise_offset") == "ignored"
    # Features the user turned on that loratui lacks are listed with their values.
    unsupported = {entry.key: entry for entry in report.unsupported}
    assert unsupported["caption_dropout_rate"].value == 0.05
    # Features at their neutral value are "ignored (no effect)", and still listed.
    assert report.group_of("flip_aug") == "ignored"
    assert "off at this value" in report.entry("flip_aug").reason
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
    unknown_total = import_kohya({"lr_warmup": 5, "max_train_steps": 0})
    assert unknown_total.report.group_of("lr_warmup") == "unsupported"
    assert "5% of the total steps" in unknown_total.report.entry("lr_warmup").reason
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
    loha = import_kohya({"LoRA_type": "LyCORIS/LoHa", "conv_dim": 8})
    assert loha.report.group_of("LoRA_type") == "unsupported"
    assert "LyCORIS/LoHa" in loha.report.entry("LoRA_type").reason
    assert loha.to_config().network.conv_rank == 0


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
