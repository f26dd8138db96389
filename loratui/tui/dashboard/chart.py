"""The loss chart's arithmetic: from a run's loss history to rows of character cells.

The history (:class:`loratui.core.history.LossHistory`) holds at most 1024 bucket means for the
whole run; the chart has as many columns as the terminal gives it. Each column is the mean of the
buckets it covers ("raw": at one step per column, the loss of that step). The smoothed line is a
centred moving average over those columns (about 20 steps, at least 3 columns).

The y-range is the range of what is drawn, but never narrower than :data:`MIN_RELATIVE_SPAN` of
the mean loss: a chart always scaled from its minimum to its maximum makes noise of 0.1% look like
a cliff. The range is printed on the axis, so the scale is never a secret.

Cells are drawn with the eighth blocks "▁▂▃▄▅▆▇█" (8 levels a row); the smoothed line is "─" in the
row it falls in, across the bar or above it; where it falls in the bar's top cell, that cell keeps
the bar's height and takes the line's colour, so no bar loses its height to the line. The
validation losses (held-out images, measured every few steps and at each epoch end) are marks
"●" in the column of their step and the row of their value, over whatever is drawn there; the
y-range takes them in, so none falls off the chart. Everything here is plain data; the widget
(:mod:`.loss_panel`) adds the colours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BLOCKS = " ▁▂▃▄▅▆▇█"
LINE = "─"
MARK = "●"  # a validation loss
MIN_RELATIVE_SPAN = 0.10  # the y-range spans at least 10% of the mean loss
SMOOTH_STEPS = 20  # the smoothed line averages about this many steps (the summary's EMA weighs ~20)


@dataclass(frozen=True)
class Series:
    raw: list[float]  # one value per column, oldest first
    smooth: list[float]
    first_step: int  # the first step of the first column
    last_step: int  # the last step of the last column
    steps_per_column: float


@dataclass(frozen=True)
class Cell:
    char: str
    kind: str  # "raw" (a bar), "smooth" (the line; raw_below: a bar fills the cell behind it), "validation", "empty"
    raw_below: bool = False


def columns(points: list[float], point_steps: list[int], last_step: int, width: int) -> Series | None:
    """Resample the history's points into at most ``width`` columns (fewer when there are fewer
    points: a short run is drawn from the left, one column per step, not stretched)."""
    if not points or width < 1:
        return None
    n = len(points)
    if n <= width:
        raw = list(points)
    else:
        raw = []
        for column in range(width):
            start, end = column * n // width, (column + 1) * n // width
            chunk = points[start:end]
            raw.append(sum(chunk) / len(chunk))
    first_step = point_steps[0] if point_steps else 1
    steps = max(1, last_step - first_step + 1)
    per_column = steps / len(raw)
    return Series(raw, smooth(raw, per_column), first_step, last_step, per_column)


def smooth(values: list[float], steps_per_column: float) -> list[float]:
    """A centred moving average over about :data:`SMOOTH_STEPS` steps, and at least three columns:
    unlike an exponential average it does not lag behind a falling curve. Near the ends the window
    shrinks to what there is."""
    half = max(1, round(SMOOTH_STEPS / 2 / max(steps_per_column, 1e-9)))
    prefix = [0.0]
    for value in values:
        prefix.append(prefix[-1] + value)
    n = len(values)
    out = []
    for k in range(n):
        start, end = max(0, k - half), min(n, k + half + 1)
        out.append((prefix[end] - prefix[start]) / (end - start))
    return out


def y_range(series: Series, marks: list[float] | None = None) -> tuple[float, float]:
    """(low, high) of the chart: what is drawn (``marks``: the validation losses shown), widened to
    at least MIN_RELATIVE_SPAN of the mean."""
    values = series.raw + series.smooth + list(marks or [])
    low, high = min(values), max(values)
    mean = sum(series.raw) / len(series.raw)
    least = MIN_RELATIVE_SPAN * abs(mean) if mean else 1e-6
    if high - low < least:
        middle = (high + low) / 2
        low, high = middle - least / 2, middle + least / 2
        if low < 0 <= min(values):  # losses are not negative: do not invent negative space
            low, high = 0.0, least
    return low, high


def cells(series: Series, low: float, high: float, rows: int) -> list[list[Cell]]:
    """Rows of cells, top row first, one cell per column."""
    span = high - low if high > low else 1.0
    eighths = rows * 8
    grid = [[Cell(" ", "empty") for _ in series.raw] for _ in range(rows)]
    for column, (raw, smooth) in enumerate(zip(series.raw, series.smooth, strict=False)):
        height = max(1, min(eighths, round((raw - low) / span * eighths)))  # a bar is never invisible
        for row_from_bottom in range(rows):
            fill = min(8, max(0, height - row_from_bottom * 8))
            if fill:
                grid[rows - 1 - row_from_bottom][column] = Cell(BLOCKS[fill], "raw")
        level = (smooth - low) / span * eighths
        if math.isfinite(level):
            row_from_bottom = min(rows - 1, max(0, int(level // 8)))
            fill = height - row_from_bottom * 8
            if fill >= 8:  # inside the bar: the line across it
                cell = Cell(LINE, "smooth", raw_below=True)
            elif fill <= 0:  # above the bar
                cell = Cell(LINE, "smooth")
            else:  # the bar's top cell: keep its height, in the line's colour
                cell = Cell(BLOCKS[fill], "smooth")
            grid[rows - 1 - row_from_bottom][column] = cell
    return grid


def marks_shown(series: Series, marks: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """The (step, loss) marks within the steps the chart spans (a mark before its first step, the
    validation before training, goes in its first column)."""
    return [(step, loss) for step, loss in marks if step <= series.last_step and math.isfinite(loss)]


def mark_cells(grid: list[list[Cell]], series: Series, marks: list[tuple[int, float]], low: float, high: float) -> None:
    """Put a validation mark in the column of each (step, loss) and the row of its value."""
    rows, span = len(grid), high - low if high > low else 1.0
    if not rows or not series.raw:
        return
    for step, loss in marks_shown(series, marks):
        column = min(len(series.raw) - 1, max(0, int((step - series.first_step) / series.steps_per_column)))
        level = (loss - low) / span * rows * 8  # in eighths of a row, as the smoothed line's
        row_from_bottom = min(rows - 1, max(0, int(level // 8)))
        grid[rows - 1 - row_from_bottom][column] = Cell(MARK, "validation")
