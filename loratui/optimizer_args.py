"""Optimizer names and arguments as users write them: any case, and kohya's ``optimizer_args``.

Both sides use it: the config check parses the arguments to report mistakes at the field, and
the engine passes the parsed keyword arguments to the optimizer.
"""

from __future__ import annotations

import re

from loratui.errors import UserError
from loratui.params import OPTIMIZERS

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


def _split_arg(entry: str) -> tuple[str, str]:
    key, sep, value = entry.partition("=")
    key, value = key.strip(), value.strip()
    example = 'write each entry as key=value, e.g. "weight_decay=0.01"'
    if not sep:
        raise _arg_error(f"entry {entry!r} has no '='", example)
    if not key:
        raise _arg_error(f"entry {entry!r} has no key before '='", example)
    if not key.isidentifier():
        raise _arg_error(f"entry {entry!r}: '{key}' is not a valid argument name", example)
    if not value:
        raise _arg_error(f"entry {entry!r} has no value after '='", example)
    return key, value


def _arg_error(message: str, fix: str) -> UserError:
    return UserError(message, "optimizer.args", fix, "config")


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
