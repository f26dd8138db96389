"""The VRAM spill-over warning: a banner above everything that stays until it is dismissed.

The engine warns once per episode (code ``vram_spill``: VRAM full and steps several times slower,
or, on Windows, memory spilling into system RAM). A banner dismissed with its key stays away
until the engine warns again.
"""

from __future__ import annotations

from textual.content import Content

from loratui.tui.dashboard.view import Panel, View


class SpillBanner(Panel):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.dismissed_t: float | None = None  # the time of the warning that was dismissed
        self.display = False

    def warning(self, view: View) -> dict | None:
        spill = view.summary.spill_warning
        if spill is None or spill.get("t") == self.dismissed_t:
            return None
        return spill

    def dismiss_current(self, view: View) -> bool:
        spill = view.summary.spill_warning
        if spill is None:
            return False
        self.dismissed_t = spill.get("t")
        self.show(view)
        return True

    def build(self, view: View) -> Content:
        spill = self.warning(view)
        self.display = spill is not None
        if spill is None:
            return Content("")
        return Content.assemble(("⚠ VRAM spill-over: ", "bold"), spill["message"], "\n",
                                ("fix: ", "bold"), spill["hint"], "\n", ("d dismisses this warning", "italic"))
