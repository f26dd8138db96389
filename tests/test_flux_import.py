"""Importing a kohya_ss GUI FLUX.1 config: the GUI's "flux1D - adamw8bit fp8" file becomes a FLUX.1
run config that `check` accepts once its placeholder paths point at real files, and the GUI's Flux
keys loratui reads its own way (the two names of the text encoder files, split_mode, the Flux
text-output cache) land where sd-scripts would put them."""

from __future__ import annotations

from pathlib import Path

import pytest

from loratui import preflight
from loratui.check import check_run, config_problems
from loratui.config import config_from_dict
from loratui.kohya_import import import_kohya, load_kohya_json

from .conftest import SAMPLE

FLUX_FIXTURE = Path(__file__).parent / "fixtures" / "kohya" / "flux1D - adamw8bit fp8.json"


@pytest.fixture
def bf16_gpu(monkeypatch):
    """A machine with a bf16 GPU, as the file (mixed_precision bf16) is meant for."""
    monkeypatch.setattr(preflight, "this_machine", lambda: preflight.Machine("NVIDIA A100", (8, 0)))


def test_the_gui_flux_file_imports_as_a_flux_config():
    result = load_kohya_json(FLUX_FIXTURE)
    report = result.report
    assert not report.blockers and "NOT SUPPORTED YET" not in report.text()
    cfg = result.to_config()
    model, training = cfg.model, cfg.training
    assert model.family == "flux"
    assert model.ae_path == "put the full path to ae.sft here"
    assert model.clip_l_path == "put the full path to clip_l.safetensors here"
    assert model.t5xxl_path.startswith("put the full path to the file here")
    assert model.fp8_base is True and model.apply_t5_attn_mask is True and model.t5xxl_max_token_length == 512
    assert (training.timestep_sampling, training.model_prediction_type) == ("sigmoid", "raw")
    assert (training.guidance_scale, training.discrete_flow_shift) == (1.0, 3.0)
    assert training.gradient_checkpointing is True and training.max_train_steps == 1000
    # flux1_cache_text_encoder_outputs(_to_disk): T5 and CLIP-L outputs on disk; text_encoder_lr 0
    # freezes CLIP-L, as kohya_ss passes --network_train_unet_only.
    assert cfg.dataset.cache_text_encoder_outputs == "disk" and cfg.dataset.cache_latents == "disk"
    assert cfg.network.train_unet_only is True and cfg.optimizer.unet_lr == 3e-4
    assert (cfg.network.rank, cfg.network.alpha) == (16, 16.0)
    for key in ("flux1_checkbox", "ae", "clip_l", "t5xxl", "fp8_base", "guidance_scale", "timestep_sampling"):
        assert report.group_of(key) == "mapped", key
    # What FLUX.1 training has no use for is reported, with the reason, never silently dropped.
    assert report.entry("LoRA_type").target == "network.type" and cfg.network.type == "lora"  # "Flux1"
    assert report.group_of("train_blocks") == "ignored"  # "all"
    assert "no noise offset" in report.entry("noise_offset").reason and training.noise_offset == 0
    assert report.group_of("min_snr_gamma") == "ignored" and training.min_snr_gamma == 0
    assert report.group_of("sdxl_cache_text_encoder_outputs") == "ignored"
    assert report.group_of("sdxl_no_half_vae") == "ignored"
    assert report.group_of("full_bf16") == "unsupported"
    assert "t5xxl_max_token_length" in report.entry("max_token_length").reason


def test_the_imported_flux_config_passes_check_once_its_paths_are_real(tmp_path: Path, bf16_gpu):
    result = load_kohya_json(FLUX_FIXTURE)
    sections = result.sections
    # The placeholders, replaced by what a user has here: the built-in tiny FLUX.1 (a diffusers
    # folder: no separate AE/CLIP-L/T5 files), the sample images and folders to write to.
    sections["model"].update(path="loratui:tiny-flux", ae_path="", clip_l_path="", t5xxl_path="")
    sections["dataset"]["image_dir"] = str(SAMPLE / "img")
    sections["output"].update(output_dir=str(tmp_path / "model"), log_dir=str(tmp_path / "log"))
    cfg = config_from_dict(sections, tmp_path)
    checked = check_run(cfg)
    assert checked.ok, [str(problem) for problem in checked.errors]
    assert checked.schedule is not None and checked.schedule.total_steps == 1000


def test_the_placeholders_each_get_one_line_naming_the_setting(tmp_path: Path, bf16_gpu):
    cfg = load_kohya_json(FLUX_FIXTURE).to_config(tmp_path)
    errors = [problem for problem in config_problems(cfg) if problem.severity == "error"]
    (model_path,) = [problem for problem in errors if problem.where == "model.path"]
    assert "put the full path to flux1-dev.safetensors here" in model_path.message
    for where in ("model.ae_path", "model.clip_l_path", "model.t5xxl_path"):
        assert len([problem for problem in errors if problem.where == where]) <= 1, where


def test_the_newer_gui_names_of_the_text_encoder_files_win():
    result = import_kohya(
        {
            "flux1_checkbox": True,
            "clip_l": "",
            "flux1_clip_l": "/models/clip_l.safetensors",
            "t5xxl": "/models/old_t5.safetensors",
            "flux1_t5xxl": "/models/t5xxl_fp16.safetensors",
        }
    )
    cfg = result.to_config()
    assert cfg.model.clip_l_path == "/models/clip_l.safetensors"
    assert cfg.model.t5xxl_path == "/models/t5xxl_fp16.safetensors"
    assert result.report.group_of("clip_l") == "ignored"
    assert result.report.entry("t5xxl").reason == "flux1_t5xxl is set and wins"


def test_split_mode_swaps_18_blocks_unless_blocks_to_swap_is_set():
    split = import_kohya({"flux1_checkbox": True, "split_mode": True, "blocks_to_swap": 0})
    assert split.to_config().training.blocks_to_swap == 18
    assert split.report.group_of("split_mode") == "changed"  # deprecated: sd-scripts swaps 18 blocks
    assert split.report.group_of("blocks_to_swap") == "ignored"
    both = import_kohya({"flux1_checkbox": True, "split_mode": True, "blocks_to_swap": 10})
    assert both.to_config().training.blocks_to_swap == 10
    assert "blocks_to_swap is set and wins" in both.report.entry("split_mode").reason


def test_flux_settings_loratui_lacks_are_reported_unsupported():
    result = import_kohya(
        {
            "flux1_checkbox": True,
            "train_blocks": "single",
            "double_blocks_to_swap": 4,
            "flux_fused_backward_pass": True,
            "LoRA_type": "Flux1 OFT",
        }
    )
    for key in ("train_blocks", "double_blocks_to_swap", "flux_fused_backward_pass", "LoRA_type"):
        assert result.report.group_of(key) == "unsupported", key
    assert result.to_config().model.family == "flux"


def test_flux_keys_in_an_sdxl_or_sd15_file_have_no_effect():
    sdxl = import_kohya({"sdxl": True, "guidance_scale": 1, "flux1_cache_text_encoder_outputs": True, "ae": "x"})
    for key in ("guidance_scale", "flux1_cache_text_encoder_outputs", "ae"):
        assert sdxl.report.entry(key).reason == "only used for FLUX.1 training", key
    cfg = sdxl.to_config()
    assert cfg.dataset.cache_text_encoder_outputs == "off" and cfg.model.ae_path == ""
    # sd-scripts has fp8_base for every model type; loratui only for FLUX.1: on, it is unsupported.
    sd15 = import_kohya({"fp8_base": True})
    assert sd15.report.group_of("fp8_base") == "unsupported"
    assert "FLUX.1 only" in sd15.report.entry("fp8_base").reason
    assert import_kohya({"fp8_base": False}).report.group_of("fp8_base") == "ignored"
