"""The wizard's fields: one per declared setting (:mod:`loratui.params`), which gives its label,
its kind of input, its choices and the help text shown under it (the guides' advice).

Parsing turns what is typed into the config's types; a mistake becomes a Problem naming the field
and the fix, shown under the field like every validation problem.
"""

from __future__ import annotations

import math
import shlex

from loratui.config import RunConfig
from loratui.errors import Problem
from loratui.params import SETTINGS, Setting

# A field is its setting's declaration: name, label, kind (the widget), help, choices, placeholder.
FieldSpec = Setting
FIELDS: dict[str, FieldSpec] = {spec.name: spec for spec in SETTINGS}


# ---------------------------------------------------------------------------------------------
# Typed text <-> config values


def get_value(cfg: RunConfig, name: str) -> object:
    return cfg.get(name)


def set_value(cfg: RunConfig, name: str, value: object) -> None:
    cfg.set(name, value)


def format_value(spec: FieldSpec, value: object) -> str:
    """The text an Input shows for a config value."""
    if spec.kind == "float":
        number = float(value)  # type: ignore[arg-type]
        short = f"{number:g}"
        return short if float(short) == number else repr(number)
    if spec.kind == "args":
        return " ".join(_quoted(item) for item in value)  # type: ignore[union-attr]
    return str(value)


def _quoted(item: str) -> str:
    """An entry as typed: bare, or in double quotes (prompts are written so) where it holds spaces
    or quotes; inside double quotes shlex.split reads an escaped backslash or quote back as itself."""
    if item and not any(c.isspace() or c in "\"'\\" for c in item):
        return item
    return '"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_value(spec: FieldSpec, text: str) -> object:
    """The config value for what was typed; raises FieldInputError naming the field and the fix."""
    kind = spec.kind
    if kind in ("int", "float"):
        cleaned = text.strip().replace("_", "")
        noun = "a whole number" if kind == "int" else "a number"
        if not cleaned:
            raise FieldInputError(Problem(spec.name, f"{spec.label} is empty", f"type {noun}"))
        try:
            number = int(cleaned) if kind == "int" else float(cleaned)
        except ValueError:
            raise FieldInputError(
                Problem(
                    spec.name,
                    f"{text.strip()!r} is not {noun}",
                    f"type {noun}, e.g. {'32' if kind == 'int' else '1e-4'}",
                )
            ) from None
        if kind == "float" and not math.isfinite(number):
            raise FieldInputError(
                Problem(spec.name, f"{text.strip()!r} is not a finite number", "type a number such as 0.05")
            )
        return number
    if kind == "args":
        try:
            return shlex.split(text)
        except ValueError:
            raise FieldInputError(
                Problem(
                    spec.name,
                    "an opening quote is not closed",
                    _QUOTE_FIXES.get(
                        spec.name, "close the quote, or write entries without quotes: key=value key2=value2"
                    ),
                )
            ) from None
    if kind in ("path", "dir"):
        return text.strip()
    return text


# How to close a quote, where the entries are not key=value ones.
_QUOTE_FIXES = {"sample.prompts": 'close the quote: each prompt in double quotes, e.g. "ohwx woman --w 512" "a cat"'}


class FieldInputError(ValueError):
    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem
