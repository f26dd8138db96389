"""Jobs that outlive the terminal: launch, detach, re-attach, control, and the faults of issue 3.

The slow tests start real engines (`loratui train --detach`) on the tiny model and do to them what
happens to real runs: SIGHUP to the launching terminal's process group, SIGKILL to the engine in
the middle of a save, SIGKILL to a viewer, two viewers at once, pause/save/resume/stop commands.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors import safe_open

from loratui.core.protocol import encode, make_event
from loratui.errors import UserError
from loratui.jobs import registry
from loratui.jobs.process import boot_id, host_name, identity_of, is_running, start_time
from loratui.jobs.record import JobRecord, write_record
from loratui.jobs.status import job_status
from tests.conftest import REPO, small_config, write_config

# ----------------------------------------------------------------------------- helpers


def loratui(*args: str, cwd: Path | None = None, timeout: float = 120, **popen) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "loratui.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_env(),
        timeout=timeout,
        **popen,
    )


def _env(**extra: str) -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **extra)


def events_of(record: JobRecord) -> list[dict]:
    lines = record.events_path.read_bytes().split(b"\n")
    return [json.loads(line) for line in lines[:-1] if line.strip()]


def wait_for(predicate, timeout: float = 120, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def steps_done(record: JobRecord) -> int:
    return max((e["step"] for e in events_of(record) if e["type"] == "step"), default=0)


def long_config(project: Path, **output) -> Path:
    """A run far longer than any test waits for (they stop it), without epoch saves unless asked."""
    data = small_config(training={"epochs": 500}, output={"save_every_n_epochs": 0, **output})
    return write_config(project, data)


def fake_record(tmp_path: Path, events: list[dict], pid: int | None = None, **changes) -> JobRecord:
    """A job record and run folder as the launcher writes them, for a job that is not running."""
    folder = tmp_path / "log" / changes.pop("job_id", "fake-20261122-101500")
    folder.mkdir(parents=True)
    (folder / "events.jsonl").write_text("".join(encode(e) + "\n" for e in events))
    proc = subprocess.Popen(["true"])
    proc.wait()
    pid = pid if pid is not None else proc.pid  # a pid that has just been freed
    record = JobRecord(
        job_id=folder.name,
        run_folder=str(folder),
        config=str(tmp_path / "loratui.toml"),
        pid=pid,
        start_time=12345,
        boot_id=boot_id(),
        host=host_name(),
        started_at=time.time(),
    )
    for name, value in changes.items():
        setattr(record, name, value)
    write_record(record, folder / "job.json")
    registry.register(record)
    return record


@pytest.fixture(autouse=True)
def _own_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("LORATUI_STATE_DIR", str(tmp_path / "state"))


FINISHED = make_event("finished", step=80, epoch=2, path="/p/ohwx.safetensors", elapsed_s=38.5)
STARTED = make_event(
    "run_started",
    run_id="r",
    config={},
    config_dir="/p",
    dataset={"images": 8},
    total_steps=80,
    total_epochs=2,
    steps_per_epoch=40,
    start_step=0,
    start_epoch=0,
    device="cpu",
    device_name="CPU",
    mixed_precision="no",
    pid=1,
    resumed_from=None,
    elapsed_s=0.0,
    loss_history=[],
)


# ------------------------------------------------------------------ process identity, state


def test_a_live_process_is_running_and_a_reused_pid_is_not():
    me = identity_of(os.getpid())
    assert is_running(me)
    assert not is_running(type(me)(me.pid, (me.start_time or 0) + 1, me.boot_id, me.host))  # same pid, other process
    assert not is_running(type(me)(me.pid, me.start_time, "another-boot", me.host))
    assert not is_running(type(me)(me.pid, me.start_time, me.boot_id, "another-host"))


def test_a_zombie_is_not_running():
    child = subprocess.Popen(["true"])
    identity = identity_of(child.pid)
    wait_for(lambda: not is_running(identity), 10, "the child to exit")  # exited but not yet reaped
    assert Path(f"/proc/{child.pid}").exists()
    child.wait()


def test_stale_record_whose_pid_now_belongs_to_another_process(tmp_path):
    other = subprocess.Popen(["sleep", "60"])
    try:
        record = fake_record(tmp_path, [STARTED], pid=other.pid, start_time=(start_time(other.pid) or 0) - 1)
        status = job_status(record)
        assert status.state == "failed" and "without a final event" in status.reason
        result = loratui("stop", record.job_id)
        assert result.returncode == 2 and "has failed; there is nothing to stop" in result.stderr
        assert other.poll() is None  # and the other process was left alone
    finally:
        other.kill()
        other.wait()


def test_states_from_events_and_records(tmp_path):
    assert job_status(fake_record(tmp_path, [STARTED, FINISHED], job_id="a-1")).state == "finished"
    gone = fake_record(tmp_path, [STARTED], job_id="b-1")
    shutil.rmtree(gone.folder)
    assert job_status(gone).state == "lost"
    rebooted = fake_record(tmp_path, [STARTED], job_id="c-1", boot_id="another-boot")
    assert job_status(rebooted).state == "lost" and "restarted" in job_status(rebooted).reason


def test_control_command_to_a_finished_job_is_a_clear_message(tmp_path):
    record = fake_record(tmp_path, [STARTED, FINISHED])
    for command in ("stop", "pause", "resume", "save"):
        result = loratui(command, record.job_id)
        assert result.returncode == 2, result.stderr
        assert f"already finished; there is nothing to {command}" in result.stderr
        assert "/p/ohwx.safetensors" in result.stderr and "Traceback" not in result.stderr


def test_finding_a_job_by_id_prefix_or_the_only_running_one(tmp_path):
    fake_record(tmp_path, [STARTED, FINISHED], job_id="ohwx-20261122-101500")
    fake_record(tmp_path, [STARTED, FINISHED], job_id="ohwx-20261122-111500")
    fake_record(tmp_path, [STARTED, FINISHED], job_id="style-20261122-101500")
    assert registry.find_job("style").job_id == "style-20261122-101500"
    assert registry.find_job("ohwx-20261122-11").job_id == "ohwx-20261122-111500"
    with pytest.raises(UserError, match="matches 2 jobs"):
        registry.find_job("ohwx")
    with pytest.raises(UserError, match="no job with an id starting 'nope'"):
        registry.find_job("nope")
    with pytest.raises(UserError, match=r"no job is running \(the latest, style-20261122-101500, has finished\)"):
        registry.find_job(None)
    assert registry.find_job(None, running_only_default=False).job_id == "style-20261122-101500"  # the newest


def test_jobs_lists_every_job_from_any_folder(tmp_path):
    fake_record(tmp_path, [STARTED, FINISHED], job_id="ohwx-20261122-101500")
    result = loratui("jobs", "--json", cwd=Path("/"))
    (job,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert job["id"] == "ohwx-20261122-101500" and job["state"] == "finished" and job["step"] == 80
    table = loratui("jobs", cwd=Path("/")).stdout
    assert "ohwx-20261122-101500" in table and "finished" in table and "80/80" in table


def test_a_run_folder_that_cannot_be_created_is_a_clear_error_and_nothing_starts(project):
    from loratui.config import load_config
    from loratui.jobs.launch import start_job

    (project / "a-file").write_text("not a folder")
    config = write_config(project, small_config(output={"log_dir": "a-file/log"}))
    with pytest.raises(UserError) as caught:
        start_job(config, load_config(config))
    assert caught.value.where == "output.log_dir" and "cannot create a run folder" in caught.value.message
    assert "nothing was started" in caught.value.fix
    assert registry.all_records() == []


# ----------------------------------------------------------------------- real engines


# -------------------------------------------------- ids, launches and the commands printed


def pasted(line: str, cwd: Path) -> list[str]:
    """The words ``loratui`` gets when ``line`` is pasted into bash (a function stands in for it)."""
    out = subprocess.run(
        ["bash", "-c", 'loratui() { printf "%s\\0" "$@"; }\n' + line], capture_output=True, cwd=cwd, check=True
    )
    return out.stdout.decode().split("\0")[:-1]


def test_job_ids_are_readable_words_a_shell_cannot_misread(project, monkeypatch):
    from loratui.config import load_config
    from loratui.jobs import launch

    monkeypatch.setattr(launch, "_timestamp", lambda: "20261201-133210")
    cfg = load_config(write_config(project, small_config(output={"name": "ohwx woman v1"})))
    assert launch.new_run_folder(cfg).name == "ohwx-woman-v1-20261201-133210"
    for name, stem in (
        ("-rf", "rf"),
        (".hidden", "hidden"),
        ("$(rm -rf ~) 'x'", "rm-rf-x"),
        ("café  über", "cafe-uber"),
        ("日本", "lora"),
        ("ohwx_v1.5", "ohwx_v1.5"),
    ):
        assert launch.job_id_stem(name) == stem, name


def test_two_jobs_started_in_the_same_second_get_different_ids(tmp_path, monkeypatch):
    """Two projects, the same output.name, the same second: each id is claimed in the registry."""
    from loratui.config import load_config
    from loratui.jobs import launch

    monkeypatch.setattr(launch, "_timestamp", lambda: "20261201-133210")
    ids = []
    for project in ("a", "b", "b"):
        (tmp_path / project).mkdir(exist_ok=True)
        ids.append(launch.new_run_folder(load_config(write_config(tmp_path / project, small_config()))).name)
    assert ids == ["test_lora-20261201-133210", "test_lora-20261201-133210-2", "test_lora-20261201-133210-3"]


@pytest.mark.slow
def test_a_name_that_looks_like_an_option_is_never_read_as_one(project):
    from loratui.config import load_config
    from loratui.jobs.launch import start_job

    config = write_config(project, small_config(output={"name": "-rf"}, dataset={"image_dir": "no-such-folder"}))
    job = start_job(config, load_config(config))
    assert job.job_id.startswith("rf-")
    # It read its arguments, loaded the config and refused it (the folder, and such a name too),
    # saying so in events: an option parser that took the id for an option would have written none.
    assert job.process.wait(timeout=300) == 2
    assert events_of(job.record)[-1]["type"] == "failed" and "usage:" not in job.log_path.read_text()
    assert job.record.command[-2:] == ["--", str(config.resolve())]


def _live_job(tmp_path: Path, config: Path, events: list[dict], job_id: str) -> tuple[JobRecord, subprocess.Popen]:
    """A registered job whose engine is alive (a sleep stands in for it)."""
    sleeper = subprocess.Popen(["sleep", "120"])
    record = fake_record(
        tmp_path,
        events,
        pid=sleeper.pid,
        job_id=job_id,
        start_time=start_time(sleeper.pid),
        config=str(config.resolve()),
        output_dir=str((config.parent / "model").resolve()),
        output_name="ohwx woman v1",
    )
    return record, sleeper


def test_a_second_launch_while_the_job_runs_is_refused_until_forced(project, tmp_path):
    from loratui.config import load_config
    from loratui.jobs.launch import running_job_for, start_job

    config = write_config(project, small_config(output={"name": "ohwx woman v1"}))
    record, sleeper = _live_job(tmp_path / "runs", config, [STARTED], "ohwx-woman-v1-20261201-133210")
    try:
        refused = loratui("train", str(config), "--detach", cwd=Path("/"))
        assert refused.returncode == 2, refused.stderr
        (line,) = refused.stderr.strip().splitlines()
        assert f"job {record.job_id} is still running from this config" in line and "--force" in line
        watch, stop = re.findall(r"`([^`]*)`", line)
        assert pasted(watch, project) == ["attach", record.job_id] and pasted(stop, project) == ["stop", record.job_id]
        assert [r.job_id for r in registry.all_records()] == [record.job_id]  # nothing was started
        # The wizard's Launch goes through start_job: refused the same way. So is another config
        # that writes the same files; a config writing other files is not.
        with pytest.raises(UserError, match="still running from this config"):
            start_job(config, load_config(config))
        same_files = write_config(project, small_config(output={"name": "ohwx woman v1"}), name="copy.toml")
        with pytest.raises(UserError, match=r"from .*loratui.toml, writing the same files \(ohwx woman v1 in "):
            start_job(same_files, load_config(same_files))
        other = write_config(project, small_config(output={"name": "ohwx man"}), name="other.toml")
        assert running_job_for(other, load_config(other)) is None

        forced = start_job(config, load_config(config), force=True)
        forced.process.kill()
        forced.process.wait()
        assert {r.job_id for r in registry.all_records()} == {record.job_id, forced.job_id}
    finally:
        sleeper.kill()
        sleeper.wait()
    assert running_job_for(config, load_config(config)) is None  # its engine is gone: free to start again


def test_a_paused_job_counts_as_running(project, tmp_path):
    from loratui.config import load_config
    from loratui.jobs.launch import refuse_a_second_run

    config = write_config(project, small_config(output={"name": "ohwx woman v1"}))
    paused = make_event("paused", step=3, epoch=1)
    record, sleeper = _live_job(tmp_path / "runs", config, [STARTED, paused], "ohwx-woman-v1-20261201-133210")
    try:
        with pytest.raises(UserError, match=f"job {record.job_id} is still paused from this config"):
            refuse_a_second_run(config, load_config(config))
    finally:
        sleeper.kill()
        sleeper.wait()


def test_every_printed_command_pastes_as_the_words_it_shows(tmp_path):
    """A project folder whose name has spaces, quotes and $(...): each command loratui prints for
    it is pasted into bash and must reach loratui as exactly the words meant, running nothing."""
    from loratui.core.summary import RunSummary
    from loratui.plain_progress import PlainProgress
    from loratui.tui.dashboard.outcome import outcome_lines
    from loratui.tui.dashboard.result import DashboardResult
    from loratui.tui.outcome import AppResult

    folder = tmp_path / "my $(touch pwned) 'lora' \"v1\""
    folder.mkdir()
    config = write_config(folder, small_config(dataset={"image_dir": "no such img"}))
    state = str(folder / "model" / "ohwx v1-step00000013-state")
    stopped = make_event(
        "stopped",
        step=13,
        epoch=1,
        path=state[: -len("-state")] + ".safetensors",
        state=state,
        reason="request",
        elapsed_s=5.0,
    )
    record = fake_record(folder, [STARTED, stopped], job_id="ohwx-v1-20261201-133210", config=str(config))
    resume = ["train", str(config), "--resume", state]

    out = io.StringIO()
    progress = PlainProgress(out, interactive=False, job_id=record.job_id, config=record.config)
    progress.handle(make_event("paused", step=13, epoch=1))
    progress.handle(stopped)
    assert pasted(re.search(r"\(resume: (.*)\)", out.getvalue())[1], tmp_path) == ["resume", record.job_id]
    assert pasted(re.search(r"Resume with: (.*)", out.getvalue())[1], tmp_path) == resume

    summary = RunSummary()
    for event in (STARTED, stopped):
        summary.apply(event)
    lines = [text for text, _ in outcome_lines(record, summary, engine_gone=False)]
    assert pasted(lines[lines.index("Resume with:") + 1], tmp_path) == resume

    (detached,) = DashboardResult(record.job_id, "running", None, None, "quit").farewell()
    attach, stop = re.fullmatch(r".*Re-attach: (.*)   stop it: (.*)", detached).groups()
    assert pasted(attach, tmp_path) == ["attach", record.job_id] and pasted(stop, tmp_path) == ["stop", record.job_id]

    app_lines = [text for text, _ in AppResult(saved=(config,), launched=(record.job_id,)).farewell()]
    last_command = re.compile(r"(loratui [^:]*)$")  # each line ends with its command
    assert pasted(last_command.search(app_lines[0])[1], tmp_path) == ["attach", record.job_id]
    assert pasted(last_command.search(app_lines[1])[1], tmp_path) == ["train", str(config)]

    late = loratui("stop", record.job_id, cwd=tmp_path)  # the job has stopped: how to go on
    assert pasted(late.stderr.split("resume it: ")[1].rstrip(")\n"), tmp_path) == resume

    # A relative config path: the command printed is absolute, so it works from any folder.
    broken = loratui("train", f"{folder.name}/loratui.toml", "--detach", cwd=folder.parent)
    assert broken.returncode == 2
    assert pasted(re.search(r"then run `(.*)` again", broken.stderr)[1], Path("/")) == ["check", str(config)]
    assert not list(tmp_path.rglob("pwned"))  # no $(...) ran anywhere


@pytest.mark.slow
def test_detached_job_survives_sighup_and_obeys_pause_save_resume_stop(project):
    config = long_config(project)
    # The "terminal": a shell in a session of its own, as sshd starts a login shell.
    shell = subprocess.Popen(
        ["sh", "-c", f'"{sys.executable}" -m loratui.cli train "{config}" --detach; sleep 600'],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        start_new_session=True,
        cwd=project,
    )
    job_id = shell.stdout.readline().strip()
    record = registry.find_job(job_id)
    os.killpg(shell.pid, signal.SIGHUP)  # the SSH link drops: the terminal's process group gets SIGHUP
    shell.wait(timeout=10)
    assert is_running(record.identity)
    wait_for(lambda: steps_done(record) >= 3, what="training steps after the SIGHUP")

    followers = [
        subprocess.Popen(
            [sys.executable, "-m", "loratui.cli", "logs", job_id, "--follow", "--json"],
            stdout=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for _ in range(2)
    ]
    paused = loratui("pause", job_id)
    assert paused.returncode == 0 and "paused after step" in paused.stdout, paused.stderr
    assert job_status(record).state == "paused"
    frozen = steps_done(record)
    time.sleep(1.5)
    assert steps_done(record) == frozen  # no training while paused

    saved = loratui("save", job_id)
    assert saved.returncode == 0, saved.stderr
    manual = project / "model" / f"test_lora-step{frozen:08d}.safetensors"
    assert manual.is_file() and (project / "model" / f"test_lora-step{frozen:08d}-state").is_dir()
    again = loratui("pause", job_id)
    assert again.returncode == 1 and "already paused" in again.stderr

    followers[0].kill()  # a viewer killed with SIGKILL: the job does not care
    assert loratui("resume", job_id).returncode == 0
    wait_for(lambda: steps_done(record) >= frozen + 3, what="training to go on after resume")

    stopped = loratui("stop", job_id, "--wait", timeout=300)
    assert stopped.returncode == 3, stopped.stdout + stopped.stderr
    state = str(project / "model" / f"test_lora-step{events_of(record)[-1]['step']:08d}-state")
    resume = stopped.stdout.split("resume with: ")[1].strip()
    assert pasted(resume, Path("/")) == ["train", str(config), "--resume", state]
    events = events_of(record)
    assert events[-1]["type"] == "stopped" and events[-1]["reason"] == "request"
    kinds = [e["type"] for e in events]
    assert kinds.index("paused") < kinds.index("resumed") < kinds.index("stopped")
    answers = [(e["command"], e["ok"]) for e in events if e["type"] == "control"]
    assert answers == [("pause", True), ("save", True), ("pause", False), ("resume", True), ("stop", True)]
    # The surviving viewer saw every event, and ended by itself with the job.
    out, _ = followers[1].communicate(timeout=30)
    assert [json.loads(line) for line in out.splitlines()] == events
    assert job_status(record).state == "stopped"
    late = loratui("stop", job_id)
    assert late.returncode == 2 and "already stopped" in late.stderr and "--resume" in late.stderr

    from loratui.jobs.rebuild import rebuild

    summary, _ = rebuild(record.events_path)
    assert summary.state == "stopped" and summary.paused_total_s >= 1.5 and summary.step == events[-1]["step"]
    # The engine kept a snapshot of that summary up to its last event: re-attaching reads no events.
    from loratui.core.snapshot import read_snapshot

    snapshot, offset = read_snapshot(record.events_path)
    assert offset == record.events_path.stat().st_size and snapshot.state == "stopped"
    full, _ = rebuild(record.events_path, use_snapshot=False)
    assert (snapshot.step, snapshot.loss_min, snapshot.history.count, len(snapshot.checkpoints)) == (
        full.step,
        full.loss_min,
        full.history.count,
        len(full.checkpoints),
    )


@pytest.mark.slow
def test_ctrl_c_detaches_the_viewer_and_attach_picks_the_job_up_again(project):
    config = long_config(project)
    viewer = subprocess.Popen(
        [sys.executable, "-m", "loratui.cli", "train", str(config), "--no-tui"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=project,
    )
    first = viewer.stdout.readline()
    assert first.startswith("Job "), first
    job_id = first.split()[1].rstrip(":")
    record = registry.find_job(job_id)
    wait_for(lambda: steps_done(record) >= 2, what="steps")
    viewer.send_signal(signal.SIGINT)
    _, err = viewer.communicate(timeout=30)
    assert viewer.returncode == 0 and "Detached" in err and f"loratui attach {job_id}" in err
    before = steps_done(record)
    wait_for(lambda: steps_done(record) > before + 2, what="the job to go on without its viewer")

    attached = subprocess.Popen(
        [sys.executable, "-m", "loratui.cli", "attach", "--no-tui"], stdout=subprocess.PIPE, text=True, env=_env()
    )  # no id: the one running job
    summary_line = attached.stdout.readline()
    assert summary_line.startswith(f"Job {job_id}: running, step ") and "ETA" in summary_line
    attached.kill()
    attached.wait()
    assert is_running(record.identity)
    assert loratui("stop", job_id, "--wait", timeout=300).returncode == 3


@pytest.mark.slow
def test_sigkill_in_the_middle_of_a_save_leaves_the_last_checkpoint_intact(project):
    config = write_config(project, small_config(training={"epochs": 50}, output={"save_every_n_epochs": 1}))
    result = subprocess.run(
        [sys.executable, "-m", "loratui.cli", "train", str(config), "--detach"],
        capture_output=True,
        text=True,
        env=_env(LORATUI_TEST_SAVE_DELAY_S="1.5"),
        cwd=project,
        timeout=60,
    )
    record = registry.find_job(result.stdout.strip())
    model = project / "model"
    first = model / "test_lora-000001.safetensors"
    wait_for(lambda: (model / "test_lora-000001-state").is_dir(), what="the first epoch's files")
    # The second save holds its temp file open for 1.5 s before the rename: kill it right there.
    temp = wait_for(lambda: list(model.glob(".test_lora-000002.safetensors.*.tmp")), what="the second save")
    os.kill(record.pid, signal.SIGKILL)
    wait_for(lambda: not is_running(record.identity), 10, "the engine to die")

    assert not (model / "test_lora-000002.safetensors").exists()  # nothing half-written under a final name
    with safe_open(str(first), framework="pt") as handle:  # the last good checkpoint is complete
        assert handle.metadata()["ss_epoch"] == "1" and len(list(handle.keys())) > 0
    progress = json.loads((model / "test_lora-000001-state" / "progress.json").read_text())
    assert progress["epoch"] == 1
    status = job_status(record)
    assert status.state == "failed" and "without a final event" in status.reason
    listed = json.loads(loratui("jobs", "--json").stdout.splitlines()[-1])
    assert listed["state"] == "failed"
    assert temp[0].name.startswith(".")  # a leftover temp file is hidden and never loaded by any UI

    # The next engine to use the folder removes it first; then it refuses to overwrite epoch 1's files.
    again = subprocess.run(
        [sys.executable, "-m", "engine", str(config)],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=project,
        timeout=300,
        check=False,
    )
    assert again.returncode == 2 and not temp[0].exists()
    error = [json.loads(line) for line in again.stdout.splitlines() if '"error"' in line][-1]
    assert "output.name: model/test_lora-000001.safetensors exists from an earlier run" in error["message"]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/dev/full").is_char_device(), reason="needs the /dev/full device (Linux)")
def test_engine_whose_events_cannot_be_written_saves_and_stops(project):
    """A full disk under the run folder: /dev/full fails every write with ENOSPC."""
    config = write_config(project, small_config(training={"epochs": 50}))
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "engine", str(config)],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            cwd=project,
            timeout=300,
        )
    assert result.returncode == 3, result.stderr[-2000:]
    assert "cannot write events" in result.stderr
    states = list((project / "model").glob("test_lora-step*-state"))
    assert len(states) == 1 and (states[0] / "progress.json").is_file()  # nothing lost: resumable


def test_gpu_command_says_plainly_when_there_is_no_nvidia_gpu():
    if Path("/proc/driver/nvidia").exists():
        pytest.skip("this machine has an NVIDIA driver")
    result = loratui("gpu")
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert result.stdout.lower().startswith("no nvidia gpu")
