"""Tests for loratui.jobs.follow: reading a growing events.jsonl, as written by a live (or dead) engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from loratui.core.protocol import PROTOCOL_VERSION, encode, make_event
from loratui.jobs.follow import EventFileReader, follow

REPO = Path(__file__).resolve().parent.parent


def line(event_type: str, **fields) -> bytes:
    return (encode(make_event(event_type, **fields)) + "\n").encode("utf-8")


def step(n: int) -> bytes:
    return line(
        "step",
        step=n,
        epoch=1,
        loss=1.0 / n,
        loss_avg=1.0,
        lr={"unet": 1e-4},
        s_per_step=0.1,
        samples_per_s=40.0,
        elapsed_s=0.1 * n,
    )


FINISHED = line("finished", step=3, epoch=1, path="/tmp/x.safetensors", elapsed_s=0.3)


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)


def steps_of(events: list[dict]) -> list[int]:
    return [e["step"] for e in events if e["type"] == "step"]


class Calls:
    """is_alive that answers from a list and then repeats its last answer; counts the calls."""

    def __init__(self, *answers: bool) -> None:
        self.answers = list(answers)
        self.count = 0

    def __call__(self) -> bool:
        self.count += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


# ------------------------------------------------------------------------- EventFileReader


def test_reader_returns_only_complete_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    third = step(3)
    path.write_bytes(step(1) + step(2) + third[:25])
    reader = EventFileReader(path)
    assert steps_of(reader.read_new()) == [1, 2]
    assert reader.read_new() == []  # the partial line is not an event yet
    append(path, third[25:-1])  # everything but the newline
    assert reader.read_new() == []
    append(path, b"\n")
    events = reader.read_new()
    assert steps_of(events) == [3]
    assert events[0] == json.loads(third)
    assert reader.read_new() == []
    assert reader.bad_lines == 0


def test_reader_joins_a_multibyte_character_split_between_reads(tmp_path):
    path = tmp_path / "events.jsonl"
    data = line("warning", code="check", message="dossier « été » vide", hint="ajoutez des images")
    cut = data.index("é".encode()) + 1  # inside the two bytes of "é"
    path.write_bytes(data[:cut])
    reader = EventFileReader(path)
    assert reader.read_new() == []
    append(path, data[cut:])
    assert [e["message"] for e in reader.read_new()] == ["dossier « été » vide"]
    assert reader.bad_lines == 0


def test_offsets_let_a_second_reader_start_mid_file(tmp_path):
    path = tmp_path / "events.jsonl"
    first_line = step(1)  # events carry a timestamp, so keep the exact bytes to find the boundary
    path.write_bytes(first_line + step(2))
    first = EventFileReader(path)
    assert steps_of(first.read_new()) == [1, 2]
    assert first.offset == path.stat().st_size
    append(path, step(3) + step(4))
    second = EventFileReader(path, offset=first.offset)
    assert steps_of(second.read_new()) == [3, 4]
    assert steps_of(first.read_new()) == [3, 4]  # the first one moves on independently
    third = EventFileReader(path, offset=len(first_line))  # any line boundary works
    assert steps_of(third.read_new()) == [2, 3, 4]
    assert second.bad_lines == third.bad_lines == 0


def test_invalid_lines_are_counted_and_skipped(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(
        step(1)
        + b"Loading weights: 100%|#####| 52/52\n"  # stray library output
        + b'{"v":1,"type":"no_such_event","t":1.0}\n'  # unknown type at the current version
        + b'{"v":1,"type":"eval","t":1.0,"step":"one","epoch":0,"loss":1.0}\n'  # wrong field type
        + b"[1,2,3]\n"  # JSON, but not an object
        + b'{"v":1,"type":"eval","t":1.0,"step":1,"epoch":0,"loss":NaN}\n'  # NaN
        + b"\xff\xfe not utf-8\n"
        + b"\n   \n"  # blank lines: skipped, not bad
        + step(2)
    )
    reader = EventFileReader(path)
    assert steps_of(reader.read_new()) == [1, 2]
    assert reader.bad_lines == 6


def test_newer_version_events_pass_through_the_reader(tmp_path):
    path = tmp_path / "events.jsonl"
    newer = json.dumps({"v": PROTOCOL_VERSION + 1, "type": "lr_changed", "t": 1.0, "lr": 0.1}).encode() + b"\n"
    path.write_bytes(step(1) + newer + step(2))
    reader = EventFileReader(path)
    assert [e["type"] for e in reader.read_new()] == ["step", "lr_changed", "step"]
    assert reader.bad_lines == 0


def test_missing_file_yields_nothing_until_it_appears(tmp_path):
    path = tmp_path / "events.jsonl"
    reader = EventFileReader(path)
    assert reader.read_new() == []
    assert reader.read_new() == []
    assert reader.offset == 0
    path.write_bytes(step(1))
    assert steps_of(reader.read_new()) == [1]


@pytest.mark.parametrize(
    "bad",
    [b'{"v":1,"type":[],"t":1}', b'{"v":1,"type":"eval","t":1,"step":' + b"1" * 5000 + b"}", b"[" * 100_000],
    ids=["list_type", "huge_int", "deep_nesting"],
)
def test_reader_survives_pathological_lines(tmp_path, bad):
    path = tmp_path / "events.jsonl"
    path.write_bytes(step(1) + bad + b"\n" + step(2))
    reader = EventFileReader(path)
    assert steps_of(reader.read_new()) == [1, 2]
    assert reader.bad_lines == 1


# ----------------------------------------------------------------------------------- follow


@pytest.mark.timeout(30)
def test_follow_stops_at_the_final_event_even_if_more_lines_follow(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(step(1) + step(2) + FINISHED + step(4) + line("eval", step=4, epoch=1, loss=0.5))
    events = list(follow(path, lambda: True, poll_s=0.01))
    assert [e["type"] for e in events] == ["step", "step", "finished"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("final", ["finished", "stopped", "failed"])
def test_follow_stops_at_each_kind_of_final_event(tmp_path, final):
    fields = {
        "finished": dict(step=1, epoch=1, path="/x.safetensors", elapsed_s=1.0),
        "stopped": dict(step=1, epoch=1, path=None, state=None, reason="signal", elapsed_s=1.0),
        "failed": dict(step=1, message="boom"),
    }[final]
    path = tmp_path / "events.jsonl"
    path.write_bytes(step(1) + line(final, **fields) + step(2))
    assert [e["type"] for e in follow(path, lambda: True, poll_s=0.01)] == ["step", final]


@pytest.mark.timeout(30)
def test_follow_drains_the_file_when_the_writer_is_gone(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(step(1) + step(2) + step(3)[:-1])  # no final event; last line cut short
    events = list(follow(path, lambda: False, poll_s=0.01))
    assert steps_of(events) == [1, 2]


@pytest.mark.timeout(30)
def test_follow_keeps_polling_while_alive_and_stops_once_dead_and_drained(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(step(1))
    is_alive = Calls(True, True, True, False)
    events = list(follow(path, is_alive, poll_s=0.001))
    assert steps_of(events) == [1]
    assert is_alive.count >= 4  # it did not give up while the writer was alive


@pytest.mark.timeout(30)
def test_follow_of_a_missing_file_and_a_dead_writer_yields_nothing(tmp_path):
    assert list(follow(tmp_path / "never.jsonl", lambda: False, poll_s=0.01)) == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("with_final", [True, False])
def test_follow_picks_up_lines_appended_while_it_runs(tmp_path, with_final):
    path = tmp_path / "events.jsonl"
    total = 40

    def writer() -> None:
        for n in range(1, total + 1):
            data = step(n)
            half = len(data) // 2
            append(path, data[:half])  # lines arrive in pieces, as from a real pipe
            time.sleep(0.001)
            append(path, data[half:])
            time.sleep(0.002)
        if with_final:
            append(path, FINISHED)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        # Without a final event the thread's death ends the run: everything written before it
        # died must still arrive.
        is_alive = (lambda: True) if with_final else thread.is_alive
        events = list(follow(path, is_alive, poll_s=0.001))
    finally:
        thread.join(timeout=30)
    assert steps_of(events) == list(range(1, total + 1))
    assert events[-1]["type"] == ("finished" if with_final else "step")


# --------------------------------------------------------------------- a real child process

CHILD = textwrap.dedent(
    """
    import sys, time
    from loratui.core.protocol import encode, make_event

    path, mode = sys.argv[1], sys.argv[2]
    with open(path, "a", encoding="utf-8") as out:
        def emit(event_type, **fields):
            out.write(encode(make_event(event_type, **fields)) + "\\n")
            out.flush()

        emit("status", phase="loading_model", message="loading")
        for n in range(1, 6):
            time.sleep(0.02)
            emit("step", step=n, epoch=1, loss=1.0 / n, loss_avg=1.0, lr={"unet": 1e-4},
                 s_per_step=0.02, samples_per_s=200.0, elapsed_s=0.02 * n)
        if mode == "finish":
            time.sleep(0.02)
            emit("finished", step=5, epoch=1, path="/tmp/child.safetensors", elapsed_s=0.1)
        else:
            half = encode(make_event("epoch_end", epoch=1, step=5, loss_avg=0.5, elapsed_s=0.1))
            out.write(half[: len(half) // 2])
            out.flush()
            print("ready", flush=True)
            time.sleep(120)  # the parent kills it here
    """
)


def start_child(path: Path, mode: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), mode], cwd=str(REPO), env=env, stdout=subprocess.PIPE, text=True
    )


@pytest.mark.timeout(60)
def test_follow_a_real_child_process_to_its_final_event(tmp_path):
    path = tmp_path / "events.jsonl"
    proc = start_child(path, "finish")
    try:
        events = list(follow(path, lambda: proc.poll() is None, poll_s=0.005))
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert [e["type"] for e in events] == ["status"] + ["step"] * 5 + ["finished"]
    assert steps_of(events) == [1, 2, 3, 4, 5]
    times = [e["t"] for e in events]
    assert times == sorted(times)


@pytest.mark.timeout(60)
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_follow_a_child_killed_in_the_middle_of_a_line(tmp_path):
    path = tmp_path / "events.jsonl"
    proc = start_child(path, "die")
    killer_saw: list[str] = []

    def kill_when_ready() -> None:
        killer_saw.append(proc.stdout.readline().strip())  # the half line is flushed by then
        proc.send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill_when_ready)
    killer.start()
    try:
        events = list(follow(path, lambda: proc.poll() is None, poll_s=0.005))  # must not raise
    finally:
        killer.join(timeout=30)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
    assert killer_saw == ["ready"]
    assert proc.returncode == -signal.SIGKILL
    assert not path.read_bytes().endswith(b"\n")  # the file really ends in a partial line
    assert [e["type"] for e in events] == ["status"] + ["step"] * 5  # and it was not yielded
    assert steps_of(events) == [1, 2, 3, 4, 5]
