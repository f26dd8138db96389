"""The length of a run: how the dataset's batches, epochs, max_train_steps and gradient
accumulation combine into the steps a user sees."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from loratui.quantities import count

if TYPE_CHECKING:
    from loratui.config import RunConfig


@dataclass(frozen=True)
class Schedule:
    """The length of a run, in the numbers a user sees."""

    steps_per_epoch: int  # optimizer updates per epoch (batches / gradient accumulation, rounded up)
    epochs: int  # epochs that run; the last one may be partial when max_train_steps is set
    total_steps: int  # optimizer updates in the whole run
    note: str  # plain-words explanation when max_train_steps overrides epochs, else ""


def resolve_schedule(cfg: RunConfig, steps_per_epoch: int) -> Schedule | None:
    """Combine the dataset's batches per epoch with the config into the run's length.

    steps_per_epoch counts batches. One optimizer update happens every
    gradient_accumulation_steps batches, and "steps" everywhere else mean updates.
    If max_train_steps is above 0 it wins over epochs.

    None when there is no length to compute: no batch at all, or length settings that
    validation reports (a negative max_train_steps, no epochs, no accumulation). Callers show
    those problems instead of a schedule; they never crash on them.
    """
    training = cfg.training
    if steps_per_epoch < 1 or training.gradient_accumulation_steps < 1 or training.max_train_steps < 0:
        return None
    # A partial accumulation at the end of an epoch still makes one update.
    updates_per_epoch = _ceil_div(steps_per_epoch, training.gradient_accumulation_steps)
    if training.max_train_steps > 0:
        return _schedule_from_max_steps(training.max_train_steps, training.epochs, updates_per_epoch)
    if training.epochs < 1:
        return None
    return Schedule(updates_per_epoch, training.epochs, training.epochs * updates_per_epoch, "")


def _schedule_from_max_steps(total: int, configured_epochs: int, updates_per_epoch: int) -> Schedule:
    epochs = _ceil_div(total, updates_per_epoch)
    partial = " (the last one partial)" if total % updates_per_epoch else ""
    note = (
        f"max_train_steps = {total} overrides epochs = {configured_epochs}: "
        f"training runs {total} steps, {count(epochs, 'epoch')}{partial}"
    )
    return Schedule(updates_per_epoch, epochs, total, note)


def _ceil_div(numerator: int, denominator: int) -> int:
    # Integer arithmetic: float division would round wrongly for very large step counts.
    return -(-numerator // denominator)
