"""Does the installed optimizer take the arguments given? Found without importing it.

``optimizer.args`` are kohya-style ``key=value`` strings. The optimizer classes live in torch,
bitsandbytes, transformers and three small packages; importing any of them costs seconds (and the
terminal side never imports torch), so each class's ``__init__`` is read from its source file
with :mod:`ast`: the keyword names and their literal defaults are what the installed version
takes. A value is judged by its default's type (a flag, a number, a pair of betas).
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from loratui import model_files
from loratui.errors import Problem, error
from loratui.model_files import ModelFileError

# Where each optimizer's class is defined: (package, file in it, class). Its __init__ is read
# from the source, not imported, so the keyword names are those of the installed version.
OPTIMIZER_SOURCES = {
    "AdamW": ("torch", "optim/adamw.py", "AdamW"),
    "AdamW8bit": ("bitsandbytes", "optim/adamw.py", "AdamW8bit"),
    "Lion8bit": ("bitsandbytes", "optim/lion.py", "Lion8bit"),
    "Lion": ("lion_pytorch", "lion_pytorch.py", "Lion"),
    "Adafactor": ("transformers", "optimization.py", "Adafactor"),
    "DAdaptAdam": ("dadaptation", "dadapt_adam.py", "DAdaptAdam"),
    "Prodigy": ("prodigyopt", "prodigy.py", "Prodigy"),
}
_UNKNOWN = object()  # a default that is no literal (float('inf')): its type is not checked


@dataclass(frozen=True)
class Signature:
    defaults: dict[str, object]  # keyword -> its default value (_UNKNOWN when not a literal)
    takes_any: bool  # a **kwargs: every name is accepted


def optimizer_signature(name: str) -> Signature | None:
    """The keyword arguments the installed optimizer takes, read from its source; None when the
    source cannot be found or read (then nothing is checked)."""
    package, relative, class_name = OPTIMIZER_SOURCES[name]
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    source = Path(next(iter(spec.submodule_search_locations))) / relative
    try:
        return model_files.inspected(f"signature:{class_name}", source, lambda path: _read_signature(path, class_name))
    except (OSError, ModelFileError):
        return None


def _read_signature(path: Path, class_name: str) -> Signature | None:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return None
    init = next(
        (
            item
            for node in tree.body
            if isinstance(node, ast.ClassDef) and node.name == class_name
            for item in node.body
            if isinstance(item, ast.FunctionDef) and item.name == "__init__"
        ),
        None,
    )
    if init is None:
        return None
    args = init.args
    positional = args.posonlyargs + args.args
    defaults: dict[str, object] = {}
    # self and params are given by the engine: not keywords a user may pass.
    first_defaulted = len(positional) - len(args.defaults)
    for index, arg in enumerate(positional[2:], start=2):
        default = args.defaults[index - first_defaulted] if index >= first_defaulted else None
        defaults[arg.arg] = _literal(default)
    for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        defaults[arg.arg] = _literal(default)
    return Signature(defaults, takes_any=args.kwarg is not None)


def _literal(node: ast.expr | None) -> object:
    if node is None:
        return _UNKNOWN
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _UNKNOWN


def argument_problem(name: str, signature: Signature, key: str, value: object) -> Problem | None:
    if key == "params":
        return error(
            "optimizer.args",
            "params is the list of weights loratui gives the optimizer, not an argument",
            "remove the params entry",
        )
    if key not in signature.defaults:
        if signature.takes_any:
            return None
        close = difflib.get_close_matches(key, signature.defaults, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        return error(
            "optimizer.args",
            f"{name} takes no argument {key!r}",
            f"{hint}{name} takes: {', '.join(signature.defaults)}",
        )
    wanted = _wanted_type(signature.defaults[key])
    if wanted and not _fits(value, signature.defaults[key]):
        return error(
            "optimizer.args",
            f"{name}'s {key} takes {wanted}, got {value!r}",
            f"write it like its default: {key}={_as_arg(signature.defaults[key])}",
        )
    return None


def _wanted_type(default: object) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, tuple):
        return f"{len(default)} comma-separated numbers"
    if isinstance(default, (int, float)):
        return "a number"
    return ""  # None, a string or no literal: anything may be meant


def _fits(value: object, default: object) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, tuple):
        return isinstance(value, tuple) and len(value) == len(default)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_arg(default: object) -> str:
    if isinstance(default, tuple):
        return ",".join(f"{item:g}" if isinstance(item, float) else str(item) for item in default)
    return str(default)


def adafactor_problems(args: dict[str, object]) -> list[Problem]:
    # relative_step is on unless turned off (sd-scripts' default); transformers' Adafactor refuses
    # warmup_init without it (sd-scripts turns relative_step back on instead: a contradiction, refused here).
    if args.get("warmup_init") is True and args.get("relative_step", True) is not True:
        return [
            error(
                "optimizer.args",
                "Adafactor's warmup_init=True works only with relative_step=True",
                "add relative_step=True, or remove warmup_init=True",
            )
        ]
    return []
