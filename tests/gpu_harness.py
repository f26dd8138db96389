"""One training run of the GPU matrix, and every check made on it, for any model and device.

``tests/test_gpu_train.py`` runs it on a CUDA GPU with the full-size ``loratui:sd15-random`` at
512 px, ``loratui:sdxl-random`` and ``loratui:flux-random`` at 1024 px; ``tests/test_gpu_harness.py``
runs it on the CPU with the tiny models (``loratui:tiny-sd``, ``loratui:tiny-sdxl``, and for Flux
``loratui:tiny-flux`` with a FLUX.1-wide transformer, see there), so the harness itself is proven on
machines without a GPU. It also records torch's peak CUDA memory of the run (:class:`PeakMemory`).

A run is checked three ways:
1. every step's loss is finite;
2. the LoRA moved: every ``lora_up`` weight (zero at the start, as peft initialises B) is
   non-zero in the saved file, for the UNet and each trained text encoder, and a frozen text
   encoder has no tensor in it (Flux's T5-XXL never trains: a ``lora_te2_``/``lora_te3_`` key fails the
   run). One exception, SDXL's text encoder 1: the UNet reads its
   penultimate layer (sd-scripts' layer 11 of 12), so the LoRA on its last layer gets no gradient
   and must still be zero (if it moved, the engine conditions on the wrong layer);
3. the saved kohya file, loaded with diffusers' ``load_lora_weights`` into a
   ``StableDiffusionPipeline`` (SDXL: ``StableDiffusionXLPipeline``) of the same base model on the
   same device, gives the trained model's output (2 latents x 2 timesteps x 2 captions):

   - SD: the text encoder's hidden states and the UNet's noise prediction, the UNet fed its own
     text encoder's output;
   - SDXL: text encoder 1's and 2's penultimate hidden states (what the UNet attends to), text
     encoder 2's projected pooled vector, and the UNet's prediction, fed both encoders' states
     side by side and ``added_cond_kwargs`` (that pooled vector and the 6 size/crop time ids of a
     square image at the run's resolution, uncropped);
   - Flux (into a ``FluxPipeline``): the transformer's prediction, called as engine/families/flux.py
     calls it (packed 2x2 latent patches, their (0, row, column) ids, the text's all-zero ids, sigmas
     as timesteps, dev's guidance), fed its own CLIP-L's pooled output and the T5 states of the
     pipeline's T5-XXL (T5 never has a LoRA: the same states for both); and, when it trains, CLIP-L's
     pooled output. With ``model.fp8_base`` the trained model's frozen Linear weights are rounded to
     float8; the pipeline's transformer and CLIP-L are stored in float8 the same way
     (engine/low_precision.py's ``store_in_fp8``, before the LoRA is loaded, as the engine does), so
     both start from the same values (``loratui:flux-random`` stores them in float8 already: there
     this changes no value, it only saves memory). A block-swapping run's transformer is put back on
     the device whole (its swap hooks removed) before it is compared;

   each compared twice:

   - in float32: both models cast to float32 (the pipeline is loaded in the training dtype first,
     so its base weights are exactly the values trained with; float8-stored layers computed in
     float32 too), no autocast. The only difference
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
    train_text_encoder: bool = False  # SD's text encoder, SDXL's text encoder 1 (CLIP-L), at ``lr``
    steps: int = 5
    family: str = "sd1"  # model.family: "sd1", "sd2", "sdxl" or "flux"
    train_text_encoder_2: bool = False  # SDXL's text encoder 2 (OpenCLIP bigG), at ``lr``
    # network.train_unet_only: the text encoders then get ``lr`` all the same, and must stay frozen.
    train_unet_only: bool = False
    cache_text_encoder_outputs: str = "off"  # or "memory", "disk": needs every text encoder frozen
    # Flux only (train_text_encoder is CLIP-L's; T5-XXL never trains):
    fp8_base: bool = False  # model.fp8_base: the frozen Linear weights stored in float8
    blocks_to_swap: int = 0  # training.blocks_to_swap (needs gradient_checkpointing)
    # model.t5xxl_max_token_length: T5 tokens per caption. 64 rather than dev's 512 keeps the joint
    # sequence (4096 image patches at 1024 px + the text) and the T5 caching short; every caption fits.
    t5_tokens: int = 64

    def text_encoder_lrs(self) -> dict[str, float]:
        """The rate each text encoder's setting gets, by the harness's name of the encoder."""
        rates = {"te1": self.train_text_encoder, "te2": self.train_text_encoder_2}
        if self.family == "flux":
            rates = {"te1": self.train_text_encoder}  # CLIP-L; T5 has no rate
        elif self.family != "sdxl":
            rates = {"te": self.train_text_encoder}
        return {name: self.lr if (on or self.train_unet_only) else 0.0 for name, on in rates.items()}

    def trained_text_encoders(self) -> tuple[str, ...]:
        """The text encoders this entry trains (the engine's rule: a rate above zero, not UNet-only)."""
        if self.train_unet_only:
            return ()
        return tuple(name for name, lr in self.text_encoder_lrs().items() if lr > 0)


@dataclass(frozen=True)
class TextEncoder:
    """A text encoder as the harness checks it; its prefix in a kohya file is written out here, as
    sd-scripts names it, rather than taken from the engine under test."""

    name: str  # "te" (SD), "te1", "te2" (SDXL), "te1" (Flux's CLIP-L)
    attribute: str  # on the trainer's model and on the diffusers pipeline
    tokenizer: str  # its tokenizer's attribute, on both
    prefix: str  # of its keys in the kohya file
    outputs: tuple[str, ...]  # the outputs compared when it trains


TEXT_ENCODERS = {
    "sd": (TextEncoder("te", "text_encoder", "tokenizer", "lora_te_", ("te",)),),
    "sdxl": (
        TextEncoder("te1", "text_encoder", "tokenizer", "lora_te1_", ("te1",)),
        TextEncoder("te2", "text_encoder_2", "tokenizer_2", "lora_te2_", ("te2", "te2 pooled")),
    ),
    # Flux: only CLIP-L can train (sd-scripts' lora_te1); the transformer reads its pooled output. T5-XXL
    # (text_encoder_2) never gets a LoRA, so it is no TextEncoder here: any lora_te2_/lora_te3_ key fails.
    "flux": (TextEncoder("te1", "text_encoder", "tokenizer", "lora_te1_", ("te1 pooled",)),),
}
FLUX_T5_PREFIXES = ("lora_te2_", "lora_te3_")  # what a T5 LoRA would be called (sd-scripts: lora_te3)


def text_encoders(family: str) -> tuple[TextEncoder, ...]:
    return TEXT_ENCODERS[family if family in ("sdxl", "flux") else "sd"]


@dataclass
class Comparison:
    """How close the reloaded file comes to the trained model, for one output (the UNet's noise
    prediction, a text encoder's hidden states or SDXL's pooled text vector). All but ``effect`` are
    in units of the LoRA's effect, |trained - base| in float32."""

    effect: float  # |trained - base| / |base|, float32
    error: float  # |loaded - trained|, float32
    noise: float  # |trained in the training precision - trained in float32|: that precision's rounding noise
    error_low: float  # |loaded - trained|, both in the training precision under autocast

    def __str__(self) -> str:
        return (
            f"LoRA effect {self.effect:.3g} of the base output; in units of that effect: float32 error "
            f"{self.error:.3g}, training-precision error {self.error_low:.3g}, its rounding noise {self.noise:.3g}"
        )


class PeakMemory:
    """torch's peak allocated CUDA memory of one run, after the model is loaded, in two windows the
    engine's events open (as bench/gpu_train.py measures its training loop):

    - "setup": from the first event after the "loading_model" status (the parts are loaded, cast and
      stored in fp8; that event is the latent cache's 0/N status, or run_started when nothing is
      cached) to the "training" status: caching the latents and the frozen encoders' outputs, placing
      the denoiser, the step-0 evaluation;
    - "training": from the "training" status to the end of the run (``close``): the training loop.

    Loading itself is left out: the engine casts each part on the device before storing it in fp8, a
    moment no estimate of the run counts. Bytes are above what the process held before the run
    (``baseline``). Without CUDA only the windows' opening is recorded (the figures stay None)."""

    def __init__(self) -> None:
        self.cuda = torch.cuda.is_available()
        self.baseline = torch.cuda.memory_allocated() if self.cuda else 0
        self.opened: list[tuple[str, str]] = []  # (window, the event that opened it: "type" or "status:phase")
        self.peaks: dict[str, int | None] = {}  # by window: peak allocated bytes above the baseline
        self._window: str | None = None
        self._loaded = False  # the loading_model status was seen: the next event opens "setup"

    def on_event(self, event: dict, stop=None) -> None:
        """``train_in_process``'s on_event: reads the engine's events as they are written."""
        status = event.get("phase") if event.get("type") == "status" else None
        if status == "loading_model":
            self._loaded = True
            return
        if not self._loaded:
            return
        label = f"status:{status}" if status else str(event.get("type"))
        if not self.opened:
            self._open("setup", label)
        if status == "training" and self._window == "setup":  # a resume after a pause keeps its window
            self._close_window()
            self._open("training", label)

    def close(self) -> None:
        """The run is over: the open window's peak is read."""
        if self._window is not None:
            self._close_window()

    @property
    def run_peak(self) -> int | None:
        """The run's peak after loading: the larger of the two windows'."""
        values = [v for v in self.peaks.values() if v is not None]
        return max(values) if values else None

    def _open(self, window: str, phase: str) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.opened.append((window, phase))
        self._window = window

    def _close_window(self) -> None:
        peak = None
        if self.cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - self.baseline
        self.peaks[self._window] = peak
        self._window = None


@dataclass
class EntryResult:
    device: str  # the run_started event's: "cuda", "cpu", ...
    losses: list[float]
    lora_file: Path
    config: Path  # the run's config file (for engine.memory_estimate, through loratui.config.load_config)
    memory: PeakMemory
    # {"unet": count, "te": count}; SDXL and Flux "te1", SDXL "te2": every lora_up weight in the file, by part
    up_weights: dict[str, int] = field(default_factory=dict)
    # {"unet": ..., "te": ...}; SDXL "te1", "te2", "te2 pooled"; Flux "te1 pooled": the outputs compared
    comparisons: dict[str, Comparison] = field(default_factory=dict)


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
    rates = entry.text_encoder_lrs()
    config = {
        "model": {"path": model, "family": entry.family},
        "dataset": {
            "image_dir": "img",
            "reg_dir": "",
            "resolution": resolution,
            "enable_buckets": False,
            "cache_latents": entry.cache_latents,
            "cache_text_encoder_outputs": entry.cache_text_encoder_outputs,
        },
        "network": {"rank": 8, "alpha": 4.0, "train_unet_only": entry.train_unet_only},
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
            "text_encoder_lr": rates["te"] if "te" in rates else rates["te1"],  # SD's; SDXL's and Flux's CLIP-L
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
    if entry.family == "sdxl":
        config["optimizer"]["text_encoder_2_lr"] = rates["te2"]
    if entry.family == "flux":
        config["model"].update({"fp8_base": entry.fp8_base, "t5xxl_max_token_length": entry.t5_tokens})
        # sd-scripts' advice for FLUX.1 dev LoRAs (its README): the shifted sigmoid sampling with shift
        # 3.1582, the prediction read raw, guidance 1.0.
        config["training"].update(
            {
                "blocks_to_swap": entry.blocks_to_swap,
                "timestep_sampling": "shift",
                "discrete_flow_shift": 3.1582,
                "model_prediction_type": "raw",
                "guidance_scale": 1.0,
            }
        )
    return config


def run_entry(folder: Path, entry: Entry, model: str, model_folder: Path, resolution: int) -> EntryResult:
    """Train ``entry`` in this process, check it (asserts), free the device; returns the figures."""
    make_dataset(folder, resolution)
    config = write_config(folder, entry_config(entry, model, resolution))
    gc.collect()  # what an earlier entry left for the collector is not this run's memory
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    memory = PeakMemory()
    recorder, trainer = train_in_process(config, on_event=memory.on_event)
    memory.close()
    try:
        steps = recorder.of("step")
        losses = [s["loss"] for s in steps]
        assert len(steps) == entry.steps, f"{entry.id}: {len(steps)} steps, expected {entry.steps}"
        assert all(math.isfinite(loss) for loss in losses), f"{entry.id}: losses {losses}"
        lora_file = folder / "model" / "gpu_lora.safetensors"
        result = EntryResult(recorder.of("run_started")[0]["device"], losses, lora_file, config, memory)
        result.up_weights = _check_lora_moved(entry, trainer, lora_file)
        _check_reload(entry, trainer, lora_file, model_folder, resolution, result)
        return result
    finally:
        del trainer
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def estimated_peak(result: EntryResult):
    """engine.memory_estimate's estimate for the run's own config (engine.memory_estimate.MemoryEstimate)."""
    from engine.memory_estimate import estimate
    from loratui.config import load_config

    return estimate(load_config(result.config))


def estimated_tensor_bytes(memory_estimate) -> int:
    """What of the estimate torch's allocated figure can see: its total less its constant for the CUDA
    context and the libraries' workspaces, which the caching allocator never hands out."""
    return memory_estimate.total - memory_estimate.breakdown.get("cuda_context", 0)


def _check_lora_moved(entry: Entry, trainer, lora_file: Path) -> dict[str, int]:
    tensors = load_file(lora_file)
    encoders = text_encoders(entry.family)
    if entry.family == "flux":
        t5 = sorted(k for k in tensors if k.startswith(FLUX_T5_PREFIXES))
        assert not t5, f"{entry.id}: T5-XXL never trains, but the file has {len(t5)} T5 LoRA keys, e.g. {t5[:3]}"
    prefixes = ("lora_unet_", *(e.prefix for e in encoders))
    stray = sorted(k for k in tensors if not k.startswith(prefixes))
    assert not stray, f"{entry.id}: {len(stray)} keys with none of the prefixes {prefixes}, e.g. {stray[:3]}"
    trained = entry.trained_text_encoders()
    counts = {}
    for prefix, name in (("lora_unet_", "unet"), *((e.prefix, e.name) for e in encoders)):
        ups = {k: v for k, v in tensors.items() if k.startswith(prefix) and k.endswith(".lora_up.weight")}
        if name != "unet" and name not in trained:
            assert not ups, f"{entry.id}: {name} was frozen but the file has {len(ups)} {prefix} tensors"
            continue
        assert ups, f"{entry.id}: no {prefix} tensors in {lora_file.name}"
        unread = _unread_layer(entry, trainer, name)
        never_moves = {k for k in ups if unread and k.startswith(prefix + unread)}
        assert never_moves or not unread, (
            f"{entry.id}: no {prefix}{unread}* tensor: sd-scripts gives {name}'s last layer a LoRA too (left at zero)"
        )
        moved = sorted(k for k in never_moves if ups[k].float().abs().max() > 0)
        assert not moved, (
            f"{entry.id}: {name}'s last layer, whose output the UNet never reads, has a LoRA that moved "
            f"({moved[:3]}): the run conditions on the wrong layer"
        )
        still_zero = sorted(k for k, v in ups.items() if k not in never_moves and not v.float().abs().max() > 0)
        assert not still_zero, (
            f"{entry.id}: {len(still_zero)} of {len(ups)} {name} lora_up weights did not move "
            f"from their zero start, e.g. {still_zero[:3]}"
        )
        counts[name] = len(ups)
    return counts


def _unread_layer(entry: Entry, trainer, name: str) -> str | None:
    """The key infix of the one text-encoder layer whose LoRA gets no gradient, if any: SDXL's text
    encoder 1 gives the UNet its penultimate hidden states, so its last layer's output goes nowhere."""
    if entry.family != "sdxl" or name != "te1":
        return None
    layers = trainer.accelerator.unwrap_model(trainer.model.text_encoder).config.num_hidden_layers
    return f"text_model_encoder_layers_{layers - 1}_"


def _training_dtype(entry: Entry) -> torch.dtype:
    from engine.model_loading import weight_dtype

    return weight_dtype(entry.precision)


def _autocast(device: torch.device, compute_dtype: torch.dtype):
    """The engine's autocast in fp16/bf16; none in float32."""
    if compute_dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=compute_dtype)


def _check_reload(
    entry: Entry, trainer, lora_file: Path, model_folder: Path, resolution: int, result: EntryResult
) -> None:
    if entry.family == "flux":
        _check_flux_reload(entry, trainer, lora_file, model_folder, resolution, result)
        return
    device = trainer.device
    dtype = _training_dtype(entry)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, resolution // 8, resolution // 8, generator=generator).to(device)
    timesteps = torch.tensor([150, 700], device=device)
    encoders = text_encoders(entry.family)
    ids = {
        e.attribute: getattr(trainer.model, e.tokenizer)(
            list(CAPTIONS[:2]), padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids.to(device)
        for e in encoders
    }
    # SDXL's 6 time ids of each image: original size, crop top-left, target size, as (height, width).
    time_ids = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]] * 2, device=device).float()
    attributes = ["unet", *(e.attribute for e in encoders)]

    def outputs(modules: dict[str, torch.nn.Module], compute_dtype) -> dict[str, torch.Tensor]:
        """The compared outputs by name, the UNet fed its own text encoders' output, as the engine
        does; under autocast unless float32."""
        with torch.no_grad(), _autocast(device, compute_dtype):
            if entry.family == "sdxl":
                named = _sdxl_text(modules, ids)
                states = torch.cat([named["te1"], named["te2"]], dim=-1)
                added = {"text_embeds": named["te2 pooled"].to(compute_dtype), "time_ids": time_ids}
                sample = modules["unet"](
                    latents.to(compute_dtype), timesteps, states.to(compute_dtype), added_cond_kwargs=added
                ).sample
            else:
                named = {"te": modules["text_encoder"](ids["text_encoder"])[0]}
                sample = modules["unet"](latents.to(compute_dtype), timesteps, named["te"].to(compute_dtype)).sample
        return {name: value.float() for name, value in {**named, "unet": sample}.items()}

    # The pipeline in the training dtype, so its base weights are the values trained with.
    pipe = _pipeline(entry.family, model_folder, dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(lora_file))
    unwrap = trainer.accelerator.unwrap_model
    try:
        # 1. In the training precision, under the engine's autocast. A frozen text encoder whose
        # outputs were cached was moved off the device: it comes back for this.
        trained_low = outputs({a: unwrap(getattr(trainer.model, a)).to(device) for a in attributes}, dtype)
        loaded_low = outputs({a: getattr(pipe, a) for a in attributes}, dtype)

        # 2. In float32: the same weights, no autocast; only the file's fp16 rounding differs.
        trained_modules = {a: _float32(unwrap(getattr(trainer.model, a))) for a in attributes}
        loaded_modules = {a: getattr(pipe, a).float() for a in attributes}
        trained = outputs(trained_modules, torch.float32)
        loaded = outputs(loaded_modules, torch.float32)
        pipe.disable_lora()
        base = outputs(loaded_modules, torch.float32)
    finally:
        del pipe
        gc.collect()

    compared = ["unet", *(o for e in encoders if e.name in entry.trained_text_encoders() for o in e.outputs)]
    _compare(entry, compared, {"trained": trained, "loaded": loaded, "base": base}, trained_low, loaded_low, result)


def _check_flux_reload(
    entry: Entry, trainer, lora_file: Path, model_folder: Path, resolution: int, result: EntryResult
) -> None:
    """The Flux reload (see the module docstring): the transformer's prediction and, when trained,
    CLIP-L's pooled output, the trained model against a FluxPipeline with the file loaded."""
    from diffusers import FluxPipeline

    from engine.low_precision import store_in_fp8

    device, dtype = trainer.device, _training_dtype(entry)
    if getattr(trainer, "block_swap", None) is not None:
        # Compared whole on the device: the swapped blocks' frozen weights come back from CPU memory.
        trainer.block_swap.remove()
        trainer.block_swap = None
    generator = torch.Generator().manual_seed(0)
    side = resolution // 8  # the AE's latents
    latents = torch.randn(2, 16, side, side, generator=generator)
    packed = FluxPipeline._pack_latents(latents, 2, 16, side, side).to(device)
    image_ids = FluxPipeline._prepare_latent_image_ids(2, side // 2, side // 2, device, torch.float32)
    sigmas = torch.tensor([0.15, 0.7], device=device)  # the transformer's timestep is sigma (scaled inside)
    captions = list(CAPTIONS[:2])
    clip_ids = trainer.model.tokenizer(
        captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids.to(device)

    pipe = FluxPipeline.from_pretrained(model_folder, torch_dtype=dtype, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    t5_states = _t5_states(pipe, captions, entry.t5_tokens, device)
    text_ids = torch.zeros(t5_states.shape[1], 3, device=device)
    # dev's guidance input at the run's training.guidance_scale (entry_config: 1.0); schnell has none.
    guidance = torch.full((2,), 1.0, device=device) if pipe.transformer.config.guidance_embeds else None
    attributes = ("transformer", "text_encoder")
    for attribute in attributes:  # on the device first: the float8 rounding of FLUX.1 is quick there
        module = getattr(pipe, attribute).to(device)
        if entry.fp8_base:
            store_in_fp8(module, dtype)  # as the engine: after the cast, before the LoRA
    pipe.load_lora_weights(str(lora_file))

    def outputs(modules: dict[str, torch.nn.Module], compute_dtype) -> dict[str, torch.Tensor]:
        """The transformer fed its own CLIP-L's pooled output, called as engine/families/flux.py calls
        it; under autocast unless float32."""
        with torch.no_grad(), _autocast(device, compute_dtype):
            pooled = modules["text_encoder"](clip_ids).pooler_output
            sample = modules["transformer"](
                hidden_states=packed.to(compute_dtype),
                encoder_hidden_states=t5_states.to(compute_dtype),
                pooled_projections=pooled.to(compute_dtype),
                timestep=sigmas.to(compute_dtype),
                img_ids=image_ids.to(compute_dtype),
                txt_ids=text_ids.to(compute_dtype),
                guidance=guidance,
            ).sample
        return {"te1 pooled": pooled.float(), "transformer": sample.float()}

    unwrap = trainer.accelerator.unwrap_model
    try:
        # 1. In the training precision, under the engine's autocast. CLIP-L, cached, was moved off the device.
        trained_low = outputs({a: unwrap(getattr(trainer.model, a)).to(device) for a in attributes}, dtype)
        loaded_low = outputs({a: getattr(pipe, a) for a in attributes}, dtype)
        # 2. In float32 (FLUX.1: 2 x 44 GiB of transformer on the device; an H200 holds them).
        trained = outputs({a: _float32(unwrap(getattr(trainer.model, a))) for a in attributes}, torch.float32)
        loaded_modules = {a: _float32(getattr(pipe, a)) for a in attributes}
        loaded = outputs(loaded_modules, torch.float32)
        pipe.disable_lora()
        base = outputs(loaded_modules, torch.float32)
    finally:
        del pipe
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    encoders = text_encoders(entry.family)
    trained_outputs = (o for e in encoders if e.name in entry.trained_text_encoders() for o in e.outputs)
    compared = ["transformer", *trained_outputs]
    _compare(entry, compared, {"trained": trained, "loaded": loaded, "base": base}, trained_low, loaded_low, result)


def _t5_states(pipe, captions: list[str], tokens: int, device: torch.device) -> torch.Tensor:
    """T5-XXL's last hidden states for ``captions`` as the engine reads them (``tokens`` long, no
    attention mask), from the pipeline's T5 on the device. T5 has no LoRA: both sides get these."""
    ids = pipe.tokenizer_2(
        captions, max_length=tokens, padding="max_length", truncation=True, return_tensors="pt"
    ).input_ids.to(device)
    encoder = pipe.text_encoder_2.to(device)
    try:
        with torch.no_grad():
            return encoder(ids).last_hidden_state
    finally:
        encoder.to("cpu")  # 9.5 GB for FLUX.1's, not needed again
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _compare(
    entry: Entry,
    compared: list[str],
    float32: dict[str, dict[str, torch.Tensor]],
    trained_low: dict[str, torch.Tensor],
    loaded_low: dict[str, torch.Tensor],
    result: EntryResult,
) -> None:
    """Measure and assert each compared output (see the module docstring); ``float32`` holds the
    "trained", "loaded" and "base" outputs computed in float32, the others the training precision's."""
    trained, loaded, base = float32["trained"], float32["loaded"], float32["base"]
    dtype = _training_dtype(entry)
    for name in compared:
        effect = (trained[name] - base[name]).norm()
        comparison = Comparison(
            effect=(effect / base[name].norm()).item(),
            error=((loaded[name] - trained[name]).norm() / effect).item(),
            noise=((trained_low[name] - trained[name]).norm() / effect).item(),
            error_low=((loaded_low[name] - trained_low[name]).norm() / effect).item(),
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


def _float32(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` in float32, with its own forward again in place of accelerate's mixed-precision
    wrapper (autocast + outputs to float32). Not accelerate's ``unwrap_model(keep_fp32_wrapper=False)``:
    accelerate 1.15 compares each ``__wrapped__`` function with the bound original method, never
    stops, and strips the model's own decorators too: transformers 5's ``capture_outputs``, without
    which CLIPTextModel returns no ``hidden_states``. A layer stored in float8 (model.fp8_base) is
    cast to float32 too (exactly: every float8 value is a float32 one) and computes in float32."""
    from engine.low_precision import Fp8Linear

    original = module.__dict__.pop("_original_forward", None)
    if original is not None:
        module.forward = original
    for layer in module.modules():
        if isinstance(layer, Fp8Linear):
            layer.compute_dtype = torch.float32  # else it would compute in the training dtype
    return module.float()


def _sdxl_text(modules: dict[str, torch.nn.Module], ids: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What an SDXL UNet reads of its text encoders, as diffusers' StableDiffusionXLPipeline.encode_prompt
    takes it: both penultimate hidden states, and text encoder 2's projected pooled vector."""
    first = modules["text_encoder"](ids["text_encoder"], output_hidden_states=True)
    second = modules["text_encoder_2"](ids["text_encoder_2"], output_hidden_states=True)
    return {"te1": first.hidden_states[-2], "te2": second.hidden_states[-2], "te2 pooled": second.text_embeds}


def _pipeline(family: str, model_folder: Path, dtype: torch.dtype):
    """The diffusers pipeline of an SD or SDXL base model, in ``dtype``, from its local folder."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if family == "sdxl":
        return StableDiffusionXLPipeline.from_pretrained(model_folder, torch_dtype=dtype, local_files_only=True)
    return StableDiffusionPipeline.from_pretrained(
        model_folder, torch_dtype=dtype, local_files_only=True, safety_checker=None, requires_safety_checker=False
    )
