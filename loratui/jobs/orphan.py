"""A job whose run folder is gone while its engine runs on.

Removing a run folder (``rm -rf log/<id>``) does not stop the engine: it trains on, writing into
files no one can open any more, and its control FIFO went with the folder. Its identity is still
known from the registry's record (pid, start time and boot id: :mod:`loratui.jobs.process`), so
it can still be stopped the way the engine always allows: SIGTERM, on which it finishes the step,
saves a LoRA and a resumable state in its output folder and exits. Pause, resume and save need
the control channel, so those are refused, with the way out.
"""

from __future__ import annotations

import time
from pathlib import Path

from loratui.errors import UserError
from loratui.jobs.process import is_running, terminate
from loratui.jobs.record import JobRecord
from loratui.shell import stop_command

POLL_S = 0.2


def stop_by_signal(record: JobRecord, command: str) -> str:
    """Carry out ``command`` for a job without a run folder: only ``stop`` can be, by SIGTERM.
    Returns what was done, for people; UserError when nothing could be."""
    if command != "stop":
        raise UserError(
            f"job {record.job_id}'s run folder {record.folder} was removed, and its control channel with it: "
            f"it can no longer {command}",
            record.job_id,
            f"`{stop_command(record.job_id)}` still stops it (by signal: it saves its LoRA and state first)",
            kind="runtime",
        )
    if not terminate(record.identity):
        raise UserError(
            f"job {record.job_id}'s engine (pid {record.pid}) has ended; its run folder {record.folder} is gone",
            record.job_id,
            _where_its_files_are(record),
            kind="runtime",
        )
    return (
        f"its run folder was removed, so the engine (pid {record.pid}) was sent SIGTERM: it finishes the step, "
        f"saves its LoRA and state{_in_output_dir(record)} and exits"
    )


def wait_for_exit(record: JobRecord, poll_s: float = POLL_S) -> None:
    """Return once the job's engine has exited (its end cannot be read: its events are gone)."""
    while is_running(record.identity):
        time.sleep(poll_s)


def saved_since(record: JobRecord, since: float) -> list[Path]:
    """The files and state folders the job's output name was given in its output folder since
    ``since`` (unix time), oldest first: what a stop saved, when its events cannot say."""
    if not record.output_dir or not record.output_name:
        return []
    prefixes = (f"{record.output_name}-", f"{record.output_name}.")  # <name>.safetensors, <name>-step...
    found = []
    try:
        for path in Path(record.output_dir).iterdir():
            if path.name.startswith(prefixes) and (modified := path.stat().st_mtime) >= since:
                found.append((modified, path))
    except OSError:
        pass  # what could be listed is still worth saying
    return [path for _, path in sorted(found)]


def _in_output_dir(record: JobRecord) -> str:
    return f" in {record.output_dir}" if record.output_dir else ""


def _where_its_files_are(record: JobRecord) -> str:
    if record.output_dir:
        return f"what it saved is in {record.output_dir}; `loratui jobs` lists the other jobs"
    return "`loratui jobs` lists the other jobs"
