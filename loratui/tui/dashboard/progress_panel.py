"""Where the run is: step and epoch bars, time left and spent, speed, learning rates.

The ETA is :meth:`RunSummary.eta_s` at the screen's clock: the engine's own step timings (saves
and pauses left out), counting down between two step events but never by more than a step.
The elapsed time is the engine's training time and counts up the same way between steps.
"""

from __future__ import annotations

from textual.content import Content

from loratui.core.summary import RunSummary
from loratui.tui.dashboard import format as fmt
from loratui.tui.dashboard.view import Panel, View


def elapsed_s(summary: RunSummary, now: float) -> float:
    """Training seconds, counting up between step events by at most one step's time."""
    pace = summary.eta.pace
    counting = summary.state == "running" and summary.phase == "training" and summary.last_step_t is not None
    if not counting or pace is None:
        return summary.elapsed_s
    return summary.elapsed_s + min(max(now - summary.last_step_t, 0.0), pace)


class ProgressPanel(Panel):
    def build(self, view: View) -> Content:
        summary, width = view.summary, self.text_width
        lines: list[Content] = []
        if summary.total_steps is None:  # the engine is still loading: there is no step count yet
            lines.append(Content(summary.phase_message or "waiting for the engine…"))
            if summary.phase_progress and summary.phase_progress[1]:
                current, total = summary.phase_progress
                lines.append(self._bar_line(f"{summary.phase.replace('_', ' ')}", f"{current}/{total}",
                                            current / total, width, "$secondary"))
            return Content("\n").join(lines)
        steps = f"{fmt.number(summary.step)} / {fmt.number(summary.total_steps)}"
        epochs = f"{summary.epoch} / {summary.total_epochs}"
        label_width = max(len(steps), len(epochs))
        lines.append(self._bar_line("Step", steps.rjust(label_width), summary.progress, width, "$primary"))
        epoch_style = "$secondary"
        lines.append(self._bar_line("Epoch", epochs.rjust(label_width), summary.epoch_progress, width, epoch_style))
        lines.append(self._times(view))
        if summary.lr:
            rates = " · ".join(f"{name} {fmt.lr(value)}" for name, value in summary.lr.items())
            lines.append(Content.assemble(("LR ", "bold"), rates))
        return Content("\n").join(lines)

    def _bar_line(self, label: str, count: str, fraction: float, width: int, style: str) -> Content:
        head = f"{label:<6}{count} "
        tail = f" {fraction * 100:5.1f}%"
        bar_width = max(4, width - len(head) - len(tail))
        return Content.assemble((head, "bold"), fmt.bar(fraction, bar_width, style), tail)

    def _times(self, view: View) -> Content:
        summary = view.summary
        eta = summary.eta_s(view.now)
        if view.ended:
            eta_text = "done" if summary.state == "finished" else fmt.DASH
        elif summary.state == "paused":
            eta_text = f"{fmt.duration(eta)} (paused)" if eta is not None else "paused"
        else:
            eta_text = fmt.duration(eta)
        samples = f"{summary.samples_per_s:.1f}" if summary.samples_per_s else fmt.DASH
        return Content.assemble(
            ("ETA ", "bold"), (eta_text, "bold $accent"),
            ("  elapsed ", "bold"), fmt.duration(elapsed_s(summary, view.now)),
            ("  speed ", "bold"), fmt.speed(summary.s_per_step),
            ("  samples/s ", "bold"), samples,
        )
