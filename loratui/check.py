"""Everything that can be checked before training: the config (:mod:`loratui.validation`), the
files an earlier run left (:mod:`loratui.outputs`), the dataset and the schedule. ``loratui check``
prints it; the engine runs it again before it loads a model, so both always agree on what will be
trained.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from loratui.caption_rules import dataset_caption_problems
from loratui.config import RunConfig
from loratui.dataset import DatasetReport
from loratui.errors import Problem, failed_settings
from loratui.held_out import scan_run_dataset
from loratui.outputs import output_problems
from loratui.preflight import resume_position_problems
from loratui.quantities import count
from loratui.schedule import Schedule, resolve_schedule
from loratui.validation import validate


@dataclass
class CheckResult:
    config: RunConfig
    problems: list[Problem] = field(default_factory=list)
    dataset: DatasetReport | None = None
    schedule: Schedule | None = None
    memory: list[str] = field(default_factory=list)  # the VRAM pre-flight's lines (loratui.memory_check)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors


def config_problems(cfg: RunConfig, overwrite: bool = False) -> list[Problem]:
    """Everything wrong with the config itself, before any image is read: what the wizard shows
    at its fields. ``overwrite``: the run may replace files an earlier run saved."""
    problems = validate(cfg)
    failed = failed_settings(problems)
    if not failed.intersection(("output.name", "output.output_dir")):
        problems += output_problems(cfg, overwrite)
    return problems


def check_run(cfg: RunConfig, overwrite: bool = False) -> CheckResult:
    """The config, the dataset scan and the schedule: what ``loratui check`` prints and the
    engine runs before it loads anything. ``overwrite`` as for :func:`config_problems`."""
    result = CheckResult(cfg, problems=config_problems(cfg, overwrite))
    dataset_errors = sorted(where for where in failed_settings(result.problems) if where.startswith("dataset."))
    if dataset_errors:
        message = "the images were not scanned: fix the dataset settings first"
        result.problems.append(Problem(dataset_errors[0], message, "then run the check again", "note"))
        return result
    # Held-out images (dataset.validation_split, validation_dir) are out of the report's training folders.
    result.dataset = scan_run_dataset(cfg)
    result.problems += list(result.dataset.problems)
    result.problems += dataset_caption_problems(cfg, result.dataset)  # each image with its subset's options
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
        result.problems.append(
            Problem(
                "training.batch_size",
                f"batch size {batch} is larger than the dataset ({items} images x repeats per epoch)",
                f"set training.batch_size to {min(items, 4)} or less, or add images or repeats",
            )
        )
        return
    result.schedule = resolve_schedule(cfg, dataset.steps_per_epoch(batch))
    if result.schedule is None:
        return  # a length setting is invalid; validation has said which
    result.problems += resume_position_problems(cfg, result.schedule, dataset.steps_per_epoch(batch), result.problems)
    if result.schedule.note:
        result.problems.append(Problem("training.max_train_steps", result.schedule.note, severity="note"))
    warmup = cfg.optimizer.warmup_steps
    if warmup >= result.schedule.total_steps > 0:
        result.problems.append(
            Problem(
                "optimizer.warmup_steps",
                f"warmup ({count(warmup, 'step')}) lasts the whole run ({count(result.schedule.total_steps, 'step')})",
                f"set it to about 5-10% of the run, e.g. {max(1, result.schedule.total_steps // 10)}",
                severity="warning",
            )
        )
