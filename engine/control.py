"""The engine's end of the control channel: commands read from a FIFO in the run folder.

The launcher creates ``<run folder>/control`` as a FIFO with mode 0600, so only the job's owner
can open it, and passes its path with ``--control``. Any number of clients write one command per
line (``loratui.core.protocol.encode_command``); writes that short are atomic, so lines from several
clients never interleave. The engine answers each command with a ``control`` event in
``events.jsonl``, where every attached client sees it.

The engine also holds the FIFO open for writing itself: a FIFO whose last writer closes reads as
end-of-file forever, and a client that comes and goes must not make the engine spin on that.
While the engine is alive a client's non-blocking open succeeds; once it is gone the open fails
with ENXIO, which is how a client knows that nobody is listening.

The channel is opened only when ``--control`` names a FIFO of this user's
(:func:`loratui.core.run_files.open_fifo`): a plain file or a symlink there would otherwise be read
as a list of commands (or have the keep-alive open land on another file). Anything else is logged
and the run goes on without a channel: signals still stop it.
"""

from __future__ import annotations

import logging
import os
import select
from pathlib import Path

from loratui.core.protocol import ProtocolError, decode_command
from loratui.core.run_files import open_fifo

log = logging.getLogger("engine.control")


class ControlChannel:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._read_fd: int | None = None
        self._keepalive_fd: int | None = None
        self._partial = b""
        if path is None:
            return
        try:
            self._read_fd = open_fifo(path, os.O_RDONLY)
            self._keepalive_fd = open_fifo(path, os.O_WRONLY)
        except OSError as exc:  # no channel is not fatal: the run goes on, signals still work
            log.warning("control channel %s unavailable: %s", path, exc)
            self.close()

    @property
    def available(self) -> bool:
        return self._read_fd is not None

    def poll(self) -> list[dict]:
        """Commands that arrived since the last call; never blocks."""
        if self._read_fd is None:
            return []
        chunks = []
        while True:
            try:
                chunk = os.read(self._read_fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        if not chunks:
            return []
        *lines, self._partial = (self._partial + b"".join(chunks)).split(b"\n")
        commands = []
        for line in lines:
            if not line.strip():
                continue
            try:
                commands.append(decode_command(line))
            except ProtocolError as exc:
                log.warning("ignored a bad control command %r: %s", line[:200], exc)
        return commands

    def wait(self, timeout_s: float) -> list[dict]:
        """Commands that arrive within ``timeout_s`` (for a paused run, which has nothing else to do)."""
        if self._read_fd is None:
            select.select([], [], [], timeout_s)
            return []
        try:
            select.select([self._read_fd], [], [], timeout_s)
        except InterruptedError:  # a signal (SIGTERM) arrived: let the caller look at its stop flag
            pass
        return self.poll()

    def close(self) -> None:
        for fd in (self._read_fd, self._keepalive_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._read_fd = self._keepalive_fd = None
