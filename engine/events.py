"""The engine's stdout: protocol events only, one JSON object per line.

Libraries print to stdout (diffusers dumps configs, tqdm bars, C extensions write to fd 1), and a
single stray line would break every reader. So :func:`claim_stdout` moves the real stdout to a
private file descriptor for events and points fd 1 at stderr, where human logs belong.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, TextIO

from loratui.protocol import encode, make_event


class EventWriter:
    """Writes validated events, one per line, flushed at once so a follower sees them live."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def emit(self, event_type: str, **fields: Any) -> dict[str, Any]:
        event = make_event(event_type, **fields)
        line = encode(event) + "\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()
        return event


def claim_stdout() -> EventWriter:
    """Reserve the process's stdout for events and send everything else printed there to stderr."""
    sys.stdout.flush()
    events_fd = os.dup(1)
    os.dup2(2, 1)  # fd 1 (print, C libraries, tqdm) now goes to stderr
    sys.stdout = sys.stderr
    stream = os.fdopen(events_fd, "w", encoding="utf-8", buffering=1)
    return EventWriter(stream)
