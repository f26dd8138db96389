"""Starting the engine as a job whose life does not depend on the terminal.

Each launch gets a run folder under the project's log dir (``log/<id>/``). The folder's name is
the job id: ``output.name`` made shell-safe, then the time (``ohwx woman v1`` started at 13:32:10
gives ``ohwx-woman-v1-20261201-133210``), so that ``loratui attach <id>`` pastes as one word. It
holds:

- ``events.jsonl``: the engine's stdout (JSON lines, appended);
- ``engine.log``: its stderr (human logs, tracebacks);
- ``control``: a FIFO, mode 0600, on which the engine reads commands (:mod:`loratui.jobs.control`);
- ``summary.json``: the engine's snapshot of the run's summary, for a fast re-attach;
- ``end.json``: the final event again, in room the engine takes at its start, for when a full
  disk kept it out of ``events.jsonl`` (:func:`loratui.jobs.record.read_end_file`);
- ``job.json``: the job record (pid, process start time, boot id, host, config), also copied to
  the per-user registry.

The log folder (when loratui makes it) and the run folder are owner-only (0700) and the run files
0600, whatever the umask: no other local user can swap a run folder or its control FIFO for
something that makes the owner's ``loratui stop`` write elsewhere.

The engine runs in a session of its own (so SIGHUP from a closing terminal, Ctrl+C, or a killed
viewer never reach it), with stdin from /dev/null. Nothing ties it to the process that started
it: everything that watches or controls it goes through the run folder.

A launch is refused while a job of the same config (or one writing the same files) is running or
paused; ``force`` starts it anyway.
"""

from __future__ import annotations

import os
import re
import site
import subprocess
import sys
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from loratui.atomic import write_text_atomic
from loratui.config import RunConfig
from loratui.core.run_files import make_private_dir, make_private_dirs
from loratui.core.snapshot import SNAPSHOT_FILE
from loratui.errors import UserError
from loratui.jobs import registry
from loratui.jobs.process import boot_id, host_name, start_time
from loratui.jobs.record import CONTROL_FILE, END_FILE, EVENTS_FILE, LOG_FILE, RECORD_FILE, JobRecord, write_record
from loratui.jobs.status import ACTIVE_STATES, JobStatus, job_status
from loratui.outputs import OVERWRITE_FLAG
from loratui.shell import attach_command, stop_command

FORCE_FLAG = "--force"
GRID_SPEC_FILE = "grid.json"  # a grid job's spec, in its run folder (loratui.grid_spec)
ID_STEM_MAX = 64  # characters of the name kept in a job id


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


def job_id_stem(name: str) -> str:
    """``output.name`` as the start of a job id: only ``[A-Za-z0-9._-]`` (accents dropped, anything
    else a '-', runs of '-' collapsed), never starting with '-' or '.' (an option, a hidden file)."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    safe = re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9._-]+", "-", plain))
    return safe[:ID_STEM_MAX].strip("-._") or "lora"


def _timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def new_run_folder(cfg: RunConfig) -> Path:
    """A new run folder whose name, the job id, is claimed in the registry: unique among this
    user's jobs even when two start in the same second from different projects."""
    return new_run_folder_in(cfg.resolve(cfg.output.log_dir), cfg.output.name)


def new_run_folder_in(log_dir: Path, name: str) -> Path:
    """A new run folder in ``log_dir`` for a job called ``name`` (see :func:`new_run_folder`)."""
    try:
        make_private_dirs(log_dir)
    except OSError as exc:
        raise _folder_error(log_dir, exc) from exc
    stem = f"{job_id_stem(name)}-{_timestamp()}"
    for suffix in ["", *(f"-{n}" for n in range(2, 1000))]:
        job_id = f"{stem}{suffix}"
        if not _claim(job_id):
            continue
        folder = log_dir / job_id
        try:
            make_private_dir(folder)
            return folder
        except FileExistsError:  # a folder of that name but no job: leave it alone
            registry.forget(job_id)
        except OSError as exc:
            registry.forget(job_id)
            raise _folder_error(log_dir, exc) from exc
    raise UserError(f"cannot find a free run folder name in {log_dir}", "output.log_dir", "clean up old run folders")


def _claim(job_id: str) -> bool:
    try:
        return registry.claim(job_id)
    except OSError as exc:
        raise UserError(
            f"cannot write the job registry in {registry.registry_dir()}: {exc.strerror or exc}",
            "LORATUI_STATE_DIR",
            "free disk space, or set LORATUI_STATE_DIR (or XDG_STATE_HOME) to a writable folder; nothing was started",
        ) from exc


def running_job_for(config_path: Path, cfg: RunConfig) -> tuple[JobRecord, JobStatus] | None:
    """A running or paused job of the same config file, or one writing the same files (the same
    output folder and name, from another config); None when there is none."""
    config, target = str(config_path.resolve()), _output_target(cfg)
    for record in reversed(registry.all_records()):
        same_files = target is not None and (record.output_dir, record.output_name) == target
        if record.config != config and not same_files:
            continue
        status = job_status(record)
        if status.state in ACTIVE_STATES:
            return record, status
    return None


def refuse_a_second_run(config_path: Path, cfg: RunConfig) -> None:
    """A UserError naming the job and how to watch or stop it, while one runs for this config."""
    found = running_job_for(config_path, cfg)
    if found is None:
        return
    record, status = found
    if record.config == str(config_path.resolve()):
        what = "from this config"
    else:
        what = f"from {record.config}, writing the same files ({record.output_name} in {record.output_dir})"
    raise UserError(
        f"job {record.job_id} is still {status.state} {what}",
        str(config_path),
        f"watch it with `{attach_command(record.job_id)}`, stop it with `{stop_command(record.job_id)}`, "
        f"or add {FORCE_FLAG} to start another anyway",
    )


def _output_target(cfg: RunConfig) -> tuple[str, str] | None:
    """The output folder and name, or None when the folder is no usable path (the check that
    follows says why: this runs first, on a config nothing has validated yet)."""
    if not cfg.output.output_dir.strip():
        return None
    try:
        return str(cfg.resolve(cfg.output.output_dir).resolve()), cfg.output.name
    except (ValueError, RuntimeError, OSError):
        return None


def start_job(
    config_path: Path, cfg: RunConfig, resume: str | None = None, *, force: bool = False, overwrite: bool = False
) -> Job:
    """Create the run folder, start the engine, record and register the job. Nothing is started
    when the folder or the record cannot be written (a read-only or full disk), or while a job of
    the same config runs (unless ``force``). ``overwrite``: the engine may replace an earlier
    run's files (:mod:`loratui.outputs`)."""
    with registry.launch_lock():
        if not force:
            refuse_a_second_run(config_path, cfg)
        return _start(config_path, cfg, resume, overwrite)


def _start(config_path: Path, cfg: RunConfig, resume: str | None, overwrite: bool) -> Job:
    folder = new_run_folder(cfg)
    control = folder / CONTROL_FILE
    # Every value is given as --option=value and the config after "--": a name, an id or a path
    # that starts with "-" is never read as an option.
    command = [
        sys.executable,
        "-m",
        "engine",
        f"--run-id={folder.name}",
        f"--control={control}",
        f"--summary={folder / SNAPSHOT_FILE}",
        f"--end-file={folder / END_FILE}",
    ]
    if resume:
        command.append(f"--resume={resume}")
    if overwrite:
        command.append(OVERWRITE_FLAG)
    command += ["--", str(config_path.resolve())]
    fields = {"config": str(config_path.resolve()), "resume_from": resume, **_output_fields(cfg)}
    return _spawn(folder, command, cfg.base_dir, fields)


def start_grid_job(spec_json: str, log_dir: Path, name: str) -> Job:
    """Start ``python -m engine.grid`` on a grid spec (loratui.grid_spec) as a job of kind "grid":
    the same run folder, events, control FIFO, record and registry as a training job, so that
    ``loratui attach``, ``jobs``, ``logs`` and ``stop`` work on it as they do on training."""
    with registry.launch_lock():
        folder = new_run_folder_in(log_dir, f"{name}-grid")
        spec_path = folder / GRID_SPEC_FILE
        try:
            write_text_atomic(spec_path, spec_json, mode=0o600)
        except OSError as exc:
            _remove_quietly(folder)
            registry.forget(folder.name)
            raise _folder_error(folder.parent, exc) from exc
        command = [
            sys.executable,
            "-m",
            "engine.grid",
            f"--run-id={folder.name}",
            f"--control={folder / CONTROL_FILE}",
            f"--end-file={folder / END_FILE}",
            "--",
            str(spec_path),
        ]
        return _spawn(folder, command, folder, {"config": str(spec_path), "kind": "grid"})


def _spawn(folder: Path, command: list[str], cwd: Path, fields: dict) -> Job:
    """Run ``command`` as the job of ``folder``: its own session, its events and log in the folder,
    its record written and registered (``fields``: the record's config, kind, output...)."""
    control = folder / CONTROL_FILE
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # The engine package sits beside this one; make sure the child finds it from any directory.
    # An installed wheel puts both in site-packages, which the child has anyway (and which must
    # not come before the standard library on its path).
    package_root = str(Path(__file__).resolve().parent.parent.parent)
    if package_root not in site.getsitepackages():
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    try:
        os.mkfifo(control, 0o600)
        os.chmod(control, 0o600)  # whatever the umask: only the owner may send commands
        events = _new_private_file(folder / EVENTS_FILE)
        log = _new_private_file(folder / LOG_FILE)
    except OSError as exc:
        _remove_quietly(folder)
        registry.forget(folder.name)
        raise _folder_error(folder.parent, exc) from exc
    with events, log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=events,
            stderr=log,
            start_new_session=True,  # its own session and process group: no SIGHUP or Ctrl+C from us
            cwd=str(cwd),
            env=env,
        )
    record = JobRecord(
        job_id=folder.name,
        run_folder=str(folder.resolve()),
        pid=process.pid,
        start_time=start_time(process.pid),
        boot_id=boot_id(),
        host=host_name(),
        started_at=time.time(),
        command=command,
        **fields,
    )
    try:
        write_record(record, folder / RECORD_FILE)
        registry.register(record)
    except OSError as exc:
        # Without a record nobody could find or control the job: do not leave it running blind.
        process.terminate()
        raise UserError(
            f"cannot write the job record in {folder}: {exc.strerror or exc}",
            "output.log_dir",
            "free disk space or choose a writable log folder; the engine was stopped, nothing was trained",
        ) from exc
    return Job(record=record, process=process)


def _output_fields(cfg: RunConfig) -> dict:
    target = _output_target(cfg)
    return {"output_dir": target[0], "output_name": target[1]} if target else {}


def _new_private_file(path: Path):
    """A new file only its owner may read or write (0600 whatever the umask), open for appending."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")


def _folder_error(where: Path, exc: OSError) -> UserError:
    return UserError(
        f"cannot create a run folder in {where}: {exc.strerror or exc}",
        "output.log_dir",
        "free disk space, or set output.log_dir to a writable folder; nothing was started",
    )


def _remove_quietly(folder: Path) -> None:
    for item in folder.iterdir() if folder.is_dir() else []:
        item.unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass
