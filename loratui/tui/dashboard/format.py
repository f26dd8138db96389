"""How the dashboard writes numbers: losses, learning rates, sizes, speeds, bars.

Pure functions (text in, text out) so every panel writes a value the same way. Bars are
:class:`~textual.content.Content` whose colours are theme variables ("$success"), resolved when
they are drawn: they follow the theme and stay distinct on a 256-colour terminal, and the done and
to-do parts differ in shape as well ("━" against "─"), so they read without colour too.
"""

from __future__ import annotations

import math
import shlex

from textual.content import Content

from loratui import quantities
from loratui.plain_progress import format_duration

GIB = 1024**3
MIB = 1024**2
DASH = "–"  # a value not known yet


def loss(value: float | None) -> str:
    """A loss with 4 decimals; tiny or huge ones in exponent form."""
    if value is None:
        return DASH
    if value != 0 and (abs(value) < 0.001 or abs(value) >= 10_000):
        return f"{value:.3e}"
    return f"{value:.4f}"


def axis(value: float, span: float) -> str:
    """A y-axis label with as many decimals as the span between the labels needs (3 significant)."""
    if span <= 0 or not math.isfinite(span):
        return loss(value)
    decimals = max(0, min(8, 2 - math.floor(math.log10(span))))
    if abs(value) >= 10_000:
        return f"{value:.3e}"
    return f"{value:.{decimals}f}"


def lr(value: float | None) -> str:
    """A learning rate the way people write them: 1e-4, 5e-5, 2.31e-5; 1 (Prodigy) stays 1."""
    if value is None:
        return DASH
    if value == 0:
        return "0"
    if 0.01 <= abs(value) < 1000:
        return f"{value:.3g}"
    mantissa, exponent = f"{value:.2e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def number(value: int | None) -> str:
    return DASH if value is None else f"{value:,}"


def step_label(value: int) -> str:
    """A step on the chart's axis: exact below 10,000, else in thousands (20.1k), so the label
    does not change, and is not repainted, on every step of a long run."""
    return f"{value:,}" if value < 10_000 else f"{value / 1000:.1f}k"


def gib(value: int | None) -> str:
    return DASH if value is None else f"{value / GIB:.1f}"


def size(value: int | None) -> str:
    """Bytes in binary units, as everywhere in loratui (:func:`loratui.quantities.size`)."""
    return quantities.size(value, DASH)


def speed(s_per_step: float | None) -> str:
    """Steps per second, or seconds per step when a step takes longer than a second (SDXL)."""
    if not s_per_step:
        return DASH
    if s_per_step > 1:
        return f"{s_per_step:.2f} s/it"
    return f"{1 / s_per_step:.2f} it/s"


def duration(seconds: float | None) -> str:
    return DASH if seconds is None else format_duration(seconds)


def quote(path: str) -> str:
    """A path as it must be typed in a shell (quoted only when it needs it)."""
    return shlex.quote(path)


def bar(fraction: float | None, width: int, style: str = "$primary") -> Content:
    """A horizontal bar ``width`` cells wide: done part "━" in ``style``, the rest "─", muted.

    Half cells are drawn with "╸" so a bar moves every half percent of a 100-cell bar.
    """
    width = max(1, width)
    if fraction is None:
        return Content.styled("─" * width, "$text-muted")
    fraction = min(1.0, max(0.0, fraction))
    halves = round(fraction * width * 2)
    full, half = divmod(halves, 2)
    done = "━" * full + ("╸" if half else "")
    rest = "─" * (width - len(done))
    return Content.assemble((done, style), (rest, "$text-muted"))


def pressure_style(level: str) -> str:
    """The theme colour of a memory gauge at a :func:`loratui.gpu.memory_pressure` level."""
    return {"ok": "$success", "high": "$warning", "critical": "$error"}.get(level, "$text-muted")
