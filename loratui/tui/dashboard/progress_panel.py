"""Where the run is: step and epoch bars, time left and spent, speed, learning rates.

The ETA is :meth:`RunSummary.eta_s` at the screen's clock: the engine's own step timings (saves
and pauses left out), counting down between two step events but never by more than a step.
The elapsed time is the wall time since the job was launched (its record's start): loading the
model, caching and pauses count, as they do for the person waiting; it stops at the run's end.
"""

from __future__ import annotations

from textual.content import Content

from loratui.tui.dashboard import format as fmt
from loratui.tui.dashboard.view import Panel, View


def elapsed_s(view: View) -> float:
    """Seconds since the launch, up to now, or to the final event (the last one, when the engine
    died without one) once the run has ended."""
    summary = view.summary
    end = view.now
    if summary.final is not None:
        end = summary.final.get("t", end)
    elif view.engine_gone and summary.last_event_t is not None:
        end = summary.last_event_t
    return max(0.0, end - view.record.started_at)


class ProgressPanel(Panel):
    def build(self, view: View) -> Content:
        summary, width = view.summary, self.text_width
        lines: list[Content] = []
        if summary.total_steps is None:  # the engine is still loading: there is no step count yet
            lines.append(Content(summary.phase_message or "waiting for the engine…"))
            if summary.phase_progress and summary.phase_progress[1]:
                current, total = summary.phase_progress
                lines.append(
                    self._bar_line(
                        f"{summary.phase.replace('_', ' ')}", f"{current}/{total}", current / total, width, "$secondary"
                    )
                )
            if view.loaded:
                lines.append(Content.assemble(("elapsed ", "bold"), fmt.duration(elapsed_s(view))))
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
            ("ETA ", "bold"),
            (eta_text, "bold $accent"),
            ("  elapsed ", "bold"),
            fmt.duration(elapsed_s(view)),
            ("  speed ", "bold"),
            fmt.speed(summary.s_per_step),
            ("  samples/s ", "bold"),
            samples,
        )
