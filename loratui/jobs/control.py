"""Sending a command to a running job, and waiting for the engine's answer.

The command goes into the run's ``control`` FIFO (mode 0600: only the job's owner can open it).
The engine answers with a ``control`` event carrying the command's id, so the client reads the
answer from ``events.jsonl`` like every other attached client does.

The command is written only into a FIFO of this user's, in a run folder no other user can write
into (:mod:`loratui.core.run_files`): a symlink or a plain file in its place is refused, so a
command never lands in some other file. A client stops waiting as soon as the engine's process
is gone, and says so; an engine stopped with SIGSTOP is named as such rather than waited for.
"""

from __future__ import annotations

import errno
import os
import secrets
import time
from dataclasses import dataclass

from loratui.core.protocol import COMMANDS, ProtocolError, encode_command, make_command
from loratui.core.run_files import UnsafeRunFile, open_fifo
from loratui.errors import UserError
from loratui.jobs.follow import EventFileReader
from loratui.jobs.orphan import stop_by_signal
from loratui.jobs.process import is_running, is_suspended
from loratui.jobs.record import JobRecord
from loratui.jobs.registry import refuse_an_unsafe_run_folder
from loratui.jobs.status import ACTIVE_STATES, job_status
from loratui.shell import logs_command, resume_command

POLL_S = 0.05


@dataclass
class Answer:
    ok: bool
    message: str


class NoAnswer(UserError):
    """No engine will answer the command: its process is gone, or it is suspended (SIGSTOP)."""


def send_command(record: JobRecord, name: str, timeout_s: float = 30.0, **args: str) -> Answer | None:
    """Send ``name`` (with ``args``: protocol.COMMAND_ARGS) to the job; return the engine's answer,
    or None if none came in time from an engine that is alive and running (it reads commands
    between steps, so a long step delays the answer, not the command). :class:`NoAnswer` when
    the engine is suspended, or ends before it answers; UserError when the command cannot be sent."""
    if name not in COMMANDS:
        raise UserError(f"unknown command {name!r}", "command", f"use one of: {', '.join(COMMANDS)}")
    refuse_an_unsafe_run_folder(record)
    status = job_status(record)
    if status.state not in ACTIVE_STATES:
        raise UserError(
            f"job {record.job_id} has {_ended(status.state)}; there is nothing to {name}",
            record.job_id,
            _after_end_hint(record, status.state, status.final),
        )
    if is_suspended(record.identity):
        raise _suspended(record, name, sent=False)
    if status.folder_gone:  # removed under a live engine: no channel left, but the process is known
        return Answer(ok=True, message=stop_by_signal(record, name))
    command, data = _encoded(name, args)
    reader = EventFileReader(record.events_path, offset=_size(record.events_path))
    _write(record, data)
    return _wait_for_answer(record, reader, command, timeout_s)


def _encoded(name: str, args: dict[str, str]) -> tuple[dict, bytes]:
    """The command and its line; a UserError when an argument makes it no command (too long)."""
    try:
        command = make_command(name, secrets.token_hex(6), **args)
        return command, encode_command(command)
    except ProtocolError as exc:
        where = ", ".join(f"--{arg.replace('_', '-')}" for arg in args) or name
        raise UserError(f"cannot send {name}: {exc}", where, "give a shorter path (a symlink to it will do)") from exc


def _wait_for_answer(record: JobRecord, reader: EventFileReader, command: dict, timeout_s: float) -> Answer | None:
    deadline = time.monotonic() + timeout_s
    while True:
        alive = is_running(record.identity)  # first: an answer written before it died is then in the file
        for event in reader.read_new():
            if event.get("type") == "control" and event.get("id") == command["id"]:
                return Answer(ok=event["ok"], message=event["message"])
        if not alive:
            raise NoAnswer(
                f"job {record.job_id} ended before answering {command['cmd']}: its engine (pid {record.pid}) is gone",
                record.job_id,
                f"`{logs_command(record.job_id)}` shows its last events",
                kind="runtime",
            )
        if time.monotonic() >= deadline:
            if is_suspended(record.identity):
                raise _suspended(record, command["cmd"], sent=True)
            return None
        time.sleep(POLL_S)


def _suspended(record: JobRecord, name: str, sent: bool) -> NoAnswer:
    then = "it carries out the command it was sent" if sent else f"then send {name} again"
    return NoAnswer(
        f"job {record.job_id} cannot answer {name}: its engine (pid {record.pid}) is suspended (SIGSTOP)",
        record.job_id,
        f"let it go on with `kill -CONT {record.pid}`; {then}",
        kind="runtime",
    )


def _not_listening(record: JobRecord) -> NoAnswer:
    if is_running(record.identity):  # it opens the channel once started up (after loading torch)
        return NoAnswer(
            f"job {record.job_id} is not listening for commands yet (its engine, pid {record.pid}, "
            "opens its control channel once it has started up)",
            record.job_id,
            f"send it again in a few seconds; if it stays so, {record.log_path} says why",
            kind="runtime",
        )
    return NoAnswer(
        f"job {record.job_id} is not listening: its engine (pid {record.pid}) is gone",
        record.job_id,
        f"`{logs_command(record.job_id)}` shows its last events",
        kind="runtime",
    )


def _write(record: JobRecord, data: bytes) -> None:
    path = record.control_path
    try:
        # Non-blocking: with no engine reading, open fails at once (ENXIO) instead of hanging.
        fd = open_fifo(path, os.O_WRONLY)
    except UnsafeRunFile as exc:
        raise UserError(
            f"job {record.job_id}'s control channel is not its FIFO: it {exc.strerror}; nothing was written to it",
            str(path),
            f"loratui makes a FIFO there; something else replaced it. `kill -TERM {record.pid}` stops the job "
            "too (it saves first)",
            kind="runtime",
        ) from exc
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # nobody holds the FIFO open for reading
            raise _not_listening(record) from exc
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
