"""The question before stopping a job: stopping ends the run (it can be resumed, not undone)."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConfirmStopScreen(ModalScreen[bool]):
    """Dismisses with True (stop) or False (keep training)."""

    CSS_PATH = "dashboard.tcss"
    BINDINGS = [
        Binding("y", "answer(True)", "Stop the job"),
        Binding("n,escape", "answer(False)", "Keep training"),
    ]

    def __init__(self, job_id: str) -> None:
        super().__init__(id="confirm-stop")
        self.job_id = job_id

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-stop-dialog"):
            yield Static(f"Stop job {self.job_id}?", id="confirm-stop-title")
            yield Static(
                "The engine finishes the current step, saves a LoRA file and a resumable state, then exits. "
                "The dashboard then shows the command that resumes it.",
                id="confirm-stop-text",
            )
            with Horizontal(id="confirm-stop-buttons"):
                yield Button("Stop (y)", id="stop", variant="error", compact=True)
                yield Button("Keep training (n/Esc)", id="keep", compact=True)

    def on_mount(self) -> None:
        self.query_one("#keep", Button).focus()  # Enter on the default answer must not stop a run

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "stop")

    def action_answer(self, stop: bool) -> None:
        self.dismiss(stop)
