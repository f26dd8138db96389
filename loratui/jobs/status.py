"""What state a job is in, from its events and its process, cheaply enough to list hundreds.

- **finished / stopped / failed**: the events end with that final event;
- **running / paused**: no final event, and the engine process is alive (checked by pid, start
  time and boot id: :mod:`loratui.jobs.process`); paused when the last of ``paused``/``resumed``
  is a ``paused``;
- **failed** also when the engine is gone without a final event on this boot: it was killed
  (SIGKILL, the out-of-memory killer) or crashed hard; the log may say more;
- **lost**: the run folder is gone, or the machine restarted (or the job ran on another host),
  so nothing can be known of its end.

Only the first few lines and the last 64 KiB of ``events.jsonl`` are read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from loratui.core.protocol import FINAL_EVENTS
from loratui.jobs.follow import decode_lines
from loratui.jobs.process import boot_id, host_name, is_running
from loratui.jobs.record import JobRecord

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


def job_status(record: JobRecord) -> JobStatus:
    folder = record.folder
    if not folder.is_dir():
        return JobStatus("lost", f"its run folder {folder} is gone")
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
    if final is not None:
        status.final = final
        status.state = final["type"]
        status.reason = {
            "finished": f"saved {final.get('path')}",
            "stopped": f"resumable from {final.get('state')}",
            "failed": final.get("message", ""),
        }[final["type"]]
        return status
    if alive:
        pause = next((e["type"] for e in reversed(tail) if e.get("type") in ("paused", "resumed")), None)
        status.state = "paused" if pause == "paused" else "running"
        status.reason = f"engine pid {record.pid}"
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


def _head_events(path: Path) -> list[dict]:
    lines = []
    try:
        with open(path, "rb") as handle:
            for _ in range(HEAD_LINES):
                line = handle.readline()
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
        with open(path, "rb") as handle:
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
