"""Opening the files of a run folder and of the job registry so that nothing found there can hang,
exhaust or redirect loratui.

A run folder lives in the user's project, and anything may end up in it: a FIFO where
``events.jsonl`` was (opening it for reading waits for a writer that never comes), a symlink to
``/dev/zero`` (a read that never ends), or a symlink or plain file where the ``control`` FIFO was
(``loratui stop`` would write its command into whatever it points to). So these files are opened
here, and only here:

- with ``O_NOFOLLOW``: a symlink in the file's place is refused, never followed;
- with ``O_NONBLOCK``: opening a FIFO never waits;
- then checked with ``fstat`` on the open descriptor (not on the path, which may be swapped in
  between): a regular file to read, a FIFO to send commands into, and owned by this user (the
  config given to ``check``/``train`` may be anyone's, so that one skips the owner check);
- whole-file reads are bounded: a file larger than what its reader can ever need is refused.

A file the user names on the command line (the config of ``check``/``train``) is read with
:func:`read_named_file`: a symlink there is the user's choice and is followed, but what it leads
to must still be a regular file of sensible size (a FIFO would hang ``check``, ``/dev/zero`` fill
memory).

The folders loratui makes for itself (the state dir, log folders, run folders) are owner-only
whatever the umask (:func:`make_private_dirs`), and a run folder that another user could have
swapped or written into is refused (:func:`check_run_folder`) before anything in it is trusted.

Nothing here imports anything but the standard library: the engine opens its control FIFO with
:func:`open_fifo` as well.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

PRIVATE_DIR_MODE = 0o700


class UnsafeRunFile(OSError):
    """A run file (or folder) that is not what loratui made: a symlink, a FIFO or device where a
    file belongs, a file where a FIFO belongs, another user's, or far too large. An OSError, so
    that readers which skip unreadable files skip these the same way; ``strerror`` says why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(errno.EPERM, reason, str(path))

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def open_run_file(path: str | Path) -> BinaryIO:
    """``path`` opened for reading in binary, once it is known to be a regular file of this user's.
    Raises FileNotFoundError when it is missing, :class:`UnsafeRunFile` when it is not such a file,
    OSError for the rest."""
    fd = _open(path, os.O_RDONLY)
    try:
        _require(fd, path, stat.S_ISREG, "a regular file", own=True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_run_file(path: str | Path, limit: int) -> bytes:
    """The whole of a run file that can never legitimately be larger than ``limit`` bytes (a job
    record, a summary snapshot); :class:`UnsafeRunFile` when it is larger."""
    with open_run_file(path) as handle:
        return _read_at_most(handle, path, limit)


def read_named_file(path: str | Path, limit: int) -> bytes:
    """The whole of a file the user named (symlinks followed, any owner): a regular file of at
    most ``limit`` bytes, else :class:`UnsafeRunFile`."""
    fd = _open(path, os.O_RDONLY, follow=True)
    with os.fdopen(fd, "rb") as handle:
        _require(fd, path, stat.S_ISREG, "a regular file", own=False)
        return _read_at_most(handle, path, limit)


def _read_at_most(handle: BinaryIO, path: str | Path, limit: int) -> bytes:
    data = handle.read(limit + 1)
    if len(data) > limit:
        raise UnsafeRunFile(path, f"is larger than {_size_text(limit)}, far more than such a file ever holds")
    return data


def open_fifo(path: str | Path, flags: int) -> int:
    """A descriptor on the FIFO at ``path`` (``flags``: os.O_RDONLY or os.O_WRONLY), opened
    without waiting, once it is known to be a FIFO of this user's. A writer on a FIFO nobody reads
    gets OSError ENXIO (the engine is gone); anything that is not such a FIFO is refused with
    :class:`UnsafeRunFile` before a byte is written to it."""
    fd = _open(path, flags)
    try:
        _require(fd, path, stat.S_ISFIFO, "a FIFO", own=True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_run_folder(folder: str | Path) -> None:
    """Refuse a run folder that another user could have put there or could write into: a symlink,
    not a folder, not this user's, or writable by everyone. A missing folder passes (the caller
    says what a missing folder means). (A group-writable one passes: loratui never makes one, and
    what a group member could put in it is refused file by file, being theirs, not this user's.)"""
    try:
        info = os.lstat(folder)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeRunFile(folder, "is a symbolic link, not the run folder loratui made")
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeRunFile(folder, "is not a folder")
    if info.st_uid != os.geteuid():
        raise UnsafeRunFile(folder, f"belongs to another user (uid {info.st_uid})")
    if info.st_mode & stat.S_IWOTH:
        raise UnsafeRunFile(folder, f"is writable by other users (mode {stat.S_IMODE(info.st_mode):o})")


def make_private_dirs(folder: str | Path) -> None:
    """``mkdir -p`` whose every new folder is owner-only (0700), whatever the umask: with
    ``umask 000`` a plain mkdir makes folders that any local user may rename entries of. Folders
    that already exist are the user's own business and are left as they are."""
    folder = Path(folder)
    missing = []
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        try:
            make_private_dir(path)
        except FileExistsError:  # made by someone else in between: not ours to change
            continue


def make_private_dir(path: str | Path) -> None:
    """One new owner-only folder (0700) whatever the umask; FileExistsError when the name is taken."""
    os.mkdir(path, PRIVATE_DIR_MODE)
    # The mode of mkdir is filtered by the umask (0700 & ~umask); set it on the folder just made,
    # through a descriptor that cannot have been swapped for a symlink.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.fchmod(fd, PRIVATE_DIR_MODE)
    finally:
        os.close(fd)


def _open(path: str | Path, flags: int, follow: bool = False) -> int:
    flags |= os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        return os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # what O_NOFOLLOW answers for a symlink
            raise UnsafeRunFile(path, "is a symbolic link, not a file loratui made") from exc
        raise


def _require(fd: int, path: str | Path, is_kind, kind: str, own: bool) -> None:
    info = os.fstat(fd)
    if not is_kind(info.st_mode):
        raise UnsafeRunFile(path, f"is {_kind_of(info.st_mode)}, not {kind}")
    if own and info.st_uid != os.geteuid():
        raise UnsafeRunFile(path, f"belongs to another user (uid {info.st_uid})")


def _kind_of(mode: int) -> str:
    kinds = (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for is_kind, name in kinds if is_kind(mode)), "a special file")


def _size_text(size: int) -> str:
    return f"{size // (1024 * 1024)} MiB" if size >= 1024 * 1024 else f"{size} bytes"
