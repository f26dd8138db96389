"""What every panel draws from, and the panel base class that redraws only on a change.

The screen holds one :class:`View` (the run's summary, the clock, the last GPU reading) and hands
it to each panel when something changed. A panel builds its content and repaints only the lines
that differ from what is on screen, and asks for a new layout only when its height may change, so
a new step event repaints a few lines, not the whole screen (terminal traffic over SSH).
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.cells import cell_len
from textual.content import Content
from textual.geometry import Region
from textual.widget import Widget

from loratui.core.summary import RunSummary
from loratui.jobs.record import JobRecord
from loratui.tui.dashboard.messages import GpuReading

FALLBACK_WIDTH = 76  # before the first layout, a panel does not know its width yet


@dataclass
class View:
    record: JobRecord
    summary: RunSummary
    now: float  # unix time, from the screen's clock
    loaded: bool = False  # the history has been read
    gpu: GpuReading | None = None
    engine_gone: bool = False  # the engine exited without a final event (killed, crashed)
    dismissed_spill_t: float | None = None  # the time of the spill warning whose banner was dismissed

    @property
    def spill_on_banner(self) -> dict | None:
        """The spill warning the banner shows (until it is dismissed), or None."""
        spill = self.summary.spill_warning
        if spill is None or spill.get("t") == self.dismissed_spill_t:
            return None
        return spill

    @property
    def ended(self) -> bool:
        return self.summary.ended or self.engine_gone

    @property
    def state(self) -> str:
        """starting, running, paused, finished, stopped, failed, or gone."""
        if self.summary.ended:
            return self.summary.state
        if self.engine_gone:
            return "gone"
        return self.summary.state


class Panel(Widget):
    """A widget that draws a :class:`View`; subclasses implement :meth:`build`.

    Only the lines whose text or colours changed are repainted (a new step changes a number on
    two or three lines, not the panel), and a new layout is asked for only when the height may
    have changed.
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None, title: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._shown: Content | None = None
        self._view: View | None = None
        if title:
            self.border_title = title

    @property
    def text_width(self) -> int:
        width = self.content_region.width
        return width if width > 0 else FALLBACK_WIDTH

    def build(self, view: View) -> Content:
        raise NotImplementedError

    def render(self) -> Content:
        return self._shown if self._shown is not None else Content("")

    def show(self, view: View) -> bool:
        """Draw ``view``; True when the content changed."""
        self._view = view
        content = self.build(view)
        old = self._shown
        if old is not None and old.is_same(content):
            return False
        self._shown = content
        if old is None or _may_change_height(old, content, self.text_width):
            self.refresh(layout=True)
        else:
            changed = [
                Region(start, row, end - start, 1)
                for row, (before, after) in enumerate(zip(old.split("\n"), content.split("\n"), strict=False))
                if not before.is_same(after)
                for start, end in changed_cells(before.plain, before.spans, after.plain, after.spans)
            ]
            self.refresh(*changed)
        return True

    @property
    def shown_text(self) -> str:
        """The plain text on screen (for tests and the bench)."""
        return self._shown.plain if self._shown is not None else ""

    def on_resize(self) -> None:
        if self._view is not None:
            self._shown = None  # widths of bars and wraps depend on the size
            self.show(self._view)


def changed_cells(old_text: str, old_spans, new_text: str, new_spans) -> list[tuple[int, int]]:
    """The cells (start, end) of a line that differ in text or style between two versions: what
    to repaint when a line changes ("Step 1,234" -> "Step 1,235" repaints the number, not the bar
    after it). One run per line: Textual writes a line's update from the widget's left edge to the
    run's end anyway. Lines with wide characters are repainted whole."""
    length = max(len(old_text), len(new_text))
    if not _single_width(old_text) or not _single_width(new_text):
        return [(0, length)]
    old_styles, new_styles = _styles_by_cell(old_spans, length), _styles_by_cell(new_spans, length)
    differ = [
        index
        for index in range(length)
        if index >= len(old_text)
        or index >= len(new_text)
        or old_text[index] != new_text[index]
        or old_styles[index] != new_styles[index]
    ]
    return [(differ[0], differ[-1] + 1)] if differ else []


def _styles_by_cell(spans, length: int) -> list[tuple[str, ...]]:
    styles: list[tuple[str, ...]] = [()] * length
    for span in spans:
        for index in range(max(0, span.start), min(length, span.end)):
            styles[index] = styles[index] + (str(span.style),)
    return styles


def _single_width(text: str) -> bool:
    return text.isascii() or cell_len(text) == len(text)


def _may_change_height(old: Content, new: Content, width: int) -> bool:
    old_lines, new_lines = old.plain.split("\n"), new.plain.split("\n")
    if len(old_lines) != len(new_lines):
        return True
    return any(len(line) > width for line in old_lines + new_lines)  # a wrapped line may wrap differently
