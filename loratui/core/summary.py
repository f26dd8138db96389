"""Everything a dashboard shows about a run, folded from its events one at a time.

``RunSummary.apply(event)`` is the only way in, so a live follower, a re-attach that replays a
whole log (:mod:`loratui.jobs.rebuild` does that fast) and a test fed with a recorded stream all
end in the same state. Memory is bounded whatever the length of the run: the loss curve is
downsampled (:mod:`loratui.core.history`), warnings and control answers keep the latest few.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from loratui.core.eta import EtaEstimator
from loratui.core.history import LossHistory
from loratui.core.protocol import FINAL_EVENTS, PROTOCOL_VERSION

MAX_WARNINGS = 50
SPILL_CODE = "vram_spill"


@dataclass
class Checkpoint:
    path: str
    bytes: int
    epoch: int
    step: int
    kind: str
    t: float


@dataclass
class SampleImage:
    """One rendered sample (a ``sample`` event)."""

    path: str
    step: int
    epoch: int
    index: int  # the prompt's number
    prompt: str
    seed: int
    width: int
    height: int
    trigger: str
    t: float


class RunSummary:
    def __init__(self, history_points: int = 1024) -> None:
        self.state = "starting"  # starting, running, paused, finished, stopped, failed
        self.phase = "starting"
        self.phase_message = ""
        self.phase_progress: tuple[int, int] | None = None
        # run_started
        self.run_id: str | None = None
        self.config: dict = {}
        self.config_dir: str | None = None
        self.dataset: dict = {}
        self.device = self.device_name = self.mixed_precision = None
        self.pid: int | None = None
        self.resumed_from: str | None = None
        self.total_steps: int | None = None
        self.total_epochs: int | None = None
        self.steps_per_epoch: int | None = None
        self.start_step = 0
        # progress
        self.step = 0
        self.epoch = 0
        self.loss_avg: float | None = None
        self.lr: dict[str, float] = {}
        self.s_per_step: float | None = None
        self.samples_per_s: float | None = None
        self.elapsed_s = 0.0
        self.last_step_t: float | None = None
        self.history = LossHistory(history_points)
        self.evals: list[tuple[int, float]] = []
        self.validations: list[tuple[int, float]] = []  # (step, held-out loss), in order
        self.epoch_losses: list[tuple[int, float]] = []
        self.eta = EtaEstimator()
        # everything else
        self.checkpoints: list[Checkpoint] = []
        # Every sample rendered; a run renders a few prompts a few dozen times, so they are all kept.
        self.samples: list[SampleImage] = []
        self.memory: dict | None = None
        self.warnings: deque[dict] = deque(maxlen=MAX_WARNINGS)
        self.warning_count = 0
        self.spill_warning: dict | None = None
        self.control_answers: deque[dict] = deque(maxlen=10)
        self.paused_since: float | None = None
        self.paused_total_s = 0.0
        self.error: dict | None = None
        self.final: dict | None = None
        self.events_seen = 0
        self.newer_protocol = False
        self.last_event_t: float | None = None

    # ------------------------------------------------------------------ input
    def apply(self, event: dict) -> None:
        self.events_seen += 1
        self.last_event_t = event.get("t", self.last_event_t)
        if event.get("v", PROTOCOL_VERSION) > PROTOCOL_VERSION:
            self.newer_protocol = True
        if self.final is not None:
            return  # nothing follows a final event; anything that does is ignored
        handler = getattr(self, f"_on_{event.get('type')}", None)
        if handler is not None:
            handler(event)

    def apply_all(self, events) -> None:
        for event in events:
            self.apply(event)

    def _on_run_started(self, e: dict) -> None:
        self.state = "running"
        self.run_id, self.config, self.config_dir = e["run_id"], e["config"], e.get("config_dir")
        self.dataset, self.device, self.device_name = e["dataset"], e["device"], e["device_name"]
        self.mixed_precision, self.pid, self.resumed_from = e["mixed_precision"], e["pid"], e["resumed_from"]
        self.total_steps, self.total_epochs = e["total_steps"], e["total_epochs"]
        self.steps_per_epoch, self.start_step = e["steps_per_epoch"], e["start_step"]
        self.step, self.epoch, self.elapsed_s = e["start_step"], e["start_epoch"], e["elapsed_s"]
        self.eta.set_prior(e["elapsed_s"], e["start_step"])
        if self.history.count == 0:  # a resumed run's earlier losses continue the same curve
            self.history.first_step = e["start_step"] - len(e["loss_history"]) + 1
            self.history.extend(e["loss_history"])

    def _on_status(self, e: dict) -> None:
        self.phase, self.phase_message = e["phase"], e["message"]
        current, total = e.get("current"), e.get("total")
        self.phase_progress = (current, total) if current is not None and total is not None else None

    def _on_step(self, e: dict) -> None:
        self.add_step_losses([e["loss"]], first_step=e["step"])
        self.step, self.epoch = e["step"], e["epoch"]
        self.loss_avg, self.lr = e["loss_avg"], e["lr"]
        self.s_per_step, self.samples_per_s = e["s_per_step"], e["samples_per_s"]
        self.elapsed_s, self.last_step_t = e["elapsed_s"], e["t"]
        self.eta.observe(e["s_per_step"])
        if self.state == "starting":
            self.state = "running"

    def add_step_losses(self, losses: list[float], first_step: int) -> None:
        """The losses of consecutive steps starting at ``first_step`` (the fast re-attach path
        adds whole stretches of steps at once)."""
        if self.history.count == 0:
            self.history.first_step = first_step
        self.history.extend(losses)

    def _on_epoch_end(self, e: dict) -> None:
        self.epoch_losses.append((e["epoch"], e["loss_avg"]))
        self.elapsed_s = e["elapsed_s"]

    def _on_eval(self, e: dict) -> None:
        self.evals.append((e["step"], e["loss"]))

    def _on_validation(self, e: dict) -> None:
        self.validations.append((e["step"], e["loss"]))

    def _on_sample(self, e: dict) -> None:
        fields = ("path", "step", "epoch", "index", "prompt", "seed", "width", "height", "trigger", "t")
        self.samples.append(SampleImage(*(e[name] for name in fields)))

    def _on_checkpoint(self, e: dict) -> None:
        self.checkpoints.append(Checkpoint(e["path"], e["bytes"], e["epoch"], e["step"], e["kind"], e["t"]))

    def _on_checkpoint_removed(self, e: dict) -> None:
        # Gone from the disk (output.save_last_n_*): no panel, pick or grid may offer it any more.
        self.checkpoints = [checkpoint for checkpoint in self.checkpoints if checkpoint.path != e["path"]]

    def _on_memory(self, e: dict) -> None:
        self.memory = e

    def _on_warning(self, e: dict) -> None:
        self.warning_count += 1
        self.warnings.append(e)
        if e["code"] == SPILL_CODE:
            self.spill_warning = e

    def _on_control(self, e: dict) -> None:
        self.control_answers.append(e)

    def _on_paused(self, e: dict) -> None:
        self.state, self.paused_since = "paused", e["t"]

    def _on_resumed(self, e: dict) -> None:
        self.state, self.paused_since = "running", None
        self.paused_total_s += e["paused_s"]
        self.last_step_t = e["t"]  # the countdown restarts from here, not from the last step

    def _on_error(self, e: dict) -> None:
        self.error = e

    def _on_finished(self, e: dict) -> None:
        self._end(e)
        self.step, self.epoch, self.elapsed_s = e["step"], e["epoch"], e["elapsed_s"]

    def _on_stopped(self, e: dict) -> None:
        self._end(e)
        self.step, self.elapsed_s = e["step"], e["elapsed_s"]

    def _on_failed(self, e: dict) -> None:
        self._end(e)

    def _end(self, e: dict) -> None:
        self.final, self.state, self.paused_since = e, e["type"], None

    # ----------------------------------------------------------------- output
    @property
    def ended(self) -> bool:
        return self.state in FINAL_EVENTS

    @property
    def loss_last(self) -> float | None:
        return self.history.last

    @property
    def best_validation(self) -> tuple[int, float] | None:
        """The (step, loss) of the lowest validation loss so far, or None without any."""
        return min(self.validations, key=lambda item: item[1]) if self.validations else None

    @property
    def loss_min(self) -> float | None:
        return self.history.min

    @property
    def loss_smoothed(self) -> float | None:
        return self.history.smoothed

    def eta_s(self, now: float | None = None) -> float | None:
        """Seconds left, or None before the pace is known; 0 once the run has ended."""
        if self.ended:
            return 0.0
        if self.total_steps is None:
            return None
        now = time.time() if now is None else now
        counting = self.state == "running" and self.phase == "training" and self.last_step_t is not None
        since = now - self.last_step_t if counting else 0.0
        return self.eta.eta(self.total_steps - self.step, since)

    @property
    def progress(self) -> float:
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0

    @property
    def epoch_progress(self) -> float:
        """Fraction of the current epoch done."""
        if not self.steps_per_epoch:
            return 0.0
        done_in_epoch = self.step - (self.epoch - 1) * self.steps_per_epoch if self.epoch else 0
        return min(1.0, max(0.0, done_in_epoch / self.steps_per_epoch))
