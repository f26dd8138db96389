"""What the app hands back to the command line when it exits: what to print, and the exit code."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from loratui.core.exit_codes import ExitCode
from loratui.shell import attach_command, train_command

if TYPE_CHECKING:
    from loratui.jobs.record import JobRecord
    from loratui.tui.dashboard.result import DashboardResult

# Checks a saved config and starts its training job; returns the job's record. Raises UserError
# when it cannot, naming the field or file at fault (the wizard shows it under that field).
LaunchFn = Callable[[Path], "JobRecord"]


@dataclass(frozen=True)
class AppResult:
    """How a session of the app ended.

    saved: the configs saved in a wizard and not launched since, in the order they were saved
        (with ``loratui edit CONFIG``, CONFIG from the start: it is on disk already).
    launched: the ids of the jobs started from the app.
    dashboard: the dashboard the app was left from (q on the dashboard it opened on, Ctrl+Q on
        any dashboard, the terminal going away); None when it was left from another screen.
    terminal_gone: the terminal went away: nothing is printed, nobody would read it.
    """

    saved: tuple[Path, ...] = ()
    launched: tuple[str, ...] = ()
    dashboard: DashboardResult | None = None
    terminal_gone: bool = False

    @property
    def config_path(self) -> Path | None:
        """The config saved last (and not launched since), or None."""
        return self.saved[-1] if self.saved else None

    @property
    def job_id(self) -> str | None:
        """The job started last, or None."""
        return self.launched[-1] if self.launched else None

    @property
    def exit_code(self) -> int:
        """The dashboard's (0 also for a job left running; 3 stopped; 1 or 2 failed), else 0."""
        return self.dashboard.exit_code if self.dashboard is not None else ExitCode.OK

    def farewell(self) -> list[tuple[str, bool]]:
        """The lines to print once the full-screen app is gone, each with ``True`` when it goes
        to stderr (a hint) rather than stdout (a result)."""
        if self.terminal_gone:
            return []
        if self.dashboard is not None:
            return [(line, not self.dashboard.ended) for line in self.dashboard.farewell()]
        # Running or ended by now, the job was left alone: say where to see it.
        lines = [
            (f"Started from the app: job {job_id}. Its dashboard: {attach_command(job_id)}", True)
            for job_id in self.launched
        ]
        lines += [(f"Saved {path}. Train it with: {train_command(path)}", False) for path in self.saved]
        return lines
