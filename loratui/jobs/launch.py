"""Starting the engine as a job whose life does not depend on the terminal.

Each launch gets a run folder under the project's log dir (``log/<name>-YYYYmmdd-HHMMSS/``):

- ``events.jsonl``: the engine's stdout (JSON lines, appended);
- ``engine.log``: its stderr (human logs, tracebacks);
- ``control``: a FIFO, mode 0600, on which the engine reads commands (:mod:`loratui.jobs.control`);
- ``summary.json``: the engine's snapshot of the run's summary, for a fast re-attach;
- ``job.json``: the job record (pid, process start time, boot id, host, config), also copied to
  the per-user registry.

The engine runs in a session of its own (so SIGHUP from a closing terminal, Ctrl+C, or a killed
viewer never reach it), with stdin from /dev/null. Nothing ties it to the process that started
it: everything that watches or controls it goes through the run folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from loratui.config import RunConfig
from loratui.errors import UserError
from loratui.jobs import registry
from loratui.jobs.process import boot_id, host_name, start_time
from loratui.jobs.record import CONTROL_FILE, EVENTS_FILE, LOG_FILE, RECORD_FILE, JobRecord, write_record
from loratui.core.snapshot import SNAPSHOT_FILE


@dataclass
class Job:
    record: JobRecord
    process: subprocess.Popen | None = None  # set only in the process that launched it

    @property
    def job_id(self) -> str:
        return self.record.job_id

    @property
    def events_path(self) -> Path:
        return self.record.events_path

    @property
    def log_path(self) -> Path:
        return self.record.log_path


def new_run_folder(cfg: RunConfig) -> Path:
    log_dir = cfg.resolve(cfg.output.log_dir)
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        stem = f"{cfg.output.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        for suffix in ["", *(f"-{n}" for n in range(2, 1000))]:
            folder = log_dir / f"{stem}{suffix}"
            if registry.is_registered(folder.name):  # the same name in another project's log dir
                continue
            try:
                folder.mkdir(mode=0o700)  # atomic: two launches in the same second get different folders
                return folder
            except FileExistsError:
                continue
    except OSError as exc:
        raise _folder_error(log_dir, exc) from exc
    raise UserError(f"cannot find a free run folder name in {log_dir}", "output.log_dir", "clean up old run folders")


def start_job(config_path: Path, cfg: RunConfig, resume: str | None = None) -> Job:
    """Create the run folder, start the engine, record and register the job. Nothing is started
    when the folder or the record cannot be written (a read-only or full disk)."""
    folder = new_run_folder(cfg)
    control = folder / CONTROL_FILE
    command = [sys.executable, "-m", "engine", str(config_path.resolve()), "--run-id", folder.name,
               "--control", str(control), "--summary", str(folder / SNAPSHOT_FILE)]
    if resume:
        command += ["--resume", resume]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # The engine package sits beside this one; make sure the child finds it from any directory.
    package_root = str(Path(__file__).resolve().parent.parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    try:
        os.mkfifo(control, 0o600)
        os.chmod(control, 0o600)  # whatever the umask: only the owner may send commands
        events = open(folder / EVENTS_FILE, "ab")
        log = open(folder / LOG_FILE, "ab")
    except OSError as exc:
        _remove_quietly(folder)
        raise _folder_error(folder.parent, exc) from exc
    with events, log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=events,
            stderr=log,
            start_new_session=True,  # its own session and process group: no SIGHUP or Ctrl+C from us
            cwd=str(cfg.base_dir),
            env=env,
        )
    record = JobRecord(
        job_id=folder.name, run_folder=str(folder.resolve()), config=str(config_path.resolve()), pid=process.pid,
        start_time=start_time(process.pid), boot_id=boot_id(), host=host_name(), started_at=time.time(),
        command=command, resume_from=resume,
    )
    try:
        write_record(record, folder / RECORD_FILE)
        registry.register(record)
    except OSError as exc:
        # Without a record nobody could find or control the job: do not leave it running blind.
        process.terminate()
        raise UserError(f"cannot write the job record in {folder}: {exc.strerror or exc}", "output.log_dir",
                        "free disk space or choose a writable log folder; the engine was stopped, nothing was trained") from exc
    return Job(record=record, process=process)


def _folder_error(where: Path, exc: OSError) -> UserError:
    return UserError(f"cannot create a run folder in {where}: {exc.strerror or exc}", "output.log_dir",
                     "free disk space, or set output.log_dir to a writable folder; nothing was started")


def _remove_quietly(folder: Path) -> None:
    for item in folder.iterdir() if folder.is_dir() else []:
        item.unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass
