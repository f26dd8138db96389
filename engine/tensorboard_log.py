"""TensorBoard logs of a run, written from its events: one observer on the EventWriter.

Nothing in the training loop writes to TensorBoard. Every number, image and text here is taken
from an event the engine emits anyway (``step``, ``eval``, ``validation``, ``sample``,
``run_started``...), so TensorBoard shows exactly what the dashboard and ``events.jsonl`` show,
and a stream replayed from ``events.jsonl`` gives the same logs.

Where: ``<output.log_dir>/<run id>/tensorboard/``. The run id is the job id, so that is the run
folder the jobs layer made (``events.jsonl``, ``engine.log``...), and ``tensorboard --logdir
<output.log_dir>`` lists every run. A resumed run keeps the run id of the run it continues (it is
in the state), so it writes into that run's folder and its curves go on from the step it resumed
at (the global step is always the training step); points a run that went further wrote after
that step are hidden (TensorBoard's ``purge_step``).

What (tags as kohya writes them where it has one):
- ``loss/current``: each step's loss; ``loss/average``: the epoch's running mean (``loss_avg``,
  the engine's own smoothing); ``loss/epoch``: each epoch's mean. No second smoothing is
  written: TensorBoard's "Smoothing" slider is an exponential moving average of ``loss/current``.
- ``loss/eval`` (the fixed training images of the ``eval`` event) and ``loss/validation``
  (held-out images).
- ``lr/<group>`` (``unet``, ``text_encoder``...), ``speed/samples_per_s``, ``speed/s_per_step``.
- ``samples/prompt_<index>``: each sample image at the step it was rendered; its prompt, seed and
  size as text under ``sample_prompts/<index>``.
- ``config``: the run's config as TOML text.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loratui.config import RunConfig
from loratui.core.protocol import FINAL_EVENTS

log = logging.getLogger("engine.tensorboard")

TENSORBOARD_FOLDER = "tensorboard"
# How often the writer's own thread writes what is queued to disk: a live `tensorboard` sees a
# run this many seconds late at most. Everything is written at the end of the run as well.
FLUSH_SECONDS = 5
# A run id that names a folder, never a path (it comes from a state file when resuming).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

MISSING_MESSAGE = "the tensorboard package is not installed: this run writes no TensorBoard logs"
MISSING_HINT = (
    "install it in loratui's environment (pip install 'tensorboard>=2.14'), "
    'or set output.log_with = "none" in [output]; training goes on'
)


def tensorboard_log(cfg: RunConfig, events, job_id: str | None) -> TensorBoardLog | None:
    """The observer that writes this run's TensorBoard logs, or None when the config asks for none
    (``output.log_with``) or the tensorboard package is missing (then one ``warning`` event says so)."""
    if cfg.output.log_with != "tensorboard":
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        log.warning("no TensorBoard logs: %s", exc)
        events.emit("warning", code="tensorboard_missing", message=MISSING_MESSAGE, hint=MISSING_HINT)
        return None
    return TensorBoardLog(cfg.resolve(cfg.output.log_dir), job_id, SummaryWriter)


class TensorBoardLog:
    """Turns events into TensorBoard data. ``observe`` is the EventWriter observer; the writer is
    made at ``run_started`` (the folder depends on the run id) and closed at the final event."""

    def __init__(self, log_dir: Path, job_id: str | None, make_writer: Callable[..., Any]) -> None:
        self.log_dir = log_dir
        self.job_id = job_id
        self._make_writer = make_writer
        self.writer = None
        self.folder: Path | None = None
        self._prompts_told: set[int] = set()
        self._handlers = {
            "step": self._step,
            "epoch_end": self._epoch_end,
            "eval": self._eval,
            "validation": self._validation,
            "sample": self._sample,
        }

    def observe(self, event: dict[str, Any]) -> None:
        if event["type"] == "run_started":
            self._run_started(event)
        elif self.writer is None:
            return  # before the run started (a check warning), or after it ended
        elif event["type"] in FINAL_EVENTS:
            self.close()
        elif event["type"] in self._handlers:
            self._handlers[event["type"]](event)

    def close(self) -> None:
        """Write everything queued and close the files."""
        if self.writer is not None:
            writer, self.writer = self.writer, None
            writer.close()

    # ---------------------------------------------------------------- events
    def _run_started(self, event: dict[str, Any]) -> None:
        self.close()
        self.folder = self.log_dir / self._run_folder_name(event["run_id"]) / TENSORBOARD_FOLDER
        os.makedirs(self.folder, mode=0o700, exist_ok=True)
        start = event["start_step"]
        # A resumed run: hide what an earlier attempt logged after the step it resumes from.
        purge_step = start + 1 if start else None
        self.writer = self._make_writer(str(self.folder), purge_step=purge_step, flush_secs=FLUSH_SECONDS)
        self.writer.add_text("config", _as_code(config_toml(event["config"])), start, walltime=event["t"])

    def _run_folder_name(self, run_id: str) -> str:
        """The run id (the job id, or the id of the run a resume continues); the job id when the id
        in a state file is no plain folder name."""
        for name in (run_id, self.job_id):
            if name and _PLAIN_NAME.fullmatch(name):
                return name
        return "run"

    def _step(self, event: dict[str, Any]) -> None:
        step, t = event["step"], event["t"]
        self._scalar("loss/current", event["loss"], step, t)
        self._scalar("loss/average", event["loss_avg"], step, t)
        for group, lr in event["lr"].items():
            self._scalar(f"lr/{group}", lr, step, t)
        self._scalar("speed/samples_per_s", event["samples_per_s"], step, t)
        self._scalar("speed/s_per_step", event["s_per_step"], step, t)

    def _epoch_end(self, event: dict[str, Any]) -> None:
        self._scalar("loss/epoch", event["loss_avg"], event["step"], event["t"])

    def _eval(self, event: dict[str, Any]) -> None:
        self._scalar("loss/eval", event["loss"], event["step"], event["t"])

    def _validation(self, event: dict[str, Any]) -> None:
        self._scalar("loss/validation", event["loss"], event["step"], event["t"])

    def _sample(self, event: dict[str, Any]) -> None:
        index, step, t = event["index"], event["step"], event["t"]
        try:
            pixels = _read_rgb(Path(event["path"]))
        except (OSError, ValueError) as exc:  # gone or damaged: this image only, the logs go on
            log.warning("sample %s not logged to TensorBoard: %s", event["path"], exc)
            return
        self.writer.add_image(f"samples/prompt_{index}", pixels, step, walltime=t, dataformats="HWC")
        if index not in self._prompts_told:
            self._prompts_told.add(index)
            self.writer.add_text(f"sample_prompts/{index}", _prompt_text(event), step, walltime=t)

    def _scalar(self, tag: str, value: float, step: int, t: float) -> None:
        self.writer.add_scalar(tag, value, step, walltime=t)


def config_toml(config: dict) -> str:
    """The config of ``run_started`` as the TOML a user writes (JSON when TOML cannot hold it)."""
    import tomli_w

    try:
        return tomli_w.dumps(config)
    except (TypeError, ValueError):
        return json.dumps(config, indent=2)


def _as_code(text: str) -> str:
    """TensorBoard renders text as Markdown: indented, the TOML shows as it is, in a fixed font."""
    return "\n".join("    " + line for line in text.splitlines())


def _prompt_text(event: dict[str, Any]) -> str:
    lines = [f"prompt: {event['prompt']}"]
    if event["negative_prompt"]:
        lines.append(f"negative: {event['negative_prompt']}")
    lines.append(
        f"seed {event['seed']}, {event['width']}x{event['height']}, {event['steps']} steps, "
        f"cfg {event['cfg_scale']}, {event['sampler']}"
    )
    return _as_code("\n".join(lines))


def _read_rgb(path: Path):
    """The PNG's pixels, height x width x RGB, uint8."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))
