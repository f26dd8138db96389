"""The live dashboard of a training job, for a terminal (over SSH, at 80x24 and up).

Entry point for the command line (``loratui attach JOB``, and ``loratui train CONFIG`` once the
job is launched)::

    from loratui.tui.dashboard import run_dashboard
    code = run_dashboard(record)   # a loratui.jobs.record.JobRecord; returns the exit code

For an app that has its own screens: push ``DashboardScreen(record)``; it dismisses itself with a
:class:`DashboardResult` when the user quits it (the job runs on).

Modules, one concept each: :mod:`.screen` (the screen, its workers and keys), :mod:`.app` (the
stand-alone app and the terminal watch), :mod:`.view` (what panels draw from, repaint on change),
a module per panel (:mod:`.status_line`, :mod:`.banner`, :mod:`.outcome`, :mod:`.progress_panel`,
:mod:`.loss_panel` with :mod:`.chart`, :mod:`.gpu_panel`, :mod:`.checkpoints_panel`,
:mod:`.params_panel`), :mod:`.log_reader` (the engine log's tail), :mod:`.messages` (what
workers post), :mod:`.confirm` (the stop dialog), :mod:`.format` (numbers) and :mod:`.result`
(what closing prints and returns). Styles: ``dashboard.tcss``.

Nothing here imports torch (a test checks it). Importing this package imports Textual: the
command line imports it only in the commands that show the dashboard.
"""

from __future__ import annotations

import sys

from loratui.jobs.record import JobRecord
from loratui.tui.dashboard.app import DashboardApp
from loratui.core.exit_codes import ExitCode
from loratui.tui.dashboard.result import DashboardResult
from loratui.tui.dashboard.screen import DashboardScreen

__all__ = ["DashboardApp", "DashboardResult", "DashboardScreen", "run_dashboard", "terminal_problem"]


def terminal_problem() -> str | None:
    """Why the dashboard cannot run here (stdin or stdout is not a terminal), or None."""
    for name, stream in (("input", sys.stdin), ("output", sys.stdout)):
        try:
            if stream is None or not stream.isatty():
                return f"the standard {name} is not a terminal"
        except (AttributeError, ValueError):
            return f"the standard {name} is closed"
    return None


def run_dashboard(record: JobRecord, *, theme: str | None = None) -> int:
    """Show the job's dashboard until the user quits or the terminal goes away, then print how to
    re-attach (or, for an ended job, its outcome) and return the exit code (0 also when the user
    detached from a running job). The job is never stopped by closing the dashboard.
    Raises UserError for an unknown ``theme``."""
    problem = terminal_problem()
    if problem:
        print(f"error: the dashboard needs a terminal ({problem}); follow the job with "
              f"`loratui attach {record.job_id} --no-tui` or `loratui logs {record.job_id} --follow`", file=sys.stderr)
        return ExitCode.USER_ERROR
    app = DashboardApp(record, theme=theme)
    result = app.run()
    if app.terminal_gone:
        return ExitCode.OK if result is None else result.exit_code
    if result is None:  # closed some other way (an error Textual reported): the job is untouched
        result = DashboardResult(record.job_id, "running", None, None, "quit")
    try:
        for line in result.farewell():
            print(line, file=sys.stderr if not result.ended else sys.stdout)
    except OSError:
        pass
    return result.exit_code

