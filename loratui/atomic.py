"""Writing files so that a crash, a kill or a full disk never leaves a half-written file under
its final name: write a temp file beside the target, fsync it, rename it over the target."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path


def write_bytes_atomic(path: Path, data: bytes, mode: int = 0o666, durable: bool = True) -> None:
    """Readers see the old file or the new one, never a mix. ``mode`` is filtered by the umask.
    ``durable`` also makes it survive a power cut (fsync), which costs time on slow disks."""
    # Beside the target so that os.replace stays on one file system; O_EXCL and a random name so
    # that two writers never share a temp file.
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        if durable:
            _fault_injection_pause()
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def _fault_injection_pause() -> None:
    """Tests kill the engine in the middle of saving a checkpoint. Writing the tiny model's files takes
    milliseconds, so ``LORATUI_TEST_SAVE_DELAY_S`` holds each write between its temp file and the
    rename, long enough to aim a SIGKILL at. Unset in real use."""
    delay = os.environ.get("LORATUI_TEST_SAVE_DELAY_S")
    if delay:
        time.sleep(float(delay))


def write_text_atomic(path: Path, text: str, mode: int = 0o666) -> None:
    write_bytes_atomic(path, text.encode("utf-8"), mode)


def fsync_dir(folder: Path) -> None:
    """Make a rename itself survive a power cut; not possible on every OS, so best effort."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
