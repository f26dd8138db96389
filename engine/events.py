"""The engine's stdout: protocol events only, one JSON object per line.

Libraries print to stdout (diffusers dumps configs, tqdm bars, C extensions write to fd 1), and a
single stray line would break every reader. So :func:`claim_stdout` moves the real stdout to a
private file descriptor for events and points fd 1 at stderr, where human logs belong.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from loratui.core.protocol import END_FILE_BYTES, FINAL_EVENTS, encode, make_event

log = logging.getLogger("engine.events")

# Told about each event the writer has written (see EventWriter.add_observer).
Observer = Callable[[dict[str, Any]], None]


class EventWriter:
    """Writes validated events, one per line, flushed at once so a follower sees them live.

    When the events file cannot be written (a full disk, a removed mount) training must not die
    with an unsaved LoRA: the writer logs the error once, stops writing, and calls ``on_broken``,
    which asks the trainer for a graceful stop (it saves to the output folder, which may well be
    on another disk). The final event still reaches the ``end_file``, when there is one.
    """

    def __init__(self, stream: TextIO, end_file: EndFile | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self.broken: OSError | None = None
        self.on_broken: Callable[[], None] | None = None
        self.end_file = end_file
        # Called in turn with each event once it is flushed, still under the lock (the summary
        # snapshot keeps its offset exact; TensorBoard logs): see add_observer.
        self._observers: list[tuple[str, Observer]] = []

    def add_observer(self, observer: Observer, name: str) -> None:
        """Call ``observer(event)`` with every event written from now on. ``name`` says what it
        does, for people ("TensorBoard logging"). An observer that raises is switched off alone, its
        error logged once and told in a ``warning`` event: a helper never stops training. It must not
        emit events itself (it runs under the writer's lock)."""
        self._observers.append((name, observer))

    def emit(self, event_type: str, **fields: Any) -> dict[str, Any]:
        event = make_event(event_type, **fields)
        line = encode(event) + "\n"
        with self._lock:
            if event_type in FINAL_EVENTS and self.end_file is not None:
                self.end_file.write(line)
            if self.broken is not None:
                return event
            try:
                self._stream.write(line)
                self._stream.flush()
            except OSError as exc:
                self.broken = exc
                log.error("cannot write events any more (%s): stopping the run", exc)
                if self.on_broken is not None:
                    self.on_broken()
                return event
            failed = self._notify(event)
        if failed and event_type not in FINAL_EVENTS:  # nothing may follow the final event
            for name, message in failed:
                self.emit(
                    "warning",
                    code="observer_failed",
                    message=f"{name} stopped: {message}",
                    hint="training goes on without it; the traceback is in the engine log",
                )
        return event

    def _notify(self, event: dict[str, Any]) -> list[tuple[str, str]]:
        """Give ``event`` to each observer; those that fail are switched off. Returns (name, error) of each."""
        failed = []
        for name, observer in list(self._observers):
            try:
                observer(event)
            except Exception as exc:  # noqa: BLE001 - a helper's failure must never stop training
                log.exception("%s failed on a %s event; it is switched off", name, event["type"])
                self._observers.remove((name, observer))
                failed.append((name, f"{type(exc).__name__}: {exc}".splitlines()[0][:300]))
        return failed


class EndFile:
    """The run's final event, kept again in a small file (``--end-file``) whose room is taken
    when the engine starts: the disk that fills up during a run and keeps the last events from
    ``events.jsonl`` (a "stopped, reason disk" most of all) still takes this one line, as it is
    written over bytes the file already has. Readers: ``loratui.core.protocol.decode_end_file``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.warning("no end file %s: %s", path, exc.strerror or exc)
            return
        self._fd = fd
        try:
            _take_room(fd, END_FILE_BYTES)
        except OSError as exc:  # a disk full from the start: the final line may still fit later
            log.warning("cannot take room for the end file %s: %s", path, exc.strerror or exc)

    def write(self, line: str) -> None:
        """Write ``line`` at the start of the file (the rest stays NUL bytes) and make it durable."""
        if self._fd is None:
            return
        try:
            os.pwrite(self._fd, line.encode("utf-8"), 0)
            os.fsync(self._fd)
        except OSError as exc:
            log.error("cannot write the end file %s: %s", self.path, exc.strerror or exc)


def _take_room(fd: int, size: int) -> None:
    """Allocate ``size`` bytes of the file now, so that writing over them later needs no new room."""
    try:
        os.posix_fallocate(fd, 0, size)
    except (AttributeError, OSError) as exc:  # no posix_fallocate here (macOS), or not on this file system
        if isinstance(exc, OSError) and exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        os.pwrite(fd, b"\0" * size, 0)
    os.fsync(fd)


def events_fd(writer: EventWriter) -> int | None:
    """The file descriptor events go to, when it is a regular file (not a pipe or a terminal)."""
    import stat

    try:
        fd = writer._stream.fileno()
        return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except (AttributeError, OSError, ValueError):
        return None


def claim_stdout(end_file: Path | None = None) -> EventWriter:
    """Reserve the process's stdout for events and send everything else printed there to stderr.
    ``end_file``: where the final event is kept as well (:class:`EndFile`)."""
    sys.stdout.flush()
    events_fd = os.dup(1)
    os.dup2(2, 1)  # fd 1 (print, C libraries, tqdm) now goes to stderr
    sys.stdout = sys.stderr
    stream = os.fdopen(events_fd, "w", encoding="utf-8", buffering=1)
    return EventWriter(stream, EndFile(end_file) if end_file else None)
