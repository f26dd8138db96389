"""Standard streams that may be missing or broken.

A script may start ``loratui check >&-`` (standard output closed), point it at a full disk
(``> /dev/full``), or lose the SSH link that carried it. None of that is a bug in loratui: the exit
status still tells the result, and a job that was started goes on either way.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class OutputLost(Exception):
    """Standard output refused a write (full disk, I/O error): what it says is why."""


def fill_missing_descriptors() -> None:
    """Open /dev/null on any of descriptors 0-2 that is closed.

    With descriptor 1 closed, the next file loratui opens would get number 1, and the engine it
    starts would then write its standard output into that file (a job record, the event log).
    """
    for descriptor in (0, 1, 2):
        try:
            os.fstat(descriptor)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one
            if opened != descriptor:  # pragma: no cover - a lower one was free, which was filled first
                os.close(opened)
    if sys.stdout is None:  # Python leaves these None when the descriptor was closed at start-up
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # lives as long as the process
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")


@contextmanager
def guarded_stdout() -> Iterator[None]:
    """While inside, a failed write to standard output raises OutputLost."""
    original = sys.stdout
    guarded = _GuardedOutput(original)
    sys.stdout = guarded
    try:
        yield
        guarded.flush()  # a pipe or file is block-buffered: its write error shows only here
    finally:
        sys.stdout = original


class _GuardedOutput:
    """Standard output whose write errors become OutputLost, so the command ends with one line on
    standard error instead of a traceback. A closed pipe stays BrokenPipeError: the reader left
    (`loratui logs JOB | head`), which is not an error."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as err:
            raise OutputLost(err.strerror or str(err)) from err

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as err:
            raise OutputLost(err.strerror or str(err)) from err

    def __getattr__(self, name: str):
        return getattr(self._stream, name)
