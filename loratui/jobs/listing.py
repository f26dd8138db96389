"""The list of jobs a person sees: every registered job with the state it is in now.

One query for every view of it: ``loratui jobs`` (a table, or JSON lines) and the app's home
screen. Reading a job's state reads its events and /proc, so the home screen calls this in a
worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from loratui.jobs.record import JobRecord
from loratui.jobs.registry import SkippedRecord, scan_records
from loratui.jobs.status import JobStatus, job_status


@dataclass(frozen=True)
class JobRow:
    record: JobRecord
    status: JobStatus

    @property
    def job_id(self) -> str:
        return self.record.job_id

    @property
    def steps(self) -> str:
        """``57/200``, or the step alone while the total is not known yet."""
        status = self.status
        if status.folder_gone:
            return "?"  # its events went with its run folder
        return f"{status.step}/{status.total_steps}" if status.total_steps else str(status.step)


@dataclass(frozen=True)
class JobList:
    rows: list[JobRow]
    skipped: list[SkippedRecord]  # registry files that hold no usable record: said, never fatal


def list_jobs(*, newest_first: bool = False) -> list[JobRow]:
    """Every registered job and its state, oldest first (``newest_first``: the other way round)."""
    return read_jobs(newest_first=newest_first).rows


def read_jobs(*, newest_first: bool = False) -> JobList:
    """:func:`list_jobs`, and the damaged records it skipped."""
    records, skipped = scan_records()
    if newest_first:
        records.reverse()
    return JobList([JobRow(record, job_status(record)) for record in records], skipped)
