"""The VRAM pre-flight: a run's peak accelerator memory, from its config alone, without a weight.

``python -m engine.memory_estimate CONFIG [--budget BYTES] [--base-dir DIR]`` prints one JSON
object (``loratui.memory_check`` runs it: the terminal side never imports torch). In Python,
:func:`estimate` gives a :class:`MemoryEstimate`, :class:`Estimator` many of them for one model,
and :func:`fitting_alternatives` the settings that bring a run under a budget.

How: each part is built from its config on the meta device (accelerate's ``init_empty_weights``;
the configs come from the model's folder, or those loratui ships for SDXL and FLUX.1 checkpoints),
cast and stored as engine/train.py stores it (the training precision, the VAE in float32 with
model.no_half_vae, fp8_base through engine/low_precision.py's own layers), and gets its LoRA where
train.py puts it (the family's PartSpec blocks, engine.lora.find_targets/attach_lora). Then every
tensor becomes a fake one (torch._subclasses.fake_tensor.FakeTensorMode: shape, dtype and device,
no storage) and one training step runs through the family's own code (text encoding, objective,
conditioning, prediction, loss) and its backward under :class:`LiveBytes`, a dispatch mode that
counts the bytes of every storage the step creates while it lives. The same counter on real tensors
measures a real step: the tests hold the two within 3 %.

What it counts:
- base weights on the device: each part as cast and stored (fp8: every frozen Linear 1 byte a
  weight); a text encoder whose outputs are cached is not (train.py moves it off); NF4 (the
  denoiser's Linears) by formula, 0.5 byte + its block scales, as bitsandbytes cannot quantize a
  fake tensor; with training.blocks_to_swap the swapped Flux blocks are not, but for one at a time
  while it computes (engine/block_swap.py's choice of blocks);
- the LoRA weights (float32), their gradients alive at the peak, and the optimizer's state as each
  optimizer's source allocates it (AdamW 8 bytes a weight, AdamW8bit 2 + block scales and 8 for
  tensors under bitsandbytes' 4096-element minimum, Lion 4, Lion8bit 1, Adafactor its factored rows
  and columns, DAdaptAdam 12, Prodigy 16 less the start copy of LoRA's all-zero up weights);
- the step's working set: inputs, what autograd keeps for the backward (fp8 layers' upcast weights
  included), temporaries, and the VAE's encoding when latents are not cached;
- the peak of the run is the larger of the step and of the caching before it (text encoders and the
  VAE on the device, the denoiser still in CPU memory, one batch through the VAE);
- :data:`CUDA_CONTEXT_BYTES` for the CUDA context and the libraries' workspaces.

What it leaves out: the caching allocator's rounding and fragmentation (PyTorch reserves more than
it allocates, typically 5-15 %), memory a kernel uses inside one op without returning it (cuDNN,
cuBLAS and flash-attention workspaces), the optimizer step's temporaries (the size of the LoRA at
most), the text encoders' own activations while their outputs are cached (small beside the VAE's),
and training.cpu_offload_checkpointing (not modeled: the estimate is then an upper bound). Kernels are
the CPU's: SDPA takes the CPU flash kernel, which keeps what CUDA's flash and memory-efficient
kernels keep (the output and its log-sum-exp, never the attention matrix). The step's shape is one
square bucket at dataset.resolution (buckets keep about that area); text at its full token length.

Time, measured on a 2-core CPU shared with other jobs (a desktop is faster): the whole helper
process (imports, build, one step) about 16 s for SD 1.5 at 512 px, 21-35 s for SDXL at 1024 px and
30-38 s for FLUX.1 dev at 1024 px; the tiny models 3-5 s a step. Each alternative that changes the
step's shape (checkpointing, batch, resolution, cached latents or text) runs one more step; those that
change only weights or the optimizer cost nothing (fp8 storage builds the model once more).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
import weakref
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from engine import model_loading
from engine.families import family_for
from engine.families.base import PartSpec
from engine.lora import attach_lora, find_targets
from loratui import families, preflight
from loratui.config import RunConfig, load_config
from loratui.errors import UserError
from loratui.optimizer_args import canonical_optimizer, parse_optimizer_args

MIB = 1024**2
GIB = 1024**3
# The CUDA context and the cuBLAS/cuDNN workspaces a training process holds before its first
# tensor: 0.3-0.5 GB on current drivers (more with lazy module loading off).
CUDA_CONTEXT_BYTES = 400 * MIB
# bitsandbytes' 8-bit optimizers keep tensors under min_8bit_size elements in 32 bits, and one
# float32 scale per block of 256 for the others (bitsandbytes/optim/optimizer.py).
BNB_MIN_8BIT_SIZE = 4096
BNB_BLOCK = 256
# bitsandbytes' NF4: 4 bits a weight, one scale per block of 64 (quantized again to 8 bits, with
# one float32 per 256 scales: compress_statistics).
NF4_BLOCK = 64


@dataclass(frozen=True)
class MemoryEstimate:
    """A run's peak accelerator memory, in bytes; ``breakdown`` adds up to ``total``."""

    total: int
    phase: str  # the moment of the peak: "training step" or "caching latents"
    breakdown: dict[str, int]  # base_weights, lora_weights, lora_gradients, optimizer_state, activations, cuda_context
    resident: dict[str, int]  # base weights on the device by part: "unet", "te1", "vae", ...
    settings: dict[str, object]  # what it was computed for (resolution, batch size, checkpointing...)
    seconds: float = 0.0  # how long the estimate took

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Alternative:
    """Settings that change the estimate: ``changes`` by setting name, and the estimate with them."""

    changes: dict[str, object]
    estimate: MemoryEstimate

    def to_dict(self) -> dict:
        return {"changes": self.changes, "total": self.estimate.total}


# ------------------------------------------------------------------------------------ counting
class LiveBytes(TorchDispatchMode):
    """Counts the bytes of the tensor storages created under it while they live, and their peak.

    Each op's outputs are looked at once the op returns: a storage seen for the first time is
    added, and a finalizer takes it off when PyTorch frees it. Views share their base's storage
    and in-place ops return it: neither counts twice. The storages of ``existing`` tensors (the
    weights: counted apart) are never counted, not even through a view an op returns (a weight's
    transpose is one). Works the same on real and on fake tensors."""

    def __init__(self, existing: list[torch.Tensor] = ()) -> None:
        super().__init__()
        self._existing = {tensor.untyped_storage()._cdata for tensor in existing}
        self.live = 0
        self.peak = 0
        self.ops = 0
        self.peak_at = 0  # the op count when the peak was reached
        self._born: dict[int, tuple[int, int]] = {}  # live storage -> (op count at its birth, bytes)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        for item in tree_flatten(out)[0]:
            if isinstance(item, torch.Tensor):
                self._add(item.untyped_storage())
        if self.live > self.peak:
            self.peak, self.peak_at = self.live, self.ops
        return out

    def _add(self, storage) -> None:
        key = storage._cdata
        if key in self._born or key in self._existing:
            return
        size = storage.nbytes()
        self._born[key] = (self.ops, size)
        self.live += size
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        _, size = self._born.pop(key, (0, 0))
        self.live -= size

    def alive_at_peak(self, tensors: list[torch.Tensor]) -> int:
        """Bytes of those of ``tensors`` (alive now) that were already alive at the peak."""
        total, seen = 0, set()
        for tensor in tensors:
            key = tensor.untyped_storage()._cdata
            born = self._born.get(key)
            if born is not None and key not in seen and born[0] <= self.peak_at:
                seen.add(key)
                total += born[1]
        return total


# ---------------------------------------------------------------------------- the model's shapes
def _component_configs(cfg: RunConfig) -> dict[str, dict]:
    """The config of each part of the model (``unet``/``transformer``, ``vae``, ``text_encoder``...),
    read from its folder or from configs shipped in code; never a weight file."""
    from engine import model_loading, reference_models
    from engine.flux_random import FLUX_RANDOM_NAME
    from engine.tiny_flux import TINY_FLUX_NAME, ensure_tiny_flux

    builtins = {TINY_FLUX_NAME: ensure_tiny_flux, **model_loading.BUILTIN_MODELS}
    path, family = cfg.model.path, cfg.model.family
    if path == reference_models.SD15_RANDOM_NAME:
        rm = reference_models
        return {"unet": rm.SD15_UNET_CONFIG, "vae": rm.SD15_VAE_CONFIG, "text_encoder": rm.SD15_TEXT_ENCODER_CONFIG}
    if path in (reference_models.SDXL_RANDOM_NAME, FLUX_RANDOM_NAME):  # the big ones: their configs, not a build
        folder = _shipped("sdxl_base" if family == "sdxl" else "flux_dev")
    elif path in builtins:
        folder = builtins[path]()  # the tiny models build in seconds
    elif cfg.model.is_builtin:
        raise UserError(f"unknown built-in model {path!r}", "model.path", "see `loratui check`", "model")
    elif cfg.resolve(path).is_dir():
        folder = cfg.resolve(path)
    else:
        folder = _single_file_configs(cfg)
    names = [spec.attribute for spec in family_for(family).parts] + ["vae"]
    configs = {}
    for name in names:
        file = folder / name / "config.json"
        try:
            configs[name] = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(
                f"cannot read {file} for the memory estimate: {exc}", "model.path", "point it at a complete model"
            ) from exc
    return configs


def _single_file_configs(cfg: RunConfig) -> Path:
    """The configs of a checkpoint file's model: shipped with loratui for SDXL and FLUX.1 (the
    estimate needs no tokenizer), else where the engine finds them (loratui.preflight)."""
    family = cfg.model.family
    if family == "sdxl":
        return _shipped("sdxl_base")
    if family == "flux":
        variant = cfg.model.flux_variant
        if variant == "auto":
            from loratui.model_detect import checkpoint_kind

            try:
                variant = checkpoint_kind(cfg.resolve(cfg.model.path)).variant or "dev"
            except (OSError, ValueError):
                variant = "dev"  # the check reports an unreadable file; dev is the larger
        return _shipped(f"flux_{variant}")
    tokenizer = cfg.resolve(cfg.model.tokenizer) if cfg.model.tokenizer else None
    found = preflight.single_file_configs(family, tokenizer)
    if not isinstance(found, Path):
        raise preflight.user_error(found, "model")
    return found


def _shipped(name: str) -> Path:
    from loratui.checkpoint_configs import shipped_configs

    return shipped_configs(name)


def _build_part(family: str, name: str, config: dict) -> nn.Module:
    """One part from its config, with the class engine/model_loading.py loads it as."""
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    if name == "unet":
        from diffusers import UNet2DConditionModel

        return UNet2DConditionModel.from_config(config)
    if name == "vae":
        from diffusers import AutoencoderKL

        return AutoencoderKL.from_config(config)
    if name == "transformer":
        from diffusers import FluxTransformer2DModel

        return FluxTransformer2DModel.from_config(config)
    if family == "flux" and name == "text_encoder_2":
        from transformers import T5Config, T5EncoderModel

        return T5EncoderModel(T5Config(**config))
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    kind = CLIPTextModelWithProjection if name == "text_encoder_2" else CLIPTextModel
    return kind(CLIPTextConfig(**config))


# --------------------------------------------------------------------------- the prepared model
@dataclass
class Prepared:
    """The model as a run holds it: parts cast, LoRA attached, on the meta device (then fake) or
    real. ``trained``: the parts that carry a LoRA."""

    cfg: RunConfig
    modules: dict[str, nn.Module]  # by attribute: "unet", "text_encoder", ..., "vae"
    family: object  # the engine's family (engine/families), set up as its load() would
    specs: tuple[PartSpec, ...]
    trained: frozenset[str]  # attributes
    weight_dtype: torch.dtype
    vae_dtype: torch.dtype
    fake_mode: object | None = None  # the FakeTensorMode the parameters belong to (None: real tensors)
    base_bytes: dict[str, int] = field(default_factory=dict)  # by attribute, as cast (before fp8/nf4/swap)
    linear_weight_counts: dict[str, int] = field(default_factory=dict)  # by attribute: base Linear weights' numels
    lora_shapes: list[torch.Size] = field(default_factory=list)
    lora_zero: list[bool] = field(default_factory=list)  # per LoRA tensor: starts at zero (peft's B, "up")
    lora_bytes: dict[str, int] = field(default_factory=dict)  # by attribute: its LoRA's float32 bytes

    def mode(self):
        return self.fake_mode if self.fake_mode is not None else contextlib.nullcontext()


def precision_dtypes(cfg: RunConfig) -> tuple[torch.dtype, torch.dtype]:
    """(the base weights' dtype, the VAE's), as engine/train.py picks them."""
    weight = model_loading.weight_dtype(cfg.training.mixed_precision)
    return weight, torch.float32 if cfg.model.no_half_vae else weight


def prepare(cfg: RunConfig, modules: dict[str, nn.Module] | None = None) -> Prepared:
    """Cast the parts and attach the LoRA as engine/train.py does (``_load_model``, ``_add_lora``).

    ``modules``: real loaded parts (a test's reference); by default they are built from their
    configs on the meta device and their tensors then made fake."""
    from accelerate import init_empty_weights

    from engine import low_precision

    family = family_for(cfg.model.family)
    weight_dtype, vae_dtype = precision_dtypes(cfg)
    if modules is None:
        configs = _component_configs(cfg)
        with init_empty_weights(include_buffers=True):
            modules = {name: _build_part(cfg.model.family, name, config) for name, config in configs.items()}
        fake = True
    else:
        fake = False
    modules["vae"].requires_grad_(False).to(dtype=vae_dtype).eval()
    for spec in family.parts:
        modules[spec.attribute].requires_grad_(False).to(dtype=weight_dtype).eval()
        if cfg.model.fp8_base:  # after the cast, before the LoRA, as engine/train.py's _load_model
            low_precision.store_in_fp8(modules[spec.attribute], weight_dtype)
    _as_loaded(family, cfg, modules)
    prepared = Prepared(cfg, modules, family, family.parts, frozenset(), weight_dtype, vae_dtype)
    for name, module in modules.items():
        prepared.base_bytes[name] = _tensor_bytes(module)
        prepared.linear_weight_counts[name] = sum(m.weight.numel() for m in module.modules() if type(m) is nn.Linear)
    net, trained = cfg.network, set()
    for spec in family.parts:
        if not families.trains(cfg, spec.part):
            continue
        module = modules[spec.attribute]
        conv = (spec.conv_blocks, net.conv_rank, net.conv_alpha)
        targets = find_targets(module, spec.blocks, net.rank, net.alpha, *conv)
        attach_lora(module, targets)
        for name, param in module.named_parameters():
            if param.requires_grad:
                param.data = param.data.float()  # train.py keeps the LoRA in float32
                prepared.lora_shapes.append(param.shape)
                prepared.lora_zero.append(".lora_B." in name)
                prepared.lora_bytes[spec.attribute] = prepared.lora_bytes.get(spec.attribute, 0) + 4 * param.numel()
        module.train(True)
        trained.add(spec.attribute)
    prepared.trained = frozenset(trained)
    if fake:
        from torch._subclasses.fake_tensor import FakeTensorMode

        prepared.fake_mode = FakeTensorMode()
        for module in modules.values():
            _make_fake(module, prepared.fake_mode)
    return prepared


def _as_loaded(family, cfg: RunConfig, modules: dict[str, nn.Module]) -> None:
    """What the family's load() learns from the weights (Flux: dev or schnell), learnt from the configs."""
    denoiser = next(spec for spec in family.parts if spec.denoiser)
    family.configure(cfg, modules[denoiser.attribute])


def _tensor_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers, each tensor once (tied weights are one)."""
    seen, total = set(), 0
    for tensor in [*module.parameters(), *module.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total


def _make_fake(module: nn.Module, fake_mode) -> None:
    """Replace every meta parameter and buffer by a fake CPU tensor of its shape and dtype (the
    step then runs CPU kernels' shape rules; nothing is allocated). Tied tensors stay tied."""
    done: dict[int, torch.Tensor] = {}
    with fake_mode:
        for sub in module.modules():
            for store in (sub._parameters, sub._buffers):
                for name, tensor in list(store.items()):
                    if tensor is None:
                        continue
                    if id(tensor) not in done:
                        empty = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu")
                        is_param = isinstance(tensor, nn.Parameter)
                        done[id(tensor)] = nn.Parameter(empty, tensor.requires_grad) if is_param else empty
                    store[name] = done[id(tensor)]


# ------------------------------------------------------------------------------------- one step
@dataclass(frozen=True)
class StepShape:
    """What a step's working set depends on."""

    batch: int
    height: int
    width: int
    checkpointing: bool
    cached_text: frozenset[str]  # attributes of the text encoders whose outputs are cached
    latents_cached: bool


@dataclass(frozen=True)
class StepPeak:
    peak: int  # bytes the step created that were alive at its peak
    gradients: int  # of which LoRA gradients
    vae_encode: int  # the peak of encoding one batch with the VAE (the latent-caching phase)


def step_shape(cfg: RunConfig) -> StepShape:
    family = family_for(cfg.model.family)
    cached = frozenset(
        spec.attribute
        for spec in family.parts
        if not spec.denoiser and cfg.dataset.cache_text_encoder_outputs != "off" and not families.trains(cfg, spec.part)
    )
    side = cfg.dataset.resolution
    return StepShape(
        max(1, cfg.training.batch_size),
        side,
        side,
        cfg.training.gradient_checkpointing,
        cached,
        cfg.dataset.cache_latents != "off",
    )


def measure_step(prepared: Prepared, shape: StepShape) -> StepPeak:
    """One training step (and one latent-caching batch) under :class:`LiveBytes`."""
    _set_checkpointing(prepared, shape.checkpointing)
    with prepared.mode():
        rows = {} if not shape.cached_text else _text_rows(prepared, shape.batch, shape.cached_text, live=False)
        weights = [t for m in prepared.modules.values() for t in [*m.parameters(), *m.buffers()]]
        counter = LiveBytes(weights)
        with counter:
            loss = _step_loss(prepared, shape, {k: v.clone() for k, v in rows.items()})
            loss.backward()
            del loss
        grads = [p.grad for m in prepared.modules.values() for p in m.parameters() if p.grad is not None]
        gradients = counter.alive_at_peak(grads)
        for module in prepared.modules.values():
            module.zero_grad(set_to_none=True)
        vae_counter = LiveBytes(weights)
        with vae_counter, torch.no_grad():
            _encode_pixels(prepared, shape)
    return StepPeak(counter.peak, gradients, vae_counter.peak)


def _set_checkpointing(prepared: Prepared, on: bool) -> None:
    family = prepared.family
    for spec in prepared.specs:
        if spec.attribute not in prepared.trained:
            continue
        module = prepared.modules[spec.attribute]
        if on:
            family.enable_gradient_checkpointing(spec, module)
        elif spec.denoiser:
            module.disable_gradient_checkpointing()
        else:  # transformers 5 renamed the switch; the old name still works, with a warning
            getattr(module, "activation_checkpointing_disable", module.gradient_checkpointing_disable)()


def _encode_pixels(prepared: Prepared, shape: StepShape) -> torch.Tensor:
    """The VAE posterior's parameters of a batch, as train.py's _encode_pixels gives them."""
    pixels = torch.zeros(shape.batch, 3, shape.height, shape.width, dtype=prepared.vae_dtype)
    return prepared.modules["vae"].encode(pixels).latent_dist.parameters.float()


def _latents(prepared: Prepared, shape: StepShape) -> torch.Tensor:
    """A batch of latents as train.py's _latents_for gives them: the cached posterior (or the VAE's
    encoding now), sampled, shifted and scaled."""
    config = prepared.modules["vae"].config
    if shape.latents_cached:
        down = 2 ** (len(config.block_out_channels) - 1)  # the VAE halves the sides at each block but the last
        posterior = torch.zeros(shape.batch, 2 * config.latent_channels, shape.height // down, shape.width // down)
    else:
        with torch.no_grad():
            posterior = _encode_pixels(prepared, shape)
    mean, logvar = posterior.chunk(2, dim=1)
    sample = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
    return (sample - (getattr(config, "shift_factor", None) or 0.0)) * config.scaling_factor


def _objective(prepared: Prepared):
    """The family's objective, as train.py makes it (the DDPM families' needs only a schedule)."""
    from diffusers import DDPMScheduler

    from engine.model_loading import BaseModel

    model = BaseModel(None, None, None, None, DDPMScheduler(num_train_timesteps=1000), source=Path(), name="")
    return prepared.family.objective(prepared.cfg, model)


def _step_loss(prepared: Prepared, shape: StepShape, cached_rows: dict[str, torch.Tensor]) -> torch.Tensor:
    """engine/train.py's _training_loss and _loss on zeros of the right shapes, through the family's
    own objective, text encoding, conditioning and prediction, under the run's autocast."""
    family, objective = prepared.family, _objective(prepared)
    latents = _latents(prepared, shape)
    noise = objective.noise(latents)
    timesteps = _draw_timesteps(prepared, objective, latents)
    noisy, target = objective.noisy_and_target(latents, noise, timesteps)
    live = frozenset(s.attribute for s in prepared.specs if not s.denoiser) - shape.cached_text
    denoiser = next(prepared.modules[s.attribute] for s in prepared.specs if s.denoiser)
    entry = SimpleNamespace(width=shape.width, height=shape.height, bucket=(shape.width, shape.height), caption="")
    with _autocast(prepared.weight_dtype):
        rows = {**cached_rows, **_text_rows(prepared, shape.batch, live, live=True)}
        conditioning = family.conditioning(rows, [entry] * shape.batch, prepared.weight_dtype)
        prediction = family.predict(denoiser, noisy.to(prepared.weight_dtype), timesteps, conditioning)
    return objective.loss(prediction, target, noisy, timesteps).mean()


def _draw_timesteps(prepared: Prepared, objective, latents: torch.Tensor) -> torch.Tensor:
    """The objective's noise levels for the batch. Drawing them may look at values (Flux's schedule is
    built from numbers), which fake tensors have none of: they are drawn on real zeros of the latents'
    shape and made fake (a few bytes: the levels of one batch)."""
    if prepared.fake_mode is None:
        return objective.draw_timesteps(latents)
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    with unset_fake_temporarily():
        drawn = objective.draw_timesteps(torch.zeros(latents.shape, dtype=latents.dtype))
    return prepared.fake_mode.from_tensor(drawn)


def _autocast(dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=dtype)


class _ShapeTokenizer:
    """Stands in for a tokenizer: ids of the full token length (their values do not change memory)."""

    def __init__(self, length: int, eos_token_id: int) -> None:
        self.model_max_length = length
        self.eos_token_id = eos_token_id

    def __call__(self, captions, max_length: int | None = None, **_):
        shape = (len(captions), max_length or self.model_max_length)
        return SimpleNamespace(input_ids=torch.zeros(shape, dtype=torch.long), attention_mask=torch.ones(shape))


def _text_rows(prepared: Prepared, batch: int, which: frozenset[str], live: bool) -> dict[str, torch.Tensor]:
    """The rows of the text encoders in ``which`` for ``batch`` captions, through the family's own
    encode_text; with a gradient for a trained encoder computed ``live`` in the step."""
    from engine.model_loading import BaseModel

    model = BaseModel(None, None, None, None, None, source=Path(), name="")  # only the text encoders are used
    rows: dict[str, torch.Tensor] = {}
    for spec in prepared.specs:
        if spec.denoiser or spec.attribute not in which:
            continue
        encoder = prepared.modules[spec.attribute]
        config = encoder.config
        tokenizer = _ShapeTokenizer(getattr(config, "max_position_embeddings", 512), config.eos_token_id)
        setattr(model, spec.attribute, encoder)
        setattr(model, spec.attribute.replace("text_encoder", "tokenizer"), tokenizer)
        grad = live and spec.attribute in prepared.trained
        with torch.set_grad_enabled(grad):
            captions, skip = [""] * batch, prepared.cfg.model.clip_skip
            rows.update(prepared.family.encode_text(spec, model, captions, skip, torch.device("cpu"), lambda m: m))
    return rows


# ---------------------------------------------------------------------------- bytes by formula
def optimizer_state_bytes(name: str, args: list[str], shapes: list[torch.Size], zero: list[bool] | None = None) -> int:
    """Bytes of the optimizer's state for float32 weights of ``shapes``, as each optimizer's
    source allocates it (torch AdamW; bitsandbytes AdamW8bit/Lion8bit; lion_pytorch; transformers'
    Adafactor; dadaptation's DAdaptAdam; prodigyopt's Prodigy). Scalar step counters are left out
    (torch keeps them on the CPU), and so are bitsandbytes' quantization maps (2 KB, shared).
    ``zero``: which tensors are all zeros when the state is made (LoRA's up weights): Prodigy
    keeps a scalar in place of their starting copy."""
    kwargs = parse_optimizer_args(args)
    optimizer = canonical_optimizer(name) or name
    zero = zero if zero is not None else [False] * len(shapes)
    return sum(_state_bytes(optimizer, kwargs, s, math.prod(s), z) for s, z in zip(shapes, zero, strict=True))


def _state_bytes(optimizer: str, kwargs: dict, shape: torch.Size, n: int, zero: bool) -> int:
    if optimizer == "AdamW":
        return 8 * n
    if optimizer in ("AdamW8bit", "Lion8bit"):
        states = 2 if optimizer == "AdamW8bit" else 1
        if n < int(kwargs.get("min_8bit_size", BNB_MIN_8BIT_SIZE)):
            return 4 * n * states
        return states * (n + 4 * math.ceil(n / BNB_BLOCK))
    if optimizer == "Lion":
        return 4 * n
    if optimizer == "DAdaptAdam":
        return 12 * n
    if optimizer == "Prodigy":
        sliced = math.ceil(n / int(kwargs.get("slice_p", 1)))
        betas = kwargs.get("betas", (0.9, 0.999))
        start_copy = 1 if zero else sliced  # prodigyopt keeps a scalar for an all-zero weight
        return 4 * (sliced + start_copy + n + (n if betas[0] > 0 else 0))
    if optimizer == "Adafactor":
        # plus its RMS, a float32 scalar tensor on the device
        first = 4 + (4 * n if kwargs.get("beta1") is not None else 0)
        if len(shape) >= 2:  # factored: one row and one column second moment
            rows = math.prod(shape[:-1])
            cols = math.prod(shape[:-2]) * shape[-1]
            return first + 4 * (rows + cols)
        return first + 4 * n
    return 8 * n  # an optimizer not known here: counted as AdamW


def resident_weights(prepared: Prepared, shape: StepShape, cfg: RunConfig) -> dict[str, int]:
    """Base weights on the device during the training step, by part name (fp8 is in the built
    model already; NF4 and block swap are applied here)."""
    resident = {}
    for spec in prepared.specs:
        if spec.attribute in shape.cached_text:
            continue  # moved to the CPU once its outputs are cached
        size = prepared.base_bytes[spec.attribute]
        if spec.denoiser:
            size = _nf4(size, prepared.linear_weight_counts[spec.attribute], prepared.weight_dtype, cfg)
            size -= _swapped_bytes(prepared.modules[spec.attribute], cfg)
        resident[spec.name] = size
    resident["vae"] = prepared.base_bytes["vae"]
    return resident


def _nf4(size: int, linear_weights: int, dtype: torch.dtype, cfg: RunConfig) -> int:
    """The denoiser's bytes with its Linear weights in bitsandbytes' NF4 (model.nf4_base): half a
    byte a weight, one 8-bit scale per 64 and a float32 one per 256 scales (approximate: the
    layers are not built here, bitsandbytes cannot quantize a fake tensor)."""
    if not cfg.model.nf4_base:
        return size
    element = torch.empty((), dtype=dtype).element_size()
    nf4 = linear_weights // 2 + linear_weights // NF4_BLOCK + 4 * math.ceil(linear_weights / (NF4_BLOCK * 256))
    return size - linear_weights * element + nf4


def _swapped(denoiser: nn.Module, cfg: RunConfig) -> list[nn.Module]:
    """The blocks training.blocks_to_swap keeps in CPU memory (engine/block_swap.py's choice)."""
    from engine.block_swap import DOUBLE_BLOCKS, SINGLE_BLOCKS, swap_split

    swap = cfg.training.blocks_to_swap if cfg.model.family == "flux" else 0
    if not swap or not hasattr(denoiser, SINGLE_BLOCKS):
        return []
    double, single = list(getattr(denoiser, DOUBLE_BLOCKS)), list(getattr(denoiser, SINGLE_BLOCKS))
    split = swap_split(swap, len(double), len(single))
    return double[len(double) - split.double :] + single[len(single) - split.single :]


def _frozen_bytes(block: nn.Module) -> int:
    tensors = {id(t): t for t in [*block.parameters(), *block.buffers()] if not t.requires_grad}  # not the LoRA
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _swapped_bytes(denoiser: nn.Module, cfg: RunConfig) -> int:
    """Bytes the swapped blocks leave off the device, less the one block on it while it computes."""
    sizes = [_frozen_bytes(block) for block in _swapped(denoiser, cfg)]
    return sum(sizes) - max(sizes, default=0)


# ------------------------------------------------------------------------------------ estimate
class Estimator:
    """Estimates for one model and network: the model is built once (twice when fp8 storage is an
    alternative), and each step shape measured once, so that alternatives cost only what they change."""

    def __init__(self, cfg: RunConfig) -> None:
        self._prepared: dict[bool, Prepared] = {}
        self._steps: dict[tuple[bool, StepShape], StepPeak] = {}
        self.prepared = self._prepared_for(cfg)

    def _prepared_for(self, cfg: RunConfig) -> Prepared:
        fp8 = bool(cfg.model.fp8_base)
        if fp8 not in self._prepared:
            self._prepared[fp8] = prepare(cfg)
        return self._prepared[fp8]

    def estimate(self, cfg: RunConfig) -> MemoryEstimate:
        started = time.perf_counter()
        prepared = self._prepared_for(cfg)
        shape = step_shape(cfg)
        key = (bool(cfg.model.fp8_base), shape)
        if key not in self._steps:
            self._steps[key] = measure_step(prepared, shape)
        step = self._steps[key]
        resident = resident_weights(prepared, shape, cfg)
        lora = sum(prepared.lora_bytes.values())
        opt = cfg.optimizer
        training = {
            "base_weights": sum(resident.values()),
            "lora_weights": lora,
            "lora_gradients": step.gradients,
            "optimizer_state": optimizer_state_bytes(opt.name, opt.args, prepared.lora_shapes, prepared.lora_zero),
            "activations": step.peak - step.gradients,
            "cuda_context": CUDA_CONTEXT_BYTES,
        }
        phase, breakdown = "training step", training
        if shape.latents_cached or shape.cached_text:
            caching = _caching_phase(prepared, shape, step)
            if sum(caching.values()) > sum(training.values()):
                phase, breakdown = "caching latents and text", caching
        return MemoryEstimate(
            total=sum(breakdown.values()),
            phase=phase,
            breakdown=breakdown,
            resident=resident,
            settings=_settings(cfg),
            seconds=round(time.perf_counter() - started, 3),
        )


def _caching_phase(prepared: Prepared, shape: StepShape, step: StepPeak) -> dict[str, int]:
    """Before the first step train.py caches the latents and the frozen encoders' outputs with every
    text encoder and the VAE on the device and the denoiser still in CPU memory (no optimizer state yet)."""
    encoders = [s.attribute for s in prepared.specs if not s.denoiser]
    return {
        "base_weights": sum(prepared.base_bytes[name] for name in [*encoders, "vae"]),
        "lora_weights": sum(prepared.lora_bytes.get(name, 0) for name in encoders),
        "lora_gradients": 0,
        "optimizer_state": 0,
        "activations": step.vae_encode if shape.latents_cached else 0,
        "cuda_context": CUDA_CONTEXT_BYTES,
    }


def _settings(cfg: RunConfig) -> dict[str, object]:
    names = [name for name, _ in _SETTINGS_SHOWN]
    return {name: cfg.get(name) for name in names if _has(cfg, name)}


_SETTINGS_SHOWN = [
    ("dataset.resolution", None),
    ("training.batch_size", None),
    ("training.gradient_checkpointing", None),
    ("training.mixed_precision", None),
    ("dataset.cache_text_encoder_outputs", None),
    ("dataset.cache_latents", None),
    ("optimizer.name", None),
    ("model.fp8_base", None),
    ("model.nf4_base", None),
    ("training.blocks_to_swap", None),
]


def _has(cfg: RunConfig, name: str) -> bool:
    section, _, key = name.partition(".")
    return hasattr(getattr(cfg, section), key)


def estimate(cfg: RunConfig) -> MemoryEstimate:
    """The run's peak accelerator memory (for the GPU suite and the launch)."""
    started = time.perf_counter()
    result = Estimator(cfg).estimate(cfg)
    return replace(result, seconds=round(time.perf_counter() - started, 3))


# -------------------------------------------------------------------------------- alternatives
def candidate_changes(cfg: RunConfig) -> list[dict[str, object]]:
    """Single changes that lower the peak, the least costly to the run first."""
    family = family_for(cfg.model.family)
    changes: list[dict[str, object]] = []
    frozen_encoders = [s for s in family.parts if not s.denoiser and not families.trains(cfg, s.part)]
    if cfg.dataset.cache_text_encoder_outputs == "off" and frozen_encoders:
        changes.append({"dataset.cache_text_encoder_outputs": "memory"})
    if cfg.dataset.cache_latents == "off":
        changes.append({"dataset.cache_latents": "memory"})
    if cfg.model.family == "flux":
        if not cfg.model.fp8_base and not cfg.model.nf4_base:
            changes.append({"model.fp8_base": True})
    if not cfg.training.gradient_checkpointing:
        changes.append({"training.gradient_checkpointing": True})
    if (canonical_optimizer(cfg.optimizer.name) or cfg.optimizer.name) in ("AdamW", "Prodigy", "DAdaptAdam", "Lion"):
        changes.append({"optimizer.name": "AdamW8bit"})
    if cfg.training.batch_size > 1:
        changes.append({"training.batch_size": 1})
    return changes


def _with(cfg: RunConfig, changes: dict[str, object]) -> RunConfig:
    import copy

    changed = copy.deepcopy(cfg)
    for name, value in changes.items():
        changed.set(name, value)
    return changed


def fitting_alternatives(estimator: Estimator, cfg: RunConfig, budget: int, limit: int = 3) -> list[Alternative]:
    """Settings under which the run fits in ``budget`` bytes: each single change that does, else
    the changes together, then with blocks swapped (Flux) or a lower resolution. Empty when
    nothing tried fits."""
    fitting: list[Alternative] = []
    combined: dict[str, object] = {}
    for change in candidate_changes(cfg):
        result = estimator.estimate(_with(cfg, change))
        if result.total <= budget:
            fitting.append(Alternative(change, result))
        combined.update(change)
    if fitting:
        return sorted(fitting, key=lambda a: len(a.changes))[:limit]
    together = estimator.estimate(_with(cfg, combined)) if combined else estimator.estimate(cfg)
    if together.total <= budget:
        return [Alternative(combined, together)]
    if cfg.model.family == "flux":
        for swap in range(max(1, cfg.training.blocks_to_swap + 1), 36):  # weights only: no step runs again
            change = {**combined, "training.blocks_to_swap": swap}
            result = estimator.estimate(_with(cfg, change))
            if result.total <= budget:
                return [Alternative(change, result)]
    side = cfg.dataset.resolution
    lower_sides = {s for s in (side * 3 // 4 // 64 * 64, side // 2 // 64 * 64, 512) if 64 <= s < side}
    for lower in sorted(lower_sides, reverse=True):
        change = {**combined, "dataset.resolution": lower}
        result = estimator.estimate(_with(cfg, change))
        if result.total <= budget:
            return [Alternative(change, result)]
    return []


# ------------------------------------------------------------------------------------------ CLI
def run(config: Path, budget: int | None, base_dir: Path | None) -> dict:
    cfg = load_config(config)
    if base_dir is not None:
        cfg.base_dir = base_dir
    started = time.perf_counter()
    estimator = Estimator(cfg)
    result = estimator.estimate(cfg)
    alternatives = []
    if budget is not None and result.total > budget:
        alternatives = [a.to_dict() for a in fitting_alternatives(estimator, cfg, budget)]
    return {
        "estimate": result.to_dict(),
        "budget": budget,
        "fits": None if budget is None else result.total <= budget,
        "alternatives": alternatives,
        "seconds": round(time.perf_counter() - started, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.memory_estimate", description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--budget", type=int, default=None, help="bytes free on the GPU: alternatives if over")
    parser.add_argument("--base-dir", type=Path, default=None, help="resolve the config's paths against this")
    args = parser.parse_args(argv)
    import logging
    import os
    import warnings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.disable(logging.WARNING)  # diffusers' and transformers' notes would only clutter the JSON's stream
    warnings.filterwarnings("ignore")
    try:
        output = run(args.config, args.budget, args.base_dir)
    except UserError as exc:
        output = {"error": {"message": exc.message, "where": exc.where, "fix": exc.fix}}
        print(json.dumps(output))
        return 2
    print(json.dumps(output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
