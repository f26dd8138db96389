"""Human-readable progress for ``loratui train --no-tui``: one event in, a line (or none) out.

On a terminal the step line is redrawn in place; in a log file or a pipe a step line is written
every few percent of the run, so the log stays readable.
"""

from __future__ import annotations

import sys
from typing import TextIO

from loratui import quantities
from loratui.core.eta import EtaEstimator
from loratui.core.terminal_text import escape_controls
from loratui.shell import loratui_command, resume_command


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_bytes(size: int) -> str:
    """Bytes in binary units (KiB, MiB, GiB), as the dashboard and ``loratui gpu`` write them."""
    return quantities.size(size)


class PlainProgress:
    def __init__(
        self,
        out: TextIO = sys.stdout,
        interactive: bool | None = None,
        *,
        job_id: str | None = None,
        config: str | None = None,
    ) -> None:
        """``job_id`` and ``config`` (the job's id and the absolute path of its TOML): the commands
        printed on a pause or a stop are then the real ones, ready to paste."""
        self.out = out
        self.interactive = out.isatty() if interactive is None else interactive
        self.job_id = job_id
        self.config = config
        self.total_steps = 0
        self.total_epochs = 0
        self.start_step = 0
        self.start_elapsed = 0.0
        self._line_open = False
        self._last_printed_step = 0
        self.last_eval: float | None = None
        self.first_eval: float | None = None
        self.best_validation: tuple[int, float] | None = None  # (step, loss) of the lowest validation loss
        self.eta = EtaEstimator()

    def prime(self, summary) -> None:
        """Continue from a RunSummary rebuilt on re-attach instead of from the first event."""
        self.total_steps, self.total_epochs = summary.total_steps or 0, summary.total_epochs or 0
        self.start_step, self.start_elapsed = summary.start_step, summary.elapsed_s
        self.eta = summary.eta
        self._last_printed_step = summary.step
        if summary.evals:
            self.first_eval, self.last_eval = summary.evals[0][1], summary.evals[-1][1]
        self.best_validation = summary.best_validation

    def handle(self, event: dict) -> None:
        handler = getattr(self, f"_on_{event.get('type')}", None)
        if handler is not None:
            handler(event)

    # ------------------------------------------------------------------ output
    # Every line goes through escape_controls: events carry file and folder names (a warning about
    # a caption, a saved file's path), and a name can hold escape sequences a terminal would obey.
    def _print(self, text: str) -> None:
        text = escape_controls(text, keep="\n")
        if self._line_open:
            self.out.write("\n")
            self._line_open = False
        self.out.write(text + "\n")
        self.out.flush()

    def _redraw(self, text: str) -> None:
        self.out.write("\r" + escape_controls(text) + "\x1b[K")
        self.out.flush()
        self._line_open = True

    # ------------------------------------------------------------------ events
    def _on_run_started(self, e: dict) -> None:
        self.total_steps, self.total_epochs = e["total_steps"], e["total_epochs"]
        self.start_step, self.start_elapsed = e["start_step"], e["elapsed_s"]
        self.eta.set_prior(e["elapsed_s"], e["start_step"])
        data = e["dataset"]
        # The dataset summary is informative only: a field missing from it must not end the follower.
        reg = f" + {_count(data.get('reg_images'), 'reg image')}" if data.get("reg_images") else ""
        self._print(
            f"Training on {e['device_name']} (mixed precision: {e['mixed_precision']}): "
            f"{_count(e['total_steps'], 'step')}, {_count(e['total_epochs'], 'epoch')} of "
            f"{_count(e['steps_per_epoch'], 'step')}; {_count(data.get('images'), 'image')}{reg}, "
            f"{_count(data.get('items_per_epoch'), 'item')} per epoch"
        )
        if e["resumed_from"]:
            self._print(f"Resumed from {e['resumed_from']} at step {e['start_step']}")

    def _on_status(self, e: dict) -> None:
        if e["phase"] == "training":
            return
        if e.get("total") is not None and self.interactive:
            self._redraw(e["message"])
        elif e.get("total") is None or e.get("current") == e.get("total"):
            self._print(e["message"])

    def _on_step(self, e: dict) -> None:
        step, total = e["step"], self.total_steps
        self.eta.observe(e["s_per_step"])
        seconds_left = self.eta.eta(total - step)
        eta = format_duration(seconds_left) if seconds_left is not None else "?"
        lrs = " ".join(f"{name} {value:.2e}" for name, value in e["lr"].items())
        line = (
            f"step {step}/{total}  epoch {e['epoch']}/{self.total_epochs}  loss {e['loss']:.4f} "
            f"(avg {e['loss_avg']:.4f})  lr {lrs}  {e['s_per_step']:.2f} s/step  "
            f"elapsed {format_duration(e['elapsed_s'])}  ETA {eta}"
        )
        if self.interactive:
            self._redraw(line)
        elif step - self._last_printed_step >= max(1, total // 20) or step == total:
            self._print(line)
            self._last_printed_step = step

    def _on_epoch_end(self, e: dict) -> None:
        self._print(f"epoch {e['epoch']}/{self.total_epochs} done at step {e['step']}: mean loss {e['loss_avg']:.4f}")

    def _on_eval(self, e: dict) -> None:
        if self.first_eval is None:
            self.first_eval = e["loss"]
        self.last_eval = e["loss"]
        if e["step"] == 0:
            self._print(f"eval loss before training: {e['loss']:.4f}")
        else:
            self._print(f"eval loss: {e['loss']:.4f} (started at {self.first_eval:.4f})")

    def _on_validation(self, e: dict) -> None:
        best = self.best_validation
        when = "before training" if e["step"] == 0 else f"at step {e['step']}"
        line = f"validation loss {when}: {e['loss']:.4f} on {_count(e['images'], 'held-out image')}"
        if best is not None:
            line += " (the lowest so far)" if e["loss"] < best[1] else f" (lowest {best[1]:.4f} at step {best[0]})"
        if best is None or e["loss"] < best[1]:
            self.best_validation = (e["step"], e["loss"])
        self._print(line)

    def _on_checkpoint(self, e: dict) -> None:
        what = "state" if e["kind"] == "state" else "LoRA"
        self._print(f"saved {what} {e['path']} ({format_bytes(e['bytes'])})")

    def _on_checkpoint_removed(self, e: dict) -> None:
        self._print(f"removed {e['path']} ({e['reason']})")

    def _on_sample(self, e: dict) -> None:
        self._print(f"sample {e['index']} at step {e['step']}: {e['path']} ({e['seconds']:.1f} s)")

    def _on_memory(self, e: dict) -> None:
        if e.get("total"):
            self._print(
                f"GPU memory: {format_bytes(e['allocated'])} allocated, {format_bytes(e['reserved'])} reserved "
                f"of {format_bytes(e['total'])}"
            )

    def _on_control(self, e: dict) -> None:
        self._print(f"{e['command']}: {e['message']}" if e["ok"] else f"{e['command']} refused: {e['message']}")

    def _on_paused(self, e: dict) -> None:
        resume = f" (resume: {loratui_command('resume', self.job_id)})" if self.job_id else ""
        self._print(f"paused after step {e['step']}{resume}")

    def _on_resumed(self, e: dict) -> None:
        self._print(f"resumed at step {e['step']} after a pause of {format_duration(e['paused_s'])}")

    def _on_warning(self, e: dict) -> None:
        hint = f" ({e['hint']})" if e["hint"] else ""
        self._print(f"warning: {e['message']}{hint}")

    def _on_error(self, e: dict) -> None:
        hint = f"\n  fix: {e['hint']}" if e["hint"] else ""
        self._print(f"error: {e['message']}{hint}")

    def _on_finished(self, e: dict) -> None:
        self._print(
            f"Finished: {e['path']} ({_count(e['step'], 'step')}, {_count(e['epoch'], 'epoch')}, "
            f"{format_duration(e['elapsed_s'])} of training)"
        )

    def _on_stopped(self, e: dict) -> None:
        self._print(f"Stopped at step {e['step']}: saved {e['path']}")
        if e.get("state") and self.config:
            self._print(f"Resume with: {resume_command(self.config, e['state'])}")
        elif e.get("state"):
            self._print(f"Resumable state: {e['state']}")

    def _on_failed(self, e: dict) -> None:
        self._print(f"Failed at step {e['step']}: {e['message']}")


def _count(number: object, noun: str) -> str:
    """A count from an event ("?" when the engine did not send it)."""
    return quantities.count(number, noun) if isinstance(number, int) else f"? {noun}s"
