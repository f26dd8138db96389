"""Is the process that a job record names still the engine it started?

A pid alone is not enough: after the engine exits the kernel may hand its pid to any other
process, and after a reboot every pid is reused. So a record keeps three more facts: the
process's start time (in clock ticks since boot, from ``/proc/<pid>/stat``), the boot id
(``/proc/sys/kernel/random/boot_id``) and the host name. The process is the engine only if all
of them still match. Where ``/proc`` is missing (macOS) the start time cannot be read, and a
live pid is taken at its word: said in :func:`identity_checks`.
"""

from __future__ import annotations

import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessIdentity:
    pid: int
    start_time: int | None  # clock ticks since boot; None where /proc is missing
    boot_id: str | None
    host: str


def boot_id() -> str | None:
    try:
        return (PROC / "sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def host_name() -> str:
    return socket.gethostname()


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may itself hold spaces and ')')."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    fields = _stat_fields(pid)
    # Field 22 of stat is starttime; the list starts at field 3 (state).
    return int(fields[19]) if fields and len(fields) > 19 else None


def identity_of(pid: int) -> ProcessIdentity:
    return ProcessIdentity(pid=pid, start_time=start_time(pid), boot_id=boot_id(), host=host_name())


def identity_checks() -> str:
    return "pid, start time and boot id" if PROC.joinpath("self/stat").exists() else "pid only (no /proc here)"


def is_running(identity: ProcessIdentity) -> bool:
    """True when the process described by ``identity`` is alive on this machine now.

    A zombie (exited, not yet reaped by its parent) counts as gone: it will never write again.
    """
    if identity.host != host_name():
        return False
    current_boot = boot_id()
    if identity.boot_id and current_boot and identity.boot_id != current_boot:
        return False
    fields = _stat_fields(identity.pid)
    if fields is not None:
        if fields[0] in ("Z", "X"):
            return False
        return identity.start_time is None or int(fields[19]) == identity.start_time
    if PROC.joinpath("self/stat").exists():
        return False  # /proc works here and has no such pid
    try:
        os.kill(identity.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, but another user's: the caller's record says it is ours
    return True


def is_suspended(identity: ProcessIdentity) -> bool:
    """True when the process is alive but stopped (SIGSTOP, SIGTSTP, a debugger): it reads and
    answers nothing until it is continued. False where /proc is missing (it cannot be told)."""
    if not is_running(identity):
        return False
    fields = _stat_fields(identity.pid)
    return fields is not None and fields[0] in ("T", "t")


def terminate(identity: ProcessIdentity) -> bool:
    """Send SIGTERM to the process ``identity`` names, only while it is still that process; True
    when sent. Through a pidfd where the kernel has them: the pidfd is taken before the identity
    check, so the pid cannot pass to another process between the check and the signal."""
    if identity.pid <= 0:  # kill(0) or kill(-1) would signal a whole process group, or everything
        return False
    try:
        pidfd = os.pidfd_open(identity.pid)
    except ProcessLookupError:
        return False
    except (AttributeError, OSError):  # no pidfd here (macOS, an old kernel): check, then signal
        pidfd = None
    try:
        if not is_running(identity):
            return False
        if pidfd is None:
            os.kill(identity.pid, signal.SIGTERM)
        else:
            signal.pidfd_send_signal(pidfd, signal.SIGTERM)
    except ProcessLookupError:  # it ended between the check and the signal
        return False
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return True
