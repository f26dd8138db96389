"""Pictures in the terminal (sample images, the grid): :class:`ImageView`, and how the terminal draws them.

The drawing is textual-image's: Kitty's graphics protocol, Sixel, or Unicode half-blocks (two
pixels a cell, in colour) where the terminal has neither. Which one a terminal has can only be
learnt by asking it (an escape sequence, and its answer on stdin), and only before Textual starts:
once it runs, Textual's input thread takes every answer. textual-image asks when it is imported,
but importing it imports numpy (0.15 to 0.4 s), which would delay the app's first frame, so
:func:`prepare_graphics` (called by ``entry.run_app`` just before the app starts) asks the same two
questions textual-image asks, in one exchange: Kitty's graphics query followed by "which features"
(DA1), which every terminal answers; its answer ends the wait, and a Kitty answer comes before it.
So a terminal costs one round trip; one that answers nothing costs :data:`ANSWER_TIMEOUT_S`, and
gets half-blocks with one line that says why (:attr:`Graphics.note`). The library itself is
imported when the first picture is drawn (in a worker thread), with the terminal hidden from it, so
that it never writes a query of its own or waits: ``loratui --help`` and the commands that show no
app never import it at all.

Through tmux: a tmux built with Sixel (3.4 and later) answers that it has Sixel and draws the
images itself; Kitty graphics would need tmux's passthrough, which textual-image does not use, so
inside tmux without Sixel the pictures are half-blocks. ``LORATUI_IMAGES=kitty|sixel|halfblock``
overrides the choice (a terminal whose answer is wrong, or one that is slow to answer).
"""

from __future__ import annotations

import logging
import os
import re
import select
import sys
import threading
import time
from dataclasses import dataclass
from types import ModuleType

from PIL import Image
from textual import work
from textual.app import ComposeResult
from textual.containers import Container
from textual.widget import Widget
from textual.widgets import Static

from loratui.core.terminal_text import escape_controls
from loratui.images import to_rgb8

ENV = "LORATUI_IMAGES"
MODES = ("kitty", "sixel", "halfblock")
LABELS = {"kitty": "Kitty graphics", "sixel": "Sixel", "halfblock": "half-blocks"}
# The most pixels kept of a picture: more than any terminal shows of it (200 columns of 10-pixel
# cells), and it bounds the time each redraw spends scaling it.
MAX_SIDE = 2048
# A terminal answers in one round trip (a slow SSH link: a few hundred ms); this is how long one
# that never answers keeps the app from starting.
ANSWER_TIMEOUT_S = 0.5
# textual-image's own questions: Kitty's graphics query (a 1x1 image, "query" action), then DA1.
KITTY_QUERY = "\x1b_Gi=31,s=1,v=1,a=q,t=d,f=24;AAAA\x1b\\"
DA1_QUERY = "\x1b[c"
KITTY_OK = re.compile(rb"\x1b_Gi=31;OK\x1b\\")
DA1_ANSWER = re.compile(rb"\x1b\[\?([0-9;]*)c")
SIXEL_FEATURE = b"4"


@dataclass(frozen=True)
class Graphics:
    """How this terminal draws pictures: ``mode`` is one of :data:`MODES`; ``reason`` says why
    half-blocks were chosen (empty when the terminal draws real pixels)."""

    mode: str
    reason: str = ""

    @property
    def label(self) -> str:
        return LABELS[self.mode]

    @property
    def note(self) -> str:
        """One line for a title: what is used and, for half-blocks, why."""
        return f"{self.label}: {self.reason}" if self.reason else self.label


_chosen: Graphics | None = None


def prepare_graphics() -> Graphics:
    """Ask the terminal how it draws pictures (once; call it before the app starts)."""
    global _chosen
    if _chosen is None:
        _chosen = _choose()
    return _chosen


def current_graphics() -> Graphics:
    """The choice :func:`prepare_graphics` made; half-blocks when it was never asked."""
    if _chosen is not None:
        return _chosen
    return Graphics("halfblock", "not a terminal" if not _on_terminal() else "the terminal was not asked")


def use_graphics(graphics: Graphics | None) -> None:
    """Set the choice (tests; None forgets it)."""
    global _chosen
    _chosen = graphics


def _choose() -> Graphics:
    requested = os.environ.get(ENV, "").strip().lower()
    if requested and requested not in (*MODES, "auto"):
        return Graphics("halfblock", f"{ENV}={escape_controls(requested)} is not one of auto, {', '.join(MODES)}")
    if not _on_terminal():
        return Graphics("halfblock", "not a terminal")
    if requested == "halfblock":
        return Graphics("halfblock", f"set by {ENV}")
    if requested in MODES:
        chosen = Graphics(requested)
    else:
        chosen = _from_answer(_ask_terminal(KITTY_QUERY + DA1_QUERY, ANSWER_TIMEOUT_S))
    if chosen.mode != "halfblock":
        _measure_cells()
    return chosen


def _from_answer(answer: bytes | None) -> Graphics:
    if answer is None:
        return Graphics("halfblock", "the terminal could not be asked which graphics it has")
    features = DA1_ANSWER.search(answer)
    if features is None:
        return Graphics("halfblock", "the terminal answered no graphics query")
    # Sixel first, as textual-image does: terminals that answer both (Konsole, WezTerm) draw
    # Sixel right, and Kitty, which has no Sixel, answers only its own query.
    if SIXEL_FEATURE in features.group(1).split(b";"):
        return Graphics("sixel")
    if KITTY_OK.search(answer):
        return Graphics("kitty")
    return Graphics("halfblock", "the terminal has neither Kitty graphics nor Sixel")


def _on_terminal() -> bool:
    try:
        return all(stream is not None and stream.isatty() for stream in (sys.__stdin__, sys.__stdout__))
    except (AttributeError, ValueError):  # a closed stream
        return False


def _ask_terminal(query: str, timeout_s: float) -> bytes | None:
    """Write ``query`` to the terminal and read its answer up to the DA1 answer (which ends it),
    or until ``timeout_s`` passes without it; None when the terminal cannot be asked at all."""
    import termios
    import tty

    try:
        stdin = sys.__stdin__.fileno()
        saved = termios.tcgetattr(stdin)
    except (AttributeError, ValueError, OSError, termios.error):
        return None
    answer = b""
    try:
        tty.setcbreak(stdin, termios.TCSANOW)  # the answer is read as it comes, and not echoed
        sys.__stdout__.write(query)
        sys.__stdout__.flush()
        deadline = time.monotonic() + timeout_s
        while not DA1_ANSWER.search(answer):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([stdin], [], [], left)[0]:
                break
            byte = os.read(stdin, 1)  # a byte at a time: what is typed after the answer stays for the app
            if not byte:
                break
            answer += byte
    except (OSError, ValueError, termios.error):
        return None
    finally:
        try:
            termios.tcsetattr(stdin, termios.TCSANOW, saved)
        except termios.error:
            pass
    return answer


def _measure_cells() -> None:
    """Let textual-image learn the size of a cell in pixels now, while the terminal can still be
    asked (it keeps it): Sixel and Kitty pictures are sized in pixels. Its module for that does
    not import numpy."""
    try:
        from textual_image._terminal import get_cell_size

        get_cell_size()
    except Exception:  # it assumes 10x20 pixels when it cannot know
        pass


class _NotATerminal:
    """Stands in for ``sys.__stdout__`` while textual-image is imported without asking the terminal."""

    def isatty(self) -> bool:
        return False


_library_lock = threading.Lock()


def _load_library() -> ModuleType | None:
    """``textual_image.widget``, imported once, never asking the terminal; None when it cannot be
    imported at all."""
    with _library_lock:  # the stand-in for stdout is process-wide: one import at a time
        loaded = sys.modules.get("textual_image.widget")
        if loaded is not None:
            return loaded
        # It logs a failed query as a warning with a traceback; with no logging set up Python
        # would print that on the terminal. This module says what was chosen instead.
        library_log = logging.getLogger("textual_image")
        library_log.addHandler(logging.NullHandler())
        library_log.propagate = False
        real_stdout = sys.__stdout__
        sys.__stdout__ = _NotATerminal()  # type: ignore[assignment]  # it asks only a terminal
        try:
            import textual_image.widget as library

            return library
        except Exception:
            return None
        finally:
            sys.__stdout__ = real_stdout


def library_loaded() -> bool:
    return "textual_image.widget" in sys.modules


def picture_class(mode: str) -> type[Widget] | None:
    """textual-image's widget that draws in ``mode``; None without the library."""
    library = _load_library()
    if library is None:
        return None
    return {"kitty": library.TGPImage, "sixel": library.SixelImage, "halfblock": library.HalfcellImage}[mode]


def read_picture(path: str) -> Image.Image:
    """The file as 8-bit RGB, at most :data:`MAX_SIDE` pixels a side. Raises OSError (missing,
    unreadable) or ValueError (not an image Pillow reads)."""
    try:
        with Image.open(path) as image:
            image.load()
            picture = to_rgb8(image)
    except OSError:
        raise
    except Exception as err:  # Pillow raises many kinds on a broken file (SyntaxError, DecompressionBombError...)
        raise ValueError(str(err) or type(err).__name__) from err
    picture.thumbnail((MAX_SIDE, MAX_SIDE))
    return picture


def unreadable_reason(err: Exception) -> str:
    if isinstance(err, FileNotFoundError):
        return "image missing"
    if isinstance(err, PermissionError):
        return "image not readable (permission denied)"
    if isinstance(err, Image.UnidentifiedImageError):
        return "not an image (or a broken one)"
    if isinstance(err, OSError) and err.strerror:
        return f"image not readable: {err.strerror}"
    return f"broken image: {escape_controls(str(err))}"  # Pillow's words: "image file is truncated"...


class ImageView(Container):
    """A picture file drawn the way the terminal allows, as large as fits the widget with its
    aspect kept (give the widget a size in CSS). A file that is missing or unreadable shows one
    line saying so, and its path, instead. ``show(path)`` changes it; the file is read again only
    when it changed on disk."""

    DEFAULT_CSS = """
    ImageView {
        height: auto;
        align: center middle;
    }
    ImageView > .image-view--picture {
        width: auto;
        height: auto;
    }
    ImageView > .image-view--note {
        width: 100%;
        height: auto;
        color: $text-muted;
    }
    """

    def __init__(
        self,
        path: str | None = None,
        *,
        graphics: Graphics | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.graphics = graphics or current_graphics()
        self.path: str | None = None
        self.problem: str | None = None  # what the note says instead of the picture (tests read it)
        self._file_key: tuple | None = None
        self._picture: Widget | None = None
        self._pending: Image.Image | None = None  # read, waiting for textual-image to be imported
        self._initial = path

    def compose(self) -> ComposeResult:
        note = Static("", classes="image-view--note", markup=False)
        note.display = False
        yield note

    def on_mount(self) -> None:
        if self._initial is not None:
            self.show(self._initial)

    def show(self, path: str | None) -> None:
        """Draw the file at ``path`` (None: nothing)."""
        key = _file_key(path)
        if path == self.path and key == self._file_key:
            return  # the same file, unchanged (or still missing): nothing to read or draw again
        self.path, self._file_key = path, key
        if path is None:
            self._show_note(None)
            return
        try:
            picture = read_picture(path)
        except (OSError, ValueError) as err:
            self._show_note(f"{unreadable_reason(err)}\n{escape_controls(path)}")
            return
        self._show_note(None)
        self._pending = picture
        if library_loaded():
            self._draw_pending()
        else:  # the first picture: numpy and all take a moment to import, away from the UI thread
            self._import_library_then_draw()

    @property
    def drawn(self) -> bool:
        """The picture is on screen (tests wait for it)."""
        return self._picture is not None and self._picture.display and self._pending is None and not self.problem

    @work(thread=True, group="image-library")
    def _import_library_then_draw(self) -> None:
        _load_library()
        self.app.call_from_thread(self._draw_pending)

    def _draw_pending(self) -> None:
        picture, self._pending = self._pending, None
        if picture is None or not self.is_attached:  # a note took its place meanwhile, or it is gone
            return
        widget = self._picture_widget()
        if widget is None:
            self._show_note(
                f"cannot draw pictures (textual-image is not installed)\n{escape_controls(self.path or '')}"
            )
            return
        widget.image = picture  # type: ignore[attr-defined]
        widget.display = True

    def _picture_widget(self) -> Widget | None:
        if self._picture is None:
            cls = picture_class(self.graphics.mode)
            if cls is None:
                return None
            self._picture = cls(classes="image-view--picture")
            self.mount(self._picture)
        return self._picture

    def _show_note(self, text: str | None) -> None:
        self.problem = text
        self._pending = None
        note = self.query_one(".image-view--note", Static)
        note.update(text or "")
        note.display = text is not None
        if text is not None and self._picture is not None:
            self._picture.display = False


def _file_key(path: str | None) -> tuple | None:
    """What tells a changed file from the one drawn: None when it cannot be read."""
    if path is None:
        return None
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_mtime_ns, status.st_size, status.st_ino)
