"""The engine's stdout: protocol events only, one JSON object per line.

Libraries print to stdout (diffusers dumps configs, tqdm bars, C extensions write to fd 1), and a
single stray line would break every reader. So :func:`claim_stdout` moves the real stdout to a
private file descriptor for events and points fd 1 at stderr, where human logs belong.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

from loratui.core.protocol import encode, make_event


class EventWriter:
    """Writes validated events, one per line, flushed at once so a follower sees them live.

    When the events file cannot be written (a full disk, a removed mount) training must not die
    with an unsaved LoRA: the writer logs the error once, stops writing, and calls ``on_broken``,
    which asks the trainer for a graceful stop (it saves to the output folder, which may well be
    on another disk).
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self.broken: OSError | None = None
        self.on_broken: Callable[[], None] | None = None
        # Called with each event once it is flushed (the summary snapshot keeps its offset exact).
        self.after_emit: Callable[[dict[str, Any]], None] | None = None

    def emit(self, event_type: str, **fields: Any) -> dict[str, Any]:
        event = make_event(event_type, **fields)
        line = encode(event) + "\n"
        with self._lock:
            if self.broken is not None:
                return event
            try:
                self._stream.write(line)
                self._stream.flush()
            except OSError as exc:
                self.broken = exc
                logging.getLogger("engine.events").error("cannot write events any more (%s): stopping the run", exc)
                if self.on_broken is not None:
                    self.on_broken()
                return event
            if self.after_emit is not None:
                try:
                    self.after_emit(event)
                except Exception:  # noqa: BLE001 - a helper's failure must never stop training
                    logging.getLogger("engine.events").exception("event observer failed; it is switched off")
                    self.after_emit = None
        return event


def events_fd(writer: EventWriter) -> int | None:
    """The file descriptor events go to, when it is a regular file (not a pipe or a terminal)."""
    import stat

    try:
        fd = writer._stream.fileno()
        return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except (AttributeError, OSError, ValueError):
        return None


def claim_stdout() -> EventWriter:
    """Reserve the process's stdout for events and send everything else printed there to stderr."""
    sys.stdout.flush()
    events_fd = os.dup(1)
    os.dup2(2, 1)  # fd 1 (print, C libraries, tqdm) now goes to stderr
    sys.stdout = sys.stderr
    stream = os.fdopen(events_fd, "w", encoding="utf-8", buffering=1)
    return EventWriter(stream)
