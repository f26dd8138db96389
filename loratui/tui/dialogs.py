"""Small modal dialogs shared by the app's screens."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConfirmQuitScreen(ModalScreen[str]):
    """Unsaved changes on quitting the app, or on closing the wizard (``quitting=False``).
    Dismisses with "save", "discard" or "cancel"."""

    BINDINGS = [
        Binding("s", "choose('save')", "Save and quit"),
        Binding("d", "choose('discard')", "Quit without saving"),
        Binding("escape,c", "choose('cancel')", "Cancel"),
    ]

    def __init__(self, file_name: str, *, exists: bool = True, quitting: bool = True) -> None:
        super().__init__(classes="dialog-screen")
        self.file_name = file_name
        self.exists = exists
        self.verb = "quit" if quitting else "close"

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="quit-dialog"):
            yield Static("Unsaved changes", classes="dialog-title")
            text = (
                f"{self.file_name} has changes that are not saved yet."
                if self.exists
                else f"{self.file_name} has not been written yet: the new project has no config file."
            )
            yield Static(text, classes="dialog-text")
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"Save and {self.verb} (s)", id="save", variant="primary", compact=True)
                yield Button(
                    f"{self.verb.capitalize()} without saving (d)", id="discard", variant="error", compact=True
                )
                yield Button("Cancel (Esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#save", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id or "cancel")

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)
