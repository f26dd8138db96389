"""The live dashboard of a training job, for a terminal (over SSH, at 80x24 and up).

The app (:mod:`loratui.tui.app`) pushes :class:`DashboardScreen` for ``loratui attach JOB``,
``loratui train CONFIG`` once the job is started, a launch from the wizard or home, and a job picked
on home; the screen dismisses itself with a :class:`DashboardResult` when the user leaves it (the
job runs on), and the app decides where that goes (back, or out of the app with the farewell lines
of :mod:`.result`).

Modules, one concept each: :mod:`.screen` (the screen, its workers and keys), :mod:`.view` (what
panels draw from, repaint on change), a module per panel (:mod:`.status_line`, :mod:`.banner`, :mod:`.outcome`, :mod:`.progress_panel`,
:mod:`.loss_panel` with :mod:`.chart`, :mod:`.gpu_panel`, :mod:`.checkpoints_panel`,
:mod:`.params_panel`, :mod:`.samples_panel`), :mod:`.gallery` (every sample image, by prompt and step;
pictures drawn by :mod:`loratui.tui.images`), :mod:`.log_reader` (the engine log's tail), :mod:`.messages` (what
workers post), :mod:`.confirm` (the stop dialog), :mod:`.format` (numbers) and :mod:`.result`
(what closing prints and returns). Styles: ``dashboard.tcss``, ``samples.tcss``.

Nothing here imports torch (a test checks it). Importing this package imports Textual: the
command line imports it only in the commands that show the dashboard.
"""

from __future__ import annotations

import sys

from loratui.tui.dashboard.result import DashboardResult
from loratui.tui.dashboard.screen import DashboardScreen

__all__ = ["DashboardResult", "DashboardScreen", "terminal_problem"]


def terminal_problem() -> str | None:
    """Why the dashboard cannot run here (stdin or stdout is not a terminal), or None."""
    for name, stream in (("input", sys.stdin), ("output", sys.stdout)):
        try:
            if stream is None or not stream.isatty():
                return f"the standard {name} is not a terminal"
        except (AttributeError, ValueError):
            return f"the standard {name} is closed"
    return None
