"""The rules that one setting's declaration cannot say: a value judged against another setting or
against the disk (alpha above rank, bucket sides against the resolution, a model path that must
exist, optimizer arguments that must parse).

Each rule names the settings it reads. When one of those already has an error of its own (a
value out of range, a NUL byte in a path), the rule is skipped: the user sees one problem per
mistake, and no rule ever works on a value that could make it crash.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from loratui import families, flux_blocks, flux_files, preflight
from loratui.errors import Problem, UserError, error, note, warning
from loratui.optimizer_args import adafactor_relative_step, canonical_optimizer, parse_optimizer_args
from loratui.outputs import output_name_problems
from loratui.params import (
    ADAPTIVE_OPTIMIZERS,
    BUILTIN_MODELS,
    BY_NAME,
    CHECKPOINT_SUFFIXES,
    MODEL_FAMILIES,
    SD_FAMILIES,
)

if TYPE_CHECKING:
    from loratui.config import RunConfig

TOKENIZER_FILES = ("vocab.json", "merges.txt")
FAST_TOKENIZER_FILE = "tokenizer.json"  # transformers 5 saves only this one


@dataclass(frozen=True)
class Rule:
    reads: tuple[str, ...]  # the settings it looks at
    check: Callable[[RunConfig], list[Problem]]


RULES: list[Rule] = []


def rule(*reads: str) -> Callable:
    """Register a rule reading these settings."""

    def register(check: Callable[[RunConfig], list[Problem]]) -> Callable[[RunConfig], list[Problem]]:
        RULES.append(Rule(reads, check))
        return check

    return register


def rule_problems(cfg: RunConfig, skip: set[str]) -> list[Problem]:
    """The problems of every rule whose settings are not in ``skip`` (those that have errors)."""
    return [problem for r in RULES if not skip.intersection(r.reads) for problem in r.check(cfg)]


# ---------------------------------------------------------------------------------------------
# [model]


@rule("model.path")
def _model_path(cfg: RunConfig) -> list[Problem]:
    path = cfg.model.path
    if not path.strip():
        fix = 'set path to a diffusers folder, a .safetensors or .ckpt file, or "loratui:tiny-sd" (the built-in test model)'
        return [error("model.path", "no base model is set", fix)]
    if cfg.model.is_builtin:
        if path in BUILTIN_MODELS:
            return []
        return [error("model.path", f"unknown built-in model {path!r}", f"use one of: {', '.join(BUILTIN_MODELS)}")]
    return _model_location_problems(cfg)


def _model_location_problems(cfg: RunConfig) -> list[Problem]:
    path = cfg.resolve(cfg.model.path)
    # BFL's own files are also published as .sft (safetensors under another name).
    suffixes = CHECKPOINT_SUFFIXES + ((".sft",) if cfg.model.family == "flux" else ())
    is_checkpoint = path.suffix.lower() in suffixes
    where_from = f"relative paths start at the config's folder ({cfg.base_dir})"
    if path.is_dir() or (path.is_file() and is_checkpoint):
        return []
    if not path.exists():
        hub_id = preflight.hub_id_problems(cfg)  # a repo id where a local path belongs
        if hub_id:
            return hub_id
    if path.is_file():
        message = f"{path} is a file but not a .safetensors or .ckpt checkpoint"
        fix = "point path at a diffusers folder (with model_index.json) or a .safetensors/.ckpt file"
        return [error("model.path", message, fix)]
    if is_checkpoint:
        return [error("model.path", f"checkpoint file not found: {path}", f"check the file name; {where_from}")]
    message = f"model folder not found: {path} (expected a diffusers folder with model_index.json)"
    fix = f"check the folder name, or give a .safetensors/.ckpt file; {where_from}"
    return [error("model.path", message, fix)]


@rule("model.path", "model.family")
def _builtin_family(cfg: RunConfig) -> list[Problem]:
    """A built-in model is of one family; a config of another would load it with the wrong parts."""
    family = families.BUILTIN_FAMILIES.get(cfg.model.path) if cfg.model.is_builtin else None
    if family is None or family == cfg.model.family:
        return []
    message = f"{cfg.model.path} is an {families.family_name(family)} model, but model.family is {cfg.model.family!r}"
    return [error("model.family", message, f'set model.family = "{family}"')]


@rule("model.clip_skip", "model.family")
def _clip_skip_ignored(cfg: RunConfig) -> list[Problem]:
    """SDXL takes fixed layers of its two text encoders; sd-scripts warns and ignores --clip_skip."""
    if cfg.model.family in SD_FAMILIES or cfg.model.family not in MODEL_FAMILIES or cfg.model.clip_skip == 1:
        return []
    message = f"clip_skip {cfg.model.clip_skip} is ignored: {families.family_name(cfg.model.family)} has no clip skip"
    return [warning("model.clip_skip", message, "set clip_skip = 1, or remove it")]


@rule("model.no_half_vae", "training.mixed_precision", "model.family")
def _half_sdxl_vae(cfg: RunConfig) -> list[Problem]:
    if cfg.model.family != "sdxl" or cfg.model.no_half_vae or cfg.training.mixed_precision != "fp16":
        return []
    message = "no_half_vae is off with fp16: the SDXL VAE gives NaN latents in fp16 (a NaN loss, black images)"
    fix = "set no_half_vae = true, unless the model's VAE is fp16-safe, such as sdxl-vae-fp16-fix"
    return [warning("model.no_half_vae", message, fix)]


@rule("model.tokenizer")
def _tokenizer(cfg: RunConfig) -> list[Problem]:
    if not cfg.model.tokenizer.strip():
        return []
    folder = cfg.resolve(cfg.model.tokenizer)
    fix = 'point tokenizer at a CLIP tokenizer folder (vocab.json and merges.txt, or tokenizer.json), or set it to ""'
    if not folder.is_dir():
        return [error("model.tokenizer", f"tokenizer folder not found: {folder}", fix)]
    if (folder / FAST_TOKENIZER_FILE).is_file():
        return []
    if (folder / "tokenizer").is_dir():
        return []  # a model folder (SDXL's has tokenizer/ and tokenizer_2/): preflight.single_file_configs checks it
    missing = [name for name in TOKENIZER_FILES if not (folder / name).is_file()]
    if missing:
        return [error("model.tokenizer", f"{folder} has no {' or '.join(missing)}", fix)]
    return []


# ---------------------------------------------------------------------------------------------
# [dataset]


@rule("dataset.image_dir")
def _image_dir(cfg: RunConfig) -> list[Problem]:
    if cfg.dataset.image_dir.strip() or cfg.subsets:  # [[subsets]] tables may hold every image
        return []
    fix = 'set image_dir to the folder with your training images, e.g. image_dir = "img"'
    return [error("dataset.image_dir", "no image folder is set", fix)]


@rule("dataset.caption_extension")
def _caption_extension(cfg: RunConfig) -> list[Problem]:
    extension = cfg.dataset.caption_extension
    if extension.startswith(".") and len(extension) >= 2:
        return []
    fixed = "." + (extension.lstrip(".") or "txt")
    message = f"caption_extension {extension!r} must start with a dot"
    return [error("dataset.caption_extension", message, f'write caption_extension = "{fixed}"')]


# SDXL's UNet halves the latents three times and sd-scripts asserts sides divisible by 32.
SDXL_SIDE_MULTIPLE = 32


# FLUX.1 packs 2x2 patches of latents 8 times smaller than the image: image sides in multiples of 16.
FLUX_SIDE_MULTIPLE = 16


@rule("dataset.resolution", "model.family")
def _resolution_of_the_base_models(cfg: RunConfig) -> list[Problem]:
    resolution = cfg.dataset.resolution
    if cfg.model.family == "flux":
        if resolution % FLUX_SIDE_MULTIPLE == 0:
            return []
        nearest = max(FLUX_SIDE_MULTIPLE, round(resolution / FLUX_SIDE_MULTIPLE) * FLUX_SIDE_MULTIPLE)
        message = f"resolution {resolution} is not a multiple of 16, which FLUX.1 needs (it packs 2x2 latent patches)"
        return [error("dataset.resolution", message, f"use {nearest}, or 1024 (512 trains faster)")]
    if cfg.model.family == "sdxl" and resolution % SDXL_SIDE_MULTIPLE:
        nearest = max(SDXL_SIDE_MULTIPLE, round(resolution / SDXL_SIDE_MULTIPLE) * SDXL_SIDE_MULTIPLE)
        message = f"resolution {resolution} is not a multiple of 32, which SDXL needs"
        return [error("dataset.resolution", message, f"use {nearest}, or 1024, SDXL's own resolution")]
    if resolution % 64 == 0:
        return []
    message = f"resolution {resolution} is not a multiple of 64; the base models were trained on multiples of 64"
    return [warning("dataset.resolution", message, f"use {max(64, round(resolution / 64) * 64)}")]


@rule("dataset.enable_buckets", "dataset.resolution", "dataset.min_bucket_reso", "dataset.max_bucket_reso")
def _bucket_sides(cfg: RunConfig) -> list[Problem]:
    dataset = cfg.dataset
    if not dataset.enable_buckets:
        return []
    problems = []
    resolution = dataset.resolution
    if dataset.min_bucket_reso > resolution:
        message = f"min_bucket_reso {dataset.min_bucket_reso} is above resolution {resolution}"
        fix = f"set min_bucket_reso to {resolution} or less (256 is usual)"
        problems.append(error("dataset.min_bucket_reso", message, fix))
    if dataset.max_bucket_reso < resolution:
        message = f"max_bucket_reso {dataset.max_bucket_reso} is below resolution {resolution}"
        fix = f"set max_bucket_reso to {resolution} or more (twice the resolution is usual)"
        problems.append(error("dataset.max_bucket_reso", message, fix))
    return problems


@rule("dataset.enable_buckets", "dataset.bucket_reso_steps", "model.family")
def _sdxl_bucket_steps(cfg: RunConfig) -> list[Problem]:
    dataset = cfg.dataset
    steps = dataset.bucket_reso_steps
    if cfg.model.family != "sdxl" or not dataset.enable_buckets or steps % SDXL_SIDE_MULTIPLE == 0:
        return []
    nearest = max(SDXL_SIDE_MULTIPLE, round(steps / SDXL_SIDE_MULTIPLE) * SDXL_SIDE_MULTIPLE)
    message = f"bucket_reso_steps {steps} is not a multiple of 32: SDXL needs bucket sides in multiples of 32"
    return [error("dataset.bucket_reso_steps", message, f"use {nearest}; 32 and 64 are usual")]


@rule("dataset.enable_buckets", "dataset.bucket_reso_steps", "dataset.min_bucket_reso", "dataset.max_bucket_reso")
def _flux_bucket_sides(cfg: RunConfig) -> list[Problem]:
    """Bucket sides are min_bucket_reso plus steps, or max_bucket_reso where a side is capped."""
    dataset = cfg.dataset
    if cfg.model.family != "flux" or not dataset.enable_buckets:
        return []
    problems = []
    for key in ("bucket_reso_steps", "min_bucket_reso", "max_bucket_reso"):
        value = getattr(dataset, key)
        if value % FLUX_SIDE_MULTIPLE:
            nearest = max(FLUX_SIDE_MULTIPLE, round(value / FLUX_SIDE_MULTIPLE) * FLUX_SIDE_MULTIPLE)
            message = f"{key} {value} is not a multiple of 16: FLUX.1 needs image sides in multiples of 16"
            problems.append(error(f"dataset.{key}", message, f"use {nearest}"))
    return problems


@rule("dataset.reg_dir", "model.family")
def _flux_regularisation(cfg: RunConfig) -> list[Problem]:
    if cfg.model.family != "flux" or not cfg.dataset.reg_dir.strip():
        return []
    message = (
        "regularisation images with FLUX.1: the Flux guides train without them (repeats 1, many epochs), "
        "and they double every epoch's steps"
    )
    return [warning("dataset.reg_dir", message, 'set reg_dir = "" to leave them out')]


@rule(
    "dataset.cache_text_encoder_outputs",
    "network.train_unet_only",
    "optimizer.text_encoder_lr",
    "optimizer.text_encoder_2_lr",
    "model.family",
)
def _text_cache_needs_frozen_encoders(cfg: RunConfig) -> list[Problem]:
    """Cached outputs are computed once: an encoder that trains would change them at every step."""
    mode = cfg.dataset.cache_text_encoder_outputs
    trained = families.trained_text_encoders(cfg)
    if cfg.model.family == "flux" and mode != "off":
        return _flux_text_cache(cfg, mode, trained)
    if mode == "off" or not trained:
        return []
    rates = ", ".join(f"{part.lr_setting} {cfg.get(part.lr_setting):g}" for part in trained)
    message = (
        f'cache_text_encoder_outputs "{mode}" needs frozen text encoders, but network.train_unet_only is false '
        f"and {' and '.join(part.label for part in trained)} train{'s' if len(trained) == 1 else ''} ({rates})"
    )
    fix = 'set network.train_unet_only = true so that only the U-Net trains, or cache_text_encoder_outputs = "off"'
    return [error("dataset.cache_text_encoder_outputs", message, fix)]


def _flux_text_cache(cfg: RunConfig, mode: str, trained: tuple[families.LoraPart, ...]) -> list[Problem]:
    """FLUX.1 caches per encoder, as sd-scripts does: T5-XXL never trains, so its outputs are always
    cached; CLIP-L's only while it is frozen (a CLIP-L that trains runs at every step)."""
    where = "on disk" if mode == "disk" else "in memory"
    if trained:
        message = f"T5-XXL outputs are cached {where}; CLIP-L trains, so it encodes the captions at every step"
        fix = "set network.train_unet_only = true to cache CLIP-L too (faster, less memory)"
    else:
        message = f"T5-XXL and CLIP-L outputs are cached {where}: neither encoder runs while the transformer trains"
        fix = ""
    return [note("dataset.cache_text_encoder_outputs", message, fix)]


# ---------------------------------------------------------------------------------------------
# [network]


@rule("network.rank", "network.alpha")
def _alpha_above_rank(cfg: RunConfig) -> list[Problem]:
    rank, alpha = cfg.network.rank, cfg.network.alpha
    if alpha <= rank:
        return []
    message = (
        f"alpha {alpha:g} is above rank {rank}: alpha above rank scales the update up; "
        "the guides advise alpha at half the rank or less"
    )
    return [warning("network.alpha", message, f"set alpha = {rank / 2:g} or lower")]


# ---------------------------------------------------------------------------------------------
# [training]


@rule("training.resume_from")
def _resume_folder(cfg: RunConfig) -> list[Problem]:
    if not cfg.training.resume_from.strip():
        return []
    folder = cfg.resolve(cfg.training.resume_from)
    if folder.is_dir():
        return []
    fix = (
        'point it at a "<name>-000001-state" folder from a run with save_state = true, '
        'or set resume_from = "" to start fresh'
    )
    found = "is a file, not a state folder" if folder.exists() else "does not exist"
    return [error("training.resume_from", f"{folder} {found}", fix)]


@rule("training.zero_terminal_snr", "model.v_prediction")
def _zero_terminal_snr_without_v_prediction(cfg: RunConfig) -> list[Problem]:
    if not cfg.training.zero_terminal_snr or cfg.model.v_prediction:
        return []
    message = (
        "zero_terminal_snr is on but model.v_prediction is off: with noise prediction the image cannot be "
        "recovered at the last timestep (zero signal), so it is meant for v-prediction models only"
    )
    fix = "set model.v_prediction = true, or zero_terminal_snr = false"
    return [warning("training.zero_terminal_snr", message, fix)]


@rule("training.validate_every_n_steps", "dataset.validation_split", "dataset.validation_dir")
def _validation_without_held_out_images(cfg: RunConfig) -> list[Problem]:
    every = cfg.training.validate_every_n_steps
    if every <= 0 or cfg.dataset.validation_split > 0 or cfg.dataset.validation_dir.strip():
        return []
    message = f"validate_every_n_steps = {every} but no image is held out, so no validation loss is measured"
    fix = "set dataset.validation_split (e.g. 0.1) or dataset.validation_dir, or validate_every_n_steps = 0"
    return [warning("training.validate_every_n_steps", message, fix)]


# ---------------------------------------------------------------------------------------------
# [optimizer]


@rule(
    "optimizer.name",
    "optimizer.unet_lr",
    "optimizer.text_encoder_lr",
    "optimizer.text_encoder_2_lr",
    "network.train_unet_only",
    "model.family",
)
def _adaptive_optimizer_lrs(cfg: RunConfig) -> list[Problem]:
    optimizer = cfg.optimizer
    name = canonical_optimizer(optimizer.name)
    if name not in ADAPTIVE_OPTIMIZERS:
        return []
    problems = []
    trained = families.trained_text_encoders(cfg)
    for part in trained:
        lr = float(cfg.get(part.lr_setting))  # type: ignore[arg-type]
        if lr != optimizer.unet_lr:
            # Both estimate one step size for all parameters and refuse per-group LRs other than 0.
            message = f"{name} needs the same LR for the UNet and the {part.label} (or 0 to freeze it)"
            fix = f"set {part.lr_setting} to {optimizer.unet_lr:g} or to 0"
            problems.append(error(part.lr_setting, message, fix))
    for setting in ("optimizer.unet_lr", *(part.lr_setting for part in trained)):
        key, lr = setting.partition(".")[2], float(cfg.get(setting))  # type: ignore[arg-type]
        if 0 < lr < 0.1:
            message = f"{name} adapts the step size itself and expects {key} = 1.0, got {lr:g}"
            problems.append(warning(setting, message, f"set {key} = 1.0"))
    return problems


@rule(
    "optimizer.text_encoder_lr",
    "optimizer.text_encoder_2_lr",
    "network.train_unet_only",
    "dataset.cache_text_encoder_outputs",
    "model.family",
)
def _frozen_text_encoder(cfg: RunConfig) -> list[Problem]:
    if cfg.network.train_unet_only:
        message = f"text encoders frozen: train_unet_only is true, so only the {_denoiser(cfg)} is trained"
        # FLUX.1 keeps T5-XXL's outputs cached while CLIP-L trains; the SD families cache all or none.
        cached = cfg.dataset.cache_text_encoder_outputs != "off" and cfg.model.family != "flux"
        fix = "set train_unet_only = false" + (' and cache_text_encoder_outputs = "off"' if cached else "")
        return [note("network.train_unet_only", message, f"{fix} to train them too")]
    parts = families.text_encoder_parts(cfg.model.family)
    frozen = [part for part in parts if float(cfg.get(part.lr_setting)) == 0]  # type: ignore[arg-type]
    only_unet = f", so only the {_denoiser(cfg)} is trained" if len(frozen) == len(parts) else ""
    problems = []
    for part in frozen:
        key = part.lr_setting.partition(".")[2]
        message = f"{part.label} frozen: {key} is 0{only_unet}"
        problems.append(note(part.lr_setting, message, f"set {key} (e.g. 5e-5) to train it too"))
    return problems


def _denoiser(cfg: RunConfig) -> str:
    """What messages call the model part trained at unet_lr."""
    return "transformer" if cfg.model.family == "flux" else "U-Net"


@rule("optimizer.name", "optimizer.args")
def _optimizer_args(cfg: RunConfig) -> list[Problem]:
    try:
        args = parse_optimizer_args(cfg.optimizer.args)
    except UserError as err:
        return [error(err.where, err.message, err.fix)]
    if canonical_optimizer(cfg.optimizer.name) == "Adafactor" and adafactor_relative_step(args):
        # sd-scripts' default; it then logs that the LR is only the initial one and uses Adafactor's schedule.
        message = (
            "Adafactor with relative_step (on unless optimizer.args turns it off, as in sd-scripts) sets its own "
            "step size and schedule: unet_lr and text_encoder_lr are only the initial LR shown, and "
            f"optimizer.scheduler ({cfg.optimizer.scheduler}) is ignored"
        )
        return [note("optimizer.args", message, "add relative_step=False to use the LR fields and the schedule")]
    return []


# ---------------------------------------------------------------------------------------------
# FLUX.1: how the base weights are held, block swap, and what dev and schnell take. sd-scripts'
# flux_train_network.py and train_network.py assert the same where they have the setting.


@rule("model.fp8_base", "model.nf4_base", "model.family")
def _fp8_and_nf4(cfg: RunConfig) -> list[Problem]:
    if cfg.model.family != "flux" or not (cfg.model.fp8_base and cfg.model.nf4_base):
        return []
    message = "fp8_base and nf4_base are both on; the base weights can be held in only one of them"
    fix = "set nf4_base = false (fp8 keeps more precision), or fp8_base = false (NF4 takes half fp8's memory)"
    return [error("model.nf4_base", message, fix)]


@rule("model.fp8_base", "model.nf4_base", "training.mixed_precision", "model.family")
def _low_bit_base_without_mixed_precision(cfg: RunConfig) -> list[Problem]:
    """fp8 and NF4 weights are computed in the training precision. sd-scripts refuses fp8_base with
    mixed_precision "no"; loratui's engine upcasts the stored weights itself, so it runs, in float32:
    on a GPU that is slower and takes twice the activation memory, so it is said; on a machine without
    a CUDA GPU fp16/bf16 cannot run at all, and float32 is what a CPU test run needs."""
    model = cfg.model
    if model.family != "flux" or cfg.training.mixed_precision != "no" or not (model.fp8_base or model.nf4_base):
        return []
    machine = preflight.this_machine()
    if machine.gpu is None:
        return []
    key = "fp8_base" if model.fp8_base else "nf4_base"
    message = (
        f'{key} with mixed_precision "no": the stored weights are computed in float32, slower and with twice the '
        "activation memory of bf16 (sd-scripts refuses fp8_base without mixed precision)"
    )
    fix = f'set mixed_precision = "{preflight.precision_for(machine)}" (what {machine.gpu} computes in)'
    return [warning("training.mixed_precision", message, fix)]


@rule("model.nf4_base", "model.family")
def _nf4_needs_bitsandbytes_on_cuda(cfg: RunConfig) -> list[Problem]:
    if cfg.model.family != "flux" or not cfg.model.nf4_base:
        return []
    fix = "set nf4_base = false; fp8_base = true halves the memory of the base weights too"
    if not preflight.installed("bitsandbytes"):
        message = "nf4_base needs bitsandbytes, which is not installed"
        return [error("model.nf4_base", message, f"pip install bitsandbytes, or {fix}")]
    machine = preflight.this_machine()
    if machine.gpu is None:
        return [error("model.nf4_base", f"nf4_base needs a CUDA GPU (bitsandbytes' NF4), and {machine.no_gpu}", fix)]
    return []


@rule("training.cpu_offload_checkpointing", "training.gradient_checkpointing", "training.blocks_to_swap")
def _checkpoint_offload(cfg: RunConfig) -> list[Problem]:
    training = cfg.training
    if cfg.model.family != "flux" or not training.cpu_offload_checkpointing:
        return []
    if training.blocks_to_swap:
        message = f"cpu_offload_checkpointing cannot be used with blocks_to_swap {training.blocks_to_swap}"
        fix = "set cpu_offload_checkpointing = false (block swap saves more), or blocks_to_swap = 0"
        return [error("training.cpu_offload_checkpointing", message, fix)]
    if not training.gradient_checkpointing:
        message = "cpu_offload_checkpointing has no effect: gradient_checkpointing is off, so nothing is checkpointed"
        fix = "set gradient_checkpointing = true, or cpu_offload_checkpointing = false"
        return [warning("training.cpu_offload_checkpointing", message, fix)]
    return []


def _flux_shape(cfg: RunConfig) -> flux_blocks.FluxShape | None:
    location = None if cfg.model.is_builtin else cfg.resolve(cfg.model.path)
    return flux_blocks.flux_shape(cfg.model.path, location)


@rule("training.blocks_to_swap", "training.gradient_checkpointing", "model.nf4_base")
def _block_swap_needs(cfg: RunConfig) -> list[Problem]:
    """What the engine's block swap refuses once the model is loaded (engine/block_swap.py), said first."""
    wanted = cfg.training.blocks_to_swap
    if cfg.model.family != "flux" or not wanted:
        return []
    if cfg.model.nf4_base:
        message = f"blocks_to_swap {wanted} cannot move NF4 (4-bit) blocks"
        fix = "set nf4_base = false and fp8_base = true with block swap, or blocks_to_swap = 0 (NF4 fits without it)"
        return [error("training.blocks_to_swap", message, fix)]
    if not cfg.training.gradient_checkpointing:
        message = f"blocks_to_swap {wanted} needs gradient checkpointing, which is off"
        fix = "set training.gradient_checkpointing = true, or blocks_to_swap = 0"
        return [error("training.blocks_to_swap", message, fix)]
    return []


@rule("training.blocks_to_swap", "model.path", "model.family")
def _blocks_to_swap_within_the_model(cfg: RunConfig) -> list[Problem]:
    wanted = cfg.training.blocks_to_swap
    if cfg.model.family != "flux" or not wanted or not cfg.model.path.strip():
        return []
    shape = _flux_shape(cfg)
    if shape is None:
        return []  # the model's own rules say what is wrong with it
    enough = flux_blocks.blocks_to_swap_for_all(shape)
    if wanted <= enough:
        return []
    message = (
        f"blocks_to_swap {wanted} is more than this model has: {enough} already keeps all its "
        f"{shape.double_blocks} double and {shape.single_blocks} single blocks in CPU memory"
    )
    return [warning("training.blocks_to_swap", message, f"set blocks_to_swap = {enough} or less")]


def _flux_variant(cfg: RunConfig) -> str | None:
    """dev or schnell: the setting, or (auto) what the weights say; None when unknown."""
    if cfg.model.flux_variant != "auto":
        return cfg.model.flux_variant
    if not cfg.model.path.strip():
        return None
    return flux_files.flux_variant_of(cfg)


@rule("training.guidance_scale", "model.flux_variant", "model.path", "model.family")
def _schnell_guidance(cfg: RunConfig) -> list[Problem]:
    scale = cfg.training.guidance_scale
    if cfg.model.family != "flux" or scale == BY_NAME["training.guidance_scale"].default:
        return []
    if _flux_variant(cfg) != "schnell":
        return []
    message = f"guidance_scale {scale:g} is ignored: FLUX.1 schnell has no guidance input (only dev has)"
    return [note("training.guidance_scale", message, "leave it at 3.5, or train on FLUX.1 dev")]


SCHNELL_T5_TOKENS = 256  # BFL's flux loads T5 with 256 tokens for schnell, 512 for dev; so does sd-scripts


@rule("model.t5xxl_max_token_length", "model.flux_variant", "model.path", "model.family")
def _schnell_t5_tokens(cfg: RunConfig) -> list[Problem]:
    tokens = cfg.model.t5xxl_max_token_length
    if cfg.model.family != "flux" or tokens <= SCHNELL_T5_TOKENS or _flux_variant(cfg) != "schnell":
        return []
    message = (
        f"t5xxl_max_token_length {tokens} is above schnell's {SCHNELL_T5_TOKENS}: schnell was made for "
        f"{SCHNELL_T5_TOKENS} T5 tokens (BFL's own code gives it {SCHNELL_T5_TOKENS}, dev 512)"
    )
    return [warning("model.t5xxl_max_token_length", message, "set t5xxl_max_token_length = 0 (256 for schnell)")]


# ---------------------------------------------------------------------------------------------
# [output]

# Letters and digits of any script, plus these; everything else is risky in a file name.
_NAME_EXTRA_CHARS = "-_. "


@rule("output.name")
def _output_name(cfg: RunConfig) -> list[Problem]:
    name = cfg.output.name
    if not name.strip():
        return [error("output.name", "no file name is set", 'set name, e.g. name = "mylora"')]
    if "/" in name or "\\" in name:
        message = f"name {name!r} contains a path separator"
        return [
            error("output.name", message, 'give only the file stem, e.g. name = "mylora"; folders go in output_dir')
        ]
    bad = sorted({char for char in name if not (char.isalnum() or char in _NAME_EXTRA_CHARS)})
    if bad:
        cleaned = "".join(char if char.isalnum() or char in _NAME_EXTRA_CHARS else "_" for char in name)
        shown = " ".join(char if char.isprintable() else repr(char) for char in bad)
        message = f"name {name!r} contains {shown}; only letters, digits, '-', '_', '.' and spaces are allowed"
        return [error("output.name", message, f'e.g. name = "{cleaned}"')]
    unusable = output_name_problems(name)  # hidden, option-like, or too long with the engine's suffixes
    if unusable:
        return unusable
    suffix = Path(name).suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES:
        message = f"name {name!r} ends in {suffix}; the file would be called {name}.safetensors"
        return [warning("output.name", message, f'drop the extension: name = "{name[: -len(suffix)]}"')]
    return []


@rule("output.output_dir")
def _output_dir(cfg: RunConfig) -> list[Problem]:
    return _writable_folder_problems(cfg, "output.output_dir", cfg.output.output_dir)


@rule("output.log_dir")
def _log_dir(cfg: RunConfig) -> list[Problem]:
    return _writable_folder_problems(cfg, "output.log_dir", cfg.output.log_dir)


def _writable_folder_problems(cfg: RunConfig, where: str, value: str) -> list[Problem]:
    """The folder must be creatable and writable. Nothing is created here."""
    if not value.strip():
        return [error(where, "no folder is set", "set it to a folder loratui may write to")]
    folder = cfg.resolve(value)
    existing = next((candidate for candidate in (folder, *folder.parents) if candidate.exists()), None)
    if existing is None or not existing.is_dir():
        return [
            error(
                where,
                f"{folder} cannot be created: {existing} is not a folder",
                "choose a folder path whose parents are folders",
            )
        ]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [
            error(
                where,
                f"{folder} is not writable (no write permission on {existing})",
                "choose a folder you can write to, or fix its permissions",
            )
        ]
    return []


# The [sample] section's rules and log_with's live in their own module, registered on import. Last:
# that module imports rule() from here.
from loratui import (  # noqa: E402, F401  # noqa: E402, F401
    caption_rules,
    image_rules,  # noqa: E402, F401
    lycoris_rules,  # noqa: E402, F401
    objective_rules,  # noqa: E402, F401
    sample_rules,
    saving_rules,
    scheduler_rules,
)
