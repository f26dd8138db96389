"""Saving while training: what a save writes, part by part, and what happens when the disk refuses.

The kohya LoRA file gets the trained parts' weights under their family's prefixes and the run's
metadata; a state folder gets every part's weights at full precision, the optimizer and the
progress. A save the disk refuses never ends the run (:class:`Saving`): it pauses until saving
again succeeds.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from engine.families.base import Family, Part
from engine.kohya_format import SAVE_DTYPES, save_lora_file
from engine.lora import load_lora_state_dict, lora_state_dict
from engine.metadata import RunFacts, build_metadata
from engine.save_failure import SaveFailed, save_failed
from engine.state import Progress, save_state
from loratui.atomic import temp_path_for
from loratui.outputs import existing_outputs, lora_file, state_folder
from loratui.save_plan import ROTATING_KINDS, keep_rule
from loratui.shell import loratui_command

if TYPE_CHECKING:
    from accelerate import Accelerator

    from engine.control import ControlChannel
    from engine.events import EventWriter
    from engine.train import StopFlag
    from loratui.config import RunConfig
    from loratui.dataset import DatasetReport
    from loratui.schedule import Schedule

log = logging.getLogger("engine.train")


@dataclass(frozen=True)
class RotatingSave:
    """A periodic save of this run: its LoRA file or state folder, and the epoch or step it was saved at."""

    path: Path
    kind: str  # "epoch" or "step"
    number: int
    is_state: bool


BLIND_RETRY_S = 60.0  # a run paused by a failed save while no event can be written tries again this often

# A module as accelerate prepared it -> the model's own module (accelerator.unwrap_model).
Unwrap = Callable[[torch.nn.Module], torch.nn.Module]


def lora_file_tensors(family: Family, parts: list[Part], unwrap: Unwrap, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The trained parts' LoRA under their kohya keys (``lora_unet_...``, ``lora_te_...``), in ``dtype``:
    each part's prefix and each module's name as ``family`` names them in a kohya file."""
    tensors: dict[str, torch.Tensor] = {}
    for part in parts:
        if part.trained:
            weights = lora_state_dict(unwrap(part.module))
            tensors.update(family.kohya_tensors(part.spec, weights, part.targets, dtype))
    return tensors


def state_weights(parts: list[Part], unwrap: Unwrap) -> dict[str, torch.Tensor]:
    """Every part's LoRA weights at full precision, keyed ``<part>.<module>.lora_down.weight`` (a LyCORIS
    part: ``<part>.<module>.<tensor>`` as LyCORIS saves each, its alpha and iA3's on_input included)."""
    weights: dict[str, torch.Tensor] = {}
    for part in parts:
        weights.update({f"{part.spec.name}.{k}": v for k, v in lora_state_dict(unwrap(part.module)).items()})
    return weights


def load_state_weights(parts: list[Part], unwrap: Unwrap, weights: dict[str, torch.Tensor]) -> None:
    """Put a state folder's weights back into the trained parts; LoraMismatch when they do not fit."""
    for part in parts:
        if part.trained:
            prefix = f"{part.spec.name}."
            own = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
            load_lora_state_dict(unwrap(part.module), own)


class Saving:
    """Saving a LoRA file (and a resumable state) while training, and pausing when the disk refuses.

    A mixin of :class:`engine.train.Trainer`; the pause and the commands that end it are
    engine/commands.py's."""

    # Set by the trainer.
    cfg: RunConfig
    overwrite: bool
    events: EventWriter
    stop: StopFlag
    control: ControlChannel
    job_id: str | None
    progress: Progress
    family: Family
    parts: list[Part]
    accelerator: Accelerator
    dataset: DatasetReport
    schedule: Schedule
    facts: RunFacts
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    _paused_at: float | None
    _paused_by_save: bool
    _output_dir: Path | None  # set by a `save` command's output_dir: where saves go from then on

    if TYPE_CHECKING:  # supplied by the trainer and its command handling (engine/commands.py); no stubs at run time

        def _status(self, phase: str, message: str, current: int | None = None, total: int | None = None) -> None: ...
        def _answer(self, command: dict, ok: bool, message: str) -> None: ...
        def _end_pause(self) -> None: ...
        def _sample_now(self) -> tuple[bool, str]: ...

    def _save(self, stem: str, kind: str, with_state: bool, asked_by: dict | None = None) -> Path:
        """Save ``<stem>.safetensors`` and, ``with_state``, ``<stem>-state`` (names: loratui.outputs).

        A save the disk refuses (full, read-only, gone, a name it will not take) never ends the
        run and never costs the trained weights: the run pauses with them in memory and saves
        again when asked (``resume``; ``save``, with another ``output_dir`` if need be; ``stop``;
        a SIGTERM). ``asked_by``: a command whose answer waits for the outcome."""
        asker = asked_by
        while True:
            try:
                path = self._write_files(stem, kind, with_state)
                break
            except SaveFailed as failure:
                if asker is not None:
                    self._answer(asker, False, f"{failure.message}; paused until a save succeeds")
                asker = self._pause_until_retry(failure)
        if asker is not None:
            state = " and its resumable state" if with_state else ""
            self._answer(asker, True, f"saved {path}{state} at step {self.progress.step}")
        if self._paused_at is not None and (self._paused_by_save or (asker is not None and asker["cmd"] == "resume")):
            self._end_pause()  # the pause the failure caused (or the one `resume` was sent to end) is over
        elif kind in ("epoch", "step"):
            self._status("training", "training")
        return path

    def _write_files(self, stem: str, kind: str, with_state: bool) -> Path:
        """One attempt at the save; :class:`SaveFailed` naming the file the disk refused."""
        self._status("saving", f"saving {stem}")
        out_dir = self._output_folder()
        path = out_dir / lora_file(stem)
        unwrap = self.accelerator.unwrap_model
        tensors = lora_file_tensors(self.family, self.parts, unwrap, SAVE_DTYPES[self.cfg.output.save_precision])
        metadata = build_metadata(
            self.cfg, self.dataset, self.schedule, self.facts, self.progress.step, self.progress.epoch
        )
        try:
            size = save_lora_file(path, tensors, metadata)
        except OSError as exc:
            raise save_failed(path, exc) from exc
        self.events.emit(
            "checkpoint", path=str(path), bytes=size, epoch=self.progress.epoch, step=self.progress.step, kind=kind
        )
        self._note_saved(path, kind, is_state=False)
        if with_state:
            state_dir = out_dir / state_folder(stem)
            weights = state_weights(self.parts, unwrap)
            try:
                size = save_state(
                    state_dir, self.progress, weights, self.optimizer, self.lr_scheduler, self.accelerator.scaler
                )
            except OSError as exc:  # the state folder saved before under this name is left as it was
                raise save_failed(state_dir, exc) from exc
            self.events.emit(
                "checkpoint",
                path=str(state_dir),
                bytes=size,
                epoch=self.progress.epoch,
                step=self.progress.step,
                kind="state",
            )
            self._note_saved(state_dir, kind, is_state=True)
        return path

    # ------------------------------------------------------------- rotation
    # output.save_last_n_*: only the periodic saves this run made (its own `checkpoint` events name
    # them) are ever removed; the rule of which: loratui.save_plan.

    @property
    def _rotating(self) -> list[RotatingSave]:
        """The epoch and step saves of this run still on disk, oldest first."""
        return self.__dict__.setdefault("_rotating_saves", [])

    def _note_saved(self, path: Path, kind: str, is_state: bool) -> None:
        saves = self._rotating
        saves[:] = [save for save in saves if save.path != path]  # saved again (a stop, a `save`): kept now
        if kind in ROTATING_KINDS:
            number = self.progress.epoch if kind == "epoch" else self.progress.step
            saves.append(RotatingSave(path, kind, number, is_state))

    def _save_periodic(self, stem: str, kind: str) -> None:
        """An epoch or step save (``kind``), then the removal of the saves of that kind it makes superfluous."""
        self._save(stem, kind, with_state=self.cfg.output.save_state)
        now = self.progress.epoch if kind == "epoch" else self.progress.step
        for is_state in (False, True):
            rule = keep_rule(self.cfg.output, kind, is_state)
            mine = [save for save in self._rotating if save.kind == kind and save.is_state == is_state]
            gone = set(rule.removed([save.number for save in mine], now))
            for save in mine:
                if save.number in gone:
                    self._remove_save(save, rule.reason)

    def _remove_save(self, save: RotatingSave, reason: str) -> None:
        """Delete a file or state folder this run saved. A state folder is first renamed to a hidden
        temporary name (one atomic step), so that a kill mid-delete never leaves a partial folder
        under a name a resume would take; the next run cleans that up (clean_interrupted_saves)."""
        try:
            if save.is_state:
                doomed = temp_path_for(save.path)
                os.rename(save.path, doomed)
                shutil.rmtree(doomed, ignore_errors=True)
            else:
                save.path.unlink()
        except FileNotFoundError:
            pass  # gone already: say so all the same
        except OSError as exc:
            log.warning("could not remove %s (%s): %s", save.path, reason, exc.strerror or exc)
            return  # still there, and still listed
        self._rotating.remove(save)
        log.info("removed %s (%s)", save.path, reason)
        self.events.emit("checkpoint_removed", path=str(save.path), step=self.progress.step, reason=reason)

    def _output_folder(self) -> Path:
        return self._output_dir or self.cfg.resolve(self.cfg.output.output_dir)

    def _use_output_dir(self, value: str | None) -> str | None:
        """Save in ``value`` from now on (a ``save`` command's output_dir); why not, or None when done."""
        if value is None:
            return None
        folder = Path(value)
        if not folder.is_absolute():
            return f"output_dir must be an absolute path, not {value!r}"
        name = self.cfg.output.name
        if folder != self._output_folder() and not self.overwrite and existing_outputs(folder, name):
            return f"{folder} holds files of an earlier run named {name!r}; choose another folder"
        self._output_dir = folder
        log.info("saving in %s from now on", folder)
        return None

    def _pause_until_retry(self, failure: SaveFailed) -> dict | None:
        """Say what failed and how to go on, pause, and wait for the word to save again: the
        command that gave it (answered with the outcome of the next attempt), or None for a signal."""
        log.error("%s; paused until a save succeeds", failure.message)
        self.events.emit(
            "warning",
            code="save_failed",
            message=f"{failure.message}; the trained weights are kept in memory",
            hint=f"{failure.fix}; then {self._retry_hint()}",
        )
        if self._paused_at is None:
            self._paused_at, self._paused_by_save = time.monotonic(), True
            epoch = max(1, self.progress.epoch + (1 if self.progress.batches_in_epoch else 0))
            self.events.emit("paused", step=self.progress.step, epoch=epoch, reason=failure.reason)
        self._status("paused", f"paused: {failure.message}")
        requests, since = self.stop.requests, time.monotonic()
        while True:
            for command in self.control.wait(0.5):
                if self._asks_to_save_again(command, failure):
                    return command
            if self.stop.requests != requests:
                return None  # a signal: save again (then stop, as it asks)
            if self.events.broken is not None and time.monotonic() - since > BLIND_RETRY_S:
                return None  # nobody can see this pause (the events cannot be written): try now and then

    def _asks_to_save_again(self, command: dict, failure: SaveFailed) -> bool:
        name = command["cmd"]
        if name == "save":
            refusal = self._use_output_dir(command.get("output_dir"))
            if refusal:
                self._answer(command, False, refusal)
            return refusal is None
        if name == "stop":
            self.stop.request("request")  # it stops once the save is done
        if name in ("resume", "stop"):
            return True
        if name == "pause":
            self._answer(command, False, f"already paused: {failure.message}; `resume` saves again")
        else:
            self._answer(command, *self._sample_now())
        return False

    def _retry_hint(self) -> str:
        if not self.control.available:
            return f"send SIGTERM to the engine (pid {os.getpid()}) to save again and stop"
        job = (self.job_id,) if self.job_id else ()
        resume = loratui_command("resume", *job)
        elsewhere = loratui_command("save", *job, "--output-dir", "FOLDER")
        return f"`{resume}` saves again, or `{elsewhere}` saves in another folder"
