"""Why a save failed, in words a person can act on, and which pause reason it gives.

A save fails for reasons outside the engine: a full disk or quota, a read-only or vanished
folder, a name the file system refuses. None of them may cost the trained weights, so the trainer
turns the OSError into a :class:`SaveFailed` (the file, the system's own words, the fix), pauses
the run with its reason (``loratui.core.protocol.PAUSE_REASONS``) and saves again when told to.
The reason comes from the errno the system gave, never from the wording of a message.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

# errno -> pause reason; anything else is "io".
REASONS = {
    errno.ENOSPC: "disk",
    errno.EDQUOT: "disk",
    errno.EFBIG: "disk",
    errno.EACCES: "permission",
    errno.EPERM: "permission",
    errno.EROFS: "permission",
    errno.ENAMETOOLONG: "name",
    errno.EINVAL: "name",
    errno.EILSEQ: "name",
    errno.ENOENT: "folder",
    errno.ENOTDIR: "folder",
    errno.EISDIR: "folder",
    errno.EEXIST: "folder",
    errno.ELOOP: "folder",
}


@dataclass
class SaveFailed(Exception):
    """A save that the disk refused. ``target`` is the LoRA file or state folder being written."""

    target: Path
    reason: str  # a key of PAUSE_REASONS
    error: str  # the system's words and the errno's name: "No space left on device (ENOSPC)"
    fix: str  # what the person can do about it

    @property
    def message(self) -> str:
        return f"cannot write {self.target}: {self.error}"


def save_failed(target: Path, exc: OSError) -> SaveFailed:
    """The failure of writing ``target`` (a file or folder in the output folder) with ``exc``."""
    code = exc.errno if isinstance(exc.errno, int) else None
    reason = REASONS.get(code, "io")
    name = errno.errorcode.get(code, "") if code is not None else ""
    words = exc.strerror or str(exc) or type(exc).__name__
    return SaveFailed(target, reason, f"{words} ({name})" if name else words, _fix(reason, code, target.parent))


def _fix(reason: str, code: int | None, folder: Path) -> str:
    if code == errno.EFBIG:
        return "the file size limit was reached: raise it (ulimit -f), or save to another folder"
    if code == errno.EROFS:
        return f"{folder} is on a read-only file system: save to another folder"
    left = free_bytes(folder)
    room = f" ({left // (1024 * 1024)} MiB left there)" if left is not None else ""
    return {
        "disk": f"free space on the disk of {folder}{room} (or raise your quota there)",
        "permission": f"make {folder} writable for you (chmod u+w), or save to another folder",
        "name": "the path is too long or not allowed on that file system: save to a folder with a shorter path",
        "folder": f"make {folder} a folder again (mkdir -p), or save to another folder",
        "io": f"check the disk of {folder} (dmesg shows input/output errors), or save to another folder",
    }[reason]


def free_bytes(folder: Path) -> int | None:
    """Room left for this user on the file system of ``folder`` (or of its nearest existing
    parent), or None when it cannot be told."""
    for candidate in (folder, *folder.parents):
        try:
            info = os.statvfs(candidate)
        except OSError:
            continue
        return info.f_bavail * info.f_frsize
    return None
