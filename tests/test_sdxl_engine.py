"""The engine on the tiny SDXL model: real training, real files, checked the way a user would.

Runs are small (the sample's 8 images at 64 px, 20 steps an epoch) so that the file stays quick
on a CPU; tests/test_engine.py covers what the families share (events, saving, stopping).
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.conftest import SAMPLE, small_config, train_in_process, write_config

pytestmark = pytest.mark.slow

# The six size/crop numbers the UNet gets for the sample's images in the one 64x64 bucket at 64 px:
# (original height, width, crop top, left, target height, width). A 192x128 image fits inside the
# bucket as 64x42.7, centred 10 pixels from the top: sd-scripts' crop conditioning.
EXPECTED_TIME_IDS = {
    "shape_01.png": (128, 128, 0, 0, 64, 64),
    "shape_02.png": (128, 192, 10, 0, 64, 64),
    "shape_03.png": (192, 128, 0, 10, 64, 64),
    "shape_04.png": (256, 256, 0, 0, 64, 64),
}


def sdxl_config(**sections) -> dict:
    """The sample images on loratui:tiny-sdxl at 64 px: 8 images x 10 repeats, batch 4 -> 20
    steps an epoch, 2 epochs; the UNet and both text encoders trained."""
    data = small_config(
        model={"path": "loratui:tiny-sdxl", "family": "sdxl"},
        dataset={"resolution": 64, "min_bucket_reso": 64, "max_bucket_reso": 256, "bucket_reso_steps": 32},
        optimizer={"unet_lr": 3e-3, "text_encoder_lr": 1e-3, "text_encoder_2_lr": 1e-3},
    )
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return data


def copy_sample(folder: Path) -> Path:
    shutil.copytree(SAMPLE / "img", folder / "img")
    return folder


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One full SDXL run, shared by the tests that only read its results; the time ids of every
    denoiser call are recorded by image name."""
    from engine.families.sdxl import StableDiffusionXL

    folder = copy_sample(tmp_path_factory.mktemp("sdxl-run"))
    seen: dict[str, list[tuple[int, ...]]] = {}
    conditioning = StableDiffusionXL.conditioning

    def recording(self, text, batch, dtype):
        kwargs = conditioning(self, text, batch, dtype)
        for entry, row in zip(batch, kwargs["added_cond_kwargs"]["time_ids"].tolist(), strict=True):
            seen.setdefault(entry.path.name, []).append(tuple(int(v) for v in row))
        return kwargs

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(StableDiffusionXL, "conditioning", recording)
        recorder, trainer = train_in_process(write_config(folder, sdxl_config()))
    return folder, recorder, trainer, seen


def test_sdxl_trains_with_finite_losses_and_a_falling_eval_loss(finished_run):
    _, recorder, _, _ = finished_run
    steps = recorder.of("step")
    assert [s["step"] for s in steps] == list(range(1, 41))
    assert all(math.isfinite(s["loss"]) and s["loss"] > 0 for s in steps)
    assert set(steps[0]["lr"]) == {"unet", "text_encoder", "text_encoder_2"}
    evals = recorder.of("eval")
    assert [e["step"] for e in evals] == [0, 20, 40]
    # Same images, timesteps and noise each time: a drop means the LoRA learned the data.
    assert evals[-1]["loss"] < evals[0]["loss"] * 0.98, evals
    assert recorder.events[-1]["type"] == "finished"


def test_the_file_holds_the_unet_and_both_text_encoders_trained(finished_run):
    folder, _, trainer, _ = finished_run
    path = folder / "model" / "test_lora.safetensors"
    tensors = load_file(path)
    for prefix, part in (("lora_unet_", "unet"), ("lora_te1_", "te1"), ("lora_te2_", "te2")):
        ups = [v for k, v in tensors.items() if k.startswith(prefix) and k.endswith(".lora_up.weight")]
        targets = next(p.targets for p in trainer.parts if p.spec.name == part)
        assert len(ups) == len(targets) > 0, prefix
        assert any(up.abs().max() > 0 for up in ups), f"{prefix}: the up-projections start at zero and moved"
    assert "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in tensors
    assert "lora_te2_text_model_encoder_layers_2_mlp_fc2.lora_up.weight" in tensors
    # sd-scripts names SDXL's UNet modules as sgm does: down level 1's first transformer is input block 4.
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight" in tensors
    meta = safe_open(str(path), "pt").metadata()
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0" and meta["ss_v2"] == "False"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert meta["modelspec.implementation"] == "https://github.com/Stability-AI/generative-models"
    assert meta["ss_training_text_encoder"] == "True"


def test_each_image_is_conditioned_on_its_size_and_sd_scripts_crop(finished_run):
    _, _, _, seen = finished_run
    for name, expected in EXPECTED_TIME_IDS.items():
        assert set(seen[name]) == {expected}, name


def image_entry(width: int, height: int, bucket: tuple[int, int]):
    from loratui.dataset import ImageEntry

    return ImageEntry(Path("image.png"), width, height, "a caption", "file", bucket, "1_a", False)


def test_time_ids_in_a_landscape_bucket():
    from engine.families.sdxl import time_ids

    # 192x128 in a 160x96 bucket: fitted inside as 144x96, 8 pixels from the left.
    assert time_ids(image_entry(192, 128, (160, 96))) == (128, 192, 0, 8, 96, 160)


def test_text_conditioning_is_both_penultimate_states_and_the_pooled_end_token():
    """TE1's and TE2's layer before the last, side by side; the pooled vector is TE2's final state
    at the end token through its projection, which is transformers' own ``text_embeds`` here (a
    config with the real end token id, whose first occurrence both find)."""
    from engine.families.sdxl import TEXT_ENCODER_1, TEXT_ENCODER_2, StableDiffusionXL
    from engine.model_loading import load_base_model
    from engine.tiny_sdxl import TEXT_WIDTH_1, TEXT_WIDTH_2, TINY_SDXL_NAME

    model = load_base_model(TINY_SDXL_NAME, Path(TINY_SDXL_NAME), "sdxl", False, None)
    family, cpu, captions = StableDiffusionXL(), torch.device("cpu"), ["ohwx shape, red circle", "a"]
    with torch.no_grad():
        text = {
            **family.encode_text(TEXT_ENCODER_1, model, captions, 2, cpu, lambda module: module),
            **family.encode_text(TEXT_ENCODER_2, model, captions, 2, cpu, lambda module: module),
        }
        ids_2 = model.tokenizer_2(captions, padding="max_length", max_length=77, return_tensors="pt").input_ids
        reference = model.text_encoder_2(ids_2)
    assert (ids_2 == model.tokenizer_2.pad_token_id).any()  # padded with "!", not with the end token
    torch.testing.assert_close(text["text_embeds"], reference.text_embeds)
    square = image_entry(128, 128, (64, 64))
    kwargs = family.conditioning(text, [square, square], torch.float32)
    states = kwargs["encoder_hidden_states"]
    assert states.shape == (2, 77, TEXT_WIDTH_1 + TEXT_WIDTH_2)  # TE1's channels, then TE2's
    torch.testing.assert_close(states[..., :TEXT_WIDTH_1], text["hidden_states_1"])
    torch.testing.assert_close(states[..., TEXT_WIDTH_1:], text["hidden_states_2"])
    assert kwargs["added_cond_kwargs"]["time_ids"].tolist() == [[128, 128, 0, 0, 64, 64]] * 2


def test_stop_then_resume_equals_the_uninterrupted_run(finished_run, tmp_path):
    uninterrupted_folder, uninterrupted, _, _ = finished_run
    config = write_config(copy_sample(tmp_path), sdxl_config())

    def stop_at_13(event, stop):
        if event["type"] == "step" and event["step"] == 13:
            stop.request("request")

    first, _ = train_in_process(config, on_event=stop_at_13)
    stopped = first.of("stopped")[0]
    assert stopped["step"] == 13
    second, trainer = train_in_process(config, resume=stopped["state"])
    assert second.of("run_started")[0]["start_step"] == 13 and second.events[-1]["type"] == "finished"
    assert {f"{p.spec.name}_modules" for p in trainer.parts} == {"unet_modules", "te1_modules", "te2_modules"}

    losses = [s["loss"] for s in first.of("step") + second.of("step")]
    assert losses == pytest.approx([s["loss"] for s in uninterrupted.of("step")], abs=1e-6)
    resumed = load_file(tmp_path / "model" / "test_lora.safetensors")
    expected = load_file(uninterrupted_folder / "model" / "test_lora.safetensors")
    assert resumed.keys() == expected.keys()
    worst = max((resumed[k].float() - expected[k].float()).abs().max().item() for k in resumed)
    assert worst < 1e-6, worst


@pytest.fixture
def encoder_calls(monkeypatch):
    """Every call of the SDXL text encoding: (part name, captions, whether training had started)."""
    from engine.families.sdxl import StableDiffusionXL

    calls: list[tuple[str, tuple[str, ...], bool]] = []
    started = {"yes": False}
    encode = StableDiffusionXL.encode_text

    def counting(self, part, model, captions, *rest):
        calls.append((part.name, tuple(captions), started["yes"]))
        return encode(self, part, model, captions, *rest)

    def watch(event, stop):
        if event["type"] == "run_started":
            started["yes"] = True

    monkeypatch.setattr(StableDiffusionXL, "encode_text", counting)
    return calls, watch, started


def test_cached_text_outputs_are_reused_and_a_changed_caption_or_encoder_is_encoded_again(tmp_path, encoder_calls):
    calls, watch, started = encoder_calls
    project = copy_sample(tmp_path)
    captions = {path.read_text().strip() for path in (project / "img").rglob("*.txt")}
    data = sdxl_config(
        dataset={"cache_text_encoder_outputs": "disk"},
        network={"train_unet_only": True},
        training={"max_train_steps": 2},
    )
    config = write_config(project, data)

    recorder, trainer = train_in_process(config, on_event=watch)
    # Every caption once per encoder, all before training; none during the steps and evals.
    encoded = [(part, caption) for part, batch, _ in calls for caption in batch]
    assert sorted(encoded) == sorted((part, c) for part in ("te1", "te2") for c in captions)
    assert not any(during for _, _, during in calls)
    caching = [e for e in recorder.of("status") if e["phase"] == "caching_text"]
    assert caching[-1]["current"] == caching[-1]["total"] == 2 * len(captions)
    cached = sorted((project / "model" / ".text-cache").glob("*.safetensors"))
    assert len(cached) == 2 * len(captions) and not list((project / "model" / ".text-cache").glob(".*"))
    stamps = [path.stat().st_mtime_ns for path in cached]
    # train_unet_only: the text encoders' rates are above zero, yet neither trains.
    assert not trainer.train_text_encoder
    assert not any(k.startswith("lora_te") for k in load_file(project / "model" / "test_lora.safetensors"))

    calls.clear()
    started["yes"] = False
    recorder, _ = train_in_process(config, on_event=watch, overwrite=True)
    assert calls == []  # everything came from disk
    assert [path.stat().st_mtime_ns for path in cached] == stamps
    assert len(recorder.of("step")) == 2

    caption_file = next((project / "img").rglob("shape_01.txt"))
    caption_file.write_text("ohwx shape, a new caption")
    started["yes"] = False
    train_in_process(config, on_event=watch, overwrite=True)
    assert sorted((part, batch) for part, batch, _ in calls) == [
        ("te1", ("ohwx shape, a new caption",)),
        ("te2", ("ohwx shape, a new caption",)),
    ]

    # Text encoder 2's weights replaced in place (a new modification time): its rows are stale, TE1's are not.
    calls.clear()
    weights = next((trainer.model.source / "text_encoder_2").glob("*.safetensors"))
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    try:
        train_in_process(config, on_event=watch, overwrite=True)
    finally:
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert {part for part, _, _ in calls} == {"te2"}
    assert sum(len(batch) for _, batch, _ in calls) == len(captions)


def test_a_frozen_encoder_is_cached_while_the_other_trains(tmp_path, encoder_calls):
    calls, watch, _ = encoder_calls
    data = sdxl_config(optimizer={"text_encoder_2_lr": 0.0}, training={"max_train_steps": 4})
    train_in_process(write_config(copy_sample(tmp_path), data), on_event=watch)
    te1 = [c for part, batch, _ in calls if part == "te1" for c in batch]
    te2 = [c for part, batch, _ in calls if part == "te2" for c in batch]
    assert len(te1) > len(set(te1))  # trained: encoded at every step
    assert len(te2) == len(set(te2)) > 0  # frozen: once per caption
    tensors = load_file(tmp_path / "model" / "test_lora.safetensors")
    assert any(k.startswith("lora_te1_") for k in tensors) and not any(k.startswith("lora_te2_") for k in tensors)


def test_v_prediction_with_zero_terminal_snr_and_a_half_precision_vae(tmp_path, monkeypatch):
    # bf16 on the CPU, as tests/test_engine.py does for its numerics: loratui refuses it elsewhere.
    from loratui import preflight

    monkeypatch.setattr(preflight, "precision_problems", lambda precision, machine: [])
    data = sdxl_config(
        model={"v_prediction": True, "no_half_vae": False},
        training={
            "zero_terminal_snr": True,
            "min_snr_gamma": 5.0,
            "gradient_checkpointing": True,
            "mixed_precision": "bf16",
            "max_train_steps": 3,
        },
        dataset={"cache_latents": "off"},
    )
    recorder, trainer = train_in_process(write_config(copy_sample(tmp_path), data))
    assert len(recorder.of("step")) == 3 and all(math.isfinite(s["loss"]) for s in recorder.of("step"))
    scheduler = trainer.model.noise_scheduler
    assert scheduler.config.prediction_type == "v_prediction"
    assert scheduler.alphas_cumprod[-1].item() == 0.0  # the last timestep is pure noise
    assert trainer.model.vae.dtype == torch.bfloat16


def test_min_snr_weights_at_a_zero_terminal_snr_are_finite():
    from diffusers import DDPMScheduler

    from engine import diffusion

    scheduler = diffusion.with_zero_terminal_snr(DDPMScheduler(beta_schedule="scaled_linear"))
    weights = diffusion.min_snr_weights(scheduler, torch.tensor([0, 500, 999]), 5.0)
    assert torch.isfinite(weights).all() and weights[-1].item() == 1.0


def test_sdxl_random_has_the_published_parameter_counts():
    """Counted from the configs on the meta device: no 10 GB of weights are made for it."""
    from engine.reference_models import sdxl_random_parameter_counts

    counts = sdxl_random_parameter_counts()
    print(", ".join(f"{name} {count:,}" for name, count in counts.items()))
    assert counts == {"unet": 2_567_463_684, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840}


def test_the_engine_families_have_the_parts_the_check_knows():
    """The check (loratui.families, torch-free) and the engine (engine.families) must agree on
    every family's parts, in order: state folders and resume checks are keyed by them."""
    from engine.families import FAMILIES
    from loratui.families import FAMILY_PARTS

    assert set(FAMILIES) == set(FAMILY_PARTS)
    for name, make in FAMILIES.items():
        assert [spec.part for spec in make().parts] == list(FAMILY_PARTS[name]), name


def test_the_disk_text_cache_is_keyed_by_the_tokenizer_too():
    """The same caption under another tokenizer gives other ids, so other rows: SDXL's two
    tokenizers differ only in their padding, and that is enough for another key."""
    from transformers import CLIPTokenizer

    from engine.text_cache import tokenizer_identity
    from engine.tiny_sdxl import ensure_tiny_sdxl

    folder = ensure_tiny_sdxl()
    first = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    second = CLIPTokenizer.from_pretrained(folder / "tokenizer_2")
    assert tokenizer_identity(first) == tokenizer_identity(CLIPTokenizer.from_pretrained(folder / "tokenizer"))
    assert tokenizer_identity(first) != tokenizer_identity(second)
