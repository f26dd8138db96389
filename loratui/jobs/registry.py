"""The per-user job registry: one record per job under ``<state dir>/jobs/``.

The run folder holds the job's own copy of the record; the registry holds another, so that
``loratui jobs`` finds every job from any working directory without knowing the projects.
Finding a job by what a person types: the full id, a unique prefix of it, or nothing when
exactly one job is running. A job found that way is used only when its run folder is this user's
and no one else may write into it (:func:`refuse_an_unsafe_run_folder`).

The registry's folders are made owner-only whatever the umask, and its files are opened through
:mod:`loratui.core.run_files` (no symlink followed, another user's record never read).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from loratui.core.run_files import UnsafeRunFile, check_run_folder, make_private_dirs
from loratui.core.terminal_text import escape_controls  # a file name may hold anything
from loratui.errors import UserError
from loratui.jobs.record import JobRecord, load_record, write_record
from loratui.paths import state_dir


def registry_dir() -> Path:
    return state_dir() / "jobs"


def _made_registry_dir() -> Path:
    folder = registry_dir()
    make_private_dirs(folder)
    return folder


def register(record: JobRecord) -> None:
    folder = _made_registry_dir()
    write_record(record, folder / f"{record.job_id}.json")


def is_registered(job_id: str) -> bool:
    return (registry_dir() / f"{job_id}.json").exists()


def claim(job_id: str) -> bool:
    """Reserve ``job_id`` for a launch about to happen; False when it is taken. The placeholder
    is an empty record (skipped by :func:`all_records`) that :func:`register` replaces: two
    launches in the same second, from any project, never get the same id."""
    folder = _made_registry_dir()
    try:
        os.close(os.open(folder / f"{job_id}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return False
    return True


@contextlib.contextmanager
def launch_lock() -> Iterator[None]:
    """Held while a launch checks for a running job of the same config and starts its own, so
    that two launches at once cannot both find none (per user, like the registry)."""
    folder = _made_registry_dir()
    # O_NOFOLLOW: a symlink planted in its place never makes us create or lock some other file.
    fd = os.open(folder / ".launch.lock", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def all_records() -> list[JobRecord]:
    """Every registered job, oldest first."""
    return scan_records()[0]


@dataclass(frozen=True)
class SkippedRecord:
    """A registry file that holds no usable record, and why."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{escape_controls(str(self.path))}: {escape_controls(self.reason)}"


def scan_records() -> tuple[list[JobRecord], list[SkippedRecord]]:
    """Every registered job, oldest first, and each registry file that holds no usable record:
    those are skipped (and reported by the caller), since one must not hide the other jobs."""
    folder = registry_dir()
    if not folder.is_dir():
        return [], []
    records, damaged = [], []
    for path in folder.glob("*.json"):
        try:
            records.append(load_record(path))
        except FileNotFoundError:
            continue  # forgotten while we looked
        except (OSError, ValueError) as exc:
            if not _is_a_claim(path):
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                damaged.append(SkippedRecord(path, reason))
    records.sort(key=lambda record: (record.started_at, record.job_id))
    return records, sorted(damaged, key=lambda bad: bad.path)


def _is_a_claim(path: Path) -> bool:
    """An empty file: an id claimed by a launch that is writing its record (:func:`claim`)."""
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def _damaged_error(damaged: list[SkippedRecord]) -> UserError:
    first = damaged[0]
    more = f"; {len(damaged) - 1} more damaged record(s) match" if len(damaged) > 1 else ""
    return UserError(
        f"the job record {escape_controls(str(first.path))} cannot be used: {escape_controls(first.reason)}{more}",
        "JOB",
        "delete the damaged record (its run folder, if any, is left as it is); `loratui jobs` lists the others",
    )


def forget(job_id: str) -> None:
    (registry_dir() / f"{job_id}.json").unlink(missing_ok=True)


def find_job(query: str | None, running_only_default: bool = True) -> JobRecord:
    """The job a person means by ``query``; a UserError that lists the candidates otherwise, or
    that says why its run folder cannot be trusted."""
    record = _find_record(query, running_only_default)
    refuse_an_unsafe_run_folder(record)
    return record


def refuse_an_unsafe_run_folder(record: JobRecord) -> None:
    """A UserError when another user could have put the job's run folder there or could write into
    it: nothing in it can then be trusted, least of all the control FIFO that commands go into."""
    try:
        check_run_folder(record.folder)
    except UnsafeRunFile as exc:
        raise UserError(
            f"refusing to use job {record.job_id}'s run folder: it {exc.strerror}",
            str(record.folder),
            "a run folder must be yours and writable only by you (loratui makes it mode 700); "
            "find out who changed it before using it",
            kind="runtime",
        ) from exc


def _find_record(query: str | None, running_only_default: bool) -> JobRecord:
    from loratui.jobs.status import ACTIVE_STATES, job_status

    records, damaged = scan_records()
    if not records:
        if damaged:
            raise _damaged_error(damaged)
        raise UserError("there are no jobs yet", "JOB", "start one with: loratui train CONFIG --detach")
    if query is None:
        active = [record for record in records if job_status(record).state in ACTIVE_STATES]
        if len(active) == 1:
            return active[0]
        if not active and not running_only_default:
            return records[-1]
        if not active:
            latest = records[-1]
            raise UserError(
                f"no job is running (the latest, {latest.job_id}, has {job_status(latest).state})",
                "JOB",
                "`loratui jobs` lists every job; start one with: loratui train CONFIG --detach",
            )
        listing = ", ".join(record.job_id for record in active)
        raise UserError(
            f"{len(active)} jobs are running; say which one ({listing})",
            "JOB",
            "give the job id or a unique prefix of it",
        )
    exact = [record for record in records if record.job_id == query]
    if exact:
        return exact[0]
    matches = [record for record in records if record.job_id.startswith(query)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        named = [bad for bad in damaged if bad.path.name.startswith(query)]
        if named:
            raise _damaged_error(named)
        raise UserError(f"no job with an id starting {query!r}", "JOB", "`loratui jobs` lists the jobs and their ids")
    listing = ", ".join(record.job_id for record in matches[:8])
    raise UserError(f"{query!r} matches {len(matches)} jobs ({listing})", "JOB", "type more of the id")
