"""Control commands, acted on between steps: stop, save, pause, resume, sample.

A mixin of :class:`engine.train.Trainer`: the commands come from its control channel
(engine/control.py) and are answered with ``control`` events; ``save`` saves through the
trainer's saving (engine/saving.py), whose failures pause the run the same way ``pause`` does.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from loratui.outputs import step_stem

if TYPE_CHECKING:
    from pathlib import Path

    from engine.control import ControlChannel
    from engine.events import EventWriter
    from engine.state import Progress
    from engine.train import StopFlag
    from loratui.config import RunConfig


class CommandHandling:
    """What the trainer does with a command; the pause they share with a failed save."""

    # Set by the trainer.
    cfg: RunConfig
    control: ControlChannel
    events: EventWriter
    stop: StopFlag
    progress: Progress
    _paused_at: float | None  # monotonic time of the pause, while paused
    _paused_by_save: bool  # the engine paused itself because a save failed

    if TYPE_CHECKING:  # supplied by the trainer and its saving (engine/saving.py); no stubs at run time

        def _status(self, phase: str, message: str, current: int | None = None, total: int | None = None) -> None: ...
        def _save(self, stem: str, kind: str, with_state: bool, asked_by: dict | None = None) -> Path: ...
        def _use_output_dir(self, value: str | None) -> str | None: ...
        def _sample_now(self) -> tuple[bool, str]: ...  # engine/sample_runs.py: renders, then answers

    def _between_steps(self, epoch: int) -> bool:
        """Act on the commands that arrived during the step; block here while paused.
        Returns True when that took time worth leaving out of the step timings."""
        commands = self.control.poll()
        for command in commands:
            self._on_command(command, epoch)
        if self._paused_at is None:
            return bool(commands)
        while self._paused_at is not None and not self.stop.reason:
            for command in self.control.wait(0.5):
                self._on_command(command, epoch)
        if self._paused_at is not None:  # a SIGTERM during the pause: resume, then stop
            self._end_pause()
        return True

    def _on_command(self, command: dict, epoch: int) -> None:
        name = command["cmd"]

        def answer(ok: bool, message: str) -> None:
            self._answer(command, ok, message)

        step = self.progress.step
        if name == "stop":
            self.stop.request("request")
            answer(True, f"stopping after step {step}: saving a LoRA file and a resumable state")
        elif name == "save":
            refusal = self._use_output_dir(command.get("output_dir"))
            if refusal:
                answer(False, refusal)
                return
            # answered by _save once the files are on disk (or once it failed)
            path = self._save(step_stem(self.cfg.output.name, step), "manual", with_state=True, asked_by=command)
            self._status("paused" if self._paused_at is not None else "training", f"saved {path.name}")
        elif name == "pause":
            if self._paused_at is not None:
                answer(False, f"already paused at step {step}")
                return
            self._paused_at = time.monotonic()
            answer(True, f"paused after step {step}")
            self.events.emit("paused", step=step, epoch=epoch, reason="request")
            self._status("paused", f"paused after step {step}")
        elif name == "resume":
            if self._paused_at is None:
                answer(False, "not paused")
                return
            answer(True, f"resuming at step {step + 1}")
            self._end_pause()
        elif name == "sample":
            ok, message = self._sample_now()
            answer(ok, message)

    def _answer(self, command: dict, ok: bool, message: str) -> None:
        self.events.emit("control", command=command["cmd"], id=command["id"], ok=ok, message=message)

    def _end_pause(self) -> None:
        paused_s = time.monotonic() - (self._paused_at or time.monotonic())
        self._paused_at = None
        self._paused_by_save = False
        self.events.emit("resumed", step=self.progress.step, paused_s=paused_s)
        self._status("training", "training")
