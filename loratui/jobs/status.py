"""What state a job is in, from its events and its process, cheaply enough to list hundreds.

- **finished / stopped / failed**: the events end with that final event, or, when the engine is
  gone and ``events.jsonl`` could not take that last line (a full disk), its end file holds it
  (:func:`loratui.jobs.record.read_end_file`): a run stopped for a full disk is *stopped*, not failed;
- **running / paused**: no final event, and the engine process is alive (checked by pid, start
  time and boot id: :mod:`loratui.jobs.process`); paused when the last of ``paused``/``resumed``
  is a ``paused``;
- **failed** also when the engine is gone without a final event on this boot: it was killed
  (SIGKILL, the out-of-memory killer) or crashed hard; the log may say more;
- **lost**: the run folder is gone, or the machine restarted (or the job ran on another host),
  so nothing can be known of its end;
- a run folder removed while its engine runs on (``rm -rf`` of it) leaves a job that is still
  **running** (``folder_gone``): its events went with the folder, but its process is known and
  can still be stopped by signal (:mod:`loratui.jobs.orphan`).

Only the first few lines and the last 64 KiB of ``events.jsonl`` are read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from loratui.core.protocol import FINAL_EVENTS
from loratui.core.run_files import open_run_file
from loratui.errors import UserError
from loratui.jobs.follow import MAX_LINE_BYTES, decode_lines, open_events
from loratui.jobs.process import boot_id, host_name, is_running
from loratui.jobs.record import JobRecord, read_end_file
from loratui.shell import stop_command

STATES = ("running", "paused", "finished", "stopped", "failed", "lost")
ACTIVE_STATES = frozenset({"running", "paused"})
TAIL_BYTES = 64 * 1024
HEAD_LINES = 50


@dataclass
class JobStatus:
    state: str
    reason: str  # one line for people: why this state
    step: int = 0
    total_steps: int | None = None
    epoch: int = 0
    total_epochs: int | None = None
    final: dict | None = None  # the final event, when there is one
    last_event_t: float | None = None
    folder_gone: bool = False  # the run folder (and so the events) no longer exists


def job_status(record: JobRecord) -> JobStatus:
    folder = record.folder
    if not folder.is_dir():
        return _without_folder(record)
    return _from_events(record)


def _without_folder(record: JobRecord) -> JobStatus:
    if is_running(record.identity):
        return JobStatus(
            "running",
            f"its run folder {record.folder} was removed, the engine (pid {record.pid}) runs on: "
            f"`{stop_command(record.job_id)}` stops it (it saves its LoRA and state first)",
            folder_gone=True,
        )
    return JobStatus("lost", f"its run folder {record.folder} is gone", folder_gone=True)


def require_event_log(record: JobRecord) -> None:
    """A UserError saying why the job's events cannot be read, when they cannot: its run folder
    is gone (its engine may run on), or ``events.jsonl`` is missing or is no longer a file.
    Checked before showing a job, so that a viewer never waits for lines that cannot come."""
    if not record.folder.is_dir():
        raise _folder_gone_error(record)
    path = record.events_path
    try:
        open_events(path).close()  # the readers' own opening: what is there instead is said as they say it
    except FileNotFoundError:
        raise UserError(
            f"job {record.job_id} has no event log: {path} is missing",
            str(path),
            f"something removed it from the run folder; `loratui jobs` shows the job's state, "
            f"and `{stop_command(record.job_id)}` still stops it while it runs",
            kind="runtime",
        ) from None


def _folder_gone_error(record: JobRecord) -> UserError:
    if is_running(record.identity):
        return UserError(
            f"job {record.job_id}'s run folder {record.folder} was removed while its engine (pid {record.pid}) "
            "runs on; its progress went with the folder",
            record.job_id,
            f"stop it with `{stop_command(record.job_id)}`: it saves its LoRA and state"
            + (f" in {record.output_dir}" if record.output_dir else "")
            + " first",
            kind="runtime",
        )
    return UserError(
        f"job {record.job_id} is lost: its run folder {record.folder} is gone, and its events with it",
        record.job_id,
        "`loratui jobs` lists the other jobs"
        + (f"; what it saved is in {record.output_dir}" if record.output_dir else ""),
        kind="runtime",
    )


def _from_events(record: JobRecord) -> JobStatus:
    alive = is_running(record.identity)  # before reading: what it wrote before dying is then in the file
    head, tail = _head_events(record.events_path), _tail_events(record.events_path)
    status = JobStatus("running", "")
    started = next((event for event in head if event.get("type") == "run_started"), None)
    if started:
        status.total_steps, status.total_epochs = started.get("total_steps"), started.get("total_epochs")
        status.step, status.epoch = started.get("start_step", 0), started.get("start_epoch", 0)
    for event in tail:
        if "step" in event and isinstance(event["step"], int):
            status.step = event["step"]
        if event.get("type") in ("step", "epoch_end", "paused") and isinstance(event.get("epoch"), int):
            status.epoch = event["epoch"]
        status.last_event_t = event.get("t", status.last_event_t)
    final = next((event for event in reversed(tail) if event.get("type") in FINAL_EVENTS), None)
    if final is None and not alive:
        final = read_end_file(record.end_path)  # the events disk was full: the engine kept its end there
        status.step = final.get("step", status.step) if final else status.step
    if final is not None:
        status.final = final
        status.state = final["type"]
        status.reason = {
            "finished": f"saved {final.get('path')}",
            "stopped": _stopped_reason(final),
            "failed": final.get("message", ""),
        }[final["type"]]
        return status
    if alive:
        pause = next((e for e in reversed(tail) if e.get("type") in ("paused", "resumed")), None)
        status.state = "paused" if pause and pause["type"] == "paused" else "running"
        status.reason = f"engine pid {record.pid}"
        if status.state == "paused" and pause.get("reason", "request") != "request":
            status.reason = f"a save failed ({pause['reason']}); the trained weights wait in memory, {status.reason}"
        return status
    if record.host != host_name():
        status.state, status.reason = "lost", f"it ran on host {record.host}; its end cannot be seen from here"
    elif record.boot_id and boot_id() and record.boot_id != boot_id():
        status.state, status.reason = "lost", "the machine restarted while it ran"
    else:
        status.state = "failed"
        status.reason = (
            f"the engine (pid {record.pid}) ended without a final event: killed or crashed; see {record.log_path}"
        )
    return status


def _stopped_reason(final: dict) -> str:
    if final.get("reason") == "disk":
        return f"its events could not be written (a full disk?); resumable from {final.get('state')}"
    return f"resumable from {final.get('state')}"


def _head_events(path: Path) -> list[dict]:
    lines = []
    try:
        with open_run_file(path) as handle:  # a FIFO or /dev/zero in its place: refused, not read
            for _ in range(HEAD_LINES):
                line = handle.readline(MAX_LINE_BYTES)
                if not line.endswith(b"\n"):
                    break
                lines.append(line)
                if b'"type":"run_started"' in line:
                    break
    except OSError:
        return []
    return decode_lines(lines)[0]


def _tail_events(path: Path) -> list[dict]:
    """Complete events in the last TAIL_BYTES of the file (a partial last line is left out)."""
    try:
        with open_run_file(path) as handle:
            size = handle.seek(0, os.SEEK_END)
            start = max(0, size - TAIL_BYTES)
            handle.seek(start)
            data = handle.read()
    except OSError:
        return []
    lines = data.split(b"\n")
    if start > 0:
        lines = lines[1:]  # the first piece is the end of a line that began before the window
    return decode_lines(lines[:-1])[0]  # the last piece has no newline yet
