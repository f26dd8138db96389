"""Optimizer names and arguments as users write them: any case, and kohya's ``optimizer_args``.

Both sides use it: the config check parses the arguments to report mistakes at the field, and
the engine passes the parsed keyword arguments to the optimizer.
"""

from __future__ import annotations

import ast
import math
import re

from loratui.errors import UserError
from loratui.params import OPTIMIZERS

# Adafactor's arguments when optimizer.args does not give them: sd-scripts turns relative_step on (its own
# step size and schedule); scale_parameter and warmup_init are transformers' own defaults.
ADAFACTOR_DEFAULTS = {"relative_step": True, "scale_parameter": True, "warmup_init": False}

_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def canonical_optimizer(name: str) -> str | None:
    """The documented spelling of an optimizer name given in any case, or None if unknown."""
    by_lower = {known.lower(): known for known in OPTIMIZERS}
    return by_lower.get(name.strip().lower())


def parse_optimizer_args(args: list[str]) -> dict[str, object]:
    """Turn kohya-style ["key=value", ...] into keyword arguments for the optimizer.

    Values: true/false (any case) -> bool, None -> None, whole numbers -> int, other numbers
    (1e-3 too) -> float, comma-separated numbers -> tuple of floats ("0.9,0.999" -> (0.9, 0.999));
    anything else stays a string.
    """
    kwargs: dict[str, object] = {}
    for entry in args:
        key, raw_value = _split_arg(entry)
        if key in kwargs:
            raise _arg_error(f"'{key}' is given twice", "keep one of the two entries")
        kwargs[key] = _parse_arg_value(raw_value)
    return kwargs


def parse_scheduler_args(args: list[str]) -> dict[str, object]:
    """optimizer.scheduler_args (kohya's lr_scheduler_args) as keyword arguments: each value a Python
    literal, as sd-scripts reads it (``milestones=[100,200]``, ``eta_min=1e-6``, ``mode='triangular'``);
    what is no literal is read as :func:`parse_optimizer_args` reads a value (``true``, a bare word)."""
    where, example = "optimizer.scheduler_args", 'write each entry as key=value, e.g. "T_max=100"'
    kwargs: dict[str, object] = {}
    for entry in args:
        key, raw_value = _split_arg(entry, where, example)
        if key in kwargs:
            raise _arg_error(f"'{key}' is given twice", "keep one of the two entries", where)
        try:
            kwargs[key] = ast.literal_eval(raw_value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            kwargs[key] = _parse_arg_value(raw_value)
    return kwargs


def warmup_steps_for(warmup_steps: int, warmup_ratio: float, total_steps: int) -> int:
    """The warmup in steps: ``warmup_ratio`` of the run when set (sd-scripts: int(ratio x total)),
    else ``warmup_steps``. The check refuses both set at once."""
    return int(warmup_ratio * total_steps) if warmup_ratio > 0 else warmup_steps


def adafactor_relative_step(args: dict[str, object]) -> bool:
    """Whether Adafactor with these arguments sets its own step size (sd-scripts' default: it does)."""
    return args.get("relative_step", ADAFACTOR_DEFAULTS["relative_step"]) is True


def _split_arg(
    entry: str, where: str = "optimizer.args", example: str = 'write each entry as key=value, e.g. "weight_decay=0.01"'
) -> tuple[str, str]:
    key, sep, value = entry.partition("=")
    key, value = key.strip(), value.strip()
    if not sep:
        raise _arg_error(f"entry {entry!r} has no '='", example, where)
    if not key:
        raise _arg_error(f"entry {entry!r} has no key before '='", example, where)
    if not key.isidentifier():
        raise _arg_error(f"entry {entry!r}: '{key}' is not a valid argument name", example, where)
    if not value:
        raise _arg_error(f"entry {entry!r} has no value after '='", example, where)
    return key, value


def _arg_error(message: str, fix: str, where: str = "optimizer.args") -> UserError:
    return UserError(message, where, fix, "config")


def _parse_arg_value(text: str) -> object:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if text == "None":  # exact, as in Python; "none" may be a legitimate string value
        return None
    if _INTEGER.fullmatch(text):
        return int(text)
    if _NUMBER.fullmatch(text):
        return float(text)
    # Users paste betas as "0.9,0.999" or the Python spelling "(0.9, 0.999)".
    parts = [part.strip() for part in text.strip("()[]").split(",")]
    if "," in text and all(_NUMBER.fullmatch(part) for part in parts):
        return tuple(float(part) for part in parts)
    return text


# The values the optimizers refuse in their own __init__, so that the check says so at the field
# instead of the engine at start-up: torch's and bitsandbytes' optimizers want lr, eps and
# weight_decay of 0 or more and betas from 0 to below 1; DAdaptation and Prodigy want lr, eps
# and d0 above 0; lion_pytorch wants lr above 0 and betas from 0 to 1. A negative weight decay
# (which Lion and Adafactor would take) grows the weights instead of shrinking them: refused too.
_ABOVE_ZERO = {"Lion": ("lr",), "DAdaptAdam": ("lr", "eps", "d0"), "Prodigy": ("lr", "eps", "d0")}
_AT_LEAST_ZERO = ("lr", "eps", "weight_decay")
_BETAS_UP_TO_ONE = ("Lion",)


def argument_value_problem(optimizer: str, key: str, value: object) -> tuple[str, str] | None:
    """(what is wrong, the fix) for an argument's value the optimizer refuses, else None.

    Only numbers are judged here: a value of the wrong type is the signature check's
    (:mod:`loratui.optimizer_signatures`)."""
    if key == "betas" and isinstance(value, tuple) and all(_is_number(beta) for beta in value):
        top_allowed = optimizer in _BETAS_UP_TO_ONE
        if all(0 <= beta < 1 or (top_allowed and beta == 1) for beta in value):
            return None
        shown = ",".join(f"{beta:g}" for beta in value)
        upper = "1" if top_allowed else "below 1"
        return f"{optimizer}'s betas must each be from 0 to {upper}, got {shown}", "e.g. betas=0.9,0.999"
    if not _is_number(value) or key not in _AT_LEAST_ZERO + _ABOVE_ZERO.get(optimizer, ()):
        return None
    if key in _ABOVE_ZERO.get(optimizer, ()):
        return None if value > 0 else (f"{optimizer}'s {key} must be above 0, got {value:g}", _VALUE_FIX[key])
    return None if value >= 0 else (f"{optimizer}'s {key} must be 0 or more, got {value:g}", _VALUE_FIX[key])


_VALUE_FIX = {
    "lr": "set the learning rates in optimizer.unet_lr and text_encoder_lr, and remove lr from args",
    "eps": "e.g. eps=1e-8 (the usual value), or remove it to use the default",
    "weight_decay": "e.g. weight_decay=0.01, or 0 for none",
    "d0": "e.g. d0=1e-6 (the default), or remove it",
}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
