"""The tail of the engine's ``engine.log`` (its stderr: logging, library chatter, tracebacks).

The first read gives the last lines of the file as it is; later reads give the complete lines
appended since. Progress bars that redraw a line with carriage returns keep only their last
state, terminal escape sequences are removed, and bytes that are not UTF-8 are replaced, so any
log is safe to show. A file that shrank (rotated, truncated) is read again from its start.
"""

from __future__ import annotations

import re
from pathlib import Path

from loratui.core.run_files import open_run_file

INITIAL_BYTES = 32 * 1024  # enough for the last screenful of lines without reading a huge log
MAX_LINE = 1000  # characters shown of one line
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*(\x07|\x1b\\)|\x1b[@-Z\\-_]")


class LogTail:
    def __init__(self, path: Path, initial_lines: int = 200) -> None:
        self.path = path
        self.initial_lines = initial_lines
        self.offset: int | None = None  # None: not read yet
        self._partial = b""

    def read_new(self) -> list[str]:
        try:
            with open_run_file(self.path) as handle:  # a FIFO or /dev/zero in its place: refused, not read
                size = handle.seek(0, 2)
                if self.offset is None:
                    start = max(0, size - INITIAL_BYTES)
                    handle.seek(start)
                    data = handle.read()
                    if start > 0:
                        data = data.split(b"\n", 1)[1] if b"\n" in data else b""
                    self.offset = size
                    return self._lines(data)[-self.initial_lines :]
                if size < self.offset:  # truncated or replaced: start over
                    self.offset, self._partial = 0, b""
                if size == self.offset:
                    return []
                handle.seek(self.offset)
                data = handle.read(size - self.offset)
        except OSError:
            return []
        self.offset += len(data)
        return self._lines(data)

    def _lines(self, data: bytes) -> list[str]:
        *complete, self._partial = (self._partial + data).split(b"\n")
        return [clean(line) for line in complete]


def clean(line: bytes) -> str:
    text = line.decode("utf-8", errors="replace").rstrip("\r")
    text = text.rsplit("\r", 1)[-1]  # a progress bar's last redraw
    text = _ESCAPES.sub("", text).replace("\t", "    ")
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text[:MAX_LINE]
