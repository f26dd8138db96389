"""`loratui check` on SDXL configs: each SDXL mistake is one line naming the setting and the fix,
with a non-zero exit for errors; warnings leave the config ready. Built-in models only, so no
weights are read (the diffusers folder case builds the tiny SDXL once)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from loratui import cli, preflight
from loratui.families import BUILTIN_FAMILIES
from loratui.params import BUILTIN_MODELS

from .conftest import small_config, write_config

SDXL = {"path": "loratui:tiny-sdxl", "family": "sdxl"}
# The usual SDXL recipe on the tiny model: U-Net only with the text outputs cached, buckets in 32s.
READY = {
    "model": SDXL,
    "dataset": {"bucket_reso_steps": 32, "cache_text_encoder_outputs": "memory"},
    "network": {"train_unet_only": True},
}


@pytest.fixture(autouse=True)
def gpu_machine(monkeypatch):
    """A bf16 GPU, so that the precision settings are judged, not the test machine."""
    monkeypatch.setattr(preflight, "this_machine", lambda: preflight.Machine("NVIDIA RTX 4090", (8, 9)))


def check(project: Path, capsys, **sections) -> tuple[int, list[str]]:
    """The exit status and the problem lines of `loratui check` on the tiny SDXL with ``sections``."""
    data = small_config(**READY)
    for section, values in sections.items():
        data[section].update(values)
    code = cli.main(["check", str(write_config(project, data))])
    out = capsys.readouterr().out
    lines = [line.strip() for line in out.splitlines() if line.strip().startswith(("error", "warning"))]
    return code, lines


def only_line(lines: list[str], severity: str) -> str:
    assert len(lines) == 1, lines
    assert lines[0].startswith(severity), lines
    return lines[0]


def test_the_usual_sdxl_recipe_is_ready(project, capsys):
    code, lines = check(project, capsys)
    assert (code, lines) == (0, [])


@pytest.mark.parametrize(
    "sections,where,says,fix",
    [
        (
            {"dataset": {"resolution": 200}},
            "dataset.resolution",
            "resolution 200 is not a multiple of 32, which SDXL needs",
            "use 192, or 1024",
        ),
        (
            {"dataset": {"bucket_reso_steps": 48}},
            "dataset.bucket_reso_steps",
            "bucket_reso_steps 48 is not a multiple of 32",
            "use 64; 32 and 64 are usual",
        ),
        (
            {"network": {"train_unet_only": False}},
            "dataset.cache_text_encoder_outputs",
            'cache_text_encoder_outputs "memory" needs frozen text encoders, but network.train_unet_only is false '
            "and text encoder 1 and text encoder 2 train",
            "set network.train_unet_only = true",
        ),
        (
            {"network": {"train_unet_only": False}, "optimizer": {"text_encoder_lr": 0.0}},
            "dataset.cache_text_encoder_outputs",
            "text encoder 2 trains (optimizer.text_encoder_2_lr 5e-05)",
            "set network.train_unet_only = true",
        ),
        (
            {"model": {"family": "sd1"}},
            "model.family",
            "loratui:tiny-sdxl is an SDXL model, but model.family is 'sd1'",
            'set model.family = "sdxl"',
        ),
        (
            {"model": {"path": "loratui:tiny-sd"}},
            "model.family",
            "loratui:tiny-sd is an SD 1.x model, but model.family is 'sdxl'",
            'set model.family = "sd1"',
        ),
        (
            {"optimizer": {"text_encoder_2_lr": -1.0}},
            "optimizer.text_encoder_2_lr",
            "text_encoder_2_lr -1 is negative",
            "use the text_encoder_lr value, or 0 to freeze it",
        ),
    ],
    ids=[
        "resolution",
        "bucket-step",
        "cache-with-encoders",
        "cache-with-encoder-2",
        "sdxl-as-sd1",
        "sd1-as-sdxl",
        "te2-lr",
    ],
)
def test_each_sdxl_mistake_is_one_error_line(project, capsys, sections, where, says, fix):
    code, lines = check(project, capsys, **sections)
    line = only_line([line for line in lines if line.startswith("error")], "error")
    assert code == 1
    assert line.startswith(f"error    {where}: ") and says in line and f"(fix: {fix}" in line, line


@pytest.mark.parametrize(
    "sections,where,says,fix",
    [
        (
            {"training": {"zero_terminal_snr": True}},
            "training.zero_terminal_snr",
            "zero_terminal_snr is on but model.v_prediction is off",
            "set model.v_prediction = true, or zero_terminal_snr = false",
        ),
        (
            {"model": {"no_half_vae": False}, "training": {"mixed_precision": "fp16"}},
            "model.no_half_vae",
            "the SDXL VAE gives NaN latents in fp16",
            "set no_half_vae = true, unless the model's VAE is fp16-safe",
        ),
        (
            # Out of SD's range too: a setting of another family is not judged, only said to be ignored.
            {"model": {"clip_skip": 40}},
            "model.clip_skip",
            "clip_skip 40 is ignored: SDXL has no clip skip",
            "set clip_skip = 1, or remove it",
        ),
    ],
    ids=["zero-terminal-snr", "half-vae", "clip-skip"],
)
def test_each_sdxl_risk_is_one_warning_line_and_the_config_stays_ready(project, capsys, sections, where, says, fix):
    code, lines = check(project, capsys, **sections)
    line = only_line(lines, "warning")
    assert code == 0
    assert line.startswith(f"warning  {where}: ") and says in line and f"(fix: {fix}" in line, line


def test_fp16_with_the_vae_in_float32_and_v_prediction_with_zero_snr_are_fine(project, capsys):
    code, lines = check(
        project,
        capsys,
        model={"v_prediction": True},
        training={"mixed_precision": "fp16", "zero_terminal_snr": True},
    )
    assert (code, lines) == (0, [])


def test_an_sd_config_does_not_judge_the_second_text_encoder(project, capsys):
    data = small_config(optimizer={"text_encoder_2_lr": -1.0})
    assert cli.main(["check", str(write_config(project, data))]) == 0, capsys.readouterr().out


def test_a_diffusers_folder_of_another_family_is_one_line(project, capsys, tmp_path):
    from engine.tiny_sdxl import ensure_tiny_sdxl

    folder = shutil.copytree(ensure_tiny_sdxl(), tmp_path / "models" / "my-sdxl")
    code, lines = check(project, capsys, model={"path": str(folder), "family": "sd1"})
    line = only_line([line for line in lines if line.startswith("error")], "error")
    assert code == 1
    assert f"error    model.family: {folder} is an SDXL model, but model.family is 'sd1'" in line
    assert '(fix: set model.family = "sdxl")' in line
    code, lines = check(project, capsys, model={"path": str(folder), "family": "sdxl"})
    assert (code, lines) == (0, [])


def test_every_builtin_model_has_a_family():
    assert set(BUILTIN_FAMILIES) == set(BUILTIN_MODELS)
    assert {BUILTIN_FAMILIES[name] for name in ("loratui:tiny-sdxl", "loratui:sdxl-random")} == {"sdxl"}


def test_sd_scripts_names_of_the_sdxl_settings_say_what_they_are_called_here(project):
    from loratui.config import load_config
    from loratui.errors import UserError

    data = small_config(model=SDXL)
    data["network"]["network_train_unet_only"] = True
    data["dataset"]["cache_text_encoder_outputs_to_disk"] = True
    with pytest.raises(UserError) as caught:
        load_config(write_config(project, data))
    message = caught.value.message
    assert "kohya's network_train_unet_only is called 'train_unet_only' here" in message
    assert "kohya's cache_text_encoder_outputs_to_disk is called 'cache_text_encoder_outputs' here" in message
