"""Reading a run's ``events.jsonl`` as it grows.

The engine may be in the middle of writing a line, or may have died in the middle of one, so a
line counts only once its newline has arrived. Lines that are not valid events are reported,
not fatal: a reader must survive whatever is in the file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

from loratui.core.protocol import FINAL_EVENTS, ProtocolError, decode


class EventFileReader:
    """Incremental reader: each :meth:`read_new` returns the complete events written since."""

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = path
        self.offset = offset
        self._partial = b""
        self.bad_lines = 0

    def read_new(self) -> list[dict]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        events, bad = decode_lines(lines)
        self.bad_lines += bad
        return events


def decode_lines(lines: list[bytes]) -> tuple[list[dict], int]:
    """The valid events among complete lines (blank ones skipped), and how many were not."""
    events, bad = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            events.append(decode(line.decode("utf-8")))
        except (ProtocolError, UnicodeDecodeError):
            bad += 1
    return events, bad


def follow(path: Path, is_alive: Callable[[], bool], poll_s: float = 0.1, offset: int = 0) -> Iterator[dict]:
    """Yield events (from byte ``offset`` on) until a final one, or until the writer is gone and
    the file is drained."""
    reader = EventFileReader(path, offset=offset)
    while True:
        alive = is_alive()  # ask first: whatever it wrote before dying is then already in the file
        events = reader.read_new()
        for event in events:
            yield event
            if event.get("type") in FINAL_EVENTS:
                return
        if not events and not alive:
            return
        if not events:
            time.sleep(poll_s)
