"""What the dashboard's background workers tell the screen (Textual messages, posted from threads).

Workers never touch the summary or the widgets: they read files, the GPUs or the control channel
and post one of these; the screen applies them on the UI thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from loratui.core.summary import RunSummary
from loratui.errors import UserError
from loratui.gpu import GpuSnapshot, SharedMemoryReading
from loratui.host import HostReading
from loratui.jobs.control import Answer


class HistoryLoaded(Message):
    """The whole run so far, folded on re-attach; follow from ``offset``."""

    def __init__(self, summary: RunSummary, offset: int, log_lines: list[str]) -> None:
        super().__init__()
        self.summary = summary
        self.offset = offset
        self.log_lines = log_lines


class NewEvents(Message):
    """Everything that arrived during one poll: events, engine log lines, and whether the engine
    is gone without a final event (killed, crashed)."""

    def __init__(self, events: list[dict], log_lines: list[str], engine_gone: bool = False) -> None:
        super().__init__()
        self.events = events
        self.log_lines = log_lines
        self.engine_gone = engine_gone


@dataclass(frozen=True)
class GpuReading:
    snapshot: GpuSnapshot
    shared: SharedMemoryReading
    host: HostReading | None = None  # the machine's and the engine's CPU and RAM (shown without a GPU)


class GpuRead(Message):
    def __init__(self, reading: GpuReading) -> None:
        super().__init__()
        self.reading = reading


class CommandAnswered(Message):
    """The engine's answer to a control command; ``answer`` is None when none came in time,
    ``error`` is set when the command could not be sent (the job has ended, is not ours...)."""

    def __init__(self, command: str, answer: Answer | None, error: UserError | None = None) -> None:
        super().__init__()
        self.command = command
        self.answer = answer
        self.error = error
