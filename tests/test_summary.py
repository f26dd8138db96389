"""The summary a dashboard shows: folding events, re-attaching fast to long logs, the ETA."""

from __future__ import annotations

import pytest

from loratui.core.history import LossHistory
from loratui.core.summary import RunSummary
from loratui.jobs import rebuild as rebuild_module
from loratui.jobs.follow import EventFileReader
from loratui.jobs.rebuild import rebuild
from tests.event_log import EventLog


def fold(path) -> RunSummary:
    summary = RunSummary(history_points=64)
    summary.apply_all(EventFileReader(path).read_new())
    return summary


def visible_state(s: RunSummary) -> dict:
    """What a user sees of a summary (floats of the curve compared with a tolerance)."""
    return {
        "state": s.state,
        "step": s.step,
        "epoch": s.epoch,
        "total": s.total_steps,
        "lr": s.lr,
        "elapsed": s.elapsed_s,
        "last": s.loss_last,
        "min": s.loss_min,
        "min_step": s.history.min_step,
        "count": s.history.count,
        "first_step": s.history.first_step,
        "width": s.history.width,
        "checkpoints": [c.path for c in s.checkpoints],
        "evals": s.evals,
        "epochs": s.epoch_losses,
        "warnings": s.warning_count,
        "spill": s.spill_warning,
        "memory": s.memory,
        "pace": s.eta.pace,
        "paused_s": s.paused_total_s,
        "final": s.final,
        "answers": list(s.control_answers),
        "eta": s.eta_s(now=s.last_event_t),
    }


def long_run(tmp_path, resume_at: int = 0):
    log = EventLog()
    history = [round(1 / (1 + s / 50), 6) for s in range(1, resume_at + 1)]
    log.started(
        total_steps=6000, steps_per_epoch=700, start_step=resume_at, elapsed_s=resume_at * 0.5, loss_history=history
    )
    log.steps(resume_at + 1, 2000)
    log.add("warning", code="vram_spill", message="VRAM is full", hint="smaller batch")
    log.add("control", command="pause", id="abc", ok=True, message="paused after step 2000")
    log.add("paused", step=2000, epoch=3)
    log.t += 95.0
    log.add("control", command="resume", id="abd", ok=True, message="resuming at step 2001")
    log.add("resumed", step=2000, paused_s=95.0)
    log.steps(2001, 4100)
    return log


@pytest.mark.parametrize("resume_at", [0, 321])
def test_fast_rebuild_gives_the_same_summary_as_folding_every_event(tmp_path, monkeypatch, resume_at):
    monkeypatch.setattr(rebuild_module, "CHUNK_BYTES", 40_000)  # many chunks, rare events across their edges
    monkeypatch.setattr(rebuild_module, "TAIL_BYTES", 30_000)
    path = long_run(tmp_path, resume_at).write(tmp_path / "events.jsonl", partial_tail='{"v":1,"type":"step","t":1')
    expected = fold(path)
    summary, offset = rebuild(path, RunSummary(history_points=64))
    assert offset == path.read_bytes().rindex(b"\n") + 1  # the partial last line is left for later
    got, want = visible_state(summary), visible_state(expected)
    assert got == {**want, "last": got["last"]} and got["last"] == pytest.approx(want["last"])
    assert summary.history.points() == pytest.approx(expected.history.points(), abs=1e-12)
    assert summary.loss_smoothed == pytest.approx(expected.loss_smoothed, abs=1e-12)
    assert summary.history.count == 4100 and summary.history.first_step == 1
    assert len(summary.history.points()) <= 64


def test_fast_rebuild_falls_back_when_lines_are_not_in_the_engines_layout(tmp_path, monkeypatch):
    monkeypatch.setattr(rebuild_module, "TAIL_BYTES", 1000)
    log = EventLog()
    log.started(total_steps=100, steps_per_epoch=1000)
    log.steps(1, 60)
    # A step written by another program, with its fields in another order: still counted.
    log.lines.insert(
        10,
        '{"loss":9.5,"type":"step","v":1,"t":1795000001.0,"step":7,"epoch":1,"loss_avg":0.5,'
        '"lr":{"unet":0.0001},"s_per_step":0.5,"samples_per_s":8,"elapsed_s":3.5}\n',
    )
    log.lines.insert(11, "this line is not JSON\n")
    path = log.write(tmp_path / "events.jsonl")
    summary, _ = rebuild(path, RunSummary(history_points=64))
    assert summary.history.count == 61 and summary.loss_min == fold(path).loss_min
    assert max(summary.history.recent) == 9.5


def test_history_stays_bounded_and_keeps_the_mean(tmp_path):
    history = LossHistory(max_points=100)
    losses = [1.0 / (1 + i) for i in range(200_001)]
    for start in range(0, len(losses), 7777):
        history.extend(losses[start : start + 7777])
    points = history.points()
    assert len(points) <= 100 and history.count == len(losses)
    full = [
        sum(losses[i : i + history.width]) / history.width
        for i in range(0, len(losses) - history.width + 1, history.width)
    ]
    assert points[: len(full)] == pytest.approx(full[: len(points)])
    assert history.min == losses[-1] and history.min_step == len(losses) and history.last == losses[-1]


def test_nothing_after_a_final_event_counts(tmp_path):
    log = EventLog()
    log.started(total_steps=10, steps_per_epoch=10)
    log.steps(1, 3)
    log.add("failed", step=3, message="the loss became nan")
    log.steps(4, 5)  # a confused writer: ignored
    summary = fold(log.write(tmp_path / "events.jsonl"))
    assert summary.state == "failed" and summary.step == 3 and summary.history.count == 3


# ----------------------------------------------------------------------------------- ETA


def test_eta_is_right_from_the_first_frame_after_a_reattach(tmp_path):
    log = EventLog()
    log.started(total_steps=1000, steps_per_epoch=100)
    log.steps(1, 400, seconds=0.5)  # with a 3 s save at every epoch end: not training time
    summary, _ = rebuild(log.write(tmp_path / "events.jsonl"))
    assert summary.eta_s(now=summary.last_step_t) == pytest.approx(600 * 0.5)
    # Between two step events the ETA counts down, by one step at most.
    assert summary.eta_s(now=summary.last_step_t + 0.2) == pytest.approx(600 * 0.5 - 0.2)
    assert summary.eta_s(now=summary.last_step_t + 60) == pytest.approx(600 * 0.5 - 0.5)


def test_eta_leaves_out_pauses(tmp_path):
    log = EventLog()
    log.started(total_steps=1000, steps_per_epoch=1000)
    log.steps(1, 100, seconds=1.0)
    log.add("paused", step=100, epoch=1)
    path = log.write(tmp_path / "events.jsonl")
    paused, _ = rebuild(path)
    assert paused.state == "paused"
    # An hour later, still paused: the ETA has not moved.
    assert paused.eta_s(now=log.t + 3600) == pytest.approx(900.0)
    log.t += 3600
    log.add("resumed", step=100, paused_s=3600.0)
    log.steps(101, 110, seconds=1.0)
    resumed, _ = rebuild(log.write(path))
    assert resumed.eta_s(now=resumed.last_step_t) == pytest.approx(890.0)
    assert resumed.elapsed_s == pytest.approx(110.0) and resumed.paused_total_s == 3600.0


def test_eta_and_epochs_continue_after_a_resume(tmp_path):
    """A resumed launch (new events file) starts from the saved step, with the pace it had."""
    log = EventLog()
    log.started(total_steps=1000, steps_per_epoch=100, start_step=400, elapsed_s=200.0, loss_history=[0.5] * 400)
    path = log.write(tmp_path / "events.jsonl")
    summary, _ = rebuild(path)
    assert summary.step == 400 and summary.epoch == 4 and summary.progress == pytest.approx(0.4)
    assert summary.eta_s(now=log.t) == pytest.approx(600 * 0.5)  # before the first step: the earlier pace
    assert summary.history.count == 400 and summary.history.first_step == 1
    log.steps(401, 420, seconds=0.25)
    summary, _ = rebuild(log.write(path))
    assert summary.epoch == 5 and summary.eta_s(now=summary.last_step_t) == pytest.approx(580 * 0.25)
    assert summary.history.count == 420


def test_one_slow_step_does_not_throw_the_eta(tmp_path):
    log = EventLog()
    log.started(total_steps=1000, steps_per_epoch=1000)
    log.steps(1, 30, seconds=0.5)
    log.steps(31, 31, seconds=40.0)  # a hiccup: another process grabbed the GPU for a moment
    log.steps(32, 40, seconds=0.5)
    summary, _ = rebuild(log.write(tmp_path / "events.jsonl"))
    assert summary.eta_s(now=summary.last_step_t) == pytest.approx(960 * 0.5)


# ------------------------------------------------------------------------------ snapshots


def test_snapshot_plus_the_events_after_it_equals_folding_everything(tmp_path):
    from loratui.core.snapshot import SNAPSHOT_FILE, read_snapshot, write_snapshot

    log = long_run(tmp_path, resume_at=100)
    lines = log.lines
    path = tmp_path / "events.jsonl"
    path.write_text("".join(lines[:3000]))
    at_snapshot, offset = rebuild(path, RunSummary())
    write_snapshot(tmp_path / SNAPSHOT_FILE, at_snapshot, offset)
    path.write_text("".join(lines))  # the run went on after the snapshot
    assert read_snapshot(path)[1] == offset
    summary, end = rebuild(path)
    assert end == path.stat().st_size
    expected, _ = rebuild(path, RunSummary(), use_snapshot=False)
    assert visible_state(summary) == visible_state(expected)
    assert summary.history.points() == pytest.approx(expected.history.points(), abs=1e-12)


def test_a_snapshot_that_does_not_fit_the_file_is_ignored(tmp_path):
    from loratui.core.snapshot import SNAPSHOT_FILE, read_snapshot, write_snapshot

    log = long_run(tmp_path)
    path = log.write(tmp_path / "events.jsonl")
    summary, offset = rebuild(path, RunSummary())
    write_snapshot(tmp_path / SNAPSHOT_FILE, summary, offset - 5)  # not on a line boundary
    assert read_snapshot(path) is None
    (tmp_path / SNAPSHOT_FILE).write_text('{"format": 1, "offset": 0, "summary": {"nonsense": 1}}')
    assert read_snapshot(path) is None
    (tmp_path / SNAPSHOT_FILE).write_text("{trunc")
    assert rebuild(path)[0].step == summary.step  # the fallback folds the whole file
