"""The VRAM spill-over warning: a banner above everything that stays until it is dismissed.

The engine warns once per episode (code ``vram_spill``: VRAM full and steps several times slower,
or, on Windows, memory spilling into system RAM). A banner dismissed with its key stays away
until the engine warns again.
"""

from __future__ import annotations

from textual.content import Content

from loratui.core.terminal_text import escape_controls
from loratui.tui.dashboard.view import Panel, View


class SpillBanner(Panel):
    """Shows :attr:`View.spill_on_banner`; dismissing it is kept in the view, so the warnings
    panel knows to show the warning from then on."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.display = False

    def dismiss_current(self, view: View) -> bool:
        spill = view.summary.spill_warning
        if spill is None:
            return False
        view.dismissed_spill_t = spill.get("t")
        self.show(view)
        return True

    def build(self, view: View) -> Content:
        spill = view.spill_on_banner
        self.display = spill is not None
        if spill is None:
            return Content("")
        return Content.assemble(
            ("⚠ VRAM spill-over: ", "bold"),
            escape_controls(spill["message"]),
            "\n",
            ("fix: ", "bold"),
            escape_controls(spill["hint"]),
            "\n",
            ("d dismisses this warning", "italic"),
        )
