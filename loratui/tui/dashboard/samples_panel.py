"""The newest sample images of the run: one tile per prompt, its picture with the step and the
prompt under it, as many tiles as the width holds (three at 80 columns).

Pictures are drawn by :class:`~loratui.tui.images.ImageView` (Kitty graphics, Sixel, or
half-blocks); when it is half-blocks the title says why, once. A run with no sample prompts hides
the panel; one whose first samples are still to come shows one line saying when they come.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from loratui.core.summary import SampleImage
from loratui.core.terminal_text import escape_controls
from loratui.tui.dashboard import format as fmt
from loratui.tui.dashboard.view import FALLBACK_WIDTH, View
from loratui.tui.images import Graphics, ImageView, current_graphics

MAX_TILES = 4
TILE_WIDTH = 22  # columns of a tile (three fit in 70); its picture is 10 rows high (a square image: 20 columns)
TILE_GAP = 1


def newest_per_prompt(samples: list[SampleImage], count: int) -> list[SampleImage]:
    """The newest sample of each prompt, the ``count`` most recently rendered prompts, in prompt order."""
    newest: dict[int, SampleImage] = {}
    for sample in reversed(samples):
        if sample.index not in newest:
            newest[sample.index] = sample
            if len(newest) == count:
                break
    return sorted(newest.values(), key=lambda sample: sample.index)


def sampling_configured(config: dict) -> bool:
    section = config.get("sample")
    return isinstance(section, dict) and bool(section.get("prompts") or section.get("prompt_file"))


def schedule_text(config: dict) -> str:
    """When the run renders its samples, from its ``[sample]`` settings."""
    section = config.get("sample") if isinstance(config.get("sample"), dict) else {}
    parts = []
    if section.get("at_start"):
        parts.append("at the start")
    for key, unit in (("every_n_steps", "steps"), ("every_n_epochs", "epochs")):
        every = section.get(key)
        if isinstance(every, int) and every > 0:
            parts.append(f"every {every} {unit}" if every > 1 else f"every {unit[:-1]}")
    return ", ".join(parts) if parts else "only when asked (n: sample now)"


def caption(sample: SampleImage, width: int) -> str:
    """Two lines under a picture: step and prompt number, then the prompt (cut to ``width``)."""
    prompt = escape_controls(sample.prompt)
    if len(prompt) > width:
        prompt = prompt[: max(1, width - 1)] + "…"
    return f"step {fmt.number(sample.step)} · #{sample.index + 1}\n{prompt}"


class SampleTile(Vertical):
    def compose(self) -> ComposeResult:
        yield ImageView(classes="sample-picture")
        yield Static("", classes="sample-caption", markup=False)

    def show_sample(self, sample: SampleImage) -> None:
        self.query_one(ImageView).show(sample.path)
        self.query_one(".sample-caption", Static).update(caption(sample, TILE_WIDTH))


class SamplesPanel(Vertical):
    """Shown with the other panels (the screen calls :meth:`show` on each redraw)."""

    def __init__(self, *, id: str | None = None, classes: str | None = None, graphics: Graphics | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.graphics = graphics or current_graphics()
        self._shown_key: tuple | None = None
        self._view: View | None = None
        self.border_title = "Samples"

    def compose(self) -> ComposeResult:
        yield Static("", id="samples-note", markup=False)
        with Horizontal(id="samples-row"):
            for _ in range(MAX_TILES):
                yield SampleTile(classes="sample-tile")

    @property
    def tiles_that_fit(self) -> int:
        width = self.content_region.width or FALLBACK_WIDTH
        return max(1, min(MAX_TILES, (width + TILE_GAP) // (TILE_WIDTH + TILE_GAP)))

    def show(self, view: View) -> bool:
        """Draw the newest samples of ``view``; True when anything changed."""
        self._view = view
        summary = view.summary
        shown = newest_per_prompt(summary.samples, self.tiles_that_fit)
        configured = sampling_configured(summary.config)
        key = (tuple((s.path, s.step) for s in shown), configured, self.tiles_that_fit)
        if key == self._shown_key:
            return False
        self._shown_key = key
        self.display = bool(shown) or configured
        note = self.query_one("#samples-note", Static)
        if not shown:
            note.update(f"none yet; rendered {schedule_text(summary.config)}")
        else:
            note.update(f"newest of {len(summary.samples)} · i: all samples")
        self.border_title = "Samples" if not self.graphics.reason else f"Samples · {self.graphics.note}"
        self.query_one("#samples-row").display = bool(shown)
        for tile, sample in zip(self.query(SampleTile), [*shown, *[None] * MAX_TILES], strict=False):
            tile.display = sample is not None
            if sample is not None:
                tile.show_sample(sample)
        return True

    def on_resize(self) -> None:
        if self._view is not None:
            self.show(self._view)
