"""The GPU suite's harness (tests/gpu_harness.py), proven on the CPU with the tiny models.

The GPU suite itself (tests/test_gpu_train.py) needs CUDA; this runs the same helper, with the
same checks (finite losses, LoRA moved, the kohya file reloaded by diffusers reproduces the
trained model), on the built-in tiny models: ``loratui:tiny-sd`` at 128 px and
``loratui:tiny-sdxl`` at 64 px, so a broken harness shows up on any machine.
"""

from __future__ import annotations

import pytest

from engine.tiny_model import BUILTIN_NAME, ensure_tiny_model
from engine.tiny_sdxl import TINY_SDXL_NAME, ensure_tiny_sdxl
from tests.gpu_harness import FLOAT32_TOLERANCE, Entry, run_entry

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


def _allow_low_precision(entry: Entry, monkeypatch) -> None:
    if entry.precision != "no":
        # loratui refuses fp16/bf16 without a CUDA GPU; the harness's low-precision path is
        # proven here on the CPU all the same, with that rule lifted.
        from loratui import preflight

        monkeypatch.setattr(preflight, "precision_problems", lambda precision, machine: [])
