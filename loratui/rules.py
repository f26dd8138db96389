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

from loratui import families, preflight
from loratui.errors import Problem, UserError, error, note, warning
from loratui.optimizer_args import canonical_optimizer, parse_optimizer_args
from loratui.outputs import output_name_problems
from loratui.params import ADAPTIVE_OPTIMIZERS, BUILTIN_MODELS, CHECKPOINT_SUFFIXES, MODEL_FAMILIES, SD_FAMILIES

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
    is_checkpoint = path.suffix.lower() in CHECKPOINT_SUFFIXES
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
    if cfg.dataset.image_dir.strip():
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


@rule("dataset.resolution", "model.family")
def _resolution_of_the_base_models(cfg: RunConfig) -> list[Problem]:
    resolution = cfg.dataset.resolution
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
    if mode == "off" or not trained:
        return []
    rates = ", ".join(f"{part.lr_setting} {cfg.get(part.lr_setting):g}" for part in trained)
    message = (
        f'cache_text_encoder_outputs "{mode}" needs frozen text encoders, but network.train_unet_only is false '
        f"and {' and '.join(part.label for part in trained)} train{'s' if len(trained) == 1 else ''} ({rates})"
    )
    fix = 'set network.train_unet_only = true so that only the U-Net trains, or cache_text_encoder_outputs = "off"'
    return [error("dataset.cache_text_encoder_outputs", message, fix)]


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
        message = "text encoders frozen: train_unet_only is true, so only the U-Net is trained"
        cached = cfg.dataset.cache_text_encoder_outputs != "off"
        fix = "set train_unet_only = false" + (' and cache_text_encoder_outputs = "off"' if cached else "")
        return [note("network.train_unet_only", message, f"{fix} to train them too")]
    parts = families.text_encoder_parts(cfg.model.family)
    frozen = [part for part in parts if float(cfg.get(part.lr_setting)) == 0]  # type: ignore[arg-type]
    only_unet = ", so only the U-Net is trained" if len(frozen) == len(parts) else ""
    problems = []
    for part in frozen:
        key = part.lr_setting.partition(".")[2]
        message = f"{part.label} frozen: {key} is 0{only_unet}"
        problems.append(note(part.lr_setting, message, f"set {key} (e.g. 5e-5) to train it too"))
    return problems


@rule("optimizer.name", "optimizer.args")
def _optimizer_args(cfg: RunConfig) -> list[Problem]:
    try:
        args = parse_optimizer_args(cfg.optimizer.args)
    except UserError as err:
        return [error(err.where, err.message, err.fix)]
    if canonical_optimizer(cfg.optimizer.name) == "Adafactor" and args.get("relative_step") is True:
        message = "Adafactor with relative_step=True sets its own step size; unet_lr and text_encoder_lr are ignored"
        return [note("optimizer.args", message, "remove relative_step=True to use the LR fields")]
    return []


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
