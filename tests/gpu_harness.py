"""One training run of the GPU matrix, and every check made on it, for any model and device.

``tests/test_gpu_train.py`` runs it on a CUDA GPU with the full-size ``loratui:sd15-random`` at
512 px; ``tests/test_gpu_harness.py`` runs it on the CPU with the tiny model, so the harness itself
is proven on machines without a GPU.

A run is checked three ways:
1. every step's loss is finite;
2. the LoRA moved: every ``lora_up`` weight (zero at the start, as peft initialises B) is
   non-zero in the saved file, for the UNet and, when trained, the text encoder;
3. the saved kohya file, loaded with diffusers' ``load_lora_weights`` into a
   ``StableDiffusionPipeline`` of the same base model on the same device, gives the trained model's
   output (text-encoder hidden states and UNet noise prediction, 2 latents x 2 timesteps x 2
   captions), compared twice:

   - in float32: both models cast to float32 (the pipeline is loaded in the training dtype first,
     so its base weights are exactly the values trained with), no autocast. The only difference
     left is the fp16 rounding of the LoRA weights in the file (relative 2^-11), so the tolerance
     is tight: ``FLOAT32_TOLERANCE`` of the LoRA's own effect, |trained - base|.
   - in the training precision (fp16/bf16), under the autocast the engine trains with. There a
     fixed tolerance would be a guess: the file rounds the LoRA to fp16, autocast rounds it to the
     compute dtype (in bf16: fp32->fp16->bf16 against fp32->bf16, one bf16 ulp apart in a few
     percent of the weights), and any such difference changes how every later bf16 operation
     rounds. So the tolerance is measured, not assumed: the precision's own rounding noise is the
     distance between the trained model evaluated in that precision and in float32, and the
     reloaded file may differ from the trained model by ``NOISE_FACTOR`` times that (two
     evaluations, each that far from float32) plus ``FLOAT32_TOLERANCE``. That the LoRA is applied
     at all in that precision is shown by its effect standing out of the noise (``MAX_NOISE``).

   The LoRA's effect must be measurable (``MIN_EFFECT`` of the base output), or the comparison
   would prove nothing; the tests' learning rates are chosen to make it so in a few steps.
"""

from __future__ import annotations

import contextlib
import gc
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.conftest import train_in_process, write_config

CAPTIONS = ("ohwx thing, a photo", "ohwx thing on a table", "a close-up of ohwx thing", "ohwx thing, outdoors")
IMAGES = 8
REPEATS = 10

# Norms are Frobenius norms over the whole output; see the module docstring.
MIN_EFFECT = 1e-3  # |trained - base| / |base|: the LoRA must change the output at least this much
FLOAT32_TOLERANCE = 1e-2  # |loaded - trained| / |trained - base| in float32 (expected ~1e-3: fp16 rounding)
NOISE_FACTOR = 2.5  # in fp16/bf16: |loaded - trained| <= this x the precision's noise (+ FLOAT32_TOLERANCE)
MAX_NOISE = 0.5  # ...a noise that must stay below half the LoRA's effect, or the comparison says nothing


@dataclass(frozen=True)
class Entry:
    """One cell of the matrix."""

    id: str
    precision: str  # "no" (float32), "fp16" or "bf16"
    batch_size: int
    optimizer: str
    lr: float
    args: tuple[str, ...] = ()
    gradient_checkpointing: bool = False
    cache_latents: str = "memory"  # or "off": the VAE encodes every batch
    train_text_encoder: bool = False
    steps: int = 5


@dataclass
class Comparison:
    """How close the reloaded file comes to the trained model, for one output (the UNet's noise
    prediction or the text encoder's hidden states). All but ``effect`` are in units of the
    LoRA's effect, |trained - base| in float32."""

    effect: float  # |trained - base| / |base|, float32
    error: float  # |loaded - trained|, float32
    noise: float  # |trained in the training precision - trained in float32|: that precision's rounding noise
    error_low: float  # |loaded - trained|, both in the training precision under autocast

    def __str__(self) -> str:
        return (
            f"LoRA effect {self.effect:.3g} of the base output; in units of that effect: float32 error "
            f"{self.error:.3g}, training-precision error {self.error_low:.3g}, its rounding noise {self.noise:.3g}"
        )


@dataclass
class EntryResult:
    device: str  # the run_started event's: "cuda", "cpu", ...
    losses: list[float]
    lora_file: Path
    up_weights: dict[str, int] = field(default_factory=dict)  # {"unet": count, "te": count}
    comparisons: dict[str, Comparison] = field(default_factory=dict)  # {"unet": ..., "te": ...}


def make_dataset(folder: Path, resolution: int) -> Path:
    """``IMAGES`` smooth random-colour PNGs of resolution x resolution with captions, in a
    kohya-style ``img/10_ohwx thing/`` folder. Deterministic; returns the ``img`` folder."""
    from PIL import Image

    concept = folder / "img" / f"{REPEATS}_ohwx thing"
    concept.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    for index in range(IMAGES):
        coarse = torch.rand(1, 3, 6, 6, generator=generator)
        pixels = torch.nn.functional.interpolate(
            coarse, size=(resolution, resolution), mode="bicubic", align_corners=False
        )
        pixels = (pixels.clamp(0, 1)[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        Image.fromarray(pixels, "RGB").save(concept / f"{index:02d}.png")
        (concept / f"{index:02d}.txt").write_text(CAPTIONS[index % len(CAPTIONS)])
    return folder / "img"


def entry_config(entry: Entry, model: str, resolution: int) -> dict:
    te_lr = entry.lr if entry.train_text_encoder else 0.0
    return {
        "model": {"path": model},
        "dataset": {
            "image_dir": "img",
            "reg_dir": "",
            "resolution": resolution,
            "enable_buckets": False,
            "cache_latents": entry.cache_latents,
        },
        "network": {"rank": 8, "alpha": 4.0},
        "training": {
            "batch_size": entry.batch_size,
            "epochs": 1,
            "max_train_steps": entry.steps,
            "mixed_precision": entry.precision,
            "seed": 11,
            "gradient_checkpointing": entry.gradient_checkpointing,
        },
        "optimizer": {
            "name": entry.optimizer,
            "args": list(entry.args),
            "unet_lr": entry.lr,
            "text_encoder_lr": te_lr,
            "scheduler": "constant",
        },
        "output": {
            "name": "gpu_lora",
            "output_dir": "model",
            "log_dir": "log",
            "save_every_n_epochs": 0,
            "save_state": False,
            "save_precision": "fp16",
        },
    }


def run_entry(folder: Path, entry: Entry, model: str, model_folder: Path, resolution: int) -> EntryResult:
    """Train ``entry`` in this process, check it (asserts), free the device; returns the figures."""
    make_dataset(folder, resolution)
    recorder, trainer = train_in_process(write_config(folder, entry_config(entry, model, resolution)))
    try:
        steps = recorder.of("step")
        losses = [s["loss"] for s in steps]
        assert len(steps) == entry.steps, f"{entry.id}: {len(steps)} steps, expected {entry.steps}"
        assert all(math.isfinite(loss) for loss in losses), f"{entry.id}: losses {losses}"
        lora_file = folder / "model" / "gpu_lora.safetensors"
        result = EntryResult(recorder.of("run_started")[0]["device"], losses, lora_file)
        result.up_weights = _check_lora_moved(entry, lora_file)
        _check_reload(entry, trainer, lora_file, model_folder, resolution, result)
        return result
    finally:
        del trainer
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _check_lora_moved(entry: Entry, lora_file: Path) -> dict[str, int]:
    tensors = load_file(lora_file)
    counts = {}
    for prefix, name, expected in (("lora_unet_", "unet", True), ("lora_te_", "te", entry.train_text_encoder)):
        ups = {k: v for k, v in tensors.items() if k.startswith(prefix) and k.endswith(".lora_up.weight")}
        if not expected:
            assert not ups, f"{entry.id}: the text encoder was frozen but the file has {len(ups)} lora_te_ tensors"
            continue
        assert ups, f"{entry.id}: no {prefix} tensors in {lora_file.name}"
        still_zero = sorted(k for k, v in ups.items() if not v.float().abs().max() > 0)
        assert not still_zero, (
            f"{entry.id}: {len(still_zero)} of {len(ups)} {name} lora_up weights did not move "
            f"from their zero start, e.g. {still_zero[:3]}"
        )
        counts[name] = len(ups)
    return counts


def _check_reload(
    entry: Entry, trainer, lora_file: Path, model_folder: Path, resolution: int, result: EntryResult
) -> None:
    from diffusers import StableDiffusionPipeline

    device = trainer.device
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(entry.precision, torch.float32)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, resolution // 8, resolution // 8, generator=generator).to(device)
    timesteps = torch.tensor([150, 700], device=device)
    tokenizer = trainer.model.tokenizer
    ids = tokenizer(
        list(CAPTIONS[:2]), padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids.to(device)

    def outputs(unet, text_encoder, compute_dtype):
        """(text-encoder hidden states, UNet output), the UNet fed its own text encoder's output,
        as the engine does; under autocast unless float32."""
        autocast = compute_dtype != torch.float32
        context = torch.autocast(device.type, dtype=compute_dtype) if autocast else contextlib.nullcontext()
        with torch.no_grad(), context:
            hidden = text_encoder(ids)[0]
            sample = unet(latents.to(compute_dtype), timesteps, hidden.to(compute_dtype)).sample
        return hidden.float(), sample.float()

    # The pipeline in the training dtype, so its base weights are the values trained with.
    pipe = StableDiffusionPipeline.from_pretrained(
        model_folder, torch_dtype=dtype, local_files_only=True, safety_checker=None, requires_safety_checker=False
    ).to(device)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(lora_file))
    try:
        # 1. In the training precision, under the engine's autocast.
        trained_low = outputs(trainer._unwrapped("unet"), trainer._unwrapped("te"), dtype)
        loaded_low = outputs(pipe.unet, pipe.text_encoder, dtype)

        # 2. In float32: the same weights, no autocast; only the file's fp16 rounding differs.
        unet = trainer.accelerator.unwrap_model(trainer.model.unet, keep_fp32_wrapper=False).float()
        text_encoder = trainer.accelerator.unwrap_model(trainer.model.text_encoder, keep_fp32_wrapper=False).float()
        pipe.unet.float()
        pipe.text_encoder.float()
        trained = outputs(unet, text_encoder, torch.float32)
        loaded = outputs(pipe.unet, pipe.text_encoder, torch.float32)
        pipe.disable_lora()
        base = outputs(pipe.unet, pipe.text_encoder, torch.float32)
    finally:
        del pipe
        gc.collect()

    parts = {"unet": 1, "te": 0} if entry.train_text_encoder else {"unet": 1}
    for name, index in parts.items():
        effect = (trained[index] - base[index]).norm()
        comparison = Comparison(
            effect=(effect / base[index].norm()).item(),
            error=((loaded[index] - trained[index]).norm() / effect).item(),
            noise=((trained_low[index] - trained[index]).norm() / effect).item(),
            error_low=((loaded_low[index] - trained_low[index]).norm() / effect).item(),
        )
        result.comparisons[name] = comparison
        where = f"{entry.id}, {name}"
        assert comparison.effect > MIN_EFFECT, f"{where}: the LoRA barely changed the model ({comparison})"
        assert comparison.error < FLOAT32_TOLERANCE, (
            f"{where}, float32: the reloaded file is off by {comparison.error:.3g} of the LoRA's effect "
            f"(tolerance {FLOAT32_TOLERANCE}); {comparison}"
        )
        if dtype == torch.float32:
            continue
        assert comparison.noise < MAX_NOISE, (
            f"{where}: the LoRA's effect hardly stands out of {entry.precision}'s rounding noise, so the comparison "
            f"in {entry.precision} would mean little; raise this entry's lr or steps ({comparison})"
        )
        tolerance = NOISE_FACTOR * comparison.noise + FLOAT32_TOLERANCE
        assert comparison.error_low < tolerance, (
            f"{where}, {entry.precision} under autocast: the reloaded file is off by {comparison.error_low:.3g} of "
            f"the LoRA's effect, more than {entry.precision}'s own rounding noise allows ({tolerance:.3g}); {comparison}"
        )
