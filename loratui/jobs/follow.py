"""Reading a run's ``events.jsonl`` as it grows.

The engine may be in the middle of writing a line, or may have died in the middle of one, so a
line counts only once its newline has arrived. Lines that are not valid events are reported,
not fatal: a reader must survive whatever is in the file.

The file itself is opened through :mod:`loratui.core.run_files`: a FIFO, a symlink (to
``/dev/zero``, say) or another user's file in its place is refused with one clear line instead of
hanging or filling memory, and each read takes at most ``READ_BYTES``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from loratui.core.protocol import FINAL_EVENTS, ProtocolError, decode
from loratui.core.run_files import UnsafeRunFile, open_run_file
from loratui.errors import UserError
from loratui.jobs.record import END_FILE, read_end_file

READ_BYTES = 16 * 1024 * 1024  # at most this much per read: a huge log is read in steps, never at once
# The longest line taken for an event: a resumed run's run_started carries every step's loss
# (about 10 bytes a step). A longer "line" is no event; it is skipped, not kept in memory.
MAX_LINE_BYTES = 256 * 1024 * 1024


class EventFileReader:
    """Incremental reader: each :meth:`read_new` returns the complete events written since."""

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = path
        self.offset = offset
        self._partial = b""
        self._skipping = False  # inside a line longer than MAX_LINE_BYTES: drop it up to its newline
        self.bad_lines = 0

    def read_new(self) -> list[dict]:
        """The events completed since the last call (from at most READ_BYTES more of the file)."""
        chunk = self._read_chunk()
        self.offset += len(chunk)
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        if self._skipping and lines:
            lines, self._skipping = lines[1:], False
            self.bad_lines += 1
        if len(self._partial) > MAX_LINE_BYTES:
            self._partial, self._skipping = b"", True
        events, bad = decode_lines(lines)
        self.bad_lines += bad
        return events

    def read_all(self) -> Iterator[dict]:
        """Every event up to the end of the file as it is now, read in bounded steps."""
        while True:
            before = self.offset
            yield from self.read_new()
            if self.offset == before:
                return

    def _read_chunk(self) -> bytes:
        try:
            with open_events(self.path) as handle:
                handle.seek(self.offset)
                return handle.read(READ_BYTES)
        except FileNotFoundError:
            return b""


def open_events(path: Path) -> BinaryIO:
    """``events.jsonl`` opened for reading; a UserError naming it when something other than the
    plain file loratui writes is in its place (FileNotFoundError when there is nothing)."""
    try:
        return open_run_file(path)
    except UnsafeRunFile as exc:
        raise UserError(
            f"cannot read the job's events: it {exc.strerror}",
            str(path),
            "loratui writes a plain file there; something else replaced it, so the job's progress cannot be shown",
            kind="runtime",
        ) from exc


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
    the file is drained; then the final event its end file kept, when the events file could not
    take it (a full disk: :func:`loratui.jobs.record.read_end_file`)."""
    reader = EventFileReader(path, offset=offset)
    while True:
        alive = is_alive()  # ask first: whatever it wrote before dying is then already in the file
        before = reader.offset
        events = reader.read_new()
        for event in events:
            yield event
            if event.get("type") in FINAL_EVENTS:
                return
        drained = reader.offset == before  # (a read may end inside a long line: no events, yet more to read)
        if drained and not alive:
            end = read_end_file(path.with_name(END_FILE))
            if end is not None:
                yield end
            return
        if drained:
            time.sleep(poll_s)


def still_writing(record) -> bool:
    """A job's engine is alive and its events can still reach us (its run folder is there)."""
    from loratui.jobs.process import is_running

    return is_running(record.identity) and record.folder.is_dir()


def follow_job(record, offset: int = 0) -> Iterator[dict]:
    """:func:`follow` on a job's events, for as long as its engine is still writing them."""
    return follow(record.events_path, lambda: still_writing(record), offset=offset)


def follow_to_end(
    record, handle: Callable[[dict], None], detach_line: str, offset: int = 0
) -> tuple[dict | None, dict | None] | None:
    """Pass each of a job's events to ``handle`` until the job ends: its (final event, last error
    event), either None when it has none. Ctrl+C detaches instead (the job goes on): ``detach_line``
    is printed on stderr and None returned."""
    import signal
    import sys

    final = error = None
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for event in follow_job(record, offset):
            handle(event)
            if event.get("type") in FINAL_EVENTS:
                final = event
            elif event.get("type") == "error":
                error = event
    except KeyboardInterrupt:
        print(f"\n{detach_line}", file=sys.stderr)
        return None
    finally:
        signal.signal(signal.SIGINT, previous)
    return final, error
