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

from loratui import preflight
from loratui.errors import Problem, UserError, error, note, warning
from loratui.optimizer_args import canonical_optimizer, parse_optimizer_args
from loratui.outputs import output_name_problems
from loratui.params import ADAPTIVE_OPTIMIZERS, BUILTIN_MODELS, CHECKPOINT_SUFFIXES

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


@rule("dataset.resolution")
def _resolution_of_the_base_models(cfg: RunConfig) -> list[Problem]:
    resolution = cfg.dataset.resolution
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


# ---------------------------------------------------------------------------------------------
# [optimizer]


@rule("optimizer.name", "optimizer.unet_lr", "optimizer.text_encoder_lr")
def _adaptive_optimizer_lrs(cfg: RunConfig) -> list[Problem]:
    optimizer = cfg.optimizer
    name = canonical_optimizer(optimizer.name)
    if name not in ADAPTIVE_OPTIMIZERS:
        return []
    problems = []
    if 0 < optimizer.text_encoder_lr != optimizer.unet_lr:
        # Both estimate one step size for all parameters and refuse per-group LRs other than 0.
        message = f"{name} needs the same LR for the UNet and the text encoder (or 0 to freeze it)"
        fix = f"set optimizer.text_encoder_lr to {optimizer.unet_lr:g} or to 0"
        problems.append(error("optimizer.text_encoder_lr", message, fix))
    for key, lr in (("unet_lr", optimizer.unet_lr), ("text_encoder_lr", optimizer.text_encoder_lr)):
        if 0 < lr < 0.1:
            message = f"{name} adapts the step size itself and expects {key} = 1.0, got {lr:g}"
            problems.append(warning(f"optimizer.{key}", message, f"set {key} = 1.0"))
    return problems


@rule("optimizer.text_encoder_lr")
def _frozen_text_encoder(cfg: RunConfig) -> list[Problem]:
    if cfg.optimizer.text_encoder_lr != 0:
        return []
    message = "text encoder frozen: text_encoder_lr is 0, so only the U-Net is trained"
    return [note("optimizer.text_encoder_lr", message, "set text_encoder_lr (e.g. 5e-5) to train it too")]


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
