"""Which LR scheduler class ``optimizer.scheduler_type`` names, and the arguments it takes, found
without importing it.

kohya's ``lr_scheduler_type`` is a class of ``torch.optim.lr_scheduler`` by its bare name
(``CosineAnnealingLR``) or any ``module.Class``; sd-scripts builds it as ``Class(optimizer,
**lr_scheduler_args)``. The terminal side never imports torch, so, as
:mod:`loratui.optimizer_signatures` does for optimizers, the module's source file is found on
the import path and the class's ``__init__`` read with :mod:`ast`: the names it takes, which of
them it needs, and their literal defaults are those of the installed version.
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

TORCH_SCHEDULERS = "torch.optim.lr_scheduler"  # where a bare class name is looked up, as in sd-scripts
WHERE_TYPE, WHERE_ARGS = "optimizer.scheduler_type", "optimizer.scheduler_args"

# torch's classes a config cannot use: what they need is no value a TOML file can hold, or their
# step() needs what the training loop does not give (sd-scripts calls step() with nothing).
UNUSABLE = {
    "LRScheduler": "is the base class of the schedulers, not a schedule",
    "_LRScheduler": "is the base class of the schedulers, not a schedule",
    "LambdaLR": "needs a Python function (lr_lambda), which a config cannot give",
    "MultiplicativeLR": "needs a Python function (lr_lambda), which a config cannot give",
    "SequentialLR": "needs other scheduler objects, which a config cannot give",
    "ChainedScheduler": "needs other scheduler objects, which a config cannot give",
    "ReduceLROnPlateau": "needs a metric at every step, which the training loop does not give it",
}


@dataclass(frozen=True)
class SchedulerSignature:
    """The keyword arguments of a scheduler class's ``__init__`` after the optimizer."""

    names: tuple[str, ...]  # every keyword it takes, in order
    required: tuple[str, ...]  # those without a default
    takes_any: bool  # a **kwargs: every name is accepted


@dataclass(frozen=True)
class SchedulerClass:
    module: str
    name: str
    signature: SchedulerSignature | None  # None: defined elsewhere (re-exported) or unreadable: not checked


def split_type(scheduler_type: str) -> tuple[str, str]:
    """``"CosineAnnealingLR"`` -> (torch.optim.lr_scheduler, CosineAnnealingLR); ``"a.b.C"`` -> (a.b, C)."""
    module, _, name = scheduler_type.strip().rpartition(".")
    return module or TORCH_SCHEDULERS, name


def torch_scheduler_names() -> list[str]:
    """The usable classes of the installed torch.optim.lr_scheduler, for a fix that lists them."""
    tree = _module_tree(TORCH_SCHEDULERS)
    if tree is None:
        return []
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.ClassDef)
        and not node.name.startswith("_")
        and node.name not in UNUSABLE
        and _init_of(node) is not None
    ]


def scheduler_type_problems(scheduler_type: str) -> tuple[SchedulerClass | None, list[Problem]]:
    """The class ``scheduler_type`` names, or the problem that it names none."""
    module, name = split_type(scheduler_type)
    if not name.isidentifier() or not all(part.isidentifier() for part in module.split(".")):
        fix = "give a class name, e.g. CosineAnnealingLR, or module.Class"
        return None, [error(WHERE_TYPE, f"{scheduler_type!r} is no class name", fix)]
    if name in UNUSABLE and module == TORCH_SCHEDULERS:
        fix = f"use another class: {', '.join(torch_scheduler_names())}"
        return None, [error(WHERE_TYPE, f"{name} {UNUSABLE[name]}", fix)]
    source = _module_source(module)
    if source is None:
        fix = "install the package that has it, or give a class of torch.optim.lr_scheduler, e.g. CosineAnnealingLR"
        return None, [error(WHERE_TYPE, f"no module {module!r} is installed", fix)]
    tree = _tree(source)
    if tree is None:
        return SchedulerClass(module, name, None), []  # unreadable source: the engine's import judges it
    # A function that returns a scheduler works too (sd-scripts calls what it finds): diffusers'
    # get_cosine_schedule_with_warmup with num_warmup_steps=... num_training_steps=...
    node = next((n for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name == name), None)
    if node is None:
        if name in _names_bound(tree):
            return SchedulerClass(module, name, None), []  # imported or assigned there: read where it is defined
        known = torch_scheduler_names() if module == TORCH_SCHEDULERS else sorted(_class_names(tree))
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        fix = f"{hint}{module} has: {', '.join(known)}" if known else "check the class name"
        return None, [error(WHERE_TYPE, f"{module} has no class {name!r}", fix)]
    return SchedulerClass(module, name, _signature(node)), []


def scheduler_args_problems(found: SchedulerClass, kwargs: dict[str, object]) -> list[Problem]:
    """Arguments the class does not take, and those it needs that are missing."""
    signature, label = found.signature, found.name
    if signature is None:
        return []
    problems = []
    for key in kwargs:
        if key == "optimizer":
            fix = "remove the optimizer entry"
            problems.append(error(WHERE_ARGS, "optimizer is given to the scheduler by loratui, not an argument", fix))
        elif key not in signature.names and not signature.takes_any:
            close = difflib.get_close_matches(key, signature.names, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            fix = f"{hint}{label} takes: {', '.join(signature.names)}"
            problems.append(error(WHERE_ARGS, f"{label} takes no argument {key!r}", fix))
    missing = [name for name in signature.required if name not in kwargs]
    if missing:
        example = " ".join(f"{name}={_EXAMPLES.get(name, '...')}" for name in missing)
        message = f"{label} needs {', '.join(missing)}"
        problems.append(error(WHERE_ARGS, message, f"add {example} to scheduler_args (steps count optimizer steps)"))
    return problems


_EXAMPLES = {  # a value to show for torch's required arguments
    "T_max": "<total steps>",
    "T_0": "<steps of the first cycle>",
    "step_size": "<steps between decays>",
    "milestones": "[100,200]",
    "gamma": "0.99",
    "max_lr": "1e-4",
    "base_lr": "1e-6",
}


# ---------------------------------------------------------------------------------------------
# Reading the source


def _module_source(module: str) -> Path | None:
    """The source file of ``module`` without importing it (or its parents): the top package is
    found on the import path, the rest followed as folders."""
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if not rest:
        return Path(spec.origin) if spec.origin and spec.origin.endswith(".py") else None
    for folder in spec.submodule_search_locations or ():
        base = Path(folder).joinpath(*rest)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def _module_tree(module: str) -> ast.Module | None:
    source = _module_source(module)
    return _tree(source) if source is not None else None


def _tree(source: Path) -> ast.Module | None:
    try:
        return model_files.inspected("scheduler-source", source, _parse)
    except (OSError, ModelFileError):
        return None


def _parse(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return None


def _init_of(node: ast.ClassDef) -> ast.FunctionDef | None:
    return next((item for item in node.body if isinstance(item, ast.FunctionDef) and item.name == "__init__"), None)


def _signature(node: ast.ClassDef | ast.FunctionDef) -> SchedulerSignature | None:
    function = _init_of(node) if isinstance(node, ast.ClassDef) else node
    if function is None:
        return None  # inherits its __init__: not read
    given = 2 if isinstance(node, ast.ClassDef) else 1  # (self,) optimizer: given by the engine
    args = function.args
    positional = args.posonlyargs + args.args
    first_defaulted = len(positional) - len(args.defaults)
    names, required = [], []
    for index, arg in enumerate(positional[given:], start=given):
        names.append(arg.arg)
        if index < first_defaulted:
            required.append(arg.arg)
    for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        names.append(arg.arg)
        if default is None:
            required.append(arg.arg)
    return SchedulerSignature(tuple(names), tuple(required), takes_any=args.kwarg is not None)


def _class_names(tree: ast.Module) -> set[str]:
    return {node.name for node in tree.body if isinstance(node, ast.ClassDef) and not node.name.startswith("_")}


def _names_bound(tree: ast.Module) -> set[str]:
    """Names a module binds at its top level other than by ``class``: imports and assignments."""
    bound: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Assign):
            bound.update(target.id for target in node.targets if isinstance(target, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            bound.add(node.target.id)
    return bound
