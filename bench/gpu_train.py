"""SD 1.5, SDXL and FLUX.1 LoRA training on a GPU: samples/s, peak VRAM and MFU (SD 1.5: engine against a bare loop).
Run: ``python bench/gpu_train.py`` (``--quick`` for a smoke run).

What is measured, for SD 1.5 at 512 px, batch 1 and 4, with and without gradient checkpointing:
- samples per second: batch size / the median seconds per optimizer step (after warm-up), for
  loratui's engine (``engine.train.Trainer``, run in this process) and for the bare loop of
  ``bench/engine_step.py`` (``run_baseline`` with a ``BareSetup``), on the same model, data and
  settings, alternated in the same process. Their ratio (engine / bare, median s/step) is the
  engine's overhead on a GPU, where a step is short and fixed per-step costs weigh more.
- peak VRAM, two ways, over the training loop only (model loading, latent caching and the
  engine's step-0 evaluation come before it): torch's peak allocated bytes
  (``torch.cuda.max_memory_allocated``, reset when the loop starts) and NVML's peak used memory of
  the device (``loratui.gpu.Telemetry``, sampled every 0.1 s by a thread: it includes the CUDA
  context, the allocator's cache and anything else on the GPU) and, where NVML can see this
  process's pid, the memory NVML attributes to it.
- model FLOPs utilisation (MFU): FLOPs per sample, counted with ``torch.utils.flop_counter``
  on one forward + backward of the UNet with its LoRA (batch 1, without gradient checkpointing:
  model FLOPs, the recomputation of checkpointing is not useful work), x samples/s, divided by the
  device's dense bf16 tensor peak from the datasheet table ``DENSE_BF16_PEAK_TFLOPS``. Unknown
  devices (and MIG slices) get N/A rather than a guess.

The model is ``loratui:sd15-random``: the published SD 1.5 UNet, VAE and CLIP-L shapes with
random weights (``engine/reference_models.py``), built on first use (~1 minute, 2.1 GB in the
loratui cache), so nothing is downloaded; the speed and memory of a step depend on the shapes
only. Both sides: bf16 mixed precision (base weights bf16, LoRA float32, autocast), LoRA rank 16 /
alpha 8 on the UNet's attention blocks, text encoder frozen (its outputs computed once per
caption), latents cached, AdamW at 1e-4, constant LR, gradient clipping at 1.0, 8 generated
512 px images x 10 repeats, buckets off.

SDXL (a section after SD 1.5's): the engine alone (the bare loop against it is
``bench/sdxl_step.py``'s, on the tiny SDXL), on ``loratui:sdxl-random`` (the published SDXL base
1.0 UNet, VAE and both text encoders' shapes, random weights, built on first use: minutes, 6.9 GB)
at 1024 px, with the usual SDXL LoRA recipe: bf16, gradient checkpointing on, UNet only
(``network.train_unet_only``), text encoder outputs cached in memory and the encoders moved off
the GPU (``dataset.cache_text_encoder_outputs = "memory"``), latents cached, the VAE in float32;
LoRA rank 16 / alpha 8 on the UNet's attention blocks, AdamW at 1e-4 as above. Measured as
above: samples/s, peak VRAM over the training loop (torch and NVML) and MFU, its FLOPs counted
on the SDXL UNet fed the pooled text vector and the 6 time ids too.

FLUX.1 dev (a section after SDXL's): the engine alone, on ``loratui:flux-random`` (FLUX.1 [dev]'s
transformer, AE, CLIP-L and T5-XXL shapes, random weights, its large matrices stored in float8;
built on first use: minutes, ~17 GB) at 1024 px with the low-memory Flux recipe: bf16 with the frozen
weights stored in float8 (``model.fp8_base``), gradient checkpointing, the transformer only, both text
encoders' outputs cached in memory, latents cached, sd-scripts' advised sampling (shift 3.1582, raw
prediction, guidance 1.0), T5 captions at dev's default 512 tokens; LoRA rank 16 / alpha 8 on every
Linear of the double and single blocks, AdamW at 1e-4. Per batch size, without block swap and with
``training.blocks_to_swap`` ``FLUX_BLOCKS_TO_SWAP`` (16: 8 double and 16 single blocks in CPU memory).
Measured: samples/s and peak VRAM over the training loop (torch and NVML), as above; no MFU (the
FLOPs of a Flux step are not counted here).

Without CUDA (or with ``--cpu``) it falls back to the tiny models on the CPU in float32
(``loratui:tiny-sd``, ``loratui:tiny-sdxl`` and ``loratui:tiny-flux`` at 128 px; Flux's fp8 weights
then compute in float32, and its block swap moves both of the tiny model's blocks) and says so on its
first line and above each table: those figures show that the script runs, they are not GPU figures.

Options: ``--steps``, ``--warmup``, ``--rounds`` (engine/bare pairs per setting; SDXL, Flux: engine runs),
``--batch-sizes``, ``--checkpointing`` (off, on or both; SD 1.5 only), ``--models`` (any of sd15, sdxl,
flux; default all three), ``--threads`` (CPU fallback), ``--cpu``, ``--quick``.
Results: docs/benchmarks.md. Exit status is always 0: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import io
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/engine_step.py, however this is started
from engine_step import SEED, BareSetup, percentile, print_load, quiet_libraries, run_baseline  # noqa: E402

from engine.lora import UNET_ATTENTION_BLOCKS, attach_lora, find_targets, lora_parameters  # noqa: E402

RANK, ALPHA = 16, 8.0
UNET_LR = 1e-4
MAX_GRAD_NORM = 1.0
IMAGES, REPEATS = 8, 10
GIB = 1024**3
FLUX_BLOCKS_TO_SWAP = 16  # the Flux section's block swap on FLUX.1 (of its 19 double and 38 single blocks)
TINY_FLUX_BLOCKS_TO_SWAP = 2  # loratui:tiny-flux has one block of each kind: both move
NO_GPU_LABEL = "NO GPU: tiny model on CPU, not a GPU figure"

# Dense (no sparsity) BF16 tensor-core peaks in TFLOPS, from NVIDIA's datasheets (which print the
# sparse figure, twice these), matched against torch.cuda.get_device_name() in this order.
DENSE_BF16_PEAK_TFLOPS: list[tuple[str, str, float]] = [
    (r"\bMIG\b", "a MIG slice: its share of the peak is not known here", 0.0),
    (r"\bH100\b.*\bPCIe\b", "H100 PCIe", 756.0),
    (r"\bH100\b.*\bNVL\b", "H100 NVL", 835.0),
    (r"\bH100\b", "H100 SXM", 989.4),  # "NVIDIA H100 80GB HBM3"
    (r"\bH200\b.*\bNVL\b", "H200 NVL", 835.0),
    (r"\bH200\b", "H200 SXM", 989.4),
    (r"\bA100\b", "A100 (SXM or PCIe)", 312.0),
    (r"\bL40S\b", "L40S", 362.05),
    (r"\bRTX 4090$", "GeForce RTX 4090 (FP32 accumulate)", 165.2),
]


def dense_bf16_peak(device_name: str) -> tuple[float | None, str]:
    """(TFLOPS or None, what it was matched as)."""
    for pattern, label, tflops in DENSE_BF16_PEAK_TFLOPS:
        if re.search(pattern, device_name):
            return (tflops or None), label
    return None, "not in the table"


# ----------------------------------------------------------------------------- the setting
@dataclass(frozen=True)
class Plan:
    gpu: bool
    model: str  # the built-in model's name
    model_folder: Path
    resolution: int
    precision: str  # the engine's training.mixed_precision
    family: str = "sd1"  # the engine's model.family

    @property
    def device(self) -> torch.device:
        return torch.device("cuda" if self.gpu else "cpu")


def make_plan(force_cpu: bool) -> Plan:
    if torch.cuda.is_available() and not force_cpu:
        from engine.reference_models import SD15_RANDOM_NAME, ensure_sd15_random

        started = time.perf_counter()
        folder = ensure_sd15_random()
        print(f"{SD15_RANDOM_NAME}: {folder} (ready in {time.perf_counter() - started:.0f} s)")
        return Plan(True, SD15_RANDOM_NAME, folder, 512, "bf16")
    from engine.tiny_model import BUILTIN_NAME, ensure_tiny_model

    return Plan(False, BUILTIN_NAME, ensure_tiny_model(), 128, "no")


def make_sdxl_plan(force_cpu: bool) -> Plan:
    if torch.cuda.is_available() and not force_cpu:
        from engine.reference_models import SDXL_RANDOM_NAME, ensure_sdxl_random

        started = time.perf_counter()
        folder = ensure_sdxl_random()
        print(f"{SDXL_RANDOM_NAME}: {folder} (ready in {time.perf_counter() - started:.0f} s)")
        return Plan(True, SDXL_RANDOM_NAME, folder, 1024, "bf16", "sdxl")
    from engine.tiny_sdxl import TINY_SDXL_NAME, ensure_tiny_sdxl

    return Plan(False, TINY_SDXL_NAME, ensure_tiny_sdxl(), 128, "no", "sdxl")


def make_flux_plan(force_cpu: bool) -> Plan:
    if torch.cuda.is_available() and not force_cpu:
        from engine.flux_random import FLUX_RANDOM_NAME, ensure_flux_random

        started = time.perf_counter()
        folder = ensure_flux_random()
        print(f"{FLUX_RANDOM_NAME}: {folder} (ready in {time.perf_counter() - started:.0f} s)")
        return Plan(True, FLUX_RANDOM_NAME, folder, 1024, "bf16", "flux")
    from engine.tiny_flux import TINY_FLUX_NAME, ensure_tiny_flux

    return Plan(False, TINY_FLUX_NAME, ensure_tiny_flux(), 128, "no", "flux")


def make_images(folder: Path, resolution: int) -> Path:
    """IMAGES smooth random-colour PNGs with captions in ``img/10_ohwx thing/``; returns ``img``."""
    from PIL import Image

    concept = folder / "img" / f"{REPEATS}_ohwx thing"
    concept.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    for index in range(IMAGES):
        coarse = torch.rand(1, 3, 6, 6, generator=generator)
        pixels = F.interpolate(coarse, size=(resolution, resolution), mode="bicubic", align_corners=False)
        pixels = (pixels.clamp(0, 1)[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        Image.fromarray(pixels, "RGB").save(concept / f"{index:02d}.png")
        (concept / f"{index:02d}.txt").write_text(("ohwx thing, a photo", "a close-up of ohwx thing")[index % 2])
    return folder / "img"


# ---------------------------------------------------------------------------- memory watch
class MemoryWatch:
    """Peak memory over one training loop: torch's peak allocated, NVML's used (device) and
    NVML's figure for this process, sampled by a thread from ``start()`` to ``stop()``."""

    INTERVAL_S = 0.1

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.telemetry = None
        self.nvml_index: int | None = None
        if device.type == "cuda":
            from engine.spill_watch import _nvml_index
            from loratui.gpu import Telemetry

            self.telemetry = Telemetry(with_processes=True)
            if self.telemetry.read().available:
                self.nvml_index = _nvml_index(device)
            else:
                self.telemetry = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.nvml_used: int | None = None
        self.nvml_process: int | None = None

    def driver(self) -> str | None:
        return self.telemetry.read().driver_version if self.telemetry else None

    def start(self) -> None:
        if self._thread is not None:  # the engine says "training" again after a pause; one window per run
            return
        self.nvml_used = self.nvml_process = None
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        if self.telemetry is not None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        else:
            self._thread = threading.Thread(target=lambda: None)  # marks the window as open

    def _sample(self) -> None:
        from loratui.gpu import process_memory

        while True:
            snapshot = self.telemetry.read()
            if snapshot.available and self.nvml_index is not None and self.nvml_index < len(snapshot.devices):
                used = snapshot.devices[self.nvml_index].memory_used
                if used is not None:
                    self.nvml_used = max(self.nvml_used or 0, used)
                own = process_memory(snapshot, os.getpid())
                if own is not None:
                    self.nvml_process = max(self.nvml_process or 0, own)
            if self._stop.wait(self.INTERVAL_S):
                return

    def stop(self) -> dict[str, int | None]:
        if self._thread is not None and self._thread.ident is not None:
            self._stop.set()
            self._thread.join()
        self._thread = None
        torch_peak = None
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch_peak = torch.cuda.max_memory_allocated()
        return {"torch_peak": torch_peak, "nvml_used": self.nvml_used, "nvml_process": self.nvml_process}

    def close(self) -> None:
        if self.telemetry is not None:
            self.telemetry.close()


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------ the two sides
def engine_config(plan: Plan, batch_size: int, checkpointing: bool, total_steps: int, blocks_to_swap: int = 0) -> dict:
    config = {
        "model": {"path": plan.model, "family": plan.family},
        "dataset": {
            "image_dir": "img",
            "reg_dir": "",
            "resolution": plan.resolution,
            "enable_buckets": False,
            "cache_latents": "memory",
        },
        "network": {"rank": RANK, "alpha": ALPHA},
        "training": {
            "batch_size": batch_size,
            "epochs": 1000,
            "max_train_steps": total_steps,
            "mixed_precision": plan.precision,
            "seed": SEED,
            "max_grad_norm": MAX_GRAD_NORM,
            "gradient_checkpointing": checkpointing,
        },
        "optimizer": {
            "name": "AdamW",
            "unet_lr": UNET_LR,
            "text_encoder_lr": 0.0,
            "scheduler": "constant",
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
    if plan.family == "sdxl":
        # The usual SDXL recipe: the text encoders frozen, their outputs computed once and the
        # encoders moved off the GPU.
        config["dataset"]["cache_text_encoder_outputs"] = "memory"
        config["network"]["train_unet_only"] = True
        config["optimizer"]["text_encoder_2_lr"] = 0.0
    if plan.family == "flux":
        # The low-memory Flux recipe (sd-scripts' advice for dev): fp8 base weights, the transformer
        # alone, both encoders' outputs cached, the shifted sigmoid sampling, raw prediction, guidance 1.
        config["model"].update({"fp8_base": True, "t5xxl_max_token_length": 0})  # 0: dev's 512 tokens
        config["dataset"]["cache_text_encoder_outputs"] = "memory"
        config["network"]["train_unet_only"] = True
        config["training"].update(
            {
                "blocks_to_swap": blocks_to_swap,
                "timestep_sampling": "shift",
                "discrete_flow_shift": 3.1582,
                "model_prediction_type": "raw",
                "guidance_scale": 1.0,
            }
        )
    return config


class _EventStream(io.StringIO):
    """The engine's event stream, in memory; opens the memory window when training starts."""

    def __init__(self, on_training) -> None:
        super().__init__()
        self.on_training = on_training

    def write(self, text: str) -> int:
        if '"phase":"training"' in text:
            self.on_training()
        return super().write(text)


def run_engine(
    plan: Plan,
    project: Path,
    batch_size: int,
    checkpointing: bool,
    total: int,
    warmup: int,
    watch: MemoryWatch,
    blocks_to_swap: int = 0,
) -> tuple[list[float], int, dict]:
    from accelerate.state import AcceleratorState

    from engine.events import EventWriter
    from engine.train import StopFlag, Trainer
    from loratui.config import config_from_dict

    AcceleratorState._reset_state(reset_partial_state=True)  # as a fresh engine process would start
    shutil.rmtree(project / "model", ignore_errors=True)
    cfg = config_from_dict(engine_config(plan, batch_size, checkpointing, total, blocks_to_swap), base_dir=project)
    stream = _EventStream(watch.start)
    torch.manual_seed(SEED)
    trainer = Trainer(cfg, EventWriter(stream), StopFlag())
    try:
        trainer.run()
        memory = watch.stop()
        trainable = sum(p.numel() for part in trainer.parts for p in lora_parameters(part.module))
    finally:
        del trainer
        release(plan.device)
    events = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    seconds = [e["s_per_step"] for e in events if e["type"] == "step"]
    assert len(seconds) == total, f"the engine ran {len(seconds)} steps, expected {total}"
    return seconds[warmup:], trainable, memory


def run_bare(
    plan: Plan, images: Path, batch_size: int, checkpointing: bool, total: int, warmup: int, watch: MemoryWatch
) -> tuple[list[float], int, dict]:
    setup = BareSetup(
        model_folder=plan.model_folder,
        images=images,
        resolution=plan.resolution,
        batch_size=batch_size,
        rank=RANK,
        alpha=ALPHA,
        unet_lr=UNET_LR,
        text_encoder_lr=0.0,
        scheduler="constant",
        precision=plan.precision,
        gradient_checkpointing=checkpointing,
    )
    try:
        seconds, trainable = run_baseline(total, warmup, setup, on_loop_start=watch.start)
        memory = watch.stop()
    finally:
        release(plan.device)
    return seconds, trainable, memory


# ---------------------------------------------------------------------------------- FLOPs
def count_flops(
    unet: torch.nn.Module, device: torch.device, dtype: torch.dtype, resolution: int, batch_size: int = 1
) -> int:
    """FLOPs of one forward + backward of ``unet`` (with its LoRA attached) on random inputs.

    Off CUDA, attention runs on PyTorch's math backend while counting: the CPU's fused attention
    kernel is not in the flop counter's table (the CUDA flash/efficient/cuDNN kernels are), and
    the math backend's matmuls count the same 4*b*h*s^2*d per pass."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    side = resolution // 8
    latents = torch.randn(batch_size, unet.config.in_channels, side, side, device=device)
    timesteps = torch.randint(0, 1000, (batch_size,), device=device)
    hidden = torch.randn(batch_size, 77, unet.config.cross_attention_dim, device=device)
    added = sdxl_added_conditions(unet, batch_size, resolution, device, dtype)
    backend = sdpa_kernel(SDPBackend.MATH) if device.type != "cuda" else contextlib.nullcontext()
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    with backend, FlopCounterMode(display=False) as counter:
        with autocast:
            prediction = unet(latents.to(dtype), timesteps, hidden.to(dtype), **added).sample
        F.mse_loss(prediction.float(), torch.zeros_like(prediction, dtype=torch.float32)).backward()
    return counter.get_total_flops()


def sdxl_added_conditions(
    unet: torch.nn.Module, batch_size: int, resolution: int, device: torch.device, dtype: torch.dtype
) -> dict:
    """An SDXL UNet's ``added_cond_kwargs`` (the pooled text vector and the 6 size/crop time ids of
    a square uncropped image); nothing for SD's."""
    config = unet.config
    if config.addition_embed_type != "text_time":
        return {}
    pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
    time_ids = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]] * batch_size, device=device)
    embeds = torch.randn(batch_size, pooled, device=device).to(dtype)
    return {"added_cond_kwargs": {"text_embeds": embeds, "time_ids": time_ids.float()}}


def unet_with_lora(
    folder: Path | None, device: torch.device, dtype: torch.dtype, family: str = "sd1"
) -> torch.nn.Module:
    """The model's UNet (or, for ``folder=None``, an SD 1.5- or SDXL-shaped one on the meta device,
    no storage) with the benchmark's LoRA, as the engine sets it up."""
    from diffusers import UNet2DConditionModel

    if folder is None and family == "sdxl":
        from engine.reference_models import SDXL_UNET_CONFIG

        with torch.device("meta"):
            unet = UNet2DConditionModel(**SDXL_UNET_CONFIG)
    elif folder is None:
        from engine.reference_models import sd15_unet

        unet = sd15_unet(device="meta")
    else:
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet").to(device, dtype=dtype)
    unet.requires_grad_(False)
    attach_lora(unet, find_targets(unet, UNET_ATTENTION_BLOCKS, RANK, ALPHA))
    for param in lora_parameters(unet):
        param.data = param.data.float()
    unet.train()
    return unet


def flops_per_sample(plan: Plan) -> tuple[float, float]:
    """(model FLOPs per sample, FLOPs per sample executed with gradient checkpointing)."""
    dtype = torch.bfloat16 if plan.precision == "bf16" else torch.float32
    unet = unet_with_lora(plan.model_folder, plan.device, dtype)
    try:
        plain = count_flops(unet, plan.device, dtype, plan.resolution)
        unet.enable_gradient_checkpointing()
        checkpointed = count_flops(unet, plan.device, dtype, plan.resolution)
    finally:
        del unet
        release(plan.device)
    return float(plain), float(checkpointed)


def sd15_flops_by_shape(resolution: int = 512) -> float:
    """SD 1.5's model FLOPs per sample counted on the meta device: shapes only, no compute."""
    unet = unet_with_lora(None, torch.device("meta"), torch.float32)
    return float(count_flops(unet, torch.device("meta"), torch.float32, resolution))


def sdxl_flops_by_shape(resolution: int = 1024) -> float:
    """SDXL's model FLOPs per sample counted on the meta device: shapes only, no compute."""
    unet = unet_with_lora(None, torch.device("meta"), torch.float32, "sdxl")
    return float(count_flops(unet, torch.device("meta"), torch.float32, resolution))


# ------------------------------------------------------------------------------- reporting
def versions() -> str:
    import accelerate
    import diffusers
    import peft
    import transformers

    parts = [f"torch {torch.__version__}"]
    if torch.version.cuda:
        parts.append(f"CUDA {torch.version.cuda}")
    parts += [
        f"diffusers {diffusers.__version__}",
        f"transformers {transformers.__version__}",
        f"peft {peft.__version__}",
        f"accelerate {accelerate.__version__}",
    ]
    try:
        import bitsandbytes

        parts.append(f"bitsandbytes {bitsandbytes.__version__}")
    except Exception:  # noqa: BLE001 - only a version string
        pass
    return ", ".join(parts) + f", Python {platform.python_version()}"


def flop_text(flops: float) -> str:
    return f"{flops / 1e12:.4f} TFLOP" if flops >= 1e11 else f"{flops / 1e9:.3f} GFLOP"


def gib(value: int | None) -> str:
    return "N/A" if value is None else f"{value / GIB:.2f}"


@dataclass(frozen=True)
class Run:
    """What every section shares: the step counts, the device's peak and the memory watch."""

    total: int  # steps per run, warm-up included
    warmup: int
    rounds: int
    batch_sizes: list[int]
    watch: MemoryWatch
    peak: float | None  # the device's dense bf16 TFLOPS, None: no MFU


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="measured steps per run, after warm-up (default 30)")
    parser.add_argument("--warmup", type=int, default=10, help="steps dropped at the start of each run (default 10)")
    parser.add_argument("--rounds", type=int, default=2, help="engine/bare pairs per setting, alternated (default 2)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4], help="default: 1 4")
    parser.add_argument(
        "--checkpointing",
        choices=["off", "on", "both"],
        default="both",
        help="gradient checkpointing, SD 1.5 (default: both; SDXL: on)",
    )
    parser.add_argument(
        "--models",
        choices=["sd15", "sdxl", "flux"],
        nargs="+",
        default=["sd15", "sdxl", "flux"],
        help="default: sd15 sdxl flux",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--cpu", action="store_true", help="the CPU fallback even where CUDA is available")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round of 2 warm-up + 3 measured steps")
    args = parser.parse_args(argv)
    if args.cpu:
        # Before anything touches CUDA: the engine picks the device itself, and must not see the GPU.
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    if args.quick:
        args.steps, args.warmup, args.rounds = 3, 2, 1
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    quiet_libraries()
    checkpointing = {"off": [False], "on": [True], "both": [False, True]}[args.checkpointing]

    gpu = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda" if gpu else "cpu")
    watch = MemoryWatch(device)
    if not gpu:
        print(NO_GPU_LABEL)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if gpu:
        properties = torch.cuda.get_device_properties(device)
        device_name = torch.cuda.get_device_name(device)
        print(
            f"{now}: {device_name} ({properties.total_memory / GIB:.1f} GiB, {properties.multi_processor_count} SMs), "
            f"NVIDIA driver {watch.driver() or 'N/A (NVML not readable)'}"
        )
    else:
        device_name = "CPU"
        print(f"{now}: CPU only ({os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, {platform.machine()})")
    print(versions())
    print_load("at start")
    peak, peak_label = dense_bf16_peak(device_name) if gpu else (None, "a CPU")
    print(f"dense bf16 peak: {f'{peak:g} TFLOPS ({peak_label})' if peak else f'N/A ({peak_label}): no MFU'}")
    warmup = max(0, args.warmup)
    run = Run(warmup + max(1, args.steps), warmup, max(1, args.rounds), args.batch_sizes, watch, peak)
    try:
        if "sd15" in args.models:
            sd15_section(make_plan(args.cpu), run, checkpointing)
        if "sdxl" in args.models:
            sdxl_section(make_sdxl_plan(args.cpu), run)
        if "flux" in args.models:
            flux_section(make_flux_plan(args.cpu), run)
    finally:
        watch.close()
    print_load("at end")
    return 0


def sd15_section(plan: Plan, run: Run, checkpointing: list[bool]) -> None:
    """SD 1.5: engine and bare loop, alternated, per batch size and checkpointing setting."""
    total, warmup, rounds, watch, peak = run.total, run.warmup, run.rounds, run.watch, run.peak
    precision = "bf16 mixed precision" if plan.precision == "bf16" else "float32"
    print(
        f"\n{plan.model} at {plan.resolution} px, {precision}, LoRA rank {RANK} / alpha {ALPHA:g} on the UNet (text "
        f"encoder frozen), AdamW, latents cached; {rounds} round(s) x ({warmup} warm-up + {total - warmup} measured) "
        f"steps per side and setting"
    )
    plain_flops, checkpointed_flops = print_flops(plan)
    print(
        f"  cross-check: SD 1.5 at 512 px, the same LoRA, counted by shape on the meta device (no compute): "
        f"{sd15_flops_by_shape() / 1e12:.4f} TFLOP per sample"
    )

    rows, ratios = [], []
    with tempfile.TemporaryDirectory(prefix="loratui-gpu-bench-") as temp:
        project = Path(temp)
        images = make_images(project, plan.resolution)
        for batch_size in run.batch_sizes:
            for checkpoint in checkpointing:
                setting = f"b{batch_size} gc {'on' if checkpoint else 'off'}"
                seconds: dict[str, list[float]] = {"engine": [], "bare": []}
                memory: dict[str, list[dict]] = {"engine": [], "bare": []}
                per_round: dict[str, list[float]] = {"engine": [], "bare": []}
                trainable: dict[str, int] = {}
                for index in range(rounds):
                    for side in ("engine", "bare") if index % 2 == 0 else ("bare", "engine"):
                        started = time.perf_counter()
                        if side == "engine":
                            values, trainable[side], used = run_engine(
                                plan, project, batch_size, checkpoint, total, warmup, watch
                            )
                        else:
                            values, trainable[side], used = run_bare(
                                plan, images, batch_size, checkpoint, total, warmup, watch
                            )
                        seconds[side] += values
                        memory[side].append(used)
                        per_round[side].append(statistics.median(values))
                        print(
                            f"  {setting} round {index + 1} {side:<6} median {per_round[side][-1] * 1000:8.1f} ms/step "
                            f"({time.perf_counter() - started:.1f} s with set-up)",
                            flush=True,
                        )
                assert trainable["engine"] == trainable["bare"], f"trainable parameters differ: {trainable}"
                for side in ("engine", "bare"):
                    rows.append(row(setting, side, batch_size, seconds[side], memory[side], plain_flops, peak))
                ratio = statistics.median(seconds["engine"]) / statistics.median(seconds["bare"])
                paired = [e / b for e, b in zip(per_round["engine"], per_round["bare"], strict=True)]
                ratios.append((setting, ratio, paired, trainable["engine"]))

    print_table(plan, rows)
    print("\nengine / bare, median s/step (goal: 1.05 or less):")
    for setting, ratio, paired, count in ratios:
        print(
            f"  {setting:<11} {ratio:.3f}  (per round: {', '.join(f'{r:.3f}' for r in paired)}; "
            f"{count:,} trainable LoRA parameters on both sides)"
        )


def sdxl_section(plan: Plan, run: Run) -> None:
    """SDXL: the engine alone, with the usual SDXL recipe, per batch size, checkpointing on."""
    total, warmup, rounds = run.total, run.warmup, run.rounds
    precision = "bf16 mixed precision" if plan.precision == "bf16" else "float32"
    print(
        f"\nSDXL: {plan.model} at {plan.resolution} px, {precision}, gradient checkpointing, LoRA rank {RANK} / alpha "
        f"{ALPHA:g} on the UNet only (network.train_unet_only), text encoder outputs cached in memory and the "
        f"encoders moved off the device, latents cached, VAE in float32, AdamW; the engine alone, {rounds} run(s) x "
        f"({warmup} warm-up + {total - warmup} measured) steps per batch size"
    )
    plain_flops, _ = print_flops(plan)
    print(
        f"  cross-check: SDXL at 1024 px, the same LoRA, counted by shape on the meta device (no compute): "
        f"{sdxl_flops_by_shape() / 1e12:.4f} TFLOP per sample"
    )
    rows, counts = [], set()
    with tempfile.TemporaryDirectory(prefix="loratui-gpu-bench-sdxl-") as temp:
        project = Path(temp)
        make_images(project, plan.resolution)
        for batch_size in run.batch_sizes:
            setting = f"b{batch_size} gc on"
            seconds: list[float] = []
            memory: list[dict] = []
            for index in range(rounds):
                started = time.perf_counter()
                values, trainable, used = run_engine(plan, project, batch_size, True, total, warmup, run.watch)
                seconds += values
                memory.append(used)
                counts.add(trainable)
                print(
                    f"  {setting} run {index + 1} engine median {statistics.median(values) * 1000:8.1f} ms/step "
                    f"({time.perf_counter() - started:.1f} s with set-up)",
                    flush=True,
                )
            rows.append(row(setting, "engine", batch_size, seconds, memory, plain_flops, run.peak))
    print_table(plan, rows)
    print(f"  {', '.join(f'{c:,}' for c in sorted(counts))} trainable LoRA parameters (UNet)")


def flux_section(plan: Plan, run: Run) -> None:
    """FLUX.1 dev: the engine alone, with the low-memory Flux recipe, per batch size, without and with
    block swap; samples/s and peak memory (no MFU)."""
    total, warmup, rounds = run.total, run.warmup, run.rounds
    precision = "bf16 mixed precision" if plan.precision == "bf16" else "float32"
    swaps = [0, FLUX_BLOCKS_TO_SWAP if plan.gpu else TINY_FLUX_BLOCKS_TO_SWAP]
    print(
        f"\nFLUX.1 dev: {plan.model} at {plan.resolution} px, {precision}, base weights stored in fp8, gradient "
        f"checkpointing, LoRA rank {RANK} / alpha {ALPHA:g} on the transformer only, text encoder outputs (CLIP-L, "
        f"T5-XXL at 512 tokens) cached in memory, latents cached, shift 3.1582, raw, guidance 1.0, AdamW; "
        f"blocks_to_swap {' and '.join(map(str, swaps))}; the engine alone, {rounds} run(s) x ({warmup} warm-up + "
        f"{total - warmup} measured) steps per setting; no MFU (a Flux step's FLOPs are not counted)"
    )
    rows, counts = [], set()
    with tempfile.TemporaryDirectory(prefix="loratui-gpu-bench-flux-") as temp:
        project = Path(temp)
        make_images(project, plan.resolution)
        for batch_size in run.batch_sizes:
            for swap in swaps:
                setting = f"b{batch_size} swap {swap}"
                seconds: list[float] = []
                memory: list[dict] = []
                for index in range(rounds):
                    started = time.perf_counter()
                    values, trainable, used = run_engine(
                        plan, project, batch_size, True, total, warmup, run.watch, blocks_to_swap=swap
                    )
                    seconds += values
                    memory.append(used)
                    counts.add(trainable)
                    print(
                        f"  {setting} run {index + 1} engine median {statistics.median(values) * 1000:8.1f} ms/step "
                        f"({time.perf_counter() - started:.1f} s with set-up)",
                        flush=True,
                    )
                rows.append(row(setting, "engine", batch_size, seconds, memory, None, None))
    print_table(plan, rows)
    print(f"  {', '.join(f'{c:,}' for c in sorted(counts))} trainable LoRA parameters (transformer)")


def print_flops(plan: Plan) -> tuple[float, float]:
    """Count and print the FLOPs per sample on the device; returns (model FLOPs, with checkpointing)."""
    plain_flops, checkpointed_flops = flops_per_sample(plan)
    print(
        f"FLOPs per sample (UNet forward + backward with LoRA, torch.utils.flop_counter, batch 1): "
        f"{flop_text(plain_flops)}; executed with gradient checkpointing: {flop_text(checkpointed_flops)} "
        f"(MFU counts the first)"
    )
    return plain_flops, checkpointed_flops


def print_table(plan: Plan, rows: list[str]) -> None:
    print()
    if not plan.gpu:
        print(NO_GPU_LABEL)
    header = (
        f"{'setting':<11} {'side':<6} {'ms/step':>8} {'p90 ms':>8} {'samples/s':>9} {'torch peak GiB':>14} "
        f"{'NVML used GiB':>13} {'NVML pid GiB':>12} {'TFLOPS':>7} {'MFU':>6}"
    )
    print(header)
    for line in rows:
        print(line)


def row(
    setting: str,
    side: str,
    batch_size: int,
    seconds: list[float],
    memory: list[dict],
    flops: float | None,
    peak: float | None,
) -> str:
    """One table line; ``flops`` None: not counted (TFLOPS and MFU N/A)."""
    median = statistics.median(seconds)
    samples = batch_size / median
    achieved = None if flops is None else flops * samples / 1e12

    def most(key: str) -> int | None:
        values = [m[key] for m in memory if m[key] is not None]
        return max(values) if values else None

    mfu = f"{achieved / peak:.1%}" if peak and achieved is not None else "N/A"
    tflops = "N/A" if achieved is None else f"{achieved:.3g}"
    return (
        f"{setting:<11} {side:<6} {median * 1000:>8.1f} {percentile(seconds, 0.9) * 1000:>8.1f} {samples:>9.2f} "
        f"{gib(most('torch_peak')):>14} {gib(most('nvml_used')):>13} {gib(most('nvml_process')):>12} "
        f"{tflops:>7} {mfu:>6}"
    )


if __name__ == "__main__":
    try:
        main()
    except Exception:  # a measurement: report what went wrong, never fail a pipeline
        traceback.print_exc()
        print("benchmark failed (see above); no figures", file=sys.stderr)
    sys.exit(0)
