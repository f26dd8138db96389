"""The files the run has saved so far, newest last: LoRA files and resumable states.

Paths are long; each line shows the file's name, and the folder is written once above them
when all share one (they do: ``output.output_dir``). With held-out images, the best checkpoint is
marked "★" and named under the list: the one saved at or right after the step of the lowest validation loss
(:func:`loratui.core.checkpoint_losses.best_checkpoint`), with that loss.
"""

from __future__ import annotations

import os

from textual.content import Content

from loratui.core.checkpoint_losses import best_checkpoint
from loratui.core.terminal_text import escape_controls
from loratui.tui.dashboard import format as fmt
from loratui.tui.dashboard.view import Panel, View

SHOWN = 6  # the newest ones; the count says how many more there are
KINDS = {"epoch": "epoch", "step": "step", "final": "final", "stop": "stop", "manual": "saved", "state": "state"}


class CheckpointsPanel(Panel):
    def build(self, view: View) -> Content:
        checkpoints = view.summary.checkpoints
        if not checkpoints:
            return Content.styled("none yet", "$text-muted")
        folders = {os.path.dirname(c.path) for c in checkpoints}
        common = folders.pop() if len(folders) == 1 else None
        lines: list[Content] = []
        if common:
            lines.append(
                Content.assemble(
                    ("in ", "$text-muted"), escape_controls(common), ("  (kind, step, file, size)", "$text-muted")
                )
            )
        hidden = len(checkpoints) - SHOWN
        if hidden > 0:
            lines.append(Content.styled(f"… {hidden} earlier", "$text-muted"))
        best = best_checkpoint(view.summary)
        for checkpoint in checkpoints[-SHOWN:]:
            name = os.path.basename(checkpoint.path) if common else checkpoint.path
            style = "bold $success" if checkpoint.kind == "final" else ""
            lines.append(
                Content.assemble(
                    (f"{KINDS.get(checkpoint.kind, checkpoint.kind):<5} ", "$secondary"),
                    (f"{fmt.number(checkpoint.step):>7}  ", "$text-muted"),
                    (escape_controls(name), style),
                    (f"  {fmt.size(checkpoint.bytes)}", "$text-muted"),
                    (" ★", "bold $warning") if checkpoint is best else "",
                )
            )
        if best is not None:
            lines.append(self._best_line(view, best, shown=any(c is best for c in checkpoints[-SHOWN:]), common=common))
        return Content("\n").join(lines)

    def _best_line(self, view: View, best, shown: bool, common: str | None) -> Content:
        """Which file the validation loss favours, and why; named here when it is among the earlier ones."""
        step, loss = view.summary.best_validation
        name = "" if shown else escape_controls(os.path.basename(best.path) if common else best.path) + ", "
        return Content.assemble(
            ("★ best: ", "bold $warning"),
            name,
            (f"lowest val loss {fmt.loss(loss)} (step {fmt.number(step)})", "$text-muted"),
        )
