"""The engine-log panel: ``engine.log``'s lines, wrapped to the panel, library chatter dimmed.

A long line (a path, an error message) is wrapped, never cut: the end of an error is often the
part that matters. The lines are kept as text and wrapped again when the panel's width changes.

The engine's stderr also carries what its libraries say while loading: bitsandbytes about its
kernels, diffusers and transformers about dtype casts and config keys, Python's FutureWarnings
and their source lines, accelerate, progress bars. The engine quiets most of it at the source
(``engine/__main__.py``); what still comes through (an older engine, a library that prints) is
drawn dimmed, so that the engine's own lines and real errors stand out. Nothing is hidden: an
error stays an error whoever raised it, and is drawn in the error colour.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable

from rich.text import Text
from textual.events import Resize
from textual.widgets import RichLog

# "2026-12-01 15:20:19,457 WARNING bitsandbytes.backends.cpu.ops: ..." (the engine's log format)
_LOGGER_LINE = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+) (?P<name>[\w.]+): ")
_LIBRARIES = (
    "bitsandbytes",
    "diffusers",
    "transformers",
    "accelerate",
    "torch",
    "huggingface_hub",
    "peft",
    "safetensors",
    "xformers",
    "PIL",
    "urllib3",
    "filelock",
    "httpx",
    "tokenizers",
    "triton",
)
# Python's warnings: "/site-packages/x.py:12: FutureWarning: ..." (the next line is the source line)
_PY_WARNING = re.compile(r"^.*:\d+: \w*Warning: ")
# diffusers and transformers write their notices without a logger prefix
_LIBRARY_NOTICES = re.compile(
    r"^(There are modules in \w+ that should be kept in float32"
    r"|The config attributes .* were passed to"
    r"|Keyword arguments .* are not expected by"
    r"|You are using a model of type"
    r"|Some weights of .* were not (initialized|used)"
    r"|Loading pipeline components"
    r"|`torch_dtype` is deprecated"
    r"|An error occurred while trying to fetch)"
)
_PROGRESS_BAR = re.compile(r"\d+%\|.*\|\s*\d+/\d+")
_ERROR = re.compile(r"^(Traceback \(most recent call last\)|[\w.]*(Error|Exception)\b.*:|.*\b(ERROR|CRITICAL)\b)")


def is_chatter(line: str, after_warning: bool = False) -> bool:
    """True for what a library says in passing; ``after_warning``: the line follows a Python
    warning (an indented line then is the warning's source line)."""
    if after_warning and line[:1].isspace():
        return True
    logged = _LOGGER_LINE.match(line)
    if logged:
        name = logged.group("name").split(".")[0]
        return name in _LIBRARIES and logged.group("level") not in ("ERROR", "CRITICAL")
    return bool(_PY_WARNING.match(line) or _LIBRARY_NOTICES.match(line) or _PROGRESS_BAR.search(line))


def is_error(line: str) -> bool:
    return bool(_ERROR.match(line))


class EngineLog(RichLog):
    """The last ``max_lines`` lines of the engine's log, wrapped, chatter dimmed, errors marked.

    The colours are component classes (``engine-log--chatter``, ``engine-log--error``) styled
    with theme variables in ``dashboard.tcss``."""

    COMPONENT_CLASSES = {"engine-log--chatter", "engine-log--error"}

    def __init__(self, max_lines: int, *, id: str | None = None) -> None:
        super().__init__(
            max_lines=max_lines, min_width=1, wrap=True, markup=False, highlight=False, auto_scroll=True, id=id
        )
        self.source: deque[tuple[str, str]] = deque(maxlen=max_lines)  # (line, kind: "", "chatter", "error")
        self._after_warning = False  # the last line was a Python warning (its source line follows)
        self._in_traceback = False  # within a traceback's frames
        self._wrapped_at: int | None = None  # the width the lines on screen were wrapped to
        self._styles: tuple | None = None  # the component styles the lines on screen were drawn with

    def add_lines(self, lines: Iterable[str]) -> None:
        for line in lines:
            kind = self._kind(line)
            self.source.append((line, kind))
            self.write(self._text(line, kind))

    def kinds(self) -> list[tuple[str, str]]:
        """(line, kind) for every line kept: kind "" (the engine's own), "chatter" or "error"."""
        return list(self.source)

    def _kind(self, line: str) -> str:
        indented = line[:1].isspace()
        if self._in_traceback and indented:  # the frames of a traceback: all of it is the error
            return "error"
        self._in_traceback = line.startswith("Traceback (most recent call last)")
        chatter = is_chatter(line, self._after_warning)
        self._after_warning = bool(_PY_WARNING.match(line)) or (self._after_warning and indented)
        if chatter:
            return "chatter"
        return "error" if is_error(line) else ""

    def _text(self, line: str, kind: str) -> Text:
        style = self.get_component_rich_style(f"engine-log--{kind}", partial=True) if kind else ""
        # "fold" breaks a word longer than the line (a path) instead of cutting it off
        return Text(line, style=style, overflow="fold", no_wrap=False)

    def _rewrap(self) -> None:
        self.clear()
        for line, kind in self.source:
            self.write(self._text(line, kind))

    def _kind_styles(self) -> tuple:
        return tuple(self.get_component_rich_style(name, partial=True) for name in sorted(self.COMPONENT_CLASSES))

    def on_resize(self, event: Resize) -> None:
        # RichLog wraps a line once, when it is written: after a change of width, wrap them all again.
        # (RichLog's own handler runs after this one: it writes what came before the size was known.)
        width = self.scrollable_content_region.width
        if self._wrapped_at is not None and width != self._wrapped_at and width > 0:
            self._rewrap()
        self._wrapped_at = width
        self._styles = self._kind_styles()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        if self._wrapped_at is None:
            return
        styles = self._kind_styles()
        if styles != self._styles:  # a new theme: the lines already written take its colours too
            self._styles = styles
            self._rewrap()
