"""The engine's warnings: the latest one in a panel under the loss chart, all of them on a key.

The engine warns about what does not stop a run but may spoil it: the problems ``loratui check``
reports as warnings (missing captions, a warmup longer than the run...) and VRAM spilling over.
The status line counts them; this panel says what the latest one is and how to fix it, without a
key, at 80x24. ``w`` opens :class:`WarningsScreen`, the whole list (the summary keeps the latest
:data:`~loratui.core.summary.MAX_WARNINGS`). A spill warning on the banner is not repeated here
until the banner is dismissed.
"""

from __future__ import annotations

import time

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

from loratui.core.terminal_text import escape_controls
from loratui.quantities import count
from loratui.shell import logs_command
from loratui.tui.dashboard.view import Panel, View


def warning_lines(warning: dict, stamp: str = "") -> Content:
    """A warning's message and, on the next line, its fix (both may name files: escaped)."""
    message = escape_controls(warning.get("message", ""))
    head = Content.assemble(("⚠ ", "bold $warning"), (stamp, "$text-muted"), (message, "$warning"))
    hint = warning.get("hint")
    if not hint:
        return head
    return Content("\n").join([head, Content.assemble(("  fix: ", "bold"), escape_controls(hint))])


def shown_warnings(view: View) -> list[dict]:
    """The warnings kept, oldest first, without the one the banner shows."""
    on_banner = view.spill_on_banner
    if on_banner is None:
        return list(view.summary.warnings)
    # compared by time and code: a summary restored from a snapshot holds copies, not the same dict
    key = (on_banner.get("t"), on_banner.get("code"))
    return [warning for warning in view.summary.warnings if (warning.get("t"), warning.get("code")) != key]


class WarningsPanel(Panel):
    """The latest warning with its fix; hidden while there is none."""

    def build(self, view: View) -> Content:
        warnings = shown_warnings(view)
        self.display = bool(warnings)
        if not warnings:
            return Content("")
        total = view.summary.warning_count
        self.border_title = "Warning" if total == 1 else f"Latest of {count(total, 'warning')} (w lists them)"
        return warning_lines(warnings[-1])


class WarningsScreen(ModalScreen[None]):
    """Every warning kept, newest first, each with its time and fix."""

    BINDINGS = [
        Binding("escape,w,q", "close", "Close"),
    ]

    def __init__(self, warnings: list[dict], total: int, job_id: str) -> None:
        super().__init__()
        self.warnings = warnings
        self.total = total
        self.job_id = job_id

    def compose(self) -> ComposeResult:
        with Vertical(id="warnings-dialog") as dialog:
            dialog.border_title = f"Warnings: {self.total}"
            dialog.border_subtitle = "Esc closes"
            with VerticalScroll(id="warnings-list"):
                yield Static(self._text(), id="warnings-text")

    def _text(self) -> Content:
        if not self.warnings:
            return Content.styled("no warnings", "$text-muted")
        entries = [warning_lines(warning, _stamp(warning)) for warning in reversed(self.warnings)]
        dropped = self.total - len(self.warnings)
        if dropped > 0:
            logs = logs_command(self.job_id)
            entries.append(
                Content.styled(
                    f"… and {count(dropped, 'earlier warning')} not kept here (`{logs}` prints them all)", "$text-muted"
                )
            )
        return Content("\n\n").join(entries)

    def action_close(self) -> None:
        self.dismiss(None)


def _stamp(warning: dict) -> str:
    t = warning.get("t")
    return time.strftime("%H:%M:%S ", time.localtime(t)) if isinstance(t, (int, float)) else ""
