"""The GPU suite's harness (tests/gpu_harness.py), proven on the CPU with the tiny models.

The GPU suite itself (tests/test_gpu_train.py) needs CUDA; this runs the same helper, with the
same checks (finite losses, LoRA moved, the kohya file reloaded by diffusers reproduces the
trained model), on the built-in tiny models: ``loratui:tiny-sd`` at 128 px,
``loratui:tiny-sdxl`` at 64 px and, for Flux, ``loratui:tiny-flux`` at 64 px with its transformer
replaced by a FLUX.1-wide one (one double and one single block, 3072 wide: diffusers' kohya Flux
converter only knows FLUX.1's widths; tests/test_flux_roundtrip.py's ``wide_flux_folder``), so a
broken harness shows up on any machine.
"""

from __future__ import annotations

import pytest

from engine.tiny_model import BUILTIN_NAME, ensure_tiny_model
from engine.tiny_sdxl import TINY_SDXL_NAME, ensure_tiny_sdxl
from tests.gpu_harness import FLOAT32_TOLERANCE, Entry, estimated_peak, run_entry

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "entry",
    [
        # float32 is what a CPU trains in; the checkpointed, cache-free, UNet + text encoder path
        # exercises the most of the harness in one run.
        Entry(
            "cpu-fp32-b4-adamw-gc-nocache-te",
            "no",
            4,
            "AdamW",
            1e-3,
            gradient_checkpointing=True,
            cache_latents="off",
            train_text_encoder=True,
            steps=3,
        ),
        # bf16 on the CPU: the low-precision comparison path (autocast, tolerance relative to the
        # LoRA's effect) that the GPU's bf16 entries take.
        Entry("cpu-bf16-b1-adamw8bit-unet", "bf16", 1, "AdamW8bit", 1e-3, steps=3),
    ],
    ids=lambda e: e.id,
)
def test_one_matrix_entry_on_the_tiny_model(tmp_path, entry, monkeypatch):
    _allow_low_precision(entry, monkeypatch)
    result = run_entry(tmp_path, entry, BUILTIN_NAME, ensure_tiny_model(), 128)
    assert len(result.losses) == entry.steps
    assert result.up_weights["unet"] > 0
    assert ("te" in result.up_weights) == entry.train_text_encoder
    # run_entry made its assertions; these check that it compared what the entry trained.
    assert set(result.comparisons) == ({"unet", "te"} if entry.train_text_encoder else {"unet"})
    assert all(c.error < FLOAT32_TOLERANCE for c in result.comparisons.values())


@pytest.mark.parametrize(
    "entry",
    [
        # The GPU suite's SDXL recipe, in small: UNet only by network.train_unet_only (the text
        # encoders' rates are set, and must be ignored), their outputs cached, bf16, checkpointing.
        # At 1e-3 the LoRA's effect in 3 steps is barely twice bf16's rounding noise: 3e-3 makes it 7x.
        Entry(
            "cpu-sdxl-bf16-b2-adamw-gc-unetonly-textcache",
            "bf16",
            2,
            "AdamW",
            3e-3,
            gradient_checkpointing=True,
            family="sdxl",
            train_unet_only=True,
            cache_text_encoder_outputs="memory",
            steps=3,
        ),
        # Both text encoders trained with the UNet: each one's outputs compared after the reload.
        Entry(
            "cpu-sdxl-fp32-b2-adamw-te1-te2",
            "no",
            2,
            "AdamW",
            1e-3,
            family="sdxl",
            train_text_encoder=True,
            train_text_encoder_2=True,
            steps=3,
        ),
    ],
    ids=lambda e: e.id,
)
def test_one_sdxl_matrix_entry_on_the_tiny_sdxl(tmp_path, entry, monkeypatch):
    _allow_low_precision(entry, monkeypatch)
    result = run_entry(tmp_path, entry, TINY_SDXL_NAME, ensure_tiny_sdxl(), 64)
    assert len(result.losses) == entry.steps
    trained = entry.trained_text_encoders()
    assert set(result.up_weights) == {"unet", *trained}
    outputs = {"te1": {"te1"}, "te2": {"te2", "te2 pooled"}}
    assert set(result.comparisons) == {"unet"}.union(*(outputs[name] for name in trained))
    assert all(c.error < FLOAT32_TOLERANCE for c in result.comparisons.values())


@pytest.fixture(scope="module")
def wide_flux(tmp_path_factory):
    from tests.test_flux_roundtrip import wide_flux_folder

    return wide_flux_folder(tmp_path_factory.mktemp("wide-flux") / "model")


@pytest.mark.parametrize(
    "entry",
    [
        # The GPU suite's Flux recipe in small: bf16, fp8 base weights, both blocks swapped (all the
        # wide model has), checkpointing, text outputs and latents cached, the transformer alone
        # (network.train_unet_only with CLIP-L's rate set), AdamW8bit. The pipeline's transformer is
        # stored in fp8 as the engine stores the trained one (the harness's fp8 path).
        Entry(
            "cpu-flux-bf16-b2-adamw8bit-fp8-swap2-gc-textcache-unetonly",
            "bf16",
            2,
            "AdamW8bit",
            3e-3,
            gradient_checkpointing=True,
            family="flux",
            train_unet_only=True,
            cache_text_encoder_outputs="memory",
            fp8_base=True,
            blocks_to_swap=2,
            t5_tokens=8,
            steps=3,
        ),
        # CLIP-L trained with the transformer (lora_te1), in float32, latents encoded at every step:
        # its pooled output compared too.
        Entry(
            "cpu-flux-fp32-b1-adamw-nocache-te1",
            "no",
            1,
            "AdamW",
            1e-3,
            cache_latents="off",
            family="flux",
            train_text_encoder=True,
            t5_tokens=8,
            steps=2,
        ),
    ],
    ids=lambda e: e.id,
)
def test_one_flux_matrix_entry_on_a_flux1_wide_tiny_flux(tmp_path, entry, monkeypatch, wide_flux):
    _allow_low_precision(entry, monkeypatch)
    result = run_entry(tmp_path, entry, str(wide_flux), wide_flux, 64)
    assert len(result.losses) == entry.steps
    trained = entry.trained_text_encoders()
    assert set(result.up_weights) == {"unet", *trained}  # lora_unet_ (the transformer), lora_te1_ (CLIP-L)
    assert set(result.comparisons) == {"transformer"} | ({"te1 pooled"} if trained else set())
    assert all(c.error < FLOAT32_TOLERANCE for c in result.comparisons.values())
    # The memory windows the GPU suite reads opened at the engine's own status events, after loading.
    assert result.memory.opened == [
        ("setup", "status:caching_latents" if entry.cache_latents != "off" else "run_started"),
        ("training", "status:training"),
    ]
    assert set(result.memory.peaks) == {"setup", "training"}  # figures only on CUDA
    # The estimate the GPU suite compares with is computed from the run's own config.
    estimate = estimated_peak(result)
    assert estimate.settings["model.fp8_base"] == entry.fp8_base
    assert estimate.settings["training.blocks_to_swap"] == entry.blocks_to_swap
    assert estimate.total > 0


def _allow_low_precision(entry: Entry, monkeypatch) -> None:
    if entry.precision != "no":
        # loratui refuses fp16/bf16 without a CUDA GPU; the harness's low-precision path is
        # proven here on the CPU all the same, with that rule lifted.
        from loratui import preflight

        monkeypatch.setattr(preflight, "precision_problems", lambda precision, machine: [])
