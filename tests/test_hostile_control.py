"""Hostile run folders and control channels (issue 9, items 6, 18 and 19).

- A command is written only into the job's own FIFO: a symlink or a plain file put in its place
  is refused, and the file it points to is left untouched. Every folder loratui makes is
  owner-only whatever the umask, and a run folder that another user could have swapped or
  written into is refused by every command that uses it.
- A FIFO, a symlink to ``/dev/zero`` or a huge file where a run file (or the config) belongs
  neither hangs a command nor fills its memory: each says which file is wrong.
- A control command sent to an engine that dies, or that is suspended, does not wait for an
  answer that cannot come, and ends non-zero with the reason.

The CLI runs as a child process (as a person runs it), so that a regression that hangs on a FIFO
fails on the helper's time-out instead of hanging the suite.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from loratui.jobs import registry
from loratui.jobs.process import identity_of, is_suspended
from loratui.jobs.record import JobRecord, write_record
from tests.conftest import small_config, write_config
from tests.test_jobs import FINISHED, STARTED, fake_record, loratui, wait_for

# A stand-in engine for the control tests: it holds the run's FIFO open as the engine does, and
# then either dies as soon as a command arrives (as after a SIGKILL in the middle of a save) or
# stays alive and never answers.
FAKE_ENGINE = textwrap.dedent(
    """
    import os, select, sys
    fifo, mode = sys.argv[1], sys.argv[2]
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    keepalive = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    print("listening", flush=True)
    if mode == "die-on-command":
        select.select([reader], [], [])
        os._exit(9)
    select.select([], [], [], 600)
    """
)


@pytest.fixture(autouse=True)
def _own_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("LORATUI_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture
def engine_stand_in(tmp_path):
    """``start(mode)``: a job whose engine is a stand-in listening on its FIFO; (record, process)."""
    processes: list[subprocess.Popen] = []

    def start(mode: str) -> tuple[JobRecord, subprocess.Popen]:
        record = fake_record(tmp_path, [STARTED])  # its pid is set below, once the stand-in runs
        os.mkfifo(record.control_path, 0o600)
        process = subprocess.Popen(
            [sys.executable, "-c", FAKE_ENGINE, str(record.control_path), mode], stdout=subprocess.PIPE, text=True
        )
        processes.append(process)
        assert process.stdout.readline().strip() == "listening"
        me = identity_of(process.pid)
        record.pid, record.start_time = me.pid, me.start_time
        write_record(record, record.folder / "job.json")
        registry.register(record)
        return record, process

    yield start
    for process in processes:
        process.kill()
        process.wait()
        process.stdout.close()


def _sleeper_job(tmp_path: Path) -> tuple[JobRecord, subprocess.Popen]:
    """A job whose engine pid is alive (a sleeping process), so that commands may be sent to it."""
    sleeper = subprocess.Popen(["sleep", "600"])
    me = identity_of(sleeper.pid)
    return fake_record(tmp_path, [STARTED], pid=me.pid, start_time=me.start_time), sleeper


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# ------------------------------------------------------------------ item 6: the control channel


@pytest.mark.parametrize("planted", ["symlink", "plain file"])
def test_a_command_is_never_written_through_a_symlink_or_into_a_plain_file(tmp_path, planted):
    record, sleeper = _sleeper_job(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    victim.chmod(0o600)
    if planted == "symlink":
        record.control_path.symlink_to(victim)
        target = victim
    else:
        record.control_path.write_text("precious\n")
        target = record.control_path
    try:
        result = loratui("stop", record.job_id, "--timeout", "5", timeout=60)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert target.read_text() == "precious\n"  # not one byte written
    assert result.returncode == 2, result
    assert "control" in result.stderr and "nothing was written" in result.stderr
    assert ("symbolic link" if planted == "symlink" else "regular file, not a FIFO") in result.stderr
    assert "Traceback" not in result.stderr


def test_folders_and_run_files_loratui_makes_are_owner_only_whatever_the_umask(project, tmp_path, monkeypatch):
    from loratui.config import load_config
    from loratui.jobs.launch import start_job

    state = tmp_path / "fresh" / "state"  # neither exists yet: both are made by the launch
    monkeypatch.setenv("LORATUI_STATE_DIR", str(state))
    config = write_config(project, small_config(output={"log_dir": "logs/runs"}))
    project.chmod(0o755)
    previous = os.umask(0)
    try:
        job = start_job(config, load_config(config))
    finally:
        os.umask(previous)
    job.process.kill()
    job.process.wait()
    folders = [
        tmp_path / "fresh",
        state,
        state / "jobs",
        project / "logs",
        project / "logs" / "runs",
        job.record.folder,
    ]
    assert {str(folder): _mode(folder) for folder in folders} == {str(folder): 0o700 for folder in folders}
    files = [job.record.folder / name for name in ("events.jsonl", "engine.log", "control", "job.json")]
    files.append(state / "jobs" / f"{job.job_id}.json")
    assert {str(path): _mode(path) for path in files} == {str(path): 0o600 for path in files}
    assert _mode(project) == 0o755  # a folder that was there is the user's: left as it was


def _make_writable_by_others(folder: Path) -> None:
    folder.chmod(0o777)


def _make_a_symlink(folder: Path) -> None:
    moved = folder.with_name(folder.name + "-elsewhere")
    folder.rename(moved)
    folder.symlink_to(moved)


def _give_to_another_user(folder: Path) -> None:
    os.chown(folder, 65534, 65534)


UNSAFE_FOLDERS = [
    pytest.param(_make_writable_by_others, "is writable by other users (mode 777)", id="writable-by-others"),
    pytest.param(_make_a_symlink, "is a symbolic link", id="symlink"),
    pytest.param(
        _give_to_another_user,
        "belongs to another user (uid 65534)",
        id="another-users",
        marks=pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a folder away"),
    ),
]


@pytest.mark.parametrize(("make_unsafe", "reason"), UNSAFE_FOLDERS)
def test_a_run_folder_another_user_could_change_is_refused_by_every_command(
    tmp_path, engine_stand_in, make_unsafe, reason
):
    record, engine = engine_stand_in("die-on-command")
    make_unsafe(record.folder)
    job = record.job_id
    commands = (["stop", job], ["save", job], ["logs", job], ["logs", "--json", job], ["attach", "--no-tui", job])
    for command in commands:
        result = loratui(*command, timeout=60)
        assert result.returncode == 2, (command, result)
        assert f"refusing to use job {record.job_id}'s run folder: it {reason}" in result.stderr, command
        assert "Traceback" not in result.stderr
    assert engine.poll() is None  # no command reached it (it would have ended on one)


def test_the_engine_takes_commands_only_from_a_fifo_of_its_owner(tmp_path):
    from engine.control import ControlChannel
    from loratui.core.protocol import encode_command, make_command

    plain = tmp_path / "control"
    plain.write_bytes(encode_command(make_command("stop", "planted")))
    fifo = tmp_path / "real-fifo"
    os.mkfifo(fifo, 0o600)
    link = tmp_path / "link-to-fifo"
    link.symlink_to(fifo)
    for path in (plain, link):
        channel = ControlChannel(path)
        try:
            assert not channel.available, path
            assert channel.poll() == []  # the planted "stop" is never read as a command
        finally:
            channel.close()
    channel = ControlChannel(fifo)  # the FIFO itself still works
    try:
        assert channel.available
    finally:
        channel.close()


# ---------------------------------------------------------------- item 18: hostile run files


def _replace_with(path: Path, kind: str) -> None:
    path.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(path, 0o600)
    else:
        path.symlink_to("/dev/zero")


WHAT_IT_IS = {"fifo": "not a regular file", "dev-zero": "a symbolic link"}


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_an_events_file_that_is_a_fifo_or_dev_zero_never_hangs_or_fills_memory(tmp_path, kind):
    record = fake_record(tmp_path, [STARTED, FINISHED])
    _replace_with(record.events_path, kind)
    listing = loratui("jobs", timeout=60)
    assert listing.returncode == 0, listing
    assert record.job_id in listing.stdout
    for command in (["logs"], ["logs", "--json"], ["attach", "--no-tui"]):
        result = loratui(*command, record.job_id, timeout=60)
        assert result.returncode == 2, (command, result)
        assert str(record.events_path) in result.stderr and WHAT_IT_IS[kind] in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr


def test_the_dashboard_on_a_fifo_and_dev_zero_says_what_is_wrong_and_goes_on(
    tmp_path, private_tui_settings, monkeypatch
):
    import asyncio

    from tests import test_tui_dashboard as dash

    monkeypatch.setitem(sys.modules, "pynvml", None)  # no GPU reading to wait for
    log = dash.started()
    log.steps(1, 5)
    record = dash.run_folder(tmp_path, log)
    _replace_with(record.events_path, "fifo")
    _replace_with(record.log_path, "dev-zero")

    async def scenario():
        async with dash.make_app(record, log).run_test(size=(80, 24)) as pilot:
            await dash.loaded(pilot, gpu=False)
            assert str(record.events_path) in dash.notices(pilot.app)
            assert "not a regular file" in dash.notices(pilot.app)

    asyncio.run(scenario())


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_summary_or_a_registry_record_that_is_a_fifo_or_dev_zero_is_skipped(tmp_path, kind):
    record = fake_record(tmp_path, [STARTED, FINISHED])
    _replace_with(record.folder / "summary.json", kind)  # the snapshot: re-attach folds the events instead
    other = fake_record(tmp_path, [STARTED, FINISHED], job_id="other-20261122-101501")
    _replace_with(Path(os.environ["LORATUI_STATE_DIR"]) / "jobs" / f"{other.job_id}.json", kind)
    attached = loratui("attach", "--no-tui", record.job_id, timeout=60)
    assert attached.returncode == 0, attached
    assert "finished" in attached.stdout
    listing = loratui("jobs", timeout=60)
    assert listing.returncode == 0, listing
    assert record.job_id in listing.stdout and other.job_id not in listing.stdout


def test_events_are_read_in_bounded_steps_and_an_endless_line_is_dropped(tmp_path, monkeypatch):
    from loratui.core.protocol import encode, make_event
    from loratui.jobs import follow

    monkeypatch.setattr(follow, "READ_BYTES", 64)  # (256 MiB in real use)
    monkeypatch.setattr(follow, "MAX_LINE_BYTES", 200)
    steps = [
        encode(
            make_event(
                "step", step=n, epoch=1, loss=0.5, loss_avg=0.5, lr={}, s_per_step=0.1, samples_per_s=1.0, elapsed_s=0.1
            )
        )
        for n in (1, 2, 3)
    ]
    path = tmp_path / "events.jsonl"
    path.write_text(steps[0] + "\n" + "x" * 1000 + "\n" + steps[1] + "\n" + steps[2] + "\n")
    reader = follow.EventFileReader(path)
    chunk_sizes = []
    real_read = follow.EventFileReader._read_chunk

    def recorded(self):
        chunk = real_read(self)
        chunk_sizes.append(len(chunk))
        return chunk

    monkeypatch.setattr(follow.EventFileReader, "_read_chunk", recorded)
    assert [event["step"] for event in reader.read_all()] == [1, 2, 3]
    assert reader.bad_lines == 1  # the 1000-byte "line", never held whole
    assert max(chunk_sizes) == 64
    # A writer that is gone: follow drains the file past reads that end inside the long line.
    followed = [event["step"] for event in follow.follow(path, lambda: False, poll_s=0)]
    assert followed == [1, 2, 3]


@pytest.mark.parametrize(
    ("kind", "said"),
    [
        ("fifo", "is a FIFO, not a regular file"),
        ("dev-zero", "is a device, not a regular file"),
        ("huge", "is larger than 1 MiB"),
    ],
)
def test_a_config_that_is_a_fifo_a_device_or_huge_is_refused_by_check(tmp_path, kind, said):
    config = tmp_path / "loratui.toml"
    if kind == "huge":
        config.write_text("# " + "x" * (2 * 1024 * 1024) + "\n")
    else:
        _replace_with(config, kind)  # (a symlink the user gives is followed: it is their choice)
    result = loratui("check", str(config), timeout=60)
    assert result.returncode == 2, result
    assert f"{config}: not a config file: it {said}" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_files_of_another_user_are_not_read(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("only root can give a file away")
    record = fake_record(tmp_path, [STARTED, FINISHED])
    os.chown(record.events_path, 65534, 65534)
    result = loratui("logs", record.job_id, timeout=60)
    assert result.returncode == 2, result
    assert "it belongs to another user (uid 65534)" in result.stderr


# ------------------------------------------------------------- item 19: engines that cannot answer


def test_a_client_stops_waiting_as_soon_as_the_engine_dies(engine_stand_in):
    record, engine = engine_stand_in("die-on-command")
    # Without noticing the death it would wait the whole 600 s (and the helper's time-out fails it).
    result = loratui("save", record.job_id, "--timeout", "600", timeout=120)
    assert engine.poll() is not None
    assert result.returncode == 1, result
    assert f"job {record.job_id} ended before answering save: its engine (pid {record.pid}) is gone" in result.stderr
    assert f"loratui logs {record.job_id}" in result.stderr


def test_a_suspended_engine_is_named_not_waited_for(engine_stand_in):
    record, engine = engine_stand_in("silent")
    engine.send_signal(signal.SIGSTOP)
    wait_for(lambda: is_suspended(record.identity), what="the engine to be stopped")
    result = loratui("pause", record.job_id, "--timeout", "600", timeout=120)
    assert result.returncode == 1, result
    assert f"its engine (pid {record.pid}) is suspended (SIGSTOP)" in result.stderr
    assert f"kill -CONT {record.pid}" in result.stderr


def test_no_answer_in_time_from_a_live_engine_exits_non_zero_and_says_so(engine_stand_in):
    record, _engine = engine_stand_in("silent")
    result = loratui("save", record.job_id, "--timeout", "0.2", timeout=60)
    assert result.returncode == 1, result
    assert f"sent save to job {record.job_id}, but no answer came" in result.stderr


def test_an_engine_not_yet_reading_its_fifo_is_said_so_not_called_gone(tmp_path):
    record, sleeper = _sleeper_job(tmp_path)  # alive, but nobody holds the FIFO open (still starting up)
    os.mkfifo(record.control_path, 0o600)
    try:
        result = loratui("save", record.job_id, "--timeout", "600", timeout=120)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert result.returncode == 1, result
    assert f"job {record.job_id} is not listening for commands yet (its engine, pid {record.pid}," in result.stderr
