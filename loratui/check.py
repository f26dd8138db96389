"""Everything that can be checked before training: the config, the dataset, the schedule, the
output folders. ``loratui check`` prints it; the engine runs it again before it loads a model, so
both always agree on what will be trained.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from loratui.config import RunConfig, Schedule, resolve_schedule, validate
from loratui.dataset import DatasetReport, scan_dataset
from loratui.errors import Problem


@dataclass
class CheckResult:
    config: RunConfig
    problems: list[Problem] = field(default_factory=list)
    dataset: DatasetReport | None = None
    schedule: Schedule | None = None

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors


def check_run(cfg: RunConfig) -> CheckResult:
    result = CheckResult(cfg, problems=list(validate(cfg)))
    result.problems += check_output_dirs(cfg)
    if not cfg.dataset.image_dir:
        result.problems.append(Problem("dataset.image_dir", "no image folder is set", "set it to the img/ folder that holds the NN_name folders"))
        return result
    data = cfg.dataset
    result.dataset = scan_dataset(
        cfg.resolve(data.image_dir),
        cfg.resolve(data.reg_dir) if data.reg_dir else None,
        caption_extension=data.caption_extension,
        resolution=data.resolution,
        enable_buckets=data.enable_buckets,
        min_bucket_reso=data.min_bucket_reso,
        max_bucket_reso=data.max_bucket_reso,
        bucket_reso_steps=data.bucket_reso_steps,
    )
    result.problems += list(result.dataset.problems)
    _check_schedule(result)
    return result


def _check_schedule(result: CheckResult) -> None:
    cfg, dataset = result.config, result.dataset
    assert dataset is not None
    batch = cfg.training.batch_size
    if dataset.num_images == 0 or batch < 1:
        return  # already reported: no images, or a bad batch size
    items = dataset.num_items_per_epoch
    if batch > items:
        result.problems.append(Problem(
            "training.batch_size",
            f"batch size {batch} is larger than the dataset ({items} images x repeats per epoch)",
            f"set training.batch_size to {min(items, 4)} or less, or add images or repeats",
        ))
        return
    if cfg.training.gradient_accumulation_steps < 1 or (cfg.training.epochs < 1 and cfg.training.max_train_steps <= 0):
        return
    result.schedule = resolve_schedule(cfg, dataset.steps_per_epoch(batch))
    if result.schedule.note:
        result.problems.append(Problem("training.max_train_steps", result.schedule.note, severity="note"))
    warmup = cfg.optimizer.warmup_steps
    if warmup >= result.schedule.total_steps > 0:
        result.problems.append(Problem(
            "optimizer.warmup_steps",
            f"warmup ({warmup} steps) lasts the whole run ({result.schedule.total_steps} steps)",
            f"set it to about 5-10% of the run, e.g. {max(1, result.schedule.total_steps // 10)}",
            severity="warning",
        ))


def check_output_dirs(cfg: RunConfig) -> list[Problem]:
    """The output and log folders must be creatable and writable. Nothing is created here."""
    problems = []
    for where, value in (("output.output_dir", cfg.output.output_dir), ("output.log_dir", cfg.output.log_dir)):
        if not value:
            problems.append(Problem(where, "no folder is set", "set it to a folder loratui may write to"))
            continue
        folder = cfg.resolve(value)
        existing = _nearest_existing(folder)
        if existing is None or not existing.is_dir():
            problems.append(Problem(where, f"{folder} cannot be created: {existing} is not a folder",
                                    "choose a folder path whose parents are folders"))
        elif not os.access(existing, os.W_OK | os.X_OK):
            problems.append(Problem(where, f"{folder} is not writable (no write permission on {existing})",
                                    "choose a folder you can write to, or fix its permissions"))
    return problems


def _nearest_existing(path: Path) -> Path | None:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return None
