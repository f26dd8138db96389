"""What the dashboard returns when it closes, what it prints then, and the exit code.

Closing the dashboard never touches the job: it runs in a session of its own. So on closing
while the job runs, the terminal gets the command that re-attaches to it; after the job ended,
it gets the outcome (where the LoRA is, how to resume) so that it stays in the scroll-back once
the full-screen view is gone. Exit codes are the CLI's: 0 finished (or detached from a running
job), 3 stopped, 2 failed on a mistake the user can fix, 1 failed otherwise or killed.
"""

from __future__ import annotations

from dataclasses import dataclass

from loratui.core.exit_codes import ExitCode, exit_code_of_run
from loratui.core.summary import RunSummary
from loratui.jobs.record import JobRecord
from loratui.shell import attach_command, stop_command
from loratui.tui.dashboard.outcome import outcome_lines


@dataclass(frozen=True)
class DashboardResult:
    job_id: str
    state: str  # the last state seen: starting, running, paused, finished, stopped, failed, gone
    final: dict | None  # the final event, once the job has ended
    error: dict | None  # the error event before a failure
    reason: str  # why the dashboard closed: "quit" (a key) or "terminal" (the terminal went away)
    lines: tuple[str, ...] = ()  # the outcome, as printed on closing

    @property
    def ended(self) -> bool:
        return self.final is not None or self.state == "gone"

    @property
    def exit_code(self) -> int:
        if self.final is None:  # still running when the user detached, or gone without a word
            return ExitCode.FAILED if self.state == "gone" else ExitCode.OK
        return exit_code_of_run(self.final, self.error)

    def farewell(self) -> list[str]:
        """The lines to print once the full-screen view is gone."""
        if self.ended:
            return list(self.lines)
        return [
            f"Detached; job {self.job_id} runs on. Re-attach: {attach_command(self.job_id)}   "
            f"stop it: {stop_command(self.job_id)}"
        ]


def make_result(record: JobRecord, summary: RunSummary, state: str, engine_gone: bool, reason: str) -> DashboardResult:
    lines = tuple(text for text, _style in outcome_lines(record, summary, engine_gone))
    return DashboardResult(record.job_id, state, summary.final, summary.error, reason, lines)
