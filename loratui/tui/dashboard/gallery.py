"""Every sample of a run, one at a time and as large as the terminal allows: :class:`GalleryScreen`.

Left and right step through the steps a prompt was rendered at (how it changed as the LoRA
learned), up and down through the prompts at about the same step; Home and End go to the first
and the newest. Under the picture: the prompt, its seed, step and size, and the file. Samples
rendered while it is open join in; one that was showing the newest of its prompt moves on to the
new one. Opened from the dashboard with ``i`` (also for a finished run: re-attach folds every
``sample`` event).
"""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Static

from loratui.core.summary import SampleImage
from loratui.core.terminal_text import escape_controls
from loratui.tui.dashboard import format as fmt
from loratui.tui.images import Graphics, ImageView, current_graphics

WATCH_S = 0.5  # how often it looks for samples rendered since
TRIGGERS = {
    "start": "at the start",
    "steps": "on its step schedule",
    "epoch": "at an epoch's end",
    "request": "sample now",
}


def _epochs_done(epochs: int) -> str:
    """A sample's ``epoch`` counts the epochs completed when it was rendered."""
    return "before the first epoch's end" if epochs == 0 else f"{epochs} epoch{'s' if epochs > 1 else ''} done"


def by_prompt(samples: list[SampleImage]) -> dict[int, list[SampleImage]]:
    """The samples of each prompt number, in the order rendered (by step, then time)."""
    groups: dict[int, list[SampleImage]] = {}
    for sample in samples:
        groups.setdefault(sample.index, []).append(sample)
    return {index: sorted(group, key=lambda s: (s.step, s.t)) for index, group in sorted(groups.items())}


def nearest(group: list[SampleImage], step: int) -> int:
    """The position in ``group`` of the sample whose step is closest to ``step`` (the later one on a tie)."""
    return min(range(len(group)), key=lambda position: (abs(group[position].step - step), -position))


class GalleryScreen(Screen[None]):
    CSS_PATH = "samples.tcss"
    BINDINGS = [
        Binding("escape,q", "close", "Back"),
        Binding("left", "step(-1)", "Earlier step", key_display="←"),
        Binding("right", "step(1)", "Later step", key_display="→"),
        Binding("up", "prompt(-1)", "Prompt", key_display="↑"),
        Binding("down", "prompt(1)", "Prompt", key_display="↓"),
        Binding("home", "end(0)", "First", show=False),
        Binding("end", "end(1)", "Newest", show=False),
    ]

    def __init__(self, samples: Callable[[], list[SampleImage]], job_id: str, *, graphics: Graphics | None = None):
        """``samples``: the run's samples now (the dashboard's summary goes on growing)."""
        super().__init__(id="gallery")
        self.samples = samples
        self.job_id = job_id
        self.graphics = graphics or current_graphics()
        self.groups: dict[int, list[SampleImage]] = {}
        self.prompt_index: int | None = None  # the prompt number shown
        self.position = 0  # in that prompt's samples
        self._count = -1

    def compose(self) -> ComposeResult:
        yield Static("", id="gallery-title", markup=False)
        yield ImageView(id="gallery-picture", graphics=self.graphics)
        yield Static("", id="gallery-facts", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self._refresh_samples()
        self.set_interval(WATCH_S, self._refresh_samples)

    @property
    def current(self) -> SampleImage | None:
        if self.prompt_index is None:
            return None
        return self.groups[self.prompt_index][self.position]

    def _refresh_samples(self) -> None:
        samples = self.samples()
        if len(samples) == self._count:
            return
        self._count = len(samples)
        was, at_newest = self.current, self._at_newest()
        self.groups = by_prompt(samples)
        if not self.groups:
            self.prompt_index = None
        elif was is None or was.index not in self.groups:  # opened: the newest sample of all
            self.prompt_index = samples[-1].index
            self.position = len(self.groups[self.prompt_index]) - 1
        else:
            group = self.groups[was.index]
            self.position = len(group) - 1 if at_newest else group.index(was) if was in group else 0
        self._draw()

    def _at_newest(self) -> bool:
        return self.prompt_index is not None and self.position == len(self.groups[self.prompt_index]) - 1

    # -- keys ----------------------------------------------------------------------------------

    def action_step(self, delta: int) -> None:
        if self.prompt_index is None:
            return
        group = self.groups[self.prompt_index]
        self.position = max(0, min(len(group) - 1, self.position + delta))
        self._draw()

    def action_end(self, newest: int) -> None:
        if self.prompt_index is None:
            return
        self.position = len(self.groups[self.prompt_index]) - 1 if newest else 0
        self._draw()

    def action_prompt(self, delta: int) -> None:
        current = self.current
        if current is None:
            return
        prompts = list(self.groups)
        self.prompt_index = prompts[(prompts.index(self.prompt_index) + delta) % len(prompts)]
        self.position = nearest(self.groups[self.prompt_index], current.step)
        self._draw()

    def action_close(self) -> None:
        self.dismiss(None)

    # -- drawing -------------------------------------------------------------------------------

    def _draw(self) -> None:
        title, facts = self.query_one("#gallery-title", Static), self.query_one("#gallery-facts", Static)
        picture = self.query_one("#gallery-picture", ImageView)
        sample = self.current
        if sample is None:
            title.update(f"Samples of {escape_controls(self.job_id)}")
            facts.update("no samples yet")
            picture.show(None)
            return
        group = self.groups[sample.index]
        prompts = list(self.groups)
        title.update(
            f"Samples of {escape_controls(self.job_id)} · prompt {prompts.index(sample.index) + 1} of {len(prompts)}"
            f" · step {fmt.number(sample.step)} ({self.position + 1} of {len(group)})"
        )
        picture.show(sample.path)
        lines = [
            f"prompt #{sample.index + 1}: {escape_controls(sample.prompt)}",
            f"step {fmt.number(sample.step)} · {_epochs_done(sample.epoch)} · seed {sample.seed} · "
            f"{sample.width}x{sample.height} · {TRIGGERS.get(sample.trigger, escape_controls(sample.trigger))}",
            f"file {escape_controls(sample.path)}",
        ]
        if self.graphics.reason:
            lines.append(self.graphics.note)
        facts.update("\n".join(lines))
