"""The EventWriter's observers (engine/events.py): each sees every event once it is written; one
that fails is switched off alone, said once, and never stops the run."""

from __future__ import annotations

import json
import logging

from engine.events import EventWriter
from loratui.core.snapshot import SNAPSHOT_FILE, SnapshotWriter, read_snapshot
from tests.conftest import Recorder


def step_fields(step: int) -> dict:
    return {
        "step": step,
        "epoch": 1,
        "loss": 0.5,
        "loss_avg": 0.5,
        "lr": {"unet": 1e-4},
        "s_per_step": 0.5,
        "samples_per_s": 8.0,
        "elapsed_s": step * 0.5,
    }


SAMPLE = {
    "step": 2,
    "epoch": 1,
    "path": "/p/samples/a.png",
    "index": 0,
    "prompt": "ohwx cat",
    "negative_prompt": "",
    "seed": 7,
    "width": 64,
    "height": 64,
    "steps": 20,
    "cfg_scale": 7.5,
    "guidance": None,
    "sampler": "euler_a",
    "trigger": "steps",
    "seconds": 0.5,
}


def started_fields() -> dict:
    return {
        "run_id": "r1",
        "config": {"network": {"rank": 8}},
        "config_dir": "/p",
        "dataset": {"images": 8},
        "total_steps": 4,
        "total_epochs": 1,
        "steps_per_epoch": 4,
        "start_step": 0,
        "start_epoch": 0,
        "device": "cpu",
        "device_name": "CPU",
        "mixed_precision": "no",
        "pid": 4242,
        "resumed_from": None,
        "elapsed_s": 0.0,
        "loss_history": [],
    }


def test_observers_see_each_event_in_turn_once_it_is_written():
    recorder = Recorder()
    writer = EventWriter(recorder)
    seen = []
    writer.add_observer(lambda e: seen.append(("first", e["step"], len(recorder.events))), "first")
    writer.add_observer(lambda e: seen.append(("second", e["step"], len(recorder.events))), "second")
    writer.emit("step", **step_fields(1))
    writer.emit("step", **step_fields(2))
    # Each observer is called after the line is in the stream (the snapshot's offset depends on it).
    assert seen == [("first", 1, 1), ("second", 1, 1), ("first", 2, 2), ("second", 2, 2)]


def test_a_failing_observer_is_switched_off_alone_and_said_once(caplog):
    recorder = Recorder()
    writer = EventWriter(recorder)
    calls, kept = [], []

    def breaks(event):
        calls.append(event["type"])
        raise OSError(28, "No space left on device")

    writer.add_observer(breaks, "TensorBoard logging")
    writer.add_observer(lambda e: kept.append(e["type"]), "the other one")
    with caplog.at_level(logging.ERROR, logger="engine.events"):
        for step in (1, 2, 3):
            writer.emit("step", **step_fields(step))
    assert calls == ["step"]  # never called again
    assert kept == ["step", "warning", "step", "step"]  # the other goes on, and sees the warning too
    assert [e["type"] for e in recorder.events] == ["step", "warning", "step", "step"]
    (warning,) = recorder.of("warning")
    assert warning["code"] == "observer_failed"
    assert warning["message"] == "TensorBoard logging stopped: OSError: [Errno 28] No space left on device"
    assert "training goes on" in warning["hint"]
    assert len([r for r in caplog.records if "TensorBoard logging failed" in r.getMessage()]) == 1


def test_nothing_follows_the_final_event_even_when_an_observer_fails_on_it():
    recorder = Recorder()
    writer = EventWriter(recorder)
    writer.add_observer(lambda e: 1 / 0, "a broken one")
    writer.emit("finished", step=3, epoch=1, path="/p/x.safetensors", elapsed_s=1.5)
    assert [e["type"] for e in recorder.events] == ["finished"]


def test_the_summary_snapshot_stays_exact_beside_a_failing_observer(tmp_path):
    events_path = tmp_path / "events.jsonl"
    with events_path.open("w", encoding="utf-8") as stream:
        writer = EventWriter(stream)
        writer.add_observer(lambda e: 1 / 0, "a broken one")  # before the snapshot: it must not take it down
        snapshot = SnapshotWriter(tmp_path / SNAPSHOT_FILE, stream.fileno())
        writer.add_observer(snapshot.observe, "the summary snapshot")
        writer.emit("run_started", **started_fields())
        for step in (1, 2):
            writer.emit("step", **step_fields(step))
        writer.emit("validation", step=2, epoch=1, loss=0.25, images=2)
        writer.emit("sample", **SAMPLE)
        writer.emit("checkpoint", path="/p/x.safetensors", bytes=10, epoch=1, step=2, kind="manual")
    summary, offset = read_snapshot(events_path)
    assert offset == events_path.stat().st_size  # covers every line, the warning included
    lines = [json.loads(line) for line in events_path.read_text().splitlines()]
    order = ["run_started", "warning", "step", "step", "validation", "sample", "checkpoint"]
    assert [e["type"] for e in lines] == order
    assert summary.step == 2 and [c.path for c in summary.checkpoints] == ["/p/x.safetensors"]
    assert summary.validations == [(2, 0.25)]
    assert [(s.path, s.step, s.index, s.prompt) for s in summary.samples] == [("/p/samples/a.png", 2, 0, "ohwx cat")]
    assert [w["code"] for w in summary.warnings] == ["observer_failed"]
