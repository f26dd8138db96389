"""The check's rules for saving: a setting that keeps the last n saves of a kind the run never saves
does nothing, and says so. Registered with :func:`loratui.rules.rule` when rules.py imports this
module. When and what a run saves and removes: :mod:`loratui.save_plan`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loratui.errors import Problem, warning
from loratui.rules import rule

if TYPE_CHECKING:
    from loratui.config import RunConfig


@rule(
    "output.save_every_n_epochs",
    "output.save_every_n_steps",
    "output.save_last_n_epochs",
    "output.save_last_n_epochs_state",
    "output.save_last_n_steps",
    "output.save_last_n_steps_state",
    "output.save_state",
)
def _keeping_what_is_never_saved(cfg: RunConfig) -> list[Problem]:
    output = cfg.output
    problems = []
    for key, saves, needs in (
        ("save_last_n_epochs", output.save_every_n_epochs, "save_every_n_epochs"),
        ("save_last_n_epochs_state", output.save_every_n_epochs, "save_every_n_epochs"),
        ("save_last_n_steps", output.save_every_n_steps, "save_every_n_steps"),
        ("save_last_n_steps_state", output.save_every_n_steps, "save_every_n_steps"),
    ):
        if getattr(output, key) and not saves:
            message = f"{key} does nothing: {needs} is 0, so the run saves no such files"
            problems.append(warning(f"output.{key}", message, f"set {needs}, or set {key} to 0"))
        elif key.endswith("_state") and getattr(output, key) and not output.save_state:
            message = f"{key} does nothing: save_state is off, so the run saves no state folders along the way"
            problems.append(warning(f"output.{key}", message, f"turn save_state on, or set {key} to 0"))
    return problems
