"""A resume state folder (``<name>-000004-state``), read with the standard library only.

The engine writes three files there (engine/state.py): ``progress.json`` (where the run is),
``lora.safetensors`` (the LoRA weights) and ``training.pt`` (optimizer, LR schedule and random
generators, in torch's zip format). A folder that was edited, copied half-way or taken from
another run would otherwise fail minutes into a resumed run, inside torch, with a traceback; or
worse, "finish" having trained nothing. So both sides read it whole before anything loads:
``loratui check`` (through :mod:`loratui.preflight`) and the engine (before it loads a model,
and again in :func:`engine.state.read_progress`). Each problem is one line naming the file.

What only torch can read (the tensors inside ``training.pt``, whether the optimizer's state fits
the optimizer) the engine checks itself, in engine/state.py.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Callable
from pathlib import Path

from loratui import model_files
from loratui.families import FAMILY_PARTS, LoraPart
from loratui.model_files import ModelFileError

STATE_FORMAT = 1  # engine/state.py's STATE_FORMAT; tests/test_preflight.py holds them equal
STATE_FILES = ("progress.json", "lora.safetensors", "training.pt")
# progress.json holds one loss per step: a million steps fit in about 10 MB.
MAX_PROGRESS_BYTES = 64 * 2**20
DAMAGED_FIX = "resume from another state folder (an earlier <name>-NNNNNN-state), or start a fresh run"
NOT_A_STATE_FIX = "point it at a '<name>-NNNNNN-state' folder written by a loratui run"
# The parts of the network whose LoRA weights the state holds, per family, by the key prefix the
# engine gives them (``unet.<module>...``), each with its module count in progress.json
# (``<part>_modules``): SD {"unet", "te"}, SDXL {"unet", "te1", "te2"} (loratui.families).
LORA_PARTS: dict[str, tuple[LoraPart, ...]] = FAMILY_PARTS
# The layouts a state can have: one per set of parts (SD 1.x and 2.x share theirs).
PART_LAYOUTS: tuple[tuple[LoraPart, ...], ...] = tuple(dict.fromkeys(FAMILY_PARTS.values()))
LORA_ROLES = (".lora_down.weight", ".lora_up.weight")


class StateError(ValueError):
    """A state folder that cannot be resumed from: the message names the file and what is wrong."""

    def __init__(self, message: str, fix: str = DAMAGED_FIX) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


def read_state(folder: Path) -> dict:
    """The folder's progress (progress.json without its format number), once every file of it
    has been found whole and consistent; StateError naming the first that is not."""
    missing = [name for name in STATE_FILES if not (folder / name).is_file()]
    if missing:
        message = f"{folder} is not a complete loratui state folder: it has no {', '.join(missing)}"
        raise StateError(message, NOT_A_STATE_FIX)
    progress = read_progress(folder)
    check_lora_file(folder / "lora.safetensors", progress["network"])
    check_training_file(folder / "training.pt")
    return progress


# ---------------------------------------------------------------------------------------------
# progress.json


def _count(value: object) -> str:
    ok = type(value) is int and value >= 0
    return "" if ok else "a whole number, 0 or more"


def _positive(value: object) -> str:
    ok = type(value) in (int, float) and math.isfinite(value) and value > 0
    return "" if ok else "a number above 0"


def _seconds(value: object) -> str:
    ok = type(value) in (int, float) and math.isfinite(value) and value >= 0
    return "" if ok else "a number of seconds, 0 or more"


def _text(value: object) -> str:
    return "" if isinstance(value, str) else "a text"


def _losses(value: object) -> str:
    ok = isinstance(value, list) and all(type(v) in (int, float) and math.isfinite(v) for v in value)
    return "" if ok else "a list of numbers"


def _network(value: object) -> str:
    parts = network_parts(value) if isinstance(value, dict) else None
    if parts is not None and isinstance(value, dict):
        checks = [*NETWORK_SHAPE_FIELDS.items(), *((part.count_key, _count) for part in parts)]
        if not any(check(value[key]) for key, check in checks):
            return ""
    counts = " or ".join(", ".join(part.count_key for part in layout) for layout in PART_LAYOUTS)
    return f"an object of {', '.join(NETWORK_SHAPE_FIELDS)} and the module counts {counts}"


def network_parts(network: dict) -> tuple[LoraPart, ...] | None:
    """The parts whose modules a progress.json network counts (SD's, or SDXL's); None when its
    keys are no layout's: the shape and the count of every part of one family, nothing else."""
    counts = set(network) - set(NETWORK_SHAPE_FIELDS) - {NETWORK_TYPE_FIELD}
    if not set(NETWORK_SHAPE_FIELDS) <= set(network):
        return None
    return next((layout for layout in PART_LAYOUTS if counts == {part.count_key for part in layout}), None)


# Each field engine.state.Progress writes, with what its value must be ("" when it is that).
PROGRESS_FIELDS: dict[str, Callable[[object], str]] = {
    "run_id": _text,
    "step": _count,
    "epoch": _count,
    "batches_in_epoch": _count,
    "elapsed_s": _seconds,
    "loss_history": _losses,
    "network": _network,
}
# Written since a state records its optimizer; a state saved before that lacks it.
OPTIONAL_PROGRESS_FIELDS: dict[str, Callable[[object], str]] = {"optimizer": _text}
# The network type (network.type), written since LyCORIS types are trained; a state without it is a LoRA's.
NETWORK_TYPE_FIELD = "type"
# The network's shape; beside it, the module count of each of its parts (PART_LAYOUTS).
NETWORK_SHAPE_FIELDS: dict[str, Callable[[object], str]] = {
    "rank": _count,
    "alpha": _positive,
    "conv_rank": _count,
    "conv_alpha": _positive,
}


def read_progress(folder: Path) -> dict:
    """progress.json checked field by field (the format number taken out); StateError if not."""
    path = folder / "progress.json"
    data = _progress_json(path)
    if data.pop("format", None) != STATE_FORMAT:
        raise StateError(
            f"{folder} was written by another version of loratui",
            "resume with the loratui version that wrote it, or start a fresh run",
        )
    known = PROGRESS_FIELDS | OPTIONAL_PROGRESS_FIELDS
    extra = sorted(set(data) - set(known))
    if extra:
        raise StateError(f"{path} has keys loratui never writes ({_names(extra)}): it was edited, or is not a state")
    missing = [key for key in PROGRESS_FIELDS if key not in data]
    if missing:
        raise StateError(f"{path} lacks {_names(missing)}: it is damaged, or not a loratui state")
    for key, check in known.items():
        wanted = check(data[key]) if key in data else ""
        if wanted:
            raise StateError(f"{path} is damaged: its {key} is {_shown(data[key])}, not {wanted}")
    if len(data["loss_history"]) != data["step"]:
        raise StateError(
            f"{path} is damaged: it is at step {data['step']} but holds {len(data['loss_history'])} step losses"
        )
    return data


def _progress_json(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_PROGRESS_BYTES + 1)
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror or exc}", "check the file's permissions") from None
    if len(raw) > MAX_PROGRESS_BYTES:
        raise StateError(f"{path} is larger than any progress loratui writes ({MAX_PROGRESS_BYTES >> 20} MB)")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # ValueError: bad JSON, or a 5000-digit number
        raise StateError(f"{path} is not valid JSON: it is damaged, or not a loratui state", NOT_A_STATE_FIX) from None
    if not isinstance(data, dict):
        raise StateError(f"{path} is not a JSON object: it is damaged, or not a loratui state", NOT_A_STATE_FIX)
    return data


def _names(keys: list[str]) -> str:
    shown = ", ".join(repr(key[:40]) for key in keys[:3])
    return shown + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def _shown(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


# ---------------------------------------------------------------------------------------------
# lora.safetensors: the LoRA of the network progress.json describes.


def check_lora_file(path: Path, network: dict) -> None:
    """The header is whole (the file is as long as it says), every tensor is a LoRA half of a
    module, and the modules' count and ranks are those progress.json records."""
    try:
        shapes = model_files.safetensors_header(path).shapes
    except ModelFileError as exc:
        raise StateError(f"{path} is damaged: {exc}") from None
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror or exc}", "check the file's permissions") from None
    parts = network_parts(network) or ()  # read_progress has checked that it is one layout's
    if network.get(NETWORK_TYPE_FIELD, "lora") != "lora":
        # LyCORIS layers (hada_w1_a, lokr_w1, ...): the engine fits them to the network it builds, by LyCORIS.
        strangers = sorted(key for key in shapes if key.partition(".")[0] not in {part.name for part in parts})
        if strangers:
            raise StateError(f"{path} holds {strangers[0][:80]!r}, which is no weight loratui writes")
        return
    modules = _lora_modules(path, shapes, {part.name for part in parts})
    for part in parts:
        found = sum(1 for owner, _ in modules if owner == part.name)
        wanted = network[part.count_key]
        if found != wanted:
            raise StateError(
                f"{path} holds LoRA weights for {found} {part.label} layers, but progress.json says {wanted}: "
                "the files are of different runs"
            )
    for (part, module), halves in sorted(modules.items()):
        problem = _pair_problem(halves, network)
        if problem:
            raise StateError(f"{path} does not fit its progress.json: {part}.{module} {problem}")


def _lora_modules(
    path: Path, shapes: dict[str, tuple], part_names: set[str]
) -> dict[tuple[str, str], dict[str, tuple[int, ...]]]:
    """{(part, module): {".lora_down.weight": shape, ".lora_up.weight": shape}}, for a state of
    these parts (a key of another part is no weight this state can hold)."""
    modules: dict[tuple[str, str], dict[str, tuple[int, ...]]] = {}
    for key, shape in shapes.items():
        part, _, rest = key.partition(".")
        role = next((role for role in LORA_ROLES if rest.endswith(role)), None)
        if part not in part_names or role is None or not rest[: -len(role)]:
            raise StateError(f"{path} holds {key[:80]!r}, which is no LoRA weight loratui writes")
        if not all(type(side) is int and side >= 0 for side in shape):
            raise StateError(f"{path} is damaged: the shape of {key[:80]!r} is not a list of sizes")
        modules.setdefault((part, rest[: -len(role)]), {})[role] = tuple(shape)
    for (part, module), halves in modules.items():
        if len(halves) != 2:
            lacking = next(role for role in LORA_ROLES if role not in halves)
            raise StateError(f"{path} is damaged: {part}.{module} has no {lacking.strip('.')}")
    return modules


def _pair_problem(halves: dict[str, tuple[int, ...]], network: dict) -> str:
    """What is wrong with one module's down/up shapes, or "".

    A Linear layer's LoRA is down [rank, in] and up [out, rank]; a convolution's down [rank, in,
    kh, kw] and up [out, rank, 1, 1]. A kh x kw convolution other than 1x1 is trained at the
    conv rank (LoCon), every other layer at the network rank."""
    down, up = halves[LORA_ROLES[0]], halves[LORA_ROLES[1]]
    if len(down) not in (2, 4) or len(up) != len(down) or up[2:] not in ((), (1, 1)):
        return f"has LoRA halves of shapes {list(down)} and {list(up)}, which are no LoRA layer's"
    if down[0] != up[1]:
        return f"has a down half of rank {down[0]} and an up half of rank {up[1]}"
    is_conv = len(down) == 4 and down[2:] != (1, 1)
    wanted, what = (network["conv_rank"], "conv rank") if is_conv else (network["rank"], "rank")
    if down[0] != wanted:
        return f"is of rank {down[0]}, but the state's network has {what} {wanted}"
    return ""


# ---------------------------------------------------------------------------------------------
# training.pt: torch's zip format, holding nothing that needs pickle code.


def check_training_file(path: Path) -> None:
    """Whole and loadable by torch's weights-only reader (the one the engine uses); its contents
    are the engine's to check, with torch."""
    try:
        if not zipfile.is_zipfile(path):
            raise StateError(f"{path} is damaged: it is not in PyTorch's file format (a zip archive)")
        unsafe = model_files.unsafe_pickle_globals(path)
    except ModelFileError as exc:
        raise StateError(f"{path} is damaged or not a loratui training state: {exc}") from None
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror or exc}", "check the file's permissions") from None
    if unsafe:
        shown = ", ".join(unsafe[:3]) + (f" and {len(unsafe) - 3} more" if len(unsafe) > 3 else "")
        raise StateError(
            f"{path} is not a loratui training state: loading it would run code from the file ({shown})",
            DAMAGED_FIX,
        )
