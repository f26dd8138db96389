"""How a run ended and where its files are: the panel at the top of the dashboard once a job has
finished, stopped or failed, and the same lines printed to the terminal when the dashboard closes.

- finished: the final LoRA file;
- stopped: the LoRA file saved on stopping, and the exact command that resumes the run from its
  state folder;
- failed: the error with its hint (the ``error`` event before ``failed`` has them), and the log;
- gone (the engine exited without a final event: killed, out of memory, crashed): the log, and
  the newest resumable state saved before, with the command to resume from it.
"""

from __future__ import annotations

from textual.content import Content

from loratui import shell
from loratui.core.summary import RunSummary
from loratui.core.terminal_text import escape_controls
from loratui.jobs.record import JobRecord
from loratui.tui.dashboard import format as fmt
from loratui.tui.dashboard.view import Panel, View

TITLES = {"finished": "Finished", "stopped": "Stopped", "failed": "Failed", "gone": "Engine gone"}
STYLES = {"finished": "$success", "stopped": "$warning", "failed": "$error", "gone": "$error"}


def resume_command(record: JobRecord, state: str) -> str:
    """The command that resumes the job's run from ``state``, quoted to paste as it is."""
    return shell.resume_command(record.config, state)


def resume_state(summary: RunSummary, engine_gone: bool) -> str | None:
    """The state folder to resume an ended run from: the one saved on stopping, or after an engine
    died, the newest one it saved; None for a finished or failed run."""
    final = summary.final
    if final is not None:
        return final.get("state") if final["type"] == "stopped" else None
    if engine_gone:
        return next((c.path for c in reversed(summary.checkpoints) if c.kind == "state"), None)
    return None


def outcome_lines(record: JobRecord, summary: RunSummary, engine_gone: bool) -> list[tuple[str, str]]:
    """(text, style) lines that say how the run ended; [] while it runs. Each line is escaped (it
    names files, and the error may quote a file's name); a resume command needs no escaping, its
    words are quoted by loratui.shell."""
    return [(escape_controls(text), style) for text, style in _outcome_lines(record, summary, engine_gone)]


def _outcome_lines(record: JobRecord, summary: RunSummary, engine_gone: bool) -> list[tuple[str, str]]:
    final = summary.final
    if final is None and not engine_gone:
        return []
    kind = final["type"] if final else "gone"
    done = f"step {fmt.number(summary.step)}/{fmt.number(summary.total_steps)}"
    lines: list[tuple[str, str]] = []
    if kind == "finished":
        lines.append(
            (
                f"Finished at {done}, epoch {final['epoch']}/{summary.total_epochs or final['epoch']}, "
                f"after {fmt.duration(final['elapsed_s'])} of training.",
                "bold $success",
            )
        )
        lines.append((f"LoRA: {final['path']}", "bold"))
    elif kind == "stopped":
        why = {"request": "on request", "signal": "by a signal", "disk": "because events could not be written"}
        lines.append((f"Stopped {why.get(final['reason'], final['reason'])} at {done}.", "bold $warning"))
        if final.get("path"):
            lines.append((f"LoRA so far: {final['path']}", "bold"))
        if final.get("state"):
            lines.append((f"State: {final['state']}", ""))
            lines.append(("Resume with:", ""))
            lines.append((f"  {resume_command(record, final['state'])}", "bold $accent"))
        else:
            lines.append(("No resumable state was saved.", "$text-muted"))
    elif kind == "failed":
        error = summary.error or {}
        lines.append((f"Failed at {done}: {error.get('message') or final['message']}", "bold $error"))
        if error.get("hint"):
            lines.append((f"Fix: {error['hint']}", "$warning"))
        lines.append((f"Engine log: {record.log_path}", "$text-muted"))
    else:
        lines.append(
            (
                f"The engine ended without a final event at {done}: it was killed (out of memory?) or crashed.",
                "bold $error",
            )
        )
        lines.append((f"Engine log: {record.log_path}", "$text-muted"))
        state = resume_state(summary, engine_gone)
        if state:
            lines.append((f"Newest saved state (step {_state_step(summary, state)}); resume with:", ""))
            lines.append((f"  {resume_command(record, state)}", "bold $accent"))
    return lines


def _state_step(summary: RunSummary, state: str) -> str:
    return next((fmt.number(c.step) for c in summary.checkpoints if c.path == state), fmt.DASH)


class OutcomePanel(Panel):
    """Shown once the run has ended (hidden while it runs)."""

    def build(self, view: View) -> Content:
        lines = outcome_lines(view.record, view.summary, view.engine_gone)
        self.display = bool(lines)
        if lines:
            self.border_title = TITLES[view.state]
            self.set_class(True, f"-{view.state}")
        return Content("\n").join(Content.styled(text, style) if style else Content(text) for text, style in lines)
