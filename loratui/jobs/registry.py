"""The per-user job registry: one record per job under ``<state dir>/jobs/``.

The run folder holds the job's own copy of the record; the registry holds another, so that
``loratui jobs`` finds every job from any working directory without knowing the projects.
Finding a job by what a person types: the full id, a unique prefix of it, or nothing when
exactly one job is running.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from loratui.errors import UserError
from loratui.jobs.record import JobRecord, read_record, write_record
from loratui.paths import state_dir


def registry_dir() -> Path:
    return state_dir() / "jobs"


def register(record: JobRecord) -> None:
    folder = registry_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_record(record, folder / f"{record.job_id}.json")


def is_registered(job_id: str) -> bool:
    return (registry_dir() / f"{job_id}.json").exists()


def claim(job_id: str) -> bool:
    """Reserve ``job_id`` for a launch about to happen; False when it is taken. The placeholder
    is an empty record (skipped by :func:`all_records`) that :func:`register` replaces: two
    launches in the same second, from any project, never get the same id."""
    folder = registry_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        os.close(os.open(folder / f"{job_id}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return False
    return True


@contextlib.contextmanager
def launch_lock() -> Iterator[None]:
    """Held while a launch checks for a running job of the same config and starts its own, so
    that two launches at once cannot both find none (per user, like the registry)."""
    folder = registry_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(folder / ".launch.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def all_records() -> list[JobRecord]:
    """Every registered job, oldest first."""
    folder = registry_dir()
    if not folder.is_dir():
        return []
    records = [record for path in folder.glob("*.json") if (record := read_record(path)) is not None]
    return sorted(records, key=lambda record: (record.started_at, record.job_id))


def forget(job_id: str) -> None:
    (registry_dir() / f"{job_id}.json").unlink(missing_ok=True)


def find_job(query: str | None, running_only_default: bool = True) -> JobRecord:
    """The job a person means by ``query``; a UserError that lists the candidates otherwise."""
    from loratui.jobs.status import ACTIVE_STATES, job_status

    records = all_records()
    if not records:
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
        raise UserError(f"no job with an id starting {query!r}", "JOB", "`loratui jobs` lists the jobs and their ids")
    listing = ", ".join(record.job_id for record in matches[:8])
    raise UserError(f"{query!r} matches {len(matches)} jobs ({listing})", "JOB", "type more of the id")
