"""Which saved LoRA the validation loss favours: each checkpoint beside the loss measured at its step,
and the best one, for the dashboard's checkpoints panel and the grid's "pick" view.

The rules, in plain words:

- A checkpoint's validation loss is the one measured at the step it was saved at (the engine
  measures at every epoch end, where the epoch files and the final file are saved, and every
  ``training.validate_every_n_steps`` steps); None when none was measured at that step (a stop
  or a manual save between two measurements). When a step was measured twice (a resumed run
  measures its first step again) the later measurement counts.
- The best checkpoint is the one saved at, or else the first one saved after, the step of the
  lowest validation loss (the earliest such step when two are equal): the weights closest to the
  point where the held-out images were predicted best. None without a validation loss, or when
  nothing was saved at or after that step yet.
- Resumable state folders (kind "state") are left out: they are not LoRA files a UI loads.
"""

from __future__ import annotations

from loratui.core.summary import Checkpoint, RunSummary


def lora_checkpoints(summary: RunSummary) -> list[Checkpoint]:
    """The LoRA files saved, in the order they were written (state folders left out)."""
    return [checkpoint for checkpoint in summary.checkpoints if checkpoint.kind != "state"]


def checkpoint_losses(summary: RunSummary) -> list[tuple[Checkpoint, float | None]]:
    """Each LoRA checkpoint with the validation loss measured at its step, or None."""
    at_step = dict(summary.validations)  # a later measurement of the same step wins
    return [(checkpoint, at_step.get(checkpoint.step)) for checkpoint in lora_checkpoints(summary)]


def best_checkpoint(summary: RunSummary) -> Checkpoint | None:
    """The checkpoint saved at or right after the step of the lowest validation loss."""
    best = summary.best_validation
    if best is None:
        return None
    best_step = best[0]
    return next((c for c in lora_checkpoints(summary) if c.step >= best_step), None)
