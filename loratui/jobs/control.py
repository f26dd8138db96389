"""Sending a command to a running job, and waiting for the engine's answer.

The command goes into the run's ``control`` FIFO (mode 0600: only the job's owner can open it).
The engine answers with a ``control`` event carrying the command's id, so the client reads the
answer from ``events.jsonl`` like every other attached client does.
"""

from __future__ import annotations

import errno
import os
import secrets
import time
from dataclasses import dataclass

from loratui.core.protocol import COMMANDS, encode_command, make_command
from loratui.errors import UserError
from loratui.jobs.follow import EventFileReader
from loratui.jobs.record import JobRecord
from loratui.jobs.status import ACTIVE_STATES, job_status
from loratui.shell import logs_command, resume_command


@dataclass
class Answer:
    ok: bool
    message: str


def send_command(record: JobRecord, name: str, timeout_s: float = 30.0) -> Answer | None:
    """Send ``name`` to the job; return the engine's answer, or None if none came in time (the
    engine reads commands between steps, so a long step delays the answer, not the command)."""
    if name not in COMMANDS:
        raise UserError(f"unknown command {name!r}", "command", f"use one of: {', '.join(COMMANDS)}")
    status = job_status(record)
    if status.state not in ACTIVE_STATES:
        raise UserError(
            f"job {record.job_id} has {_ended(status.state)}; there is nothing to {name}",
            record.job_id,
            _after_end_hint(record, status.state, status.final),
        )
    command = make_command(name, secrets.token_hex(6))
    reader = EventFileReader(record.events_path, offset=_size(record.events_path))
    _write(record, encode_command(command))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for event in reader.read_new():
            if event.get("type") == "control" and event.get("id") == command["id"]:
                return Answer(ok=event["ok"], message=event["message"])
        time.sleep(0.05)
    return None


def _write(record: JobRecord, data: bytes) -> None:
    path = record.control_path
    try:
        # Non-blocking: with no engine reading, open fails at once (ENXIO) instead of hanging.
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise UserError(
                f"job {record.job_id} is not listening (its engine is gone)",
                record.job_id,
                "`loratui jobs` shows its state; `loratui logs` its last events",
            ) from exc
        if exc.errno == errno.EACCES:
            raise UserError(
                f"you may not control job {record.job_id} ({path} belongs to another user)",
                record.job_id,
                "run the command as the user who started the job",
            ) from exc
        raise UserError(
            f"job {record.job_id} has no control channel ({exc.strerror})",
            str(path),
            "it was started by an older loratui: stop it with `kill <pid>` (SIGTERM saves and stops)",
        ) from exc
    try:
        os.write(fd, data)  # shorter than PIPE_BUF: atomic, never interleaved with another client
    finally:
        os.close(fd)


def _size(path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _ended(state: str) -> str:
    return {"finished": "already finished", "stopped": "already stopped", "failed": "failed", "lost": "been lost"}.get(
        state, f"ended ({state})"
    )


def _after_end_hint(record: JobRecord, state: str, final: dict | None) -> str:
    if state == "stopped" and final and final.get("state"):
        return f"to go on, resume it: {resume_command(record.config, final['state'])}"
    if state == "finished" and final:
        return f"its LoRA is {final.get('path')}"
    return f"`{logs_command(record.job_id)}` shows what happened"
