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

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from loratui.atomic import replace_folder, temp_path_for
from loratui.errors import UserError

STATE_FORMAT = 1


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


def save_state(folder: Path, progress: Progress, lora: dict[str, torch.Tensor], optimizer, scheduler, scaler) -> int:
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = temp_path_for(folder)
    staging.mkdir(mode=0o700)
    try:
        save_file({k: v.detach().float().cpu().contiguous() for k, v in lora.items()}, staging / "lora.safetensors")
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
            staging / "training.pt",
        )
        (staging / "progress.json").write_text(json.dumps({"format": STATE_FORMAT, **asdict(progress)}))
        for item in staging.iterdir():
            with open(item, "rb") as handle:
                os.fsync(handle.fileno())
        replace_folder(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return sum(item.stat().st_size for item in folder.iterdir())


def read_progress(folder: Path) -> Progress:
    path = folder / "progress.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(
            f"{folder} is not a loratui state folder ({path.name} unreadable)",
            "training.resume_from",
            "point it at a '<name>-NNNNNN-state' folder written by a loratui run",
            "config",
        ) from exc
    if data.pop("format", None) != STATE_FORMAT:
        raise UserError(
            f"{folder} was written by another version of loratui",
            "training.resume_from",
            "resume with the loratui version that wrote it, or start a fresh run",
            "config",
        )
    return Progress(**data)


def load_training_state(folder: Path, optimizer, scheduler, scaler) -> dict[str, torch.Tensor]:
    """Restore optimizer, schedule and RNGs in place; return the LoRA weights to load."""
    blob = torch.load(folder / "training.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    if scaler is not None and blob.get("scaler"):
        scaler.load_state_dict(blob["scaler"])
    torch.set_rng_state(blob["rng_cpu"])
    if blob["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["rng_cuda"])
    return load_file(folder / "lora.safetensors")
