"""The jobs layer against what issue 9 did to it: a run folder removed under a live engine (item 17),
attach on a dead job, command-line paths and long names (item 20), damaged registry records, event
logs and summary snapshots (item 15). Every command answers with the truth in one plain line, never
a traceback and never a wait for lines that cannot come.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loratui.cli import main
from loratui.core.protocol import make_event
from loratui.core.snapshot import SNAPSHOT_FILE, read_snapshot, write_snapshot
from loratui.core.summary import RunSummary
from loratui.jobs import registry
from loratui.jobs.process import is_running, start_time, terminate
from loratui.jobs.record import DamagedRecord, load_record
from loratui.jobs.status import job_status
from tests.conftest import REPO, small_config, write_config
from tests.test_jobs import FINISHED, STARTED, events_of, fake_record, long_config, loratui, steps_done, wait_for


@pytest.fixture(autouse=True)
def _own_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("LORATUI_STATE_DIR", str(tmp_path / "state"))


def step_event(step: int) -> dict:
    return make_event(
        "step",
        step=step,
        epoch=1,
        loss=1.0 - step / 100,
        loss_avg=1.0,
        lr={"unet": 1e-3},
        s_per_step=0.5,
        samples_per_s=8.0,
        elapsed_s=step * 0.5,
    )


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------- item 17: the run folder is removed


def test_a_job_whose_run_folder_was_removed_is_still_stopped_by_signal(project):
    config = long_config(project)
    started = loratui("train", str(config), "--detach")
    assert started.returncode == 0, started.stderr
    record = registry.find_job(started.stdout.split()[0])
    try:
        wait_for(lambda: steps_done(record) >= 1, what="the first step")
        shutil.rmtree(record.folder)

        (listed,) = [json.loads(line) for line in loratui("jobs", "--json").stdout.splitlines()]
        assert listed["state"] == "running" and "was removed" in listed["reason"]
        assert f"loratui stop {record.job_id}" in listed["reason"]

        attach = loratui("attach", "--no-tui", record.job_id, timeout=60)  # said at once, no wait on "starting"
        assert attach.returncode == 2 and "Traceback" not in attach.stderr
        assert f"run folder {record.folder} was removed while its engine (pid {record.pid}) runs on" in attach.stderr
        assert f"loratui stop {record.job_id}" in attach.stderr

        pause = loratui("pause", record.job_id)
        assert pause.returncode == 2 and "it can no longer pause" in pause.stderr

        stop = loratui("stop", record.job_id, "--wait")
        assert stop.returncode == 3, stop.stdout + stop.stderr
        assert "was sent SIGTERM" in stop.stdout
        saved = [line.strip() for line in stop.stdout.splitlines() if line.startswith("  ")]
        lora = next(Path(path) for path in saved if path.endswith(".safetensors"))
        assert lora.parent == project / "model" and lora.name.startswith("test_lora-step") and lora.stat().st_size
        state = next(Path(path) for path in saved if path.endswith("-state"))
        assert (state / "progress.json").is_file()
        assert f"--resume {state}" in stop.stdout
        assert not is_running(record.identity)
        assert job_status(record).state == "lost"
    finally:
        if is_running(record.identity):
            os.kill(record.pid, signal.SIGKILL)


def test_a_removed_run_folder_never_makes_stop_signal_a_reused_pid(tmp_path):
    other = subprocess.Popen(["sleep", "60"])
    try:
        record = fake_record(tmp_path, [STARTED], pid=other.pid, start_time=(start_time(other.pid) or 0) - 1)
        shutil.rmtree(record.folder)
        assert job_status(record).state == "lost"
        assert not terminate(record.identity)
        result = loratui("stop", record.job_id)
        assert result.returncode == 2 and "has been lost; there is nothing to stop" in result.stderr
        assert other.poll() is None  # the process that got the pid was left alone
    finally:
        other.kill()
        other.wait()


def test_a_job_folder_removed_after_its_engine_died_is_lost_and_attach_says_so(tmp_path, capsys):
    record = fake_record(tmp_path, [STARTED, step_event(1)])
    shutil.rmtree(record.folder)
    code, out, err = run_cli(capsys, "attach", "--no-tui", record.job_id)
    assert code == 2 and out == ""
    assert f"job {record.job_id} is lost: its run folder {record.folder} is gone" in err


# ----------------------------------------------------------------- item 20: attach, paths, names


def test_attach_on_a_dead_job_shows_how_it_ended_from_the_first_line(tmp_path, capsys):
    record = fake_record(tmp_path, [STARTED, step_event(1), step_event(2)])  # its engine's pid is free
    code, out, err = run_cli(capsys, "attach", "--no-tui", record.job_id)
    first = out.splitlines()[0]
    assert code == 1
    assert first.startswith(f"Job {record.job_id}: failed (the engine (pid {record.pid}) ended without a final event")
    assert "step 2/80" in first and "running" not in first and "ETA" not in first


def test_resume_typed_on_the_command_line_is_read_from_the_current_folder(project, monkeypatch, capsys):
    write_config(project, small_config())
    monkeypatch.chdir(project.parent)
    typed = f"{project.name}/model/none-state"
    code, _, err = run_cli(capsys, "train", f"{project.name}/loratui.toml", "--resume", typed, "--detach")
    assert code == 2
    assert f"{project / 'model' / 'none-state'} does not exist" in err
    assert f"{project.name}/{project.name}" not in err
    assert registry.all_records() == []


def test_the_engine_reads_resume_from_the_current_folder_too(project):
    write_config(project, small_config())
    typed = f"{project.name}/model/none-state"
    result = subprocess.run(
        [sys.executable, "-m", "engine", f"--resume={typed}", "--", f"{project.name}/loratui.toml"],
        capture_output=True,
        text=True,
        cwd=project.parent,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=120,
    )
    (failed,) = [event for event in map(json.loads, result.stdout.splitlines()) if event["type"] == "failed"]
    assert result.returncode == 2
    assert f"{project / 'model' / 'none-state'} does not exist" in failed["message"]


def test_an_output_name_too_long_for_its_files_is_refused_before_any_job_record(project, capsys):
    from loratui.outputs import output_name_problems

    config = write_config(project, small_config(output={"name": "a" * 220}))
    code, _, err = run_cli(capsys, "train", str(config), "--detach")
    assert code == 2 and "output.name: name is 220 bytes long" in err
    assert "job record" not in err and "free disk space" not in err
    assert registry.all_records() == [] and not (project / "log").exists()

    # The longest name that passes the check gives a job id, a run folder and a record that fit.
    from loratui.config import load_config
    from loratui.jobs.launch import new_run_folder
    from loratui.jobs.process import identity_of
    from loratui.jobs.record import JobRecord, write_record

    longest = next(n for n in range(255, 0, -1) if not output_name_problems("a" * n))
    cfg = load_config(write_config(project, small_config(output={"name": "a" * longest})))
    folder = new_run_folder(cfg)
    me = identity_of(os.getpid())
    record = JobRecord(folder.name, str(folder), str(config), me.pid, me.start_time, me.boot_id, me.host, time.time())
    write_record(record, folder / "job.json")
    registry.register(record)
    assert [found.job_id for found in registry.all_records()] == [folder.name]


# ------------------------------------------------------- item 15: damaged records, logs, snapshots


def _damaged_records(good: Path) -> dict[str, bytes]:
    """Registry files that are no record, by name: each as the issue's campaign left them."""
    record = json.loads(good.read_text())

    def changed(**fields) -> bytes:
        return json.dumps({**record, **fields}).encode()

    return {
        "started-text.json": changed(job_id="started-text", started_at="x"),
        "folder-number.json": changed(job_id="folder-number", run_folder=123),
        "pid-minus-one.json": changed(job_id="pid-minus-one", pid=-1),
        "pid-huge.json": changed(job_id="pid-huge", pid=10**400),
        "no-pid.json": json.dumps({k: v for k, v in record.items() if k != "pid"}).encode(),
        "deep.json": b"[" * 2000 + b"]" * 2000,
        "a-list.json": b"[1, 2]",
        "not-utf8.json": b"\xff\xfe{",
        "time-inf.json": changed(job_id="time-inf", started_at=1e308),
    }


def test_a_damaged_job_record_is_skipped_and_said_and_the_others_still_work(tmp_path, capsys):
    good = fake_record(tmp_path, [STARTED, FINISHED], job_id="good-20261122-101500")
    folder = registry.registry_dir()
    damaged = _damaged_records(folder / f"{good.job_id}.json")
    for name, data in damaged.items():
        (folder / name).write_bytes(data)
    (folder / "claimed-20261122-101501.json").write_bytes(b"")  # a launch claiming its id: not damage

    code, out, err = run_cli(capsys, "jobs")
    assert code == 0 and good.job_id in out
    warnings = err.splitlines()
    assert len(warnings) == len(damaged)
    for name in damaged:
        assert sum(str(folder / name) in line for line in warnings) == 1
    assert 'started_at is "x", not a time' in err and "run_folder is 123, not an absolute path" in err
    assert "pid is -1, not a process id" in err and "pid is missing" in err and "claimed" not in err

    code, out, _ = run_cli(capsys, "jobs", "--json")
    assert code == 0 and [json.loads(line)["id"] for line in out.splitlines()] == [good.job_id]
    code, out, _ = run_cli(capsys, "attach", "--no-tui", good.job_id)
    assert code == 0 and "finished, step 80/80" in out
    code, out, _ = run_cli(capsys, "logs", good.job_id)
    assert code == 0 and "Finished: /p/ohwx.safetensors" in out
    code, _, err = run_cli(capsys, "attach", "started-text")
    assert code == 2 and f"the job record {folder / 'started-text.json'} cannot be used" in err

    with pytest.raises(DamagedRecord, match="started_at"):
        load_record(folder / "started-text.json")


@pytest.mark.parametrize("damage", ["missing", "folder"])
def test_an_event_log_that_is_missing_or_a_folder_is_one_line_for_every_reader(tmp_path, capsys, damage):
    record = fake_record(tmp_path, [STARTED, FINISHED])
    record.events_path.unlink()
    if damage == "folder":
        record.events_path.mkdir()
    said = "is missing" if damage == "missing" else "is a folder"
    for argv in (["logs", "--json"], ["logs"], ["logs", "-f"], ["attach", "--no-tui"]):
        code, out, err = run_cli(capsys, *argv, record.job_id)
        assert code == 2 and out == "", argv
        assert err.startswith("error: ") and said in err and str(record.events_path) in err, argv
        assert len(err.strip().splitlines()) == 1, argv


def _snapshot_of(record) -> dict:
    summary = RunSummary()
    summary.apply_all(events_of(record))
    path = record.events_path.with_name(SNAPSHOT_FILE)
    write_snapshot(path, summary, record.events_path.stat().st_size)
    return json.loads(path.read_text())


DAMAGE = {
    "negative offset": lambda s: s.update(offset=-5),
    "offset past the end": lambda s: s.update(offset=10**9),
    "offset as text": lambda s: s.update(offset="5"),
    "offset true": lambda s: s.update(offset=True),
    "step as text": lambda s: s["summary"].update(step="abc"),
    "state unknown": lambda s: s["summary"].update(state="exploded"),
    "finished without its final": lambda s: s["summary"].update(final=None),
    "final not an event": lambda s: s["summary"].update(final={"type": "finished"}),
    "lr as text": lambda s: s["summary"].update(lr={"unet": "fast"}),
    "history sums as text": lambda s: s["summary"]["history"].update(sums="x"),
    "history odd points": lambda s: s["summary"]["history"].update(max_points=3),
    "history width zero": lambda s: s["summary"]["history"].update(width=0),
    "eta durations as text": lambda s: s["summary"]["eta"].update(durations=["slow"]),
    "checkpoint without path": lambda s: s["summary"].update(checkpoints=[{"step": 1}]),
    "a warning that is a number": lambda s: s["summary"].update(warnings=[1]),
    "evals of one": lambda s: s["summary"].update(evals=[[1]]),
    "an extra field": lambda s: s["summary"].update(surprise=1),
    "summary a list": lambda s: s.update(summary=[]),
}


def test_a_damaged_summary_snapshot_is_not_used_and_attach_rebuilds_from_the_events(tmp_path, capsys):
    record = fake_record(tmp_path, [STARTED, step_event(1), step_event(2), FINISHED])
    intact = _snapshot_of(record)
    path = record.events_path.with_name(SNAPSHOT_FILE)
    assert read_snapshot(record.events_path) is not None  # the engine's own snapshot is used
    for what, damage in DAMAGE.items():
        payload = json.loads(json.dumps(intact))
        damage(payload)
        path.write_text(json.dumps(payload))
        assert read_snapshot(record.events_path) is None, what
        code, out, err = run_cli(capsys, "attach", "--no-tui", record.job_id)
        assert code == 0 and "Traceback" not in err, what
        assert out.startswith(f"Job {record.job_id}: finished, step 80/80"), what
