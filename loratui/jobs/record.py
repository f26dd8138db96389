"""The job record: what the launcher knows about a job, kept as ``job.json`` in its run folder.

The record is written once, atomically, right after the engine starts. It never holds the job's
state: that is read from the events and the process (:mod:`loratui.jobs.status`), so a record can
never claim "running" for a job that died.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path

from loratui.atomic import write_text_atomic
from loratui.core.protocol import END_FILE_BYTES, decode_end_file
from loratui.core.run_files import read_run_file
from loratui.jobs.process import ProcessIdentity

RECORD_FILE = "job.json"
EVENTS_FILE = "events.jsonl"
LOG_FILE = "engine.log"
CONTROL_FILE = "control"
# The engine's final event again, in room it took at its start (``--end-file``): how the run ended
# when events.jsonl could not take that last line (a full disk). See read_end_file.
END_FILE = "end.json"
RECORD_FORMAT = 1
JOB_KINDS = ("train", "grid")
PID_MAX = 2**31 - 1  # the largest pid_t: a larger number is no pid (and os.kill would overflow)
LATEST_TIME = 95_617_584_000  # the year 5000, in seconds since 1970
RECORD_BYTES = 1024 * 1024  # a record is about 1 KB: a larger job.json is none


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
    # What the job runs: "train" (``python -m engine``) or "grid" (``python -m engine.grid``, whose
    # ``config`` is the grid's spec, loratui.grid_spec). Records of older versions are train jobs.
    kind: str = "train"
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
    def end_path(self) -> Path:
        return self.folder / END_FILE

    @property
    def identity(self) -> ProcessIdentity:
        return ProcessIdentity(pid=self.pid, start_time=self.start_time, boot_id=self.boot_id, host=self.host)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> JobRecord:
        """The record in ``text``; DamagedRecord saying which field is wrong when it is not one
        that this version wrote (every field is checked: a record is read by every command)."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise DamagedRecord("not JSON") from exc
        if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
            raise DamagedRecord("not a job record of this loratui version")
        known = {name for name in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        _check_fields(values)
        return cls(**values)


class DamagedRecord(ValueError):
    """A job record that cannot be used; the message names the field and what is wrong with it."""


def _is_text(value: object) -> bool:
    return isinstance(value, str) and value != "" and "\0" not in value


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_time(value: object) -> bool:
    """Seconds since 1970, before the year 5000 (a later one cannot even be shown as a date)."""
    real = isinstance(value, (int, float)) and not isinstance(value, bool)
    return real and math.isfinite(value) and 0 <= value < LATEST_TIME


# What each field must hold. A record that breaks one would break `loratui jobs`, `attach` and
# `logs` for every job (a text where a time belongs cannot be sorted), or worse: a pid of 0 or
# -1 would make a stop signal a whole process group.
FIELD_RULES: dict[str, tuple[str, Callable[[object], bool]]] = {
    "job_id": ("a job id", lambda v: _is_text(v) and "/" not in v and v not in (".", "..")),
    "run_folder": ("an absolute path", lambda v: _is_text(v) and v.startswith("/")),
    "config": ("a path", _is_text),
    "pid": ("a process id (a whole number above 0)", lambda v: _is_count(v) and 0 < v <= PID_MAX),
    "start_time": ("a whole number of clock ticks, or null", lambda v: v is None or _is_count(v)),
    "boot_id": ("a boot id, or null", lambda v: v is None or _is_text(v)),
    "host": ("a host name", lambda v: isinstance(v, str)),
    "started_at": ("a time in seconds since 1970", _is_time),
    "command": ("a list of words", lambda v: isinstance(v, list) and all(isinstance(word, str) for word in v)),
    "resume_from": ("a path, or null", lambda v: v is None or _is_text(v)),
    "output_dir": ("a path, or null", lambda v: v is None or _is_text(v)),
    "output_name": ("a name, or null", lambda v: v is None or isinstance(v, str)),
    "kind": ("a job kind (" + " or ".join(JOB_KINDS) + ")", lambda v: v in JOB_KINDS),
}


def _check_fields(values: dict) -> None:
    for name, (what, holds) in FIELD_RULES.items():
        if name not in values:
            declared = JobRecord.__dataclass_fields__[name]
            if declared.default is MISSING and declared.default_factory is MISSING:
                raise DamagedRecord(f"{name} is missing")
            continue
        if not holds(values[name]):
            raise DamagedRecord(f"{name} is {_shown(values[name])}, not {what}")


def _shown(value: object) -> str:
    """A short, printable picture of a bad value (it may be anything, of any size)."""
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "a list"
    text = json.dumps(value, ensure_ascii=True)  # quoted and escaped: safe on a terminal
    return text if len(text) <= 40 else text[:37] + "..."


def write_record(record: JobRecord, path: Path) -> None:
    write_text_atomic(path, record.to_json(), mode=0o600)


def read_record(path: Path) -> JobRecord | None:
    """The record at ``path``, or None when it is missing or unreadable (never an exception:
    one damaged record must not hide the other jobs)."""
    try:
        return load_record(path)
    except (OSError, ValueError):
        return None


def read_end_file(path: Path) -> dict | None:
    """The final event the engine kept in its end file (``END_FILE``), or None when there is none
    (a run still going, killed, or started by an older loratui); never an exception."""
    try:
        return decode_end_file(read_run_file(path, 4 * END_FILE_BYTES))
    except (OSError, ValueError):
        return None


def load_record(path: Path) -> JobRecord:
    """The record at ``path``; OSError when it cannot be read, DamagedRecord when it is no record."""
    try:
        # never through a symlink, from a FIFO or from another user's file (loratui.core.run_files)
        text = read_run_file(path, RECORD_BYTES).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DamagedRecord("not text") from exc
    return JobRecord.from_json(text)
