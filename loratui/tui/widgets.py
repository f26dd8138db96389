"""Small widget variants shared by the screens."""

from __future__ import annotations

from textual.widgets import Input


class SteadyInput(Input):
    """An Input whose cursor does not blink.

    Each blink is a screen update sent to the terminal twice a second; over a slow SSH link that
    is constant traffic for nothing, and a steady cursor is as easy to find.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.cursor_blink = False
