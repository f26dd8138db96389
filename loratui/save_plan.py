"""When a run saves, and which of its saves it keeps (kohya's save_every_n_* and save_last_n_*).

Both sides use it: the engine saves and removes by it (engine/saving.py), the check's summary
says from it how many files a run writes and keeps. The rules are sd-scripts':

- an epoch file every ``save_every_n_epochs`` epochs and a step file every ``save_every_n_steps``
  steps, except at the end of the run, whose final file holds the same weights;
- ``save_last_n_epochs = N`` keeps the newest N epoch files: after the save of epoch e, the epoch
  files of epochs up to ``e - N x save_every_n_epochs`` go;
- ``save_last_n_steps = N`` keeps the step files of the last N steps: after the save at step s,
  the step files saved before step ``s - N`` go;
- the ``_state`` variants do the same for the state folders, and default to the plain ones.

Only periodic saves rotate: the final file, a stop's or a ``save`` command's file and every file
of another run are never removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from loratui.quantities import count

if TYPE_CHECKING:
    from loratui.config import OutputSettings, RunConfig
    from loratui.schedule import Schedule

ROTATING_KINDS = ("epoch", "step")  # the checkpoint kinds of periodic saves, the only ones removed


@dataclass(frozen=True)
class Keep:
    """How many of a kind of periodic save are kept: ``last`` of them (0 = all), by ``unit``."""

    setting: str  # the setting that says it, for the checkpoint_removed event's reason
    last: int
    every: int  # the saving interval, epochs or steps

    def removed(self, saved: list[int], now: int) -> list[int]:
        """Of the epochs/steps ``saved`` (this run's saves of the kind), those to remove after the
        save at ``now``."""
        if not self.last:
            return []
        if self.setting.startswith("output.save_last_n_epochs"):
            limit = now - self.every * self.last  # epochs: the newest `last` files stay
            return [number for number in saved if number <= limit]
        return [number for number in saved if number < now - self.last]  # steps: those of the last `last` steps

    @property
    def reason(self) -> str:
        return f"{self.setting} = {self.last}"


def keep_rule(output: OutputSettings, kind: str, state: bool) -> Keep:
    """The rule for epoch or step (``kind``) LoRA files, or their state folders (``state``)."""
    if kind == "epoch":
        last, setting = output.save_last_n_epochs, "output.save_last_n_epochs"
        if state and output.save_last_n_epochs_state:
            last, setting = output.save_last_n_epochs_state, "output.save_last_n_epochs_state"
        return Keep(setting, last, output.save_every_n_epochs)
    last, setting = output.save_last_n_steps, "output.save_last_n_steps"
    if state and output.save_last_n_steps_state:
        last, setting = output.save_last_n_steps_state, "output.save_last_n_steps_state"
    return Keep(setting, last, output.save_every_n_steps)


def saves_step_file(output: OutputSettings, step: int, total_steps: int) -> bool:
    """Whether the run saves a step file after ``step`` (not after the last: the final file follows)."""
    every = output.save_every_n_steps
    return bool(every) and step % every == 0 and step < total_steps


def epoch_saves(output: OutputSettings, schedule: Schedule) -> list[int]:
    every = output.save_every_n_epochs
    return [epoch for epoch in range(1, schedule.epochs) if every and epoch % every == 0]


def step_saves(output: OutputSettings, schedule: Schedule) -> list[int]:
    return [step for step in range(1, schedule.total_steps) if saves_step_file(output, step, schedule.total_steps)]


def kept(rule: Keep, saved: list[int]) -> int:
    """How many of ``saved`` (in order) are left at the end, the rule applied after each save."""
    left: list[int] = []
    for number in saved:
        left.append(number)
        gone = set(rule.removed(left, number))
        left = [n for n in left if n not in gone]
    return len(left)


def output_summary(cfg: RunConfig, schedule: Schedule | None) -> str:
    """The check's Output line's end: ``, every 2 epochs (4 files, 2 kept), every 500 steps (9 files)``."""
    output = cfg.output
    parts = []
    for kind, every, noun in (
        ("epoch", output.save_every_n_epochs, "epoch"),
        ("step", output.save_every_n_steps, "step"),
    ):
        if not every:
            continue
        text = f"every {noun}" if every == 1 else f"every {count(every, noun)}"
        if schedule is not None:
            saved = epoch_saves(output, schedule) if kind == "epoch" else step_saves(output, schedule)
            files = kept(keep_rule(output, kind, state=False), saved)
            text += f" ({count(len(saved), 'file')}" + (f", {files} kept" if files != len(saved) else "") + ")"
        parts.append(text)
    return "".join(f", {part}" for part in parts)
