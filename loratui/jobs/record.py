"""The job record: what the launcher knows about a job, kept as ``job.json`` in its run folder.

The record is written once, atomically, right after the engine starts. It never holds the job's
state: that is read from the events and the process (:mod:`loratui.jobs.status`), so a record can
never claim "running" for a job that died.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loratui.atomic import write_text_atomic
from loratui.jobs.process import ProcessIdentity

RECORD_FILE = "job.json"
EVENTS_FILE = "events.jsonl"
LOG_FILE = "engine.log"
CONTROL_FILE = "control"
RECORD_FORMAT = 1


@dataclass
class JobRecord:
    job_id: str  # the run folder's name, e.g. "ohwx-woman-20261122-101500" (shell-safe: loratui.jobs.launch)
    run_folder: str  # absolute
    config: str  # absolute path of the TOML config the job was started with
    pid: int
    start_time: int | None
    boot_id: str | None
    host: str
    started_at: float  # unix time
    command: list[str] = field(default_factory=list)
    resume_from: str | None = None
    # Where the run writes its LoRA files: a second launch that would write the same files is
    # refused while this job runs (None in records of older versions).
    output_dir: str | None = None  # absolute
    output_name: str | None = None
    format: int = RECORD_FORMAT

    @property
    def folder(self) -> Path:
        return Path(self.run_folder)

    @property
    def events_path(self) -> Path:
        return self.folder / EVENTS_FILE

    @property
    def log_path(self) -> Path:
        return self.folder / LOG_FILE

    @property
    def control_path(self) -> Path:
        return self.folder / CONTROL_FILE

    @property
    def identity(self) -> ProcessIdentity:
        return ProcessIdentity(pid=self.pid, start_time=self.start_time, boot_id=self.boot_id, host=self.host)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> JobRecord:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
            raise ValueError("not a job record of this loratui version")
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def write_record(record: JobRecord, path: Path) -> None:
    write_text_atomic(path, record.to_json(), mode=0o600)


def read_record(path: Path) -> JobRecord | None:
    """The record at ``path``, or None when it is missing or unreadable (never an exception:
    one damaged record must not hide the other jobs)."""
    try:
        return JobRecord.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return None
