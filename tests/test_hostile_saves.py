"""Saves the disk refuses, and what a killed save leaves (issue 9, items 2, 3 and 21).

A save that fails (a full disk, a folder that is gone, a file size limit) must never cost the
trained weights nor end the run as failed: the engine says what failed and why, pauses, and
saves again when told (``loratui resume``, ``loratui save --output-dir``). A full disk under the
events file ends the run as *stopped* (reason disk), and the job layer says so.

The failures are real ones, made without root: the file size limit of the running engine
(``RLIMIT_FSIZE``, set from outside with ``prlimit``: writes past it fail with EFBIG, as they
fail with ENOSPC on a full disk), a regular file where the output folder would be (the mkdir of
the save fails), ``/dev/full`` as the events file (ENOSPC on every write), and SIGKILL.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loratui.core.protocol import (
    END_FILE_BYTES,
    PAUSE_REASONS,
    ProtocolError,
    decode_command,
    decode_end_file,
    encode,
    encode_command,
    make_command,
    make_event,
)
from loratui.jobs import registry
from loratui.jobs.follow import follow
from loratui.jobs.process import boot_id, host_name, is_running
from loratui.jobs.record import END_FILE, EVENTS_FILE, JobRecord, write_record
from loratui.jobs.status import job_status
from tests.conftest import REPO, small_config, write_config

UNLIMITED = resource.RLIM_INFINITY


def _env(**extra: str) -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **extra)


def loratui(*args: str, cwd: Path | None = None, timeout: float = 300, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "loratui.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_env(**extra_env),
        timeout=timeout,
    )


def wait_for(predicate, timeout: float = 240, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def events_of(record: JobRecord) -> list[dict]:
    lines = record.events_path.read_bytes().split(b"\n")
    return [json.loads(line) for line in lines[:-1] if line.strip()]


def of_type(record: JobRecord, kind: str) -> list[dict]:
    return [event for event in events_of(record) if event["type"] == kind]


@pytest.fixture
def short_project(project: Path) -> Path:
    """The sample's 8 images once per epoch, batch 4: two steps an epoch."""
    (project / "img" / "10_ohwx shape").rename(project / "img" / "1_ohwx shape")
    return project


def launch(project: Path, config: Path, **extra_env: str) -> JobRecord:
    result = loratui("train", str(config), "--detach", cwd=project, **extra_env)
    assert result.returncode == 0, result.stderr
    return registry.find_job(result.stdout.strip())


def pause_after_the_first_step(record: JobRecord) -> None:
    """Sent while the model loads; the engine acts on it after step 1 (commands come between steps)."""
    wait_for(lambda: of_type(record, "status"), what="the engine to listen")  # its control FIFO is open by then
    paused = loratui("pause", record.job_id, "--timeout", "240")
    assert paused.returncode == 0 and "paused after step 1" in paused.stdout, paused.stderr


def limit_file_size(record: JobRecord, size) -> None:
    """The engine's file size limit, changed from outside: writes past ``size`` bytes fail (EFBIG)."""
    resource.prlimit(record.pid, resource.RLIMIT_FSIZE, (size, UNLIMITED))


def hidden_entries(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir() if entry.name.startswith("."))


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {item.name: item.read_bytes() for item in folder.iterdir()}


needs_prlimit = pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="prlimit is Linux-only")


# ------------------------------------------------------------------------------- items 2 and 3
@pytest.mark.slow
@needs_prlimit
def test_a_full_disk_while_saving_pauses_keeps_the_last_state_and_saves_again_on_resume(short_project):
    """The state folder is where a full disk used to hit: torch.save raised "RuntimeError: [enforce
    fail at inline_container.cc] unexpected pos" and the run failed as a bug. Now the save fails
    with the disk's own errno, the state saved before under that name is left as it was, and the
    run waits for the word to save again: manual, epoch and final saves alike."""
    project = short_project
    config = write_config(project, small_config(training={"epochs": 2}, output={"save_every_n_epochs": 1}))
    record = launch(project, config)
    model = project / "model"
    pause_after_the_first_step(record)
    saved = loratui("save", record.job_id)
    assert saved.returncode == 0, saved.stderr
    state = model / "test_lora-step00000001-state"
    before = folder_bytes(state)
    # Room for a LoRA file, not for the state's optimizer file: saves fail inside the state folder.
    room = (len(before["training.pt"]) + (model / "test_lora-step00000001.safetensors").stat().st_size) // 2

    limit_file_size(record, room)
    again = loratui("save", record.job_id)
    assert again.returncode == 1 and "File too large (EFBIG)" in again.stderr, again.stderr
    assert str(state) in again.stderr and "Traceback" not in again.stderr
    assert folder_bytes(state) == before  # the state saved before under that name, untouched
    assert hidden_entries(model) == []  # the half-written state was removed, not left as a temp folder
    warning = of_type(record, "warning")[-1]
    assert warning["code"] == "save_failed" and "kept in memory" in warning["message"]
    assert f"loratui resume {record.job_id}" in warning["hint"]
    refused = loratui("resume", record.job_id)  # the word to save again; the disk is still full: it says so
    assert refused.returncode == 1 and "File too large" in refused.stderr, refused.stderr
    assert job_status(record).state == "paused" and is_running(record.identity)
    limit_file_size(record, UNLIMITED)  # room again
    retried = loratui("save", record.job_id)
    lora = model / "test_lora-step00000001.safetensors"
    assert retried.returncode == 0 and f"saved {lora} and its resumable state" in retried.stdout, retried.stdout
    assert job_status(record).state == "paused"  # the user's own pause goes on

    # The epoch save at the end of epoch 1 hits the limit: the engine pauses itself.
    limit_file_size(record, room)
    assert loratui("resume", record.job_id).returncode == 0
    paused = wait_for(lambda: [e for e in of_type(record, "paused") if e.get("reason") == "disk"], what="a pause")
    assert paused[0]["step"] == 2 and paused[0]["epoch"] == 1
    assert str(model / "test_lora-000001-state") in of_type(record, "warning")[-1]["message"]
    status = job_status(record)
    assert status.state == "paused" and "a save failed (disk)" in status.reason
    limit_file_size(record, UNLIMITED)
    resumed = loratui("resume", record.job_id)
    assert resumed.returncode == 0 and "test_lora-000001.safetensors and its resumable state" in resumed.stdout
    wait_for(lambda: job_status(record).state == "finished", what="the run to finish")
    assert [e["type"] for e in events_of(record)].count("finished") == 1 and not of_type(record, "error")
    progress = json.loads((model / "test_lora-000001-state" / "progress.json").read_text())
    assert (progress["step"], progress["epoch"]) == (2, 1)
    assert (model / "test_lora.safetensors").is_file() and (model / "test_lora-state" / "training.pt").is_file()
    assert hidden_entries(model) == []


@pytest.mark.slow
def test_a_final_save_into_a_vanished_folder_waits_and_is_saved_where_the_user_says(short_project):
    """After all the training, the output folder is not there (a file took its name): the run
    pauses before 'finished' instead of failing, and ``loratui save --output-dir`` saves it elsewhere."""
    project = short_project
    config = write_config(project, small_config(training={"epochs": 1}, output={"save_every_n_epochs": 0}))
    record = launch(project, config)
    pause_after_the_first_step(record)
    model = project / "model"
    if model.is_dir():
        model.rmdir()
    model.write_text("not a folder")
    assert loratui("resume", record.job_id).returncode == 0
    paused = wait_for(lambda: [e for e in of_type(record, "paused") if e.get("reason") == "folder"], what="a pause")
    assert paused[0]["step"] == 2
    assert job_status(record).state == "paused"
    assert "cannot write" in of_type(record, "warning")[-1]["message"]

    taken = project / "taken"
    taken.mkdir()
    (taken / "test_lora.safetensors").write_bytes(b"another run's LoRA")
    refused = loratui("save", record.job_id, "--output-dir", "taken", cwd=project)
    assert refused.returncode == 1 and "holds files of an earlier run" in refused.stderr, refused.stderr
    assert (taken / "test_lora.safetensors").read_bytes() == b"another run's LoRA"

    saved = loratui("save", record.job_id, "--output-dir", "elsewhere", cwd=project)  # relative to where it is typed
    elsewhere = project / "elsewhere"
    assert saved.returncode == 0 and str(elsewhere / "test_lora.safetensors") in saved.stdout, saved.stderr
    wait_for(lambda: job_status(record).state == "finished", what="the run to finish")
    assert job_status(record).final["path"] == str(elsewhere / "test_lora.safetensors")
    assert (elsewhere / "test_lora-state" / "progress.json").is_file()
    assert not of_type(record, "error")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/dev/full").is_char_device(), reason="needs the /dev/full device (Linux)")
def test_a_full_events_disk_stops_the_run_as_stopped_for_the_disk_and_the_job_says_so(project, tmp_path):
    """/dev/full as events.jsonl: every event write fails with ENOSPC. The engine saves and stops;
    its `stopped` (reason disk) reaches the end file it took room for at its start, and the job
    layer reads it there instead of calling the job killed or crashed."""
    config = write_config(project, small_config(training={"epochs": 50}))
    folder = project / "log" / "full-disk-job"
    folder.mkdir(parents=True, mode=0o700)
    (folder / EVENTS_FILE).write_bytes(b"")  # what a full disk let through: nothing
    with open("/dev/full", "w") as full:
        engine = subprocess.Popen(
            [sys.executable, "-m", "engine", f"--end-file={folder / END_FILE}", "--", str(config)],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            cwd=project,
        )
        _, stderr = engine.communicate(timeout=300)
    assert engine.returncode == 3, stderr[-2000:]
    assert (folder / END_FILE).stat().st_size >= END_FILE_BYTES  # the room taken at the start
    record = JobRecord(
        job_id="full-disk-job",
        run_folder=str(folder),
        config=str(config),
        pid=engine.pid,
        start_time=None,
        boot_id=boot_id(),
        host=host_name(),
        started_at=time.time(),
    )
    status = job_status(record)
    assert status.state == "stopped" and status.final["reason"] == "disk", status
    assert "could not be written" in status.reason and "killed" not in status.reason
    state = Path(status.final["state"])
    assert (state / "training.pt").is_file()  # resumable, as it says
    assert [e["type"] for e in follow(record.events_path, lambda: False)] == ["stopped"]
    write_record(record, folder / "job.json")
    registry.register(record)
    listed = [json.loads(line) for line in loratui("jobs", "--json").stdout.splitlines()]
    assert next(row for row in listed if row["id"] == "full-disk-job")["state"] == "stopped"
    attached = loratui("attach", "full-disk-job", "--no-tui")
    assert attached.returncode == 3 and "stopped" in attached.stdout, attached.stdout + attached.stderr
    assert "killed or crashed" not in attached.stdout + attached.stderr


# ------------------------------------------------------------------------------------ item 21
@pytest.mark.slow
def test_a_save_killed_between_its_two_renames_leaves_only_what_the_next_engine_puts_back(short_project):
    """Replacing a state folder moves the old one aside (``.<name>-state.old``), then renames the
    new one (``.<name>-state.<hex>.tmp``) in. SIGKILL in between leaves both; the cleanup every
    engine runs first puts the old state back, whole, and removes the half-saved one."""
    from loratui.config import load_config
    from loratui.outputs import clean_interrupted_saves

    project = short_project
    config = write_config(project, small_config(training={"epochs": 1}, output={"save_every_n_epochs": 0}))
    record = launch(project, config, LORATUI_TEST_SAVE_DELAY_S="1.5")  # each write and replace waits 1.5 s
    model = project / "model"
    pause_after_the_first_step(record)
    assert loratui("save", record.job_id).returncode == 0
    state = model / "test_lora-step00000001-state"
    before = folder_bytes(state)
    second = subprocess.Popen(
        [sys.executable, "-m", "loratui.cli", "save", record.job_id], env=_env(), stdout=subprocess.DEVNULL
    )
    aside = model / ".test_lora-step00000001-state.old"
    wait_for(aside.exists, what="the old state moved aside")
    os.kill(record.pid, signal.SIGKILL)
    second.wait(timeout=60)
    wait_for(lambda: not is_running(record.identity), 10, "the engine to die")

    assert not state.exists()
    staging = [name for name in hidden_entries(model) if name.endswith(".tmp")]
    assert len(staging) == 1 and staging[0].startswith(".test_lora-step00000001-state.")
    assert job_status(record).state == "failed"  # killed: no final event, and no end file claims one

    done = clean_interrupted_saves(load_config(config))
    assert sorted(line.split()[0] for line in done) == ["removed", "restored"], done
    assert folder_bytes(state) == before and hidden_entries(model) == []


# ------------------------------------------------------------------ the words of the protocol
@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (errno.ENOSPC, "disk"),
        (errno.EDQUOT, "disk"),
        (errno.EFBIG, "disk"),
        (errno.EACCES, "permission"),
        (errno.EROFS, "permission"),
        (errno.ENAMETOOLONG, "name"),
        (errno.ENOENT, "folder"),
        (errno.EIO, "io"),
    ],
)
def test_each_failure_gets_its_pause_reason_and_a_fix_naming_the_folder(code, reason, tmp_path):
    from engine.save_failure import save_failed

    target = tmp_path / "model" / "x.safetensors"
    failure = save_failed(target, OSError(code, os.strerror(code)))
    assert failure.reason == reason and reason in PAUSE_REASONS
    assert failure.message == f"cannot write {target}: {os.strerror(code)} ({errno.errorcode[code]})"
    assert str(target.parent) in failure.fix or code in (errno.ENAMETOOLONG, errno.EFBIG)


def test_a_real_name_too_long_is_a_name_failure(tmp_path):
    from engine.save_failure import save_failed

    target = tmp_path / ("x" * 300 + ".safetensors")
    with pytest.raises(OSError) as info:
        target.write_bytes(b"")
    assert save_failed(target, info.value).reason == "name"


def test_save_takes_an_output_dir_and_refuses_one_that_is_no_path():
    command = decode_command(encode_command(make_command("save", "a1", output_dir="/mnt/big/loras")))
    assert command["output_dir"] == "/mnt/big/loras"
    with pytest.raises(ProtocolError):
        make_command("pause", "a1", output_dir="/x")
    for value in ("", 7, ["/x"], "/mnt/a\0b"):
        with pytest.raises(ProtocolError):
            decode_command(json.dumps({"cmd": "save", "id": "a1", "output_dir": value}))


def test_the_end_file_holds_a_final_event_or_nothing():
    paths = {"path": "/m/x.safetensors", "state": "/m/x-state"}
    stopped = make_event("stopped", step=3, epoch=1, reason="disk", elapsed_s=1.5, **paths)
    line = (encode(stopped) + "\n").encode()
    assert decode_end_file(line + b"\0" * (END_FILE_BYTES - len(line))) == stopped
    assert decode_end_file(b"\0" * END_FILE_BYTES) is None  # the engine has not ended (or was killed)
    assert decode_end_file(encode(make_event("paused", step=1, epoch=1)).encode()) is None  # not an end
    assert decode_end_file(line[:-20]) is None  # a torn line is no end either
