"""Re-attaching to a long run: fold a whole ``events.jsonl`` into a RunSummary, fast.

A run at 20 steps a second writes a million events in 14 hours (about 230 MB). Decoding and
validating every line takes several seconds in Python; the dashboard must show the whole
history at once. Almost all of those lines are ``step`` and ``memory`` events, and of those only
the loss of each step matters for the history (the latest ones are read in full anyway). So:

- the file is read in chunks that end on a newline (bounded memory, whatever its size);
- every other event ("rare": run_started, epoch_end, checkpoint, warning, ...) is found with
  one regular-expression search, decoded, validated and applied in order as usual;
- between two rare events, the losses of the step lines are pulled out with one regular
  expression and added to the history in bulk. If the number of losses found is not the number
  of step lines there (a line written by some other writer, in another field order), that
  stretch is decoded line by line instead: the fast path never guesses;
- the last ``TAIL_BYTES`` are folded event by event, so the latest step, speed, learning rates,
  memory and ETA timings come from fully decoded events.

The result is the state that ``RunSummary.apply`` on every event would give (a test checks it).
All of this is the fallback: a run started by loratui keeps a snapshot of its summary beside its
events (:mod:`loratui.core.snapshot`), and then only the events written after it are folded.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from loratui.core.summary import RunSummary
from loratui.jobs.follow import decode_lines, open_events

CHUNK_BYTES = 16 * 1024 * 1024
TAIL_BYTES = 256 * 1024
# Events that are neither "step" nor "memory"; the look-ahead keeps the search in C.
RARE = re.compile(rb'"type":"(?!step"|memory")')
STEP_TYPE = b'"type":"step"'
# The engine writes a step as {"v":..,"type":"step","t":..,"step":N,"epoch":E,"loss":X,...}.
STEP_LOSS = re.compile(rb'"type":"step","t":[^,]+,"step":\d+,"epoch":\d+,"loss":([^,}]+)')
FIRST_STEP = re.compile(rb'"type":"step","t":[^,]+,"step":(\d+),')


def rebuild(path: Path, summary: RunSummary | None = None, use_snapshot: bool = True) -> tuple[RunSummary, int]:
    """Fold every complete line of ``path`` (after the snapshot's offset, when there is a usable
    snapshot); return the summary and the offset to follow from."""
    offset = 0
    if summary is None and use_snapshot:
        from loratui.core.snapshot import read_snapshot

        snapshot = read_snapshot(path)
        if snapshot is not None:
            summary, offset = snapshot
    summary = summary or RunSummary()
    try:
        size = os.path.getsize(path)
    except OSError:
        return summary, 0
    with open_events(path) as handle:  # never a FIFO, a device or a symlink (a UserError says so)
        start_of_tail = max(offset, _line_start_before(handle, max(0, size - TAIL_BYTES)))
        while offset < start_of_tail:
            handle.seek(offset)
            chunk = handle.read(min(CHUNK_BYTES, start_of_tail - offset))
            end = chunk.rfind(b"\n") + 1
            if end == 0:  # one line longer than a chunk (a resumed run's run_started): read it whole
                chunk = chunk + handle.readline()
                end = len(chunk) if chunk.endswith(b"\n") else 0
                if end == 0:
                    break
            _fold_chunk(summary, chunk, end)
            offset += end
        handle.seek(offset)
        data = handle.read()
    complete = data.rfind(b"\n") + 1
    for line in data[:complete].split(b"\n"):
        _apply_line(summary, line)
    return summary, offset + complete


def _line_start_before(handle, position: int) -> int:
    """The offset of the first line that starts at or after ``position``."""
    if position == 0:
        return 0
    handle.seek(position - 1)
    handle.readline()
    return handle.tell()


def _fold_chunk(summary: RunSummary, chunk: bytes, end: int) -> None:
    position = 0
    for match in RARE.finditer(chunk, 0, end):
        line_start = chunk.rfind(b"\n", 0, match.start()) + 1
        if line_start < position:
            continue  # a second "type": inside a line already handled
        line_end = chunk.find(b"\n", match.end(), end)
        _fold_steps(summary, chunk, position, line_start)
        _apply_line(summary, chunk[line_start:line_end])
        position = line_end + 1
    _fold_steps(summary, chunk, position, end)


def _fold_steps(summary: RunSummary, chunk: bytes, start: int, end: int) -> None:
    """Add the losses of the step lines in chunk[start:end] (which holds no rare event)."""
    if start >= end or summary.final is not None:
        return
    expected = chunk.count(STEP_TYPE, start, end)
    if not expected:
        return
    losses = STEP_LOSS.findall(chunk, start, end)
    first = FIRST_STEP.search(chunk, start, end)
    if len(losses) == expected and first is not None:
        try:
            summary.add_step_losses([float(loss) for loss in losses], first_step=int(first.group(1)))
            return
        except ValueError:
            pass
    for line in chunk[start:end].split(b"\n"):  # not in the engine's own layout: decode each line
        event = _decode(line)
        if event is not None and event.get("type") == "step":
            summary.add_step_losses([event["loss"]], first_step=event["step"])


def _apply_line(summary: RunSummary, line: bytes) -> None:
    event = _decode(line)
    if event is not None:
        summary.apply(event)


def _decode(line: bytes) -> dict | None:
    events, _ = decode_lines([line])
    return events[0] if events else None
