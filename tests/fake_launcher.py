"""A stand-in for the app's launcher (``loratui.tui.launcher.launch_checked``) in TUI tests: no
engine is started. It records the configs it was asked to launch and returns the record of a
job whose run folder holds the events given (as the launcher writes it), or raises the
UserError it was given."""

from __future__ import annotations

import os
from pathlib import Path

from loratui.errors import UserError
from loratui.jobs.process import identity_of
from loratui.jobs.record import JobRecord
from tests.test_jobs import FINISHED, STARTED, fake_record


class FakeLauncher:
    def __init__(self, folder: Path, *, error: UserError | None = None, running: bool = False) -> None:
        """``running``: the job's record names this test process, so the job counts as running
        (with no final event); else it has finished."""
        self.folder = folder
        self.error = error
        self.running = running
        self.calls: list[Path] = []
        self.records: list[JobRecord] = []

    def __call__(self, config_path: Path) -> JobRecord:
        self.calls.append(config_path)
        if self.error is not None:
            raise self.error
        job_id = f"launched{len(self.calls)}-20261122-101500"
        if self.running:
            me = identity_of(os.getpid())
            record = fake_record(
                self.folder, [STARTED], job_id=job_id, config=str(config_path), pid=me.pid, start_time=me.start_time
            )
        else:
            record = fake_record(self.folder, [STARTED, FINISHED], job_id=job_id, config=str(config_path))
        self.records.append(record)
        return record
