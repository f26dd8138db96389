"""The loss: its current, smoothed and lowest values, the eval and validation losses, and a chart
of the whole run.

The chart (:class:`LossChart`) draws the raw loss as bars, the smoothed loss as a line and the
validation losses (held-out images) as marks, with the y-range written on its axis and the steps it
covers under it (arithmetic in :mod:`.chart`).
It is drawn again only when the history changed or the widget was resized, and repainted only
when that drawing differs from the one on screen.
"""

from __future__ import annotations

from itertools import groupby

from rich.style import Style
from rich.text import Span, Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.geometry import Region
from textual.widget import Widget

from loratui.core.history import LossHistory
from loratui.tui.dashboard import chart
from loratui.tui.dashboard import format as fmt
from loratui.tui.dashboard.view import Panel, View, changed_cells


class LossValues(Panel):
    def build(self, view: View) -> Content:
        summary = view.summary
        history = summary.history
        if not history.count:
            return Content.styled("no loss yet: the first step has not finished", "$text-muted")
        parts: list[tuple[str, str] | str] = [
            ("loss ", "bold"),
            (fmt.loss(summary.loss_last), "bold $accent"),
            ("  smoothed ", "bold"),
            fmt.loss(summary.loss_smoothed),
            ("  min ", "bold"),
            f"{fmt.loss(summary.loss_min)} (step {fmt.number(history.min_step)})",
        ]
        if summary.evals:
            parts += [("  eval ", "bold"), fmt.loss(summary.evals[-1][1])]
            first = f" (first {fmt.loss(summary.evals[0][1])})"
            line = Content.assemble(*parts)
            if len(summary.evals) > 1 and line.cell_length + len(first) <= self.text_width:
                parts.append(first)
        if not summary.validations:
            return Content.assemble(*parts)
        return Content("\n").join([Content.assemble(*parts), self._validation_line(summary)])

    def _validation_line(self, summary) -> Content:
        """A line of its own (the first one is full at 80 columns): the latest validation loss, the
        lowest with its step, and the first where they fit."""
        best_step, best_loss = summary.best_validation
        parts: list[tuple[str, str] | str] = [
            ("validation ", "bold"),
            (fmt.loss(summary.validations[-1][1]), "bold $warning"),
            ("  best ", "bold"),
            f"{fmt.loss(best_loss)} (step {fmt.number(best_step)})",
        ]
        first = f"  first {fmt.loss(summary.validations[0][1])}"
        if len(summary.validations) > 1 and Content.assemble(*parts).cell_length + len(first) <= self.text_width:
            parts.append(first)
        return Content.assemble(*parts)


class LossChart(Widget):
    """Raw loss as bars, smoothed loss as a line, validation losses as marks, y-range on the axis,
    steps below."""

    STYLES = ("raw", "smooth", "validation", "axis", "legend")
    COMPONENT_CLASSES = {f"loss-chart--{name}" for name in STYLES}

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._history: LossHistory | None = None
        self._validations: list[tuple[int, float]] = []
        self._last_step = 0
        self._key: tuple | None = None
        self._lines: list[Text] = []
        self.y_range: tuple[float, float] | None = None  # what the last drawing showed (tests read it)
        self.steps_shown: tuple[int, int] | None = None

    def show(self, view: View) -> bool:
        """Draw the history again if it changed; repaint only if the drawing did (with thousands
        of steps per column, most new steps change no cell)."""
        history, validations = view.summary.history, view.summary.validations
        key = (id(history), history.count, history.width, history.first_step, len(validations))
        if key == self._key:
            return False
        self._key, self._history, self._validations = key, history, list(validations)
        self._last_step = history.first_step + history.count - 1
        return self._redraw()

    def on_resize(self) -> None:
        self._redraw()

    def _redraw(self) -> bool:
        """Repaint the rows that changed (usually only the axis: its last step moves every step)."""
        lines = self._draw().split("\n")
        old, self._lines = self._lines, lines
        if len(old) != len(lines):
            self.refresh()
            return True
        changed = [
            Region(start, row, end - start, 1)
            for row, (a, b) in enumerate(zip(old, lines, strict=False))
            if a != b
            for start, end in changed_cells(a.plain, a.spans, b.plain, b.spans)
        ]
        if changed:
            self.refresh(*changed)
        return bool(changed)

    def render(self) -> Text:
        """The drawing, its style names resolved now: a theme picked later applies at once."""
        styles = {name: self.get_component_rich_style(f"loss-chart--{name}") for name in self.STYLES}
        raw_color = styles["raw"].color
        styles["smooth-in-bar"] = styles["smooth"] + Style(bgcolor=raw_color) if raw_color else styles["smooth"]
        lines = [
            Text(line.plain, spans=[Span(span.start, span.end, styles[str(span.style)]) for span in line.spans])
            for line in self._lines
        ]
        return Text("\n", no_wrap=True, overflow="crop").join(lines)

    def _draw(self) -> Text:
        width, height = self.size.width, self.size.height
        history = self._history
        if history is None or not history.count or height < 2 or width < 12:
            self.y_range = self.steps_shown = None
            return Text("")
        rows = height - 1
        points, steps = history.points(), history.point_steps()
        label_width = 6  # a first guess; redone once if the labels of this range are wider
        for _attempt in range(2):
            plot_width = max(1, width - label_width - 1)
            series = chart.columns(points, steps, self._last_step, plot_width)
            assert series is not None
            marks = chart.marks_shown(series, self._validations)
            low, high = chart.y_range(series, [loss for _, loss in marks])
            labels = {0: fmt.axis(high, high - low), rows - 1: fmt.axis(low, high - low)}
            if rows >= 5:
                labels[(rows - 1) // 2] = fmt.axis((low + high) / 2, high - low)
            needed = max(len(label) for label in labels.values())
            if needed == label_width:
                break
            label_width = needed
        self.y_range, self.steps_shown = (low, high), (series.first_step, series.last_step)
        # Spans carry style *names* ("raw", "smooth"...); render() turns them into the theme's colours.
        text = Text(no_wrap=True, overflow="crop")
        grid = chart.cells(series, low, high, rows)
        chart.mark_cells(grid, series, marks, low, high)
        for index, row in enumerate(grid):
            label = labels.get(index, "")
            text.append(label.rjust(label_width) + ("┤" if label else "│"), "axis")
            # one span per run of cells in the same style: a row is a few escape codes, not one per cell
            for (kind, in_bar), run in groupby(row, key=lambda cell: (cell.kind, cell.raw_below)):
                chars = "".join(cell.char for cell in run)
                text.append(chars, None if kind == "empty" else "smooth-in-bar" if in_bar else kind)
            text.append("\n")
        text.append(" " * (label_width + 1))
        text.append_text(x_axis(series, plot_width, validation=bool(marks)))
        return text


def legend_for(room: int, validation: bool) -> Text:
    """The legend, in the longest wording that fits in ``room`` cells (the validation mark's entry
    only when the chart has marks)."""
    wordings = (
        [(" raw  ", " smoothed  ", " validation"), (" raw ", " smooth ", " val")]
        if validation
        else [(" raw  ", " smoothed", "")]
    )
    legend = Text("")
    for raw, smooth, val in wordings:
        legend = Text.assemble(("▆", "raw"), (raw, "legend"), ("─", "smooth"), (smooth, "legend"))
        if validation:
            legend.append_text(Text.assemble((chart.MARK, "validation"), (val, "legend")))
        if legend.cell_len <= room:
            break
    return legend


def x_axis(series: chart.Series, plot_width: int, validation: bool = False) -> Text:
    """The first step under the first column, the last step ending under the last column drawn,
    and the legend where it fits."""
    first, last = f"step {fmt.step_label(series.first_step)}", fmt.step_label(series.last_step)
    last_end = max(len(series.raw), len(first) + 1 + len(last))
    gap = last_end - len(first) - len(last)
    legend = legend_for(max(plot_width - last_end - 2, gap - 4), validation)
    line = Text(no_wrap=True, overflow="crop")
    line.append(first, "axis")
    if plot_width - last_end >= legend.cell_len + 2:  # room after the last step's label
        line.append(" " * gap)
        line.append(last, "axis")
        line.append("  ")
        line.append_text(legend)
    elif gap >= legend.cell_len + 4:  # room between the two labels
        left = (gap - legend.cell_len) // 2
        line.append(" " * left)
        line.append_text(legend)
        line.append(" " * (gap - left - legend.cell_len))
        line.append(last, "axis")
    else:
        line.append(" " * gap)
        line.append(last, "axis")
    return line


class LossPanel(Vertical):
    def compose(self) -> ComposeResult:
        yield LossValues(id="loss-values")
        yield LossChart(id="loss-chart")

    def show(self, view: View) -> bool:
        changed = self.query_one(LossValues).show(view)
        return self.query_one(LossChart).show(view) or changed
