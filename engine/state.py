"""Resumable training state: a folder beside the LoRA files (``<name>-000002-state``).

It holds what a resumed run needs to continue as if it had never stopped: the LoRA weights at
full precision, the optimizer and LR-schedule state, the random number generators, the position
in the data (epoch and batches done in it) and the run's loss history and training time, so the
curve and the ETA continue instead of restarting.

A folder is written under a temporary name and renamed into place, so a crash mid-save leaves the
previous state intact and never a half-written folder under the final name (the names are
:mod:`loratui.atomic`'s, so that the next run can clean up what a killed save left).
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from loratui import resume_state
from loratui.atomic import replace_folder, temp_path_for
from loratui.errors import UserError

STATE_FORMAT = 1

log = logging.getLogger("engine.state")


@dataclass
class Progress:
    """Where a run is. ``batches_in_epoch`` counts batches of ``epoch`` already trained."""

    run_id: str
    step: int = 0
    epoch: int = 0  # 0-based index of the epoch in progress
    batches_in_epoch: int = 0
    elapsed_s: float = 0.0
    loss_history: list[float] = field(default_factory=list)
    network: dict = field(default_factory=dict)  # rank, alpha, module count: checked on resume
    # The optimizer's name ("AdamW"): its state fits no other. "" in states saved before it was kept.
    optimizer: str = ""


def save_state(folder: Path, progress: Progress, lora: dict[str, torch.Tensor], optimizer, scheduler, scaler) -> int:
    """Write the state folder; OSError (with its errno) when the disk refuses, the previous state
    folder of that name then left as it was."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = temp_path_for(folder)
    staging.mkdir(mode=0o700)
    try:
        weights = {k: v.detach().float().cpu().contiguous() for k, v in lora.items()}
        _write_new_file(staging / "lora.safetensors", safetensors_bytes(weights))
        _write_new_file(staging / "training.pt", _torch_bytes(_training_blob(optimizer, scheduler, scaler)))
        _write_new_file(staging / "progress.json", json.dumps({"format": STATE_FORMAT, **asdict(progress)}).encode())
        replace_folder(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # a failed save frees its room at once
    return sum(item.stat().st_size for item in folder.iterdir())


def _training_blob(optimizer, scheduler, scaler) -> dict:
    return {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _torch_bytes(blob: dict) -> memoryview:
    """``blob`` serialised in memory. torch.save writing to a file turns a full disk into
    "RuntimeError: [enforce fail at inline_container.cc] unexpected pos" (no errno: nobody could
    tell it from a bug), and safetensors' own writer does the same in its words; written by
    :func:`_write_new_file` the same bytes fail as OSError ENOSPC, EDQUOT or EFBIG. The cost is one
    copy of the state in host memory for the moment of the save."""
    buffer = io.BytesIO()
    torch.save(blob, buffer)
    return buffer.getbuffer()


def _write_new_file(path: Path, data: bytes | memoryview) -> None:
    """Write a file of the staging folder and make it durable before the folder is renamed in."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def read_progress(folder: Path) -> Progress:
    """The state's progress, once the folder is found whole as far as the standard library can
    tell (loratui.resume_state: the check's own reader, so the engine refuses what it refuses
    even when it runs without the check)."""
    try:
        return Progress(**resume_state.read_state(folder))
    except resume_state.StateError as exc:
        raise _state_error(exc.message, exc.fix) from None


def _state_error(message: str, fix: str = resume_state.DAMAGED_FIX) -> UserError:
    return UserError(message, "training.resume_from", fix, "config")


# ---------------------------------------------------------------------------------------------
# Resuming: what only torch can read. Each part is checked before it is used, so a damaged or
# foreign file is refused with a line naming it, never a traceback at the first step.

TRAINING_PARTS = ("optimizer", "scheduler", "scaler", "rng_cpu", "rng_cuda")
# The per-parameter buffers that have the parameter's own shape in every optimizer that keeps
# them (AdamW, Lion, DAdaptAdam, Prodigy; Adafactor keeps factored ones, bitsandbytes its own).
MOMENT_BUFFERS = ("exp_avg", "exp_avg_sq")


def read_lora_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The LoRA weights of the state, at full precision; UserError when the file is damaged."""
    path = folder / "lora.safetensors"
    try:
        weights = load_file(path)
    except Exception as exc:  # noqa: BLE001 - safetensors reports damage as its own error type
        log.warning("cannot read %s: %s", path, type(exc).__name__)
        raise _state_error(f"{path} is damaged: safetensors cannot read it") from None
    not_float = sorted(key for key, tensor in weights.items() if not tensor.is_floating_point())
    if not_float:
        raise _state_error(f"{path} is damaged: {not_float[0]} holds {weights[not_float[0]].dtype}, not weights")
    return {key: tensor.float() for key, tensor in weights.items()}


def load_training_state(folder: Path, optimizer, scheduler, scaler) -> None:
    """Restore the optimizer, the LR schedule, the gradient scaler and the random generators in
    place, each checked first; UserError naming what does not fit."""
    path = folder / "training.pt"
    blob = _training_blob_of(path)
    _restore_optimizer(path, optimizer, blob["optimizer"])
    _restore(path, "LR schedule", lambda: _restore_scheduler(scheduler, blob["scheduler"]))
    if scaler is not None and blob["scaler"]:
        _restore(path, "fp16 gradient scaler", lambda: scaler.load_state_dict(blob["scaler"]))
    _restore(path, "random generator", lambda: torch.set_rng_state(blob["rng_cpu"]))
    if blob["rng_cuda"] and torch.cuda.is_available():
        _restore(path, "CUDA random generators", lambda: _restore_cuda_rng(blob["rng_cuda"]))


def _training_blob_of(path: Path) -> dict:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged file fails as any of a dozen error types
        # Only the type: torch's own text advises loading with weights_only=False, which would
        # run code from the file.
        log.warning("cannot read %s: %s", path, type(exc).__name__)
        raise _state_error(f"{path} is damaged: torch cannot read it") from None
    if not isinstance(blob, dict) or set(blob) != set(TRAINING_PARTS):
        raise _state_error(f"{path} is not a loratui training state: it does not hold {', '.join(TRAINING_PARTS)}")
    return blob


def _restore(path: Path, what: str, restore) -> None:
    try:
        restore()
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        log.warning("cannot restore the %s from %s: %s: %s", what, path, type(exc).__name__, str(exc)[:200])
        raise _state_error(f"{path} is damaged: its {what} cannot be restored") from None


def _restore_optimizer(path: Path, optimizer, saved: object) -> None:
    """The saved state must be this optimizer's, for these parameters: torch's load_state_dict
    checks only the parameter counts, and a state of another optimizer (AdamW's in Adafactor:
    "KeyError: 'beta1'") or of other shapes fails at the first step."""
    name = type(getattr(optimizer, "optimizer", optimizer)).__name__
    groups = optimizer.param_groups
    if not isinstance(saved, dict) or not isinstance(saved.get("param_groups"), list):
        raise _state_error(f"{path} is damaged: it holds no optimizer state")
    sizes = [len(group.get("params", ())) if isinstance(group, dict) else -1 for group in saved["param_groups"]]
    if sizes != [len(group["params"]) for group in groups]:
        raise _state_error(f"{path} holds the optimizer state of another network ({sizes} parameters per group)")
    settings = [set(group) for group in groups]  # the hyperparameters this optimizer reads
    _restore(path, f"{name} state", lambda: optimizer.load_state_dict(saved))
    groups = optimizer.param_groups  # the loaded ones: load_state_dict puts the saved groups in place
    missing = sorted(set().union(*(wanted - set(group) for wanted, group in zip(settings, groups, strict=True))))
    if missing:
        raise _state_error(
            f"{path} holds the state of another optimizer: it lacks {', '.join(missing[:4])}, which {name} needs",
            "set optimizer.name to the optimizer the state was saved with, or start a fresh run",
        )
    for param in (param for group in groups for param in group["params"]):
        for buffer in MOMENT_BUFFERS:
            value = optimizer.state.get(param, {}).get(buffer)
            if isinstance(value, torch.Tensor) and value.shape != param.shape:
                shapes = f"{list(value.shape)} for a weight of {list(param.shape)}"
                raise _state_error(f"{path} is damaged: an optimizer {buffer} is {shapes}")


def _restore_scheduler(scheduler, saved: object) -> None:
    # LambdaLR takes any dict and fails at its next step(): check what step() reads.
    if not isinstance(saved, dict) or type(saved.get("last_epoch")) is not int or saved["last_epoch"] < 0:
        raise ValueError("no step count")
    scheduler.load_state_dict(saved)


def _restore_cuda_rng(states: list) -> None:
    """Training runs on the first GPU; a state saved with more GPUs visible restores those there are."""
    for index, state in enumerate(states[: torch.cuda.device_count()]):
        torch.cuda.set_rng_state(state, index)
