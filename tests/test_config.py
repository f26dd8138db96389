"""Tests for loratui.config: loading, saving, validation, optimizer args and the run schedule."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from loratui import atomic as atomic_module
from loratui.config import (
    DatasetSettings,
    ModelSettings,
    NetworkSettings,
    OptimizerSettings,
    OutputSettings,
    RunConfig,
    SampleSettings,
    TrainingSettings,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
    to_toml,
)
from loratui.errors import UserError
from loratui.optimizer_args import parse_optimizer_args
from loratui.schedule import Schedule, resolve_schedule
from loratui.validation import validate


@pytest.fixture(autouse=True)
def _settings_and_rules_only(monkeypatch):
    """These tests are about the settings' declarations and the rules across them; what this
    machine and the model files allow (loratui.preflight) is tested in test_preflight.py and
    through the engine in test_check_corpus.py. Here a model folder may be empty."""
    monkeypatch.setattr("loratui.validation.preflight", lambda cfg, found=(): [])


def non_default_config(base_dir: Path) -> RunConfig:
    """A config where every field differs from its default, so a dropped field shows up."""
    return RunConfig(
        model=ModelSettings(
            path="models/sd21-768.safetensors",
            family="sd2",
            v_prediction=True,
            tokenizer="tok",
            clip_skip=2,
            no_half_vae=False,
            flux_variant="schnell",
            ae_path="models/ae.sft",
            clip_l_path="models/clip_l.safetensors",
            t5xxl_path="models/t5xxl_fp16.safetensors",
            t5xxl_max_token_length=128,
            apply_t5_attn_mask=True,
            fp8_base=True,
            nf4_base=True,
        ),
        dataset=DatasetSettings(
            image_dir="images/train",
            reg_dir="images/reg",
            caption_extension=".caption",
            resolution=768,
            enable_buckets=False,
            min_bucket_reso=320,
            max_bucket_reso=1536,
            bucket_reso_steps=32,
            cache_latents="disk",
            cache_text_encoder_outputs="memory",
            validation_split=0.1,
            validation_dir="images/val",
            shuffle_caption=True,
            keep_tokens=1,
            keep_tokens_separator="|||",
            caption_prefix="sks",
            caption_suffix="photo",
            caption_dropout_rate=0.05,
            caption_dropout_every_n_epochs=3,
            caption_tag_dropout_rate=0.1,
            max_token_length=225,
            flip_aug=True,
            random_crop=True,
            bucket_no_upscale=True,
        ),
        network=NetworkSettings(
            rank=64,
            alpha=31.5,
            conv_rank=8,
            conv_alpha=4.0,
            train_unet_only=True,
            train_text_encoder_only=True,
            type="lokr",
            preset="attn-mlp",
            dora=True,
            lokr_factor=8,
            lokr_full_matrix=True,
            use_cp=True,
            train_on_input=True,
            dropout=0.1,
            rank_dropout=0.25,
            module_dropout=0.05,
            scale_weight_norms=1.0,
        ),
        training=TrainingSettings(
            batch_size=4,
            epochs=3,
            max_train_steps=1234,
            gradient_accumulation_steps=2,
            mixed_precision="fp16",
            gradient_checkpointing=True,
            attention="xformers",
            seed=7,
            validate_every_n_steps=50,
            noise_offset=0.0357,
            min_snr_gamma=5.0,
            zero_terminal_snr=True,
            max_grad_norm=0.0,
            resume_from="model/lora-000002-state",
            timestep_sampling="shift",
            sigmoid_scale=1.5,
            discrete_flow_shift=3.1582,
            model_prediction_type="raw",
            guidance_scale=1.0,
            weighting_scheme="logit_normal",
            logit_mean=0.5,
            logit_std=1.5,
            mode_scale=1.0,
            blocks_to_swap=16,
            cpu_offload_checkpointing=True,
            multires_noise_iterations=6,
            multires_noise_discount=0.4,
            adaptive_noise_scale=0.01,
            noise_offset_random_strength=True,
            ip_noise_gamma=0.1,
            ip_noise_gamma_random_strength=True,
            min_timestep=100,
            max_timestep=900,
            loss_type="huber",
            huber_schedule="exponential",
            huber_c=0.2,
            huber_scale=2.0,
            debiased_estimation_loss=True,
            v_pred_like_loss=0.1,
            scale_v_pred_loss_like_noise_pred=True,
            prior_loss_weight=0.5,
        ),
        optimizer=OptimizerSettings(
            name="Adafactor",
            args=["relative_step=True", "scale_parameter=True", "warmup_init=True", "betas=0.9,0.999"],
            unet_lr=3e-4,
            text_encoder_lr=1.5e-5,
            text_encoder_2_lr=2.5e-5,
            scheduler="cosine_with_restarts",
            warmup_steps=100,
            scheduler_cycles=3,
            scheduler_power=2.5,
            scheduler_type="CosineAnnealingLR",
            scheduler_args=["T_max=1000", "eta_min=1e-6"],
            warmup_ratio=0.05,
        ),
        output=OutputSettings(
            name="my lora.v2",
            output_dir="out/models",
            log_dir="out/logs",
            save_every_n_epochs=0,
            save_precision="bf16",
            save_state=False,
            comment='a "quoted" comment with ünïcode',
            log_with="none",
            save_every_n_steps=500,
            save_last_n_epochs=3,
            save_last_n_epochs_state=1,
            save_last_n_steps=1500,
            save_last_n_steps_state=500,
            save_state_on_train_end=True,
        ),
        sample=SampleSettings(
            prompts=["ohwx woman, portrait --n blurry --w 512 --h 768 --d 42", 'a "quoted" ünïcode cat'],
            prompt_file="prompts/samples.txt",
            every_n_epochs=2,
            every_n_steps=100,
            at_start=True,
            sampler="dpmsolver++",
        ),
        base_dir=base_dir,
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> UserError:
    path = write(tmp_path / "run.toml", text)
    with pytest.raises(UserError) as caught:
        load_config(path)
    return caught.value


# ---------------------------------------------------------------------------------------------
# Round trip and defaults


def test_non_default_config_really_differs_from_defaults_in_every_field(tmp_path):
    cfg, default = non_default_config(tmp_path), RunConfig()
    for section in config_to_dict(cfg):
        for key, value in config_to_dict(cfg)[section].items():
            assert value != config_to_dict(default)[section][key], f"{section}.{key} is a default"


def test_toml_round_trip_keeps_every_field(tmp_path):
    cfg = non_default_config(tmp_path)
    back = config_from_dict(tomllib.loads(to_toml(cfg)), base_dir=tmp_path)
    assert back == cfg
    assert config_to_dict(back) == config_to_dict(cfg)
    assert back.optimizer.unet_lr == 3e-4
    assert back.optimizer.args[-1] == "betas=0.9,0.999"
    assert back.network.alpha == 31.5


def test_save_and_load_round_trip(tmp_path):
    cfg = non_default_config(tmp_path)
    path = tmp_path / "run.toml"
    save_config(cfg, path)
    loaded = load_config(path)
    assert loaded == cfg
    assert loaded.base_dir == tmp_path.absolute()


def test_toml_has_the_documented_sections_in_order(tmp_path):
    text = to_toml(RunConfig())
    headers = [line for line in text.splitlines() if line.startswith("[")]
    assert headers == ["[model]", "[dataset]", "[network]", "[training]", "[optimizer]", "[output]", "[sample]"]
    assert "base_dir" not in text


def test_empty_file_gives_the_defaults(tmp_path):
    cfg = load_config(write(tmp_path / "run.toml", ""))
    assert cfg == RunConfig()
    assert cfg.network.rank == 32
    assert cfg.optimizer.name == "AdamW8bit"
    assert cfg.optimizer.args == []
    assert cfg.dataset.cache_latents == "memory"


def test_missing_keys_take_defaults(tmp_path):
    cfg = load_config(write(tmp_path / "run.toml", "[network]\nrank = 8\n"))
    assert cfg.network.rank == 8
    assert cfg.network.alpha == 16.0
    assert cfg.training == TrainingSettings()
    assert cfg.output.name == "lora"


def test_defaults_match_the_documented_values():
    cfg = RunConfig()
    assert (cfg.model.path, cfg.model.family, cfg.model.clip_skip) == ("", "sd1", 1)
    assert (cfg.dataset.resolution, cfg.dataset.bucket_reso_steps) == (512, 64)
    assert (cfg.network.rank, cfg.network.alpha, cfg.network.conv_rank) == (32, 16.0, 0)
    assert (cfg.training.epochs, cfg.training.mixed_precision, cfg.training.seed) == (10, "bf16", 42)
    assert (cfg.optimizer.unet_lr, cfg.optimizer.text_encoder_lr, cfg.optimizer.scheduler) == (1e-4, 5e-5, "cosine")
    assert (cfg.output.save_every_n_epochs, cfg.output.save_precision, cfg.output.save_state) == (1, "fp16", True)


def test_int_is_accepted_for_a_float_and_stored_as_float(tmp_path):
    cfg = load_config(write(tmp_path / "run.toml", "[network]\nalpha = 16\n[optimizer]\nunet_lr = 1\n"))
    assert cfg.network.alpha == 16.0 and isinstance(cfg.network.alpha, float)
    assert cfg.optimizer.unet_lr == 1.0 and isinstance(cfg.optimizer.unet_lr, float)


@pytest.mark.parametrize(("written", "stored"), [("prodigy", "Prodigy"), ("adamw8BIT", "AdamW8bit"), ("LION", "Lion")])
def test_optimizer_name_is_stored_in_canonical_spelling(written, stored):
    assert config_from_dict({"optimizer": {"name": written}}).optimizer.name == stored


def test_config_from_dict_uses_the_given_base_dir_or_cwd(tmp_path):
    assert config_from_dict({}, base_dir=tmp_path).base_dir == tmp_path
    assert config_from_dict({}).base_dir == Path.cwd()


# ---------------------------------------------------------------------------------------------
# Load errors


def test_invalid_toml_reports_file_line_and_column(tmp_path):
    error = load_error(tmp_path, "[network]\nrank = 32\nalpha = \n")
    assert error.where == str(tmp_path / "run.toml")
    assert error.kind == "config"
    assert "line 3, column 9" in error.message
    assert "not valid TOML" in error.message
    assert "line 3" in error.fix


def test_invalid_toml_at_end_of_file_is_reported_in_words(tmp_path):
    error = load_error(tmp_path, '[output]\nname = "lora\n')
    assert "not valid TOML" in error.message
    assert "(at end of document)" not in error.message


def test_missing_config_file(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(UserError) as caught:
        load_config(path)
    assert caught.value.where == str(path)
    assert "not found" in caught.value.message
    assert caught.value.fix


def test_folder_instead_of_config_file(tmp_path):
    with pytest.raises(UserError) as caught:
        load_config(tmp_path)
    assert "folder" in caught.value.message
    assert caught.value.where == str(tmp_path)


def test_non_utf8_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_bytes(b'[output]\nname = "\xff"\n')
    with pytest.raises(UserError) as caught:
        load_config(path)
    assert "UTF-8" in caught.value.message


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "run.toml"
    path.write_bytes(b"\xef\xbb\xbf[network]\nrank = 4\n")
    assert load_config(path).network.rank == 4


def test_unknown_key_suggests_the_closest_name(tmp_path):
    error = load_error(tmp_path, "[network]\nrnak = 8\n")
    assert "unknown key 'rnak' in [network]; did you mean 'rank'?" in error.message
    assert "network.rnak" in error.message
    assert error.fix == "rename it to rank"
    assert error.where == str(tmp_path / "run.toml")


def test_unknown_key_without_close_match_lists_the_valid_keys(tmp_path):
    error = load_error(tmp_path, "[network]\nzzzz = 8\n")
    assert "unknown key 'zzzz' in [network]" in error.message
    assert "rank, alpha, conv_rank, conv_alpha" in error.fix


def test_unknown_section_suggests_the_closest_name(tmp_path):
    error = load_error(tmp_path, "[trainig]\nepochs = 3\n")
    assert "unknown section [trainig]; did you mean [training]?" in error.message


def test_key_in_the_wrong_section_names_its_section(tmp_path):
    error = load_error(tmp_path, "[optimizer]\nseed = 3\n")
    assert "belongs in [training]" in error.message
    assert error.fix == "move it under [training]"


def test_key_outside_any_section(tmp_path):
    error = load_error(tmp_path, "rank = 8\n[network]\nalpha = 4\n")
    assert "'rank' is outside any section" in error.message
    assert error.fix == "move it under [network]"


def test_kohya_name_is_translated(tmp_path):
    error = load_error(tmp_path, "[network]\nnetwork_dim = 8\n")
    assert "'rank'" in error.message
    assert error.fix == "rename it to rank"


def test_wrong_type_names_field_expected_type_and_given_value(tmp_path):
    error = load_error(tmp_path, '[network]\nrank = "32"\n')
    assert error.message.startswith("network.rank:")
    assert "whole number" in error.message
    assert "'32'" in error.message
    assert "rank = 32" in error.fix


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ("[network]\nrank = true\n", "network.rank"),
        ("[training]\nseed = false\n", "training.seed"),
        ("[network]\nalpha = true\n", "network.alpha"),
    ],
)
def test_bool_is_not_a_number(tmp_path, toml, field):
    error = load_error(tmp_path, toml)
    assert error.message.startswith(f"{field}:")
    assert "the boolean" in error.message


@pytest.mark.parametrize(
    ("toml", "field", "fix"),
    [
        ("[training]\nepochs = 10.0\n", "training.epochs", "epochs = 10"),
        ("[training]\nepochs = 10.5\n", "training.epochs", "epochs = 10"),
        ('[model]\nv_prediction = "True"\n', "model.v_prediction", "v_prediction = true"),
        ("[model]\npath = 15\n", "model.path", 'path = "15"'),
        (
            '[optimizer]\nargs = "decouple=True weight_decay=0.01"\n',
            "optimizer.args",
            'args = ["decouple=True", "weight_decay=0.01"]',
        ),
        ("[optimizer]\nargs = [1, 2]\n", "optimizer.args", 'args = ["1", "2"]'),
        ("[network]\nalpha = nan\n", "network.alpha", "alpha = 16.0"),
        ("network = 3\n", "network", "[network]"),
    ],
)
def test_wrong_type_gives_a_concrete_fix(tmp_path, toml, field, fix):
    error = load_error(tmp_path, toml)
    assert error.message.startswith(f"{field}:")
    assert fix in error.fix


def test_all_load_problems_are_reported_at_once(tmp_path):
    text = '[network]\nrnak = 8\nrank = "8"\n[training]\nepochs = true\n[outptu]\nname = "x"\n'
    error = load_error(tmp_path, text)
    lines = error.message.splitlines()
    assert lines[0] == "4 problems in the config:"
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "network.rnak",
        "network.rank",
        "training.epochs",
        "outptu",
    ]


def test_config_from_dict_reports_like_load_config():
    with pytest.raises(UserError) as caught:
        config_from_dict({"network": {"rank": "x"}})
    assert caught.value.message.startswith("network.rank:")


# ---------------------------------------------------------------------------------------------
# Paths


def test_base_dir_is_the_config_folder_even_for_a_relative_path(tmp_path, monkeypatch):
    write(tmp_path / "proj" / "run.toml", "")
    monkeypatch.chdir(tmp_path)
    cfg = load_config("proj/run.toml")
    assert cfg.base_dir == tmp_path / "proj"
    assert cfg.base_dir.is_absolute()


def test_relative_paths_resolve_against_the_config_folder(tmp_path, monkeypatch):
    project = tmp_path / "proj"
    cfg = load_config(write(project / "run.toml", '[dataset]\nimage_dir = "img"\n'))
    monkeypatch.chdir(tmp_path)  # the current folder must not matter
    assert cfg.resolve(cfg.dataset.image_dir) == project / "img"
    assert cfg.resolve("../shared/reg") == project / "../shared/reg"


def test_absolute_and_home_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = RunConfig(base_dir=tmp_path / "proj")
    assert cfg.resolve(str(tmp_path / "abs")) == tmp_path / "abs"
    assert cfg.resolve("~/models/sd15") == tmp_path / "home" / "models" / "sd15"


def test_empty_and_builtin_names_are_not_paths(tmp_path):
    cfg = RunConfig(base_dir=tmp_path)
    with pytest.raises(ValueError):
        cfg.resolve("")
    with pytest.raises(ValueError):
        cfg.resolve("loratui:tiny-sd")


def test_is_builtin():
    assert ModelSettings(path="loratui:tiny-sd").is_builtin
    assert not ModelSettings(path="models/tiny-sd").is_builtin
    assert not ModelSettings(path="").is_builtin


def test_model_path_is_checked_relative_to_the_config_folder(tmp_path, monkeypatch):
    project = tmp_path / "proj"
    (project / "models" / "sd15").mkdir(parents=True)
    cfg = load_config(write(project / "run.toml", '[model]\npath = "models/sd15"\n'))
    monkeypatch.chdir(tmp_path)
    assert validate(cfg) == []


# ---------------------------------------------------------------------------------------------
# Saving


def test_save_config_leaves_no_temp_file_and_loads_back(tmp_path):
    cfg = non_default_config(tmp_path)
    path = tmp_path / "run.toml"
    save_config(cfg, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.toml"]
    assert load_config(path) == cfg


def test_save_config_replaces_an_existing_file(tmp_path):
    path = tmp_path / "run.toml"
    save_config(RunConfig(), path)
    changed = RunConfig()
    changed.network.rank = 4
    save_config(changed, path)
    assert load_config(path).network.rank == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.toml"]


def test_failed_save_keeps_the_old_file_and_cleans_up(tmp_path, monkeypatch):
    path = tmp_path / "run.toml"
    save_config(RunConfig(), path)
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic_module.os, "replace", broken_replace)
    changed = RunConfig()
    changed.network.rank = 4
    with pytest.raises(UserError) as caught:
        save_config(changed, path)
    assert caught.value.where == str(path)
    assert "No space left on device" in caught.value.message
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.toml"]


def test_save_into_a_missing_folder_is_a_user_error(tmp_path):
    path = tmp_path / "missing" / "run.toml"
    with pytest.raises(UserError) as caught:
        save_config(RunConfig(), path)
    assert caught.value.where == str(path)
    assert "folder" in caught.value.fix


def test_saved_file_gets_normal_permissions(tmp_path):
    path = tmp_path / "run.toml"
    save_config(RunConfig(), path)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


# ---------------------------------------------------------------------------------------------
# Validation


def valid_config(tmp_path: Path) -> RunConfig:
    model = tmp_path / "sd15"
    model.mkdir(exist_ok=True)
    cfg = RunConfig(base_dir=tmp_path)
    cfg.model.path = "sd15"
    return cfg


def with_changes(cfg: RunConfig, changes: dict[str, object]) -> RunConfig:
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        setattr(getattr(cfg, section), key, value)
    return cfg


def test_default_config_with_an_existing_model_has_no_problems(tmp_path):
    assert validate(valid_config(tmp_path)) == []


def test_builtin_model_needs_no_path_on_disk(tmp_path):
    cfg = with_changes(RunConfig(base_dir=tmp_path), {"model.path": "loratui:tiny-sd"})
    assert validate(cfg) == []


# (changes, where, severity, words in the message)
VALIDATION_CASES = [
    ({"model.path": ""}, "model.path", "error", "no base model"),
    ({"model.path": "missing/sd15"}, "model.path", "error", "folder not found"),
    ({"model.path": "missing.safetensors"}, "model.path", "error", "checkpoint file not found"),
    ({"model.path": "loratui:huge-sd"}, "model.path", "error", "unknown built-in model"),
    ({"model.path": "loratui:tiny-sd", "model.family": "sdxl"}, "model.family", "error", "is an SD 1.x model"),
    ({"model.path": "loratui:tiny-sd", "model.family": "flux"}, "model.family", "error", "is an SD 1.x model"),
    ({"model.family": "sd3"}, "model.family", "error", "not a valid choice"),
    ({"model.clip_skip": 0}, "model.clip_skip", "error", "1..12"),
    ({"model.clip_skip": 13}, "model.clip_skip", "error", "1..12"),
    ({"model.tokenizer": "no-tokenizer"}, "model.tokenizer", "error", "not found"),
    ({"dataset.image_dir": ""}, "dataset.image_dir", "error", "no image folder"),
    ({"dataset.caption_extension": "txt"}, "dataset.caption_extension", "error", "dot"),
    ({"dataset.resolution": 32}, "dataset.resolution", "error", "64..4096"),
    ({"dataset.resolution": 8192}, "dataset.resolution", "error", "64..4096"),
    ({"dataset.resolution": 516}, "dataset.resolution", "error", "multiple of 8"),
    ({"dataset.resolution": 520}, "dataset.resolution", "warning", "multiple of 64"),
    ({"dataset.min_bucket_reso": 768}, "dataset.min_bucket_reso", "error", "above resolution"),
    ({"dataset.min_bucket_reso": 0}, "dataset.min_bucket_reso", "error", "below 64"),
    ({"dataset.max_bucket_reso": 256}, "dataset.max_bucket_reso", "error", "below resolution"),
    ({"dataset.bucket_reso_steps": 0}, "dataset.bucket_reso_steps", "error", "1..512"),
    ({"dataset.bucket_reso_steps": 12}, "dataset.bucket_reso_steps", "warning", "not multiples of 8"),
    ({"dataset.cache_latents": "ram"}, "dataset.cache_latents", "error", "not a valid choice"),
    ({"network.rank": 0}, "network.rank", "error", "1..1024"),
    ({"network.rank": 2048}, "network.rank", "error", "1..1024"),
    ({"network.alpha": 0.0}, "network.alpha", "error", "above 0"),
    ({"network.alpha": -4.0}, "network.alpha", "error", "above 0"),
    ({"network.alpha": 64.0}, "network.alpha", "warning", "alpha above rank scales the update up"),
    ({"network.conv_rank": -1}, "network.conv_rank", "error", "negative"),
    ({"network.conv_rank": 8, "network.conv_alpha": 0.0}, "network.conv_alpha", "error", "above 0"),
    ({"training.batch_size": 0}, "training.batch_size", "error", "below 1"),
    ({"training.epochs": 0}, "training.epochs", "error", "below 1"),
    ({"training.max_train_steps": -1}, "training.max_train_steps", "error", "negative"),
    ({"training.gradient_accumulation_steps": 0}, "training.gradient_accumulation_steps", "error", "below 1"),
    ({"training.mixed_precision": "fp32"}, "training.mixed_precision", "error", "not a valid choice"),
    ({"training.attention": "flash"}, "training.attention", "error", "not a valid choice"),
    ({"training.seed": -1}, "training.seed", "error", "negative"),
    ({"training.noise_offset": -0.1}, "training.noise_offset", "error", "0..1"),
    ({"training.noise_offset": 1.5}, "training.noise_offset", "error", "0..1"),
    ({"training.min_snr_gamma": -1.0}, "training.min_snr_gamma", "error", "negative"),
    ({"training.max_grad_norm": -0.5}, "training.max_grad_norm", "error", "negative"),
    ({"training.resume_from": "lora-000001-state"}, "training.resume_from", "error", "does not exist"),
    ({"optimizer.name": "Adam"}, "optimizer.name", "error", "not a valid choice"),
    ({"optimizer.args": ["weight_decay"]}, "optimizer.args", "error", "'weight_decay'"),
    ({"optimizer.unet_lr": 0.0}, "optimizer.unet_lr", "error", "above 0"),
    ({"optimizer.unet_lr": -1e-4}, "optimizer.unet_lr", "error", "above 0"),
    ({"optimizer.text_encoder_lr": -5e-5}, "optimizer.text_encoder_lr", "error", "negative"),
    ({"optimizer.text_encoder_lr": 0.0}, "optimizer.text_encoder_lr", "note", "text encoder frozen"),
    ({"optimizer.scheduler": "cosine_annealing"}, "optimizer.scheduler", "error", "not a valid choice"),
    ({"optimizer.warmup_steps": -10}, "optimizer.warmup_steps", "error", "negative"),
    ({"optimizer.scheduler_cycles": 0}, "optimizer.scheduler_cycles", "error", "below 1"),
    ({"optimizer.scheduler_power": 0.0}, "optimizer.scheduler_power", "error", "above 0"),
    ({"optimizer.name": "DAdaptAdam"}, "optimizer.unet_lr", "warning", "expects unet_lr = 1.0"),
    ({"optimizer.name": "Prodigy"}, "optimizer.unet_lr", "warning", "expects unet_lr = 1.0"),
    (
        {"optimizer.name": "Adafactor", "optimizer.args": ["relative_step=True", "scale_parameter=True"]},
        "optimizer.args",
        "note",
        "ignored",
    ),
    ({"output.name": ""}, "output.name", "error", "no file name"),
    ({"output.name": "loras/mine"}, "output.name", "error", "path separator"),
    ({"output.name": "loras\\mine"}, "output.name", "error", "path separator"),
    ({"output.name": "my:lora*"}, "output.name", "error", "* :"),
    ({"output.name": "mine.safetensors"}, "output.name", "warning", "ends in .safetensors"),
    ({"output.save_every_n_epochs": -1}, "output.save_every_n_epochs", "error", "negative"),
    ({"output.save_precision": "fp32"}, "output.save_precision", "error", "not a valid choice"),
]


@pytest.mark.parametrize(
    ("changes", "where", "severity", "words"),
    VALIDATION_CASES,
    ids=[f"{case[1]}={list(case[0].values())[-1]!r}" for case in VALIDATION_CASES],
)
def test_validate_rule_fires(tmp_path, changes, where, severity, words):
    problems = validate(with_changes(valid_config(tmp_path), changes))
    matching = [p for p in problems if p.where == where and p.severity == severity]
    assert len(matching) == 1, problems
    assert words in matching[0].message
    assert matching[0].fix, "every problem must tell the user how to fix it"


def test_choice_problems_list_the_valid_choices(tmp_path):
    problems = validate(with_changes(valid_config(tmp_path), {"training.mixed_precision": "BF16"}))
    (problem,) = problems
    assert "did you mean 'bf16'?" in problem.message
    assert problem.fix == "use one of: no, fp16, bf16"


def test_missing_model_says_folder_or_file(tmp_path):
    folder = validate(with_changes(valid_config(tmp_path), {"model.path": "nope"}))[0]
    checkpoint = validate(with_changes(valid_config(tmp_path), {"model.path": "nope.ckpt"}))[0]
    assert "folder" in folder.message and str(tmp_path / "nope") in folder.message
    assert "file" in checkpoint.message and str(tmp_path / "nope.ckpt") in checkpoint.message


def test_existing_checkpoint_file_is_accepted_and_other_files_are_not(tmp_path):
    write(tmp_path / "model.safetensors", "")
    write(tmp_path / "model.bin", "")
    cfg = valid_config(tmp_path)
    assert validate(with_changes(cfg, {"model.path": "model.safetensors"})) == []
    (problem,) = validate(with_changes(cfg, {"model.path": "model.bin"}))
    assert problem.where == "model.path" and ".safetensors or .ckpt" in problem.message


def test_tokenizer_folder_needs_vocab_and_merges(tmp_path):
    write(tmp_path / "tok" / "vocab.json", "{}")
    cfg = with_changes(valid_config(tmp_path), {"model.tokenizer": "tok"})
    (problem,) = validate(cfg)
    assert problem.where == "model.tokenizer" and "merges.txt" in problem.message
    write(tmp_path / "tok" / "merges.txt", "")
    assert validate(cfg) == []


def test_tokenizer_folder_with_only_tokenizer_json_is_accepted(tmp_path):
    write(tmp_path / "tok" / "tokenizer.json", "{}")  # what transformers 5 saves
    assert validate(with_changes(valid_config(tmp_path), {"model.tokenizer": "tok"})) == []


def test_existing_resume_folder_is_accepted_and_a_file_is_not(tmp_path):
    (tmp_path / "lora-000001-state").mkdir()
    write(tmp_path / "lora.safetensors", "")
    cfg = valid_config(tmp_path)
    assert validate(with_changes(cfg, {"training.resume_from": "lora-000001-state"})) == []
    (problem,) = validate(with_changes(cfg, {"training.resume_from": "lora.safetensors"}))
    assert problem.where == "training.resume_from" and "is a file" in problem.message


def test_alpha_above_rank_is_a_warning_not_an_error(tmp_path):
    problems = validate(with_changes(valid_config(tmp_path), {"network.rank": 8, "network.alpha": 16.0}))
    assert [(p.where, p.severity) for p in problems] == [("network.alpha", "warning")]
    assert "half the rank" in problems[0].message
    assert problems[0].fix == "set alpha = 4 or lower"


def test_epochs_do_not_matter_when_max_train_steps_is_set(tmp_path):
    cfg = with_changes(valid_config(tmp_path), {"training.epochs": 0, "training.max_train_steps": 100})
    assert validate(cfg) == []


def test_bucket_limits_are_ignored_without_buckets(tmp_path):
    changes = {"dataset.enable_buckets": False, "dataset.min_bucket_reso": 768, "dataset.bucket_reso_steps": 3}
    assert validate(with_changes(valid_config(tmp_path), changes)) == []


def test_adaptive_optimizer_with_lr_one_has_no_warning(tmp_path):
    changes = {"optimizer.name": "Prodigy", "optimizer.unet_lr": 1.0, "optimizer.text_encoder_lr": 1.0}
    assert validate(with_changes(valid_config(tmp_path), changes)) == []


def test_validate_reports_every_problem_at_once(tmp_path):
    changes = {"network.rank": 0, "training.batch_size": 0, "output.save_precision": "fp8"}
    wheres = {p.where for p in validate(with_changes(valid_config(tmp_path), changes))}
    assert wheres == {"network.rank", "training.batch_size", "output.save_precision"}


# ---------------------------------------------------------------------------------------------
# Optimizer args


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("relative_step=True", True),
        ("warmup_init=false", False),
        ("decouple=TRUE", True),
        ("d0=None", None),
        ("weight_decay=0.01", 0.01),
        ("eps=1e-3", 1e-3),
        ("eps=1E-08", 1e-8),
        ("growth_rate=-2.5", -2.5),
        ("betas=0.9,0.999", (0.9, 0.999)),
        ("betas=(0.9, 0.99)", (0.9, 0.99)),
        ("mode=none", "none"),
        ("mode=cosine", "cosine"),
        ("version=1.0.0", "1.0.0"),
        (" weight_decay = 0.1 ", 0.1),
    ],
)
def test_parse_optimizer_arg_values(entry, expected):
    (value,) = parse_optimizer_args([entry]).values()
    assert value == expected
    assert type(value) is type(expected)


def test_parse_optimizer_args_keeps_ints_as_ints():
    kwargs = parse_optimizer_args(["slice_p=11", "d_coef=2"])
    assert kwargs == {"slice_p": 11, "d_coef": 2}
    assert all(type(v) is int for v in kwargs.values())


def test_parse_optimizer_args_pasted_from_kohya():
    args = ["decouple=True", "weight_decay=0.01", "betas=0.9,0.999", "use_bias_correction=False"]
    assert parse_optimizer_args(args) == {
        "decouple": True,
        "weight_decay": 0.01,
        "betas": (0.9, 0.999),
        "use_bias_correction": False,
    }


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("weight_decay", "no '='"),
        ("=0.01", "no key"),
        ("weight_decay=", "no value"),
        ("weight decay=0.01", "not a valid argument name"),
    ],
)
def test_bad_optimizer_arg_names_the_entry(entry, words):
    with pytest.raises(UserError) as caught:
        parse_optimizer_args(["decouple=True", entry])
    assert caught.value.where == "optimizer.args"
    assert repr(entry) in caught.value.message
    assert words in caught.value.message
    assert "key=value" in caught.value.fix


def test_duplicate_optimizer_arg_is_an_error():
    with pytest.raises(UserError) as caught:
        parse_optimizer_args(["weight_decay=0.1", "weight_decay=0.01"])
    assert "'weight_decay' is given twice" in caught.value.message


# ---------------------------------------------------------------------------------------------
# Schedule


def schedule_config(epochs: int = 10, max_train_steps: int = 0, accumulation: int = 1) -> RunConfig:
    cfg = RunConfig()
    cfg.training.epochs = epochs
    cfg.training.max_train_steps = max_train_steps
    cfg.training.gradient_accumulation_steps = accumulation
    return cfg


def test_schedule_from_epochs():
    assert resolve_schedule(schedule_config(epochs=10), 160) == Schedule(160, 10, 1600, "")


def test_max_train_steps_overrides_epochs_with_a_partial_last_epoch():
    schedule = resolve_schedule(schedule_config(epochs=10, max_train_steps=500), 160)
    assert (schedule.steps_per_epoch, schedule.epochs, schedule.total_steps) == (160, 4, 500)
    assert schedule.note == (
        "max_train_steps = 500 overrides epochs = 10: training runs 500 steps, 4 epochs (the last one partial)"
    )


def test_max_train_steps_that_fills_whole_epochs():
    schedule = resolve_schedule(schedule_config(epochs=10, max_train_steps=480), 160)
    assert (schedule.epochs, schedule.total_steps) == (3, 480)
    assert schedule.note.endswith("training runs 480 steps, 3 epochs")


def test_max_train_steps_within_one_epoch():
    schedule = resolve_schedule(schedule_config(max_train_steps=50), 160)
    assert schedule.epochs == 1
    assert schedule.note.endswith("1 epoch (the last one partial)")


def test_gradient_accumulation_counts_optimizer_updates():
    schedule = resolve_schedule(schedule_config(epochs=10, accumulation=4), 160)
    assert schedule == Schedule(40, 10, 400, "")
    # A leftover partial accumulation still makes an update: 161 batches / 4 -> 41 updates.
    assert resolve_schedule(schedule_config(epochs=10, accumulation=4), 161).steps_per_epoch == 41


def test_gradient_accumulation_with_max_train_steps():
    schedule = resolve_schedule(schedule_config(epochs=10, max_train_steps=1600, accumulation=2), 1000)
    assert (schedule.steps_per_epoch, schedule.epochs, schedule.total_steps) == (500, 4, 1600)
    assert schedule.note == (
        "max_train_steps = 1600 overrides epochs = 10: training runs 1600 steps, 4 epochs (the last one partial)"
    )


@pytest.mark.parametrize("steps_per_epoch", [0, -3])
def test_schedule_needs_at_least_one_batch(steps_per_epoch):
    assert resolve_schedule(schedule_config(), steps_per_epoch) is None


@pytest.mark.parametrize(
    ("max_train_steps", "epochs", "accumulation"), [(-5, 10, 1), (0, 0, 1), (0, -2, 1), (100, 10, 0), (100, 10, -1)]
)
def test_an_invalid_length_has_no_schedule_and_no_crash(max_train_steps, epochs, accumulation):
    # max_train_steps = -5 typed in the wizard used to crash it (and check, edit, train) with a
    # ValueError from here; validation reports these, the schedule is simply not there.
    cfg = schedule_config(epochs=epochs, max_train_steps=max_train_steps, accumulation=accumulation)
    assert resolve_schedule(cfg, 10) is None


def test_schedule_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        resolve_schedule(schedule_config(), 10).epochs = 3  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# The terminal side must stay light


def test_config_module_imports_no_engine_libraries():
    heavy = ["torch", "diffusers", "transformers", "peft", "accelerate", "bitsandbytes"]
    code = f"import sys, loratui.config; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["Prodigy", "DAdaptAdam"])
def test_adaptive_optimizers_refuse_different_lrs_for_unet_and_text_encoder(name):
    cfg = config_from_dict({"optimizer": {"name": name, "unet_lr": 1.0, "text_encoder_lr": 0.5}})
    assert any(p.where == "optimizer.text_encoder_lr" and p.severity == "error" for p in validate(cfg))
    same = config_from_dict({"optimizer": {"name": name, "unet_lr": 1.0, "text_encoder_lr": 1.0}})
    assert not any(p.where == "optimizer.text_encoder_lr" for p in validate(same))


def test_several_load_problems_print_one_per_line_with_names_still_escaped(tmp_path):
    """`loratui check` prints the list as lines (not a literal "\\n"), and a key that holds a
    terminal escape is still shown escaped."""
    text = '[network]\n"ra\\u001bnk" = 8\nrank = "8"\n'
    printed = str(load_error(tmp_path, text))
    lines = printed.splitlines()
    assert len(lines) == 3 and lines[0].endswith("2 problems in the config:")
    assert "\\n" not in printed and "\x1b" not in printed and "ra\\x1bnk" in lines[1]
