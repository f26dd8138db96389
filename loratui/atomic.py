"""Writing files so that a crash, a kill or a full disk never leaves a half-written file under
its final name: write a temp file beside the target, fsync it, rename it over the target.

The names of what a killed write leaves behind are defined here, once, so that the engine can
recognise (and clean up) its own leftovers and nothing else: a temp file or folder
``.<target>.<12 hex digits>.tmp`` and, while a folder is being replaced, the old one moved aside
as ``.<target>.old``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from pathlib import Path

# ".<target name>.<12 hex digits>.tmp": hidden, so that no UI lists a half-written file.
TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[0-9a-f]{12}\.tmp$")
ASIDE_NAME = re.compile(r"^\.(?P<target>.+)\.old$")


def temp_path_for(path: Path) -> Path:
    """A fresh temp name beside ``path`` (random, so that two writers never share one)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def aside_path_for(path: Path) -> Path:
    """Where :func:`replace_folder` keeps the old folder while the new one moves in."""
    return path.with_name(f".{path.name}.old")


def write_bytes_atomic(path: Path, data: bytes, mode: int = 0o666, durable: bool = True) -> None:
    """Readers see the old file or the new one, never a mix. ``mode`` is filtered by the umask.
    ``durable`` also makes it survive a power cut (fsync), which costs time on slow disks."""
    # Beside the target so that os.replace stays on one file system; O_EXCL and a random name so
    # that two writers never share a temp file.
    temp = temp_path_for(path)
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
    rename, and each folder replace between its two renames, long enough to aim a SIGKILL at.
    Unset in real use."""
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


def replace_folder(new: Path, target: Path) -> None:
    """Put the folder ``new`` at ``target``. A folder cannot be renamed over a non-empty one, so
    the old one is moved aside first (:func:`aside_path_for`); at every moment one complete folder
    exists under one of the two names, and a killed replace is undone by :func:`restore_aside`."""
    if target.exists():
        old = aside_path_for(target)
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        _fault_injection_pause()  # a kill here leaves the old folder aside: restore_aside undoes it
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, target)
    fsync_dir(target.parent)


def restore_aside(aside: Path) -> str:
    """After a replace was killed: put the old folder back when the new one never arrived, or
    remove it when the new one did. Returns what was done ("restored" or "removed")."""
    match = ASIDE_NAME.match(aside.name)
    assert match, aside
    target = aside.with_name(match["target"])
    if target.exists():
        shutil.rmtree(aside)
        return "removed"
    os.replace(aside, target)
    return "restored"
