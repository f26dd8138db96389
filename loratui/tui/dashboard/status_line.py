"""The top line: the job, its state in words and colour, what the engine is doing, on what device."""

from __future__ import annotations

from textual.content import Content

from loratui.core.terminal_text import escape_controls
from loratui.tui.dashboard import format as fmt
from loratui.tui.dashboard.view import Panel, View

STATE_STYLES = {
    "starting": "$secondary",
    "running": "$success",
    "paused": "$warning",
    "finished": "$success",
    "stopped": "$warning",
    "failed": "$error",
    "gone": "$error",
}
STATE_MARKS = {
    "starting": "◌",
    "running": "●",
    "paused": "‖",
    "finished": "✔",
    "stopped": "■",
    "failed": "✘",
    "gone": "✘",
}


class StatusLine(Panel):
    def build(self, view: View) -> Content:
        state = view.state if view.loaded else "starting"
        style = STATE_STYLES.get(state, "")
        parts: list[Content] = [
            Content.styled(f" {STATE_MARKS.get(state, '?')} {state.upper()} ", f"bold {style} reverse"),
            Content(" "),
            Content.styled(view.record.job_id, "bold"),
        ]
        detail = self._detail(view)
        if detail:  # the engine's own words, which may name a file (escaped)
            parts.append(Content.styled(f"  {escape_controls(detail)}", "$text-muted"))
        return Content.assemble(*parts)

    def _detail(self, view: View) -> str:
        summary = view.summary
        if not view.loaded:
            return "reading the run's history…"
        if view.ended:
            return ""
        bits = []
        if summary.state == "paused" and summary.paused_since is not None:
            bits.append(f"paused for {fmt.duration(view.now - summary.paused_since)}")
        elif summary.phase_message and summary.phase != "training":
            bits.append(summary.phase_message)
        if summary.device_name:
            precision = (
                f", {summary.mixed_precision}" if summary.mixed_precision and summary.mixed_precision != "no" else ""
            )
            bits.append(f"{summary.device_name}{precision}")
        if summary.warning_count:
            bits.append(f"{summary.warning_count} warning{'s' if summary.warning_count != 1 else ''}")
        return " · ".join(bits)
