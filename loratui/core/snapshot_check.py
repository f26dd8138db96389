"""What a summary snapshot (``summary.json``) must hold before it is used.

A snapshot is a cache in a folder the user owns: a crash, a full disk, an editor or a hostile
hand can leave anything in it. One that is used as it is can make a re-attach seek to a negative
offset, print "step abc" or fail while drawing the dashboard. So every field is checked against
what the engine writes; a snapshot that does not fit is not used (:mod:`loratui.core.snapshot`
then returns None) and the re-attach folds the event log instead, which is always right.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from loratui.core.history import RECENT
from loratui.core.protocol import FINAL_EVENTS, ProtocolError, validate_event

Check = Callable[[object], bool]

MAX_HISTORY_POINTS = 1 << 20  # far more than any dashboard asks for: a bigger one is no snapshot of ours
SUMMARY_STATES = frozenset({"starting", "running", "paused"}) | FINAL_EVENTS


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(value: object) -> bool:
    return _whole(value) and value >= 0


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _text(value: object) -> bool:
    return isinstance(value, str)


def _object(value: object) -> bool:
    return isinstance(value, dict)


def _maybe(check: Check) -> Check:
    return lambda value: value is None or check(value)


def _list_of(check: Check, limit: int | None = None) -> Check:
    def holds(value: object) -> bool:
        fits = isinstance(value, list) and (limit is None or len(value) <= limit)
        return fits and all(check(item) for item in value)

    return holds


def _pair(first: Check, second: Check) -> Check:
    return lambda value: isinstance(value, list) and len(value) == 2 and first(value[0]) and second(value[1])


def _event(*types: str) -> Check:
    """An event of one of ``types``, as the protocol defines it."""

    def holds(value: object) -> bool:
        try:
            validate_event(value)
        except ProtocolError:
            return False
        return value["type"] in types

    return holds


def _rates(value: object) -> bool:
    return isinstance(value, dict) and all(_text(name) and _number(rate) for name, rate in value.items())


CHECKPOINT = {"path": _text, "bytes": _count, "epoch": _count, "step": _count, "kind": _text, "t": _number}
SAMPLE = {
    "path": _text,
    "step": _count,
    "epoch": _count,
    "index": _count,
    "prompt": _text,
    "seed": _whole,
    "width": _count,
    "height": _count,
    "trigger": _text,
    "t": _number,
}

SUMMARY = {
    "state": lambda value: value in SUMMARY_STATES,
    "phase": _text,
    "phase_message": _text,
    "phase_progress": _maybe(_pair(_count, _count)),
    "run_id": _maybe(_text),
    "config": _object,
    "config_dir": _maybe(_text),
    "dataset": _object,
    "device": _maybe(_text),
    "device_name": _maybe(_text),
    "mixed_precision": _maybe(_text),
    "pid": _maybe(_count),
    "resumed_from": _maybe(_text),
    "total_steps": _maybe(_count),
    "total_epochs": _maybe(_count),
    "steps_per_epoch": _maybe(_count),
    "start_step": _count,
    "step": _count,
    "epoch": _count,
    "loss_avg": _maybe(_number),
    "lr": _rates,
    "s_per_step": _maybe(_number),
    "samples_per_s": _maybe(_number),
    "elapsed_s": _number,
    "last_step_t": _maybe(_number),
    "history": _object,  # checked field by field below
    "evals": _list_of(_pair(_whole, _number)),
    "epoch_losses": _list_of(_pair(_whole, _number)),
    "validations": _list_of(_pair(_whole, _number)),
    "samples": _list_of(lambda value: isinstance(value, dict) and _fields_hold(value, SAMPLE)),
    "eta": _object,
    "checkpoints": _list_of(lambda value: isinstance(value, dict) and _fields_hold(value, CHECKPOINT)),
    "memory": _maybe(_event("memory")),
    "warnings": _list_of(_event("warning")),
    "warning_count": _count,
    "spill_warning": _maybe(_event("warning")),
    "control_answers": _list_of(_event("control")),
    "paused_since": _maybe(_number),
    "paused_total_s": _number,
    "error": _maybe(_event("error")),
    "final": _maybe(_event(*FINAL_EVENTS)),
    "events_seen": _count,
    "newer_protocol": lambda value: isinstance(value, bool),
    "last_event_t": _maybe(_number),
}

HISTORY = {
    "max_points": lambda value: _whole(value) and 2 <= value <= MAX_HISTORY_POINTS and value % 2 == 0,
    "first_step": _whole,
    "width": lambda value: _whole(value) and value >= 1,
    "sums": _list_of(_number, MAX_HISTORY_POINTS),
    "_partial_sum": _number,
    "_partial_count": _count,
    "count": _count,
    "last": _maybe(_number),
    "min": _maybe(_number),
    "min_step": _maybe(_whole),
    "_ema": _number,
    "recent": _list_of(_number, RECENT),
}

ETA = {"durations": _list_of(_number), "prior": _maybe(_number)}


def snapshot_problem(payload: object, events_size: int) -> str | None:
    """Why ``payload`` (a decoded ``summary.json``) cannot be used with an event log of
    ``events_size`` bytes; None when it can."""
    if not isinstance(payload, dict):
        return "not a JSON object"
    offset = payload.get("offset")
    if not _count(offset) or offset > events_size:
        return f"offset {offset!r} is not a place in the {events_size}-byte event log"
    summary = payload.get("summary")
    if not isinstance(summary, dict) or not _fields_hold(summary, SUMMARY):
        return "its summary is not one the engine writes"
    if not _fields_hold(summary["history"], HISTORY) or not _fields_hold(summary["eta"], ETA):
        return "its loss history or ETA is not one the engine writes"
    final = summary["final"]
    if (final is not None or summary["state"] in FINAL_EVENTS) and (final or {}).get("type") != summary["state"]:
        return f"its state {summary['state']!r} does not match its final event"
    if len(summary["history"]["sums"]) >= summary["history"]["max_points"]:
        return "its loss history has more points than it allows"
    return None


def _fields_hold(data: dict, rules: dict[str, Check]) -> bool:
    """Exactly the fields of ``rules``, each holding what its rule asks."""
    return set(data) == set(rules) and all(check(data[name]) for name, check in rules.items())
