"""Snapshots of a run's summary, so that re-attaching costs the same after a minute or a month.

The engine folds its own events into a :class:`RunSummary` as it writes them (a few microseconds
each) and every ``EVERY_S`` seconds, and at every checkpoint, pause and ending, writes
``summary.json`` beside ``events.jsonl``: the summary plus the byte offset of ``events.jsonl`` it
covers. A client that re-attaches loads it and folds only the events after that offset: at 20
events a second, a few hundred lines. The snapshot is a cache: ``events.jsonl`` stays the record.
When the snapshot is missing, damaged or does not fit the file, :mod:`loratui.jobs.rebuild`
folds the whole file instead.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from dataclasses import asdict
from pathlib import Path

from loratui.atomic import write_bytes_atomic
from loratui.core.eta import WINDOW, EtaEstimator
from loratui.core.history import RECENT, LossHistory
from loratui.core.protocol import FINAL_EVENTS
from loratui.core.run_files import open_run_file, read_run_file
from loratui.core.snapshot_check import snapshot_problem
from loratui.core.summary import MAX_WARNINGS, Checkpoint, RunSummary, SampleImage

SNAPSHOT_FILE = "summary.json"
SNAPSHOT_FORMAT = 1
SNAPSHOT_BYTES = 64 * 1024 * 1024  # a snapshot is a few hundred KB (its history is bounded); never read more
EVERY_S = 10.0
WRITE_AT = FINAL_EVENTS | {
    "run_started",
    "checkpoint",
    "checkpoint_removed",
    "epoch_end",
    "paused",
    "resumed",
    "warning",
}
_SPECIAL = (
    "history",
    "eta",
    "checkpoints",
    "warnings",
    "control_answers",
    "evals",
    "epoch_losses",
    "phase_progress",
    "validations",
    "samples",
)

log = logging.getLogger("loratui.snapshot")


def summary_to_dict(summary: RunSummary) -> dict:
    data = {key: value for key, value in vars(summary).items() if key not in _SPECIAL}
    history = summary.history
    data["history"] = {**{k: v for k, v in vars(history).items() if k != "recent"}, "recent": list(history.recent)}
    data["eta"] = {"durations": list(summary.eta._durations), "prior": summary.eta._prior_pace}
    data["checkpoints"] = [asdict(checkpoint) for checkpoint in summary.checkpoints]
    data["warnings"] = list(summary.warnings)
    data["control_answers"] = list(summary.control_answers)
    data["evals"] = [list(pair) for pair in summary.evals]
    data["epoch_losses"] = [list(pair) for pair in summary.epoch_losses]
    data["validations"] = [list(pair) for pair in summary.validations]
    data["samples"] = [asdict(sample) for sample in summary.samples]
    data["phase_progress"] = list(summary.phase_progress) if summary.phase_progress else None
    return data


def summary_from_dict(data: dict) -> RunSummary:
    history_data = dict(data["history"])
    summary = RunSummary(history_points=history_data["max_points"])
    for key, value in data.items():
        if key not in _SPECIAL:
            if not hasattr(summary, key):
                raise ValueError(f"unknown summary field {key!r}")
            setattr(summary, key, value)
    history = LossHistory(history_data.pop("max_points"))
    history.recent = deque(history_data.pop("recent"), maxlen=RECENT)
    for key, value in history_data.items():
        setattr(history, key, value)
    summary.history = history
    summary.eta = EtaEstimator()
    summary.eta._durations = deque(data["eta"]["durations"], maxlen=WINDOW)
    summary.eta._prior_pace = data["eta"]["prior"]
    summary.checkpoints = [Checkpoint(**checkpoint) for checkpoint in data["checkpoints"]]
    summary.warnings = deque(data["warnings"], maxlen=MAX_WARNINGS)
    summary.control_answers = deque(data["control_answers"], maxlen=10)
    summary.evals = [tuple(pair) for pair in data["evals"]]
    summary.epoch_losses = [tuple(pair) for pair in data["epoch_losses"]]
    summary.validations = [tuple(pair) for pair in data["validations"]]
    summary.samples = [SampleImage(**sample) for sample in data["samples"]]
    summary.phase_progress = tuple(data["phase_progress"]) if data["phase_progress"] else None
    return summary


def write_snapshot(path: Path, summary: RunSummary, offset: int) -> None:
    payload = {"format": SNAPSHOT_FORMAT, "offset": offset, "summary": summary_to_dict(summary)}
    # Not fsync'ed: a snapshot lost in a power cut is rebuilt from events.jsonl, and an fsync
    # every few seconds would stall training on slow network disks.
    # 0600 whatever the umask, like every run file
    write_bytes_atomic(path, json.dumps(payload, separators=(",", ":")).encode("utf-8"), mode=0o600, durable=False)


def read_snapshot(events_path: Path) -> tuple[RunSummary, int] | None:
    """The snapshot beside ``events_path`` and the offset it covers, or None when there is no
    usable one (missing, damaged, another format, a field that is not what the engine writes:
    :mod:`loratui.core.snapshot_check`, or not ending on a line of this file)."""
    path = events_path.with_name(SNAPSHOT_FILE)
    try:
        # never through a symlink, from a FIFO or from another user's file (loratui.core.run_files)
        payload = json.loads(read_run_file(path, SNAPSHOT_BYTES))
        if not isinstance(payload, dict) or payload.get("format") != SNAPSHOT_FORMAT:
            return None
        with open_run_file(events_path) as handle:
            problem = snapshot_problem(payload, os.fstat(handle.fileno()).st_size)
            if problem is not None:  # a cache gone wrong: the event log is folded instead
                log.info("not using %s: %s", path, problem)
                return None
            offset = payload["offset"]
            if offset > 0:
                handle.seek(offset - 1)
                if handle.read(1) != b"\n":
                    return None
        return summary_from_dict(payload["summary"]), offset
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None


class SnapshotWriter:
    """The engine's side: fold every event written and keep ``summary.json`` fresh."""

    def __init__(self, path: Path, events_fd: int, every_s: float = EVERY_S) -> None:
        self.path = path
        self.events_fd = events_fd
        self.every_s = every_s
        self.summary = RunSummary()
        self._last_write = time.monotonic()
        self._failed = False

    def observe(self, event: dict) -> None:
        """Call after ``event`` has been written and flushed to the events file."""
        self.summary.apply(event)
        now = time.monotonic()
        if event.get("type") in WRITE_AT or now - self._last_write >= self.every_s:
            self._last_write = now
            try:
                write_snapshot(self.path, self.summary, os.fstat(self.events_fd).st_size)
            except OSError as exc:  # a cache: losing it costs a slower re-attach, nothing more
                if not self._failed:
                    log.warning("cannot write %s (%s); re-attaching will read the whole event log", self.path, exc)
                self._failed = True
