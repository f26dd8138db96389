"""Engine seconds per step against a bare diffusers-style loop. Run: ``python bench/engine_step.py``.

What is measured: the seconds per optimizer step of loratui's real training engine
(``engine.train.Trainer``, run in this process on a copy of ``sample_project/img``, its ``step``
events read from an in-memory stream) and of a bare loop written below in the manner of diffusers'
``train_text_to_image_lora.py`` example. The result is the ratio engine / baseline of the median
seconds per step; the goal is 1.05 or less, i.e. the engine's bookkeeping (events, progress,
checks, accelerate) costs at most 5 % on top of the training itself.

Why the comparison is fair: both sides do the same work per step.
- Same model: the built-in tiny SD1.5-shaped model (``ensure_tiny_model()``); the baseline loads
  it with diffusers/transformers ``from_pretrained``.
- Same LoRA: the baseline attaches it with the engine's own ``find_targets`` + ``attach_lora``
  (UNet and text encoder, rank 8, alpha 4), and the trainable parameter counts are asserted equal.
- Same data and shapes: the 8 sample images x 10 repeats at 128 px, batch size 4, fp32. Buckets
  are off, so every batch of both sides is 4 x 128 x 128 (latents 4 x 4 x 16 x 16).
- Same step: latents sampled from VAE posteriors computed once (as the engine's memory cache
  does), noise, random timesteps, ``DDPMScheduler.add_noise``, captions tokenized and run through
  the trained text encoder, UNet forward, MSE, backward, gradient clipping at 1.0, AdamW step,
  cosine LR scheduler step, ``zero_grad``, and the loss read back with ``.item()``.
- Same clock: both count a step from the end of the previous one (``perf_counter``), as the
  engine's ``s_per_step`` does, and both drop the first ``--warmup`` steps.
- Same conditions: they run in one process with the same torch thread count, alternating
  (engine, baseline, baseline, engine, ...) so background load hits both alike, each run after
  ``torch.manual_seed``. Medians are reported because the machine may be shared.

The baseline uses plain torch, not ``accelerate``: it is the least a training loop can do, so
anything the engine adds (accelerate's wrappers included) shows up in the ratio. The loop
(``run_baseline``) takes a ``BareSetup``; its defaults are this comparison, and
``bench/gpu_train.py`` runs the same loop on the full-size SD 1.5 in bf16.

Options: ``--steps`` (measured steps per run, after warm-up), ``--warmup`` (steps dropped per
run), ``--rounds`` (engine/baseline pairs), ``--threads`` (torch threads for both sides; 1 is
steadier on a busy machine), ``--quick`` (a short smoke run). Results: docs/benchmarks.md.
Exit status is always 0: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from engine.lora import TEXT_ENCODER_BLOCKS, UNET_ATTENTION_BLOCKS, attach_lora, find_targets, lora_parameters

REPO = Path(__file__).resolve().parent.parent
SAMPLE_IMAGES = REPO / "sample_project" / "img"

SEED = 42
RESOLUTION = 128
BATCH_SIZE = 4
RANK, ALPHA = 8, 4.0
UNET_LR, TEXT_ENCODER_LR = 1e-4, 5e-5
MAX_GRAD_NORM = 1.0
SCHEDULER = "cosine"


# ----------------------------------------------------------------------------- the engine
def engine_config(total_steps: int) -> dict:
    """The run's config: the sample dataset at 128 px, nothing saved but the final file."""
    return {
        "model": {"path": "loratui:tiny-sd"},
        "dataset": {
            "image_dir": "img",
            "reg_dir": "",
            "resolution": RESOLUTION,
            "enable_buckets": False,
            "cache_latents": "memory",
        },
        "network": {"rank": RANK, "alpha": ALPHA},
        "training": {
            "batch_size": BATCH_SIZE,
            "epochs": 1000,
            "max_train_steps": total_steps,
            "mixed_precision": "no",
            "seed": SEED,
            "max_grad_norm": MAX_GRAD_NORM,
        },
        "optimizer": {
            "name": "AdamW",
            "unet_lr": UNET_LR,
            "text_encoder_lr": TEXT_ENCODER_LR,
            "scheduler": SCHEDULER,
            "warmup_steps": 0,
        },
        "output": {
            "name": "bench",
            "output_dir": "model",
            "log_dir": "log",
            "save_every_n_epochs": 0,
            "save_state": False,
        },
    }


def run_engine(total_steps: int, warmup: int, config: dict | None = None) -> tuple[list[float], int]:
    """Train with the real Trainer on ``config`` (default: engine_config's); return the post-warm-up
    ``s_per_step`` values and the number of trainable LoRA parameters (bench/sdxl_step.py and
    bench/flux_step.py pass their own configs)."""
    from accelerate.state import AcceleratorState

    from engine.events import EventWriter
    from engine.train import StopFlag, Trainer
    from loratui.config import config_from_dict

    # The engine runs one training per process; accelerate keeps its state per process, so each
    # run here starts from a clean one, as a fresh engine process would.
    AcceleratorState._reset_state(reset_partial_state=True)
    with tempfile.TemporaryDirectory(prefix="loratui-bench-") as temp:
        project = Path(temp)
        shutil.copytree(SAMPLE_IMAGES, project / "img")
        cfg = config_from_dict(config or engine_config(total_steps), base_dir=project)
        stream = io.StringIO()
        torch.manual_seed(SEED)
        trainer = Trainer(cfg, EventWriter(stream), StopFlag())
        trainer.run()
        trainable = sum(p.numel() for part in trainer.parts for p in lora_parameters(part.module))
        del trainer
    events = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    seconds = [e["s_per_step"] for e in events if e["type"] == "step"]
    assert len(seconds) == total_steps, f"the engine ran {len(seconds)} steps, expected {total_steps}"
    return seconds[warmup:], trainable


# --------------------------------------------------------------------------- the baseline
@dataclass(frozen=True)
class BareSetup:
    """What the bare loop trains. The defaults are this script's comparison; bench/gpu_train.py
    runs the same loop on the full-size SD 1.5 with its own settings."""

    model_folder: Path | None = None  # a diffusers folder; None: the built-in tiny model
    images: Path = SAMPLE_IMAGES  # a kohya-style folder: <repeats>_<name>/ with .png + .txt pairs
    resolution: int = RESOLUTION
    batch_size: int = BATCH_SIZE
    rank: int = RANK
    alpha: float = ALPHA
    unet_lr: float = UNET_LR
    text_encoder_lr: float = TEXT_ENCODER_LR  # 0: the text encoder is frozen and its outputs computed once
    scheduler: str = SCHEDULER
    # "no": everything in float32. "bf16": base weights in bf16, LoRA weights in float32, the
    # forward pass under autocast, as the engine's mixed precision does.
    precision: str = "no"
    gradient_checkpointing: bool = False


def load_model(folder: Path | None = None):
    """A model's parts, loaded the way the diffusers examples load a model (default: the tiny one)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from engine.tiny_model import ensure_tiny_model

    folder = folder or ensure_tiny_model()
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae")
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    noise_scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    return tokenizer, text_encoder, vae, unet, noise_scheduler


def load_tiny_model():
    """The tiny model's parts, loaded the way the diffusers examples load a model."""
    return load_model(None)


def add_lora(
    unet, text_encoder, rank: int = RANK, alpha: float = ALPHA, train_text_encoder: bool = True
) -> list[torch.nn.Parameter]:
    """The engine's LoRA modules on the UNet (and the text encoder); returns UNet params then
    text-encoder params, all in float32 (as the engine keeps them)."""
    for model in (unet, text_encoder):
        model.requires_grad_(False)
    attach_lora(unet, find_targets(unet, UNET_ATTENTION_BLOCKS, rank, alpha))
    if train_text_encoder:
        attach_lora(text_encoder, find_targets(text_encoder, TEXT_ENCODER_BLOCKS, rank, alpha))
    unet.train()
    text_encoder.train(train_text_encoder)
    params = lora_parameters(unet) + lora_parameters(text_encoder)
    for param in params:
        param.data = param.data.float()
    return params


def sample_images(folder: Path = SAMPLE_IMAGES, resolution: int = RESOLUTION) -> list[tuple[torch.Tensor, str]]:
    """Each image resized (shorter side to ``resolution``) and centre-cropped, in [-1, 1], with its caption."""
    from PIL import Image

    items = []
    for path in sorted(folder.glob("*/*.png")):
        with Image.open(path) as image:
            image = image.convert("RGB")
            scale = resolution / min(image.size)
            width, height = max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale))
            image = image.resize((width, height), Image.Resampling.LANCZOS)
            left, top = (width - resolution) // 2, (height - resolution) // 2
            image = image.crop((left, top, left + resolution, top + resolution))
            pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        pixels = pixels.view(resolution, resolution, 3).permute(2, 0, 1).float() / 127.5 - 1.0
        items.append((pixels, path.with_suffix(".txt").read_text().strip()))
    return items


def repeats_of(folder_name: str) -> int:
    return int(folder_name.split("_", 1)[0])


def run_baseline(
    total_steps: int, warmup: int, setup: BareSetup = BareSetup(), on_loop_start: Callable[[], None] | None = None
) -> tuple[list[float], int]:
    """The bare loop; returns post-warm-up seconds per step and the trainable parameter count.
    ``on_loop_start`` is called once everything is set up, just before the first step."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
    from diffusers.optimization import get_scheduler

    from engine.train import pick_device  # the device the engine would train on: the same here

    if setup.precision not in ("no", "bf16"):
        raise ValueError(f"the bare loop runs in float32 or bf16, not {setup.precision}")
    device = pick_device()
    weight_dtype = torch.bfloat16 if setup.precision == "bf16" else torch.float32
    train_text_encoder = setup.text_encoder_lr > 0
    batch_size = setup.batch_size
    torch.manual_seed(SEED)
    tokenizer, text_encoder, vae, unet, noise_scheduler = load_model(setup.model_folder)
    vae.to(device, dtype=torch.float32)
    text_encoder.to(device, dtype=weight_dtype)
    unet.to(device, dtype=weight_dtype)
    vae.requires_grad_(False).eval()
    params = add_lora(unet, text_encoder, setup.rank, setup.alpha, train_text_encoder)
    if setup.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if train_text_encoder:
            text_encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    groups = [{"params": lora_parameters(unet), "lr": setup.unet_lr}]
    if train_text_encoder:
        groups.append({"params": lora_parameters(text_encoder), "lr": setup.text_encoder_lr})
    optimizer = torch.optim.AdamW(groups)
    lr_scheduler = get_scheduler(
        setup.scheduler, optimizer=optimizer, num_warmup_steps=0, num_training_steps=total_steps
    )

    def autocast():
        if weight_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=weight_dtype)

    def encode_text(texts: list[str]) -> torch.Tensor:
        input_ids = tokenizer(
            texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(device)
        with autocast():
            return text_encoder(input_ids)[0]

    # Latents precomputed once: the VAE posterior (mean, logvar) of each image, sampled each step.
    images = sample_images(setup.images, setup.resolution)
    pixels = torch.stack([image for image, _ in images])
    with torch.no_grad():
        posteriors = torch.cat(
            [vae.encode(chunk.to(device)).latent_dist.parameters for chunk in pixels.split(max(1, batch_size))]
        )
    captions = [caption for _, caption in images]
    frozen_text: dict[str, torch.Tensor] = {}
    if not train_text_encoder:  # a frozen text encoder: each caption's output once, as the engine caches it
        with torch.no_grad():
            frozen_text = dict(zip(captions, encode_text(captions), strict=True))
    repeats = repeats_of(next(p for p in setup.images.iterdir() if p.is_dir()).name)
    items_per_epoch = len(images) * repeats

    if on_loop_start is not None:
        on_loop_start()
    seconds: list[float] = []
    order: list[int] = []
    last_tick = time.perf_counter()
    for _ in range(total_steps):
        if len(order) < batch_size:  # a new epoch: every image `repeats` times, shuffled
            order = (torch.randperm(items_per_epoch) % len(images)).tolist()
        batch, order = order[:batch_size], order[batch_size:]

        latents = DiagonalGaussianDistribution(posteriors[batch]).sample() * vae.config.scaling_factor
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (batch_size,), device=device).long()
        noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
        if train_text_encoder:
            encoder_hidden_states = encode_text([captions[i] for i in batch])
        else:
            encoder_hidden_states = torch.stack([frozen_text[captions[i]] for i in batch])
        with autocast():
            model_pred = unet(noisy_latents.to(weight_dtype), timesteps, encoder_hidden_states.to(weight_dtype)).sample
        loss = F.mse_loss(model_pred.float(), noise.float(), reduction="mean")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # read back for logging, as every loop does (on a GPU: waits for the step)

        now = time.perf_counter()
        seconds.append(now - last_tick)
        last_tick = now
    return seconds[warmup:], sum(p.numel() for p in params)


# ----------------------------------------------------------------------------- reporting
def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def describe(name: str, seconds: list[float]) -> str:
    median = statistics.median(seconds)
    return (
        f"{name:<9} {median * 1000:>9.1f} {percentile(seconds, 0.9) * 1000:>9.1f} "
        f"{BATCH_SIZE / median:>10.1f} {len(seconds):>6}"
    )


def quiet_libraries() -> None:
    """No progress bars or load-time warnings from diffusers/transformers between the table's lines."""
    import diffusers
    import transformers

    for library in (diffusers, transformers):
        library.utils.logging.set_verbosity_error()
        library.utils.logging.disable_progress_bar()


def print_environment() -> None:
    from engine.train import device_name, pick_device

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs, "
        f"device {device_name(pick_device())}, Python {platform.python_version()}, {platform.machine()}"
    )
    print_load("at start")


def print_load(when: str) -> None:
    if hasattr(os, "getloadavg"):
        print(f"load average {when}: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


def measure(
    rounds: int, total: int, warmup: int, runs: dict[str, Callable] | None = None
) -> tuple[dict[str, list[float]], dict[str, list[float]], int]:
    """Alternate the two sides; return all post-warm-up step times, each run's median, and the
    (asserted equal) trainable parameter count. ``runs``: the two sides' functions, "engine" and
    "baseline" (default: this script's)."""
    runs = runs or {"engine": run_engine, "baseline": run_baseline}
    seconds: dict[str, list[float]] = {"engine": [], "baseline": []}
    per_run: dict[str, list[float]] = {"engine": [], "baseline": []}
    trainable: dict[str, int] = {}
    for index in range(rounds):
        # engine, baseline | baseline, engine | ...: neither side always runs first.
        for name in ("engine", "baseline") if index % 2 == 0 else ("baseline", "engine"):
            start = time.perf_counter()
            values, trainable[name] = runs[name](total, warmup)
            seconds[name] += values
            per_run[name].append(statistics.median(values))
            print(
                f"  round {index + 1} {name:<9} median {per_run[name][-1] * 1000:7.1f} ms/step "
                f"({time.perf_counter() - start:.1f} s with set-up)",
                flush=True,
            )
            gc.collect()
        assert trainable["engine"] == trainable["baseline"], f"trainable parameters differ: {trainable}"
    return seconds, per_run, trainable["engine"]


def report(seconds: dict[str, list[float]], per_run: dict[str, list[float]], trainable: int) -> None:
    print(f"\ntrainable LoRA parameters: {trainable:,} on both sides")
    print(f"{'':<9} {'median ms':>9} {'p90 ms':>9} {'samples/s':>10} {'steps':>6}")
    for name in ("engine", "baseline"):
        print(describe(name, seconds[name]))
    ratio = statistics.median(seconds["engine"]) / statistics.median(seconds["baseline"])
    paired = [e / b for e, b in zip(per_run["engine"], per_run["baseline"], strict=True)]
    print(f"\nengine / baseline, median s/step: {ratio:.3f}  (goal: 1.05 or less)")
    print(f"per-round ratios: {', '.join(f'{r:.3f}' for r in paired)}  (median {statistics.median(paired):.3f})")
    if max(paired) / min(paired) > 1.15:
        print(
            "note: the rounds disagree by more than 15 %: the background load changed during the run. "
            "Trust the median of the per-round ratios, or run again (--threads 1 suffers less from a busy core)."
        )
    print_load("at end")


def step_arguments(description: str, argv: list[str] | None) -> argparse.Namespace:
    """The options of every engine-against-bare benchmark (this one, sdxl_step.py, flux_step.py), with
    ``--quick`` and ``--threads`` applied and the libraries quietened; ``total``: steps per run."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=50, help="measured steps per run, after warm-up (default 50)")
    parser.add_argument("--warmup", type=int, default=10, help="steps dropped at the start of each run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="engine/baseline pairs, alternated (default 3)")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads for both sides (default: torch's own choice, one per core)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 rounds of 3 warm-up + 5 measured steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.rounds = 5, 3, 2
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    args.rounds, args.warmup = max(1, args.rounds), max(0, args.warmup)
    args.total = args.warmup + max(1, args.steps)
    quiet_libraries()
    return args


def run_measurement(main: Callable[[], object]) -> None:
    """Run a benchmark's ``main`` as a measurement: report what went wrong, never fail a pipeline."""
    try:
        main()
    except Exception:
        traceback.print_exc()
        print("benchmark failed (see above); no figures", file=sys.stderr)
    sys.exit(0)


def main(argv: list[str] | None = None) -> int:
    args = step_arguments(__doc__.splitlines()[0], argv)
    print_environment()
    print(
        f"tiny SD1.5-shaped model, {RESOLUTION} px, batch {BATCH_SIZE}, LoRA rank {RANK} on UNet + text encoder, "
        f"fp32; {args.rounds} rounds x {args.total} steps, the first {args.warmup} of each dropped"
    )
    report(*measure(args.rounds, args.total, args.warmup))
    return 0


if __name__ == "__main__":
    run_measurement(main)
