"""``loratui grid`` on the terminal side: where a grid job runs, the pick view, following its progress
and showing the finished PNG (torch-free).

A grid job is a job like training (loratui.jobs, kind "grid"): its run folder sits beside the run's
own (in the run's log folder), so a dropped terminal never stops it and ``loratui attach JOB``
follows it again from any SSH session.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from loratui.core.exit_codes import ExitCode, exit_code_of_run
from loratui.core.terminal_text import escape_controls
from loratui.grid_spec import GridRow, GridSpec, RunCheckpoints
from loratui.shell import attach_command, quote, stop_command

GRID_SHOWN_COLUMNS = 100  # the widest the finished grid is drawn in a terminal


def grid_log_dir(run: RunCheckpoints | None, config: str | None) -> Path:
    """Where the grid job's run folder goes: beside the run's, in ``--config``'s log folder, else in
    loratui's state folder (LoRA files given with --model only)."""
    if run is not None:
        return run.folder.parent
    if config:
        from loratui.config import load_config

        cfg = load_config(config)
        return cfg.resolve(cfg.output.log_dir)
    from loratui.paths import state_dir

    return state_dir() / "grids"


def grid_job_name(spec: GridSpec) -> str:
    """The start of the grid job's id: the LoRA's output name, else the last file's name."""
    name = spec.config.get("output", {}).get("name") if spec.source != "files" else None
    return name or Path(spec.rows[-1].path).stem


# ----------------------------------------------------------------------------- the pick view
def pick_lines(rows: list[GridRow], losses: list[float | None], best: int | None) -> list[str]:
    """Each checkpoint (a row of the grid) with its validation loss, the best one (``best``) marked."""
    losses = losses or [None] * len(rows)
    known = [loss for loss in losses if loss is not None]
    width = max(len(row.label) for row in rows)
    lines = ["Checkpoints (rows):"]
    for index, (row, loss) in enumerate(zip(rows, losses, strict=True)):
        shown = f"val loss {loss:.4f}" if loss is not None else "val loss -     "
        mark = "  <- best" if index == best else ""
        lines.append(escape_controls(f"  {row.label:<{width}}  {shown}  {row.path}{mark}"))
    if not known:
        lines.append("  (no validation loss: set dataset.validation_split or dataset.validation_dir to measure one)")
    return lines


def grid_line(spec: GridSpec) -> str:
    """The columns and the prompt, in a line."""
    weights = ", ".join(f"{weight:g}" for weight in spec.weights)
    return escape_controls(f"Weights (columns): {weights}; prompt: {spec.prompt.prompt!r}, seed {spec.prompt.seed}")


# ----------------------------------------------------------------------------- following a grid job
class GridProgress:
    """A grid job's events as lines: the cell being rendered, then where the PNG is."""

    def __init__(self, out: TextIO = sys.stdout, interactive: bool | None = None) -> None:
        self.out = out
        self.interactive = out.isatty() if interactive is None else interactive
        self._line_open = False

    def handle(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "status":
            self._on_status(event)
        elif kind == "error":
            hint = f"\n  fix: {event['hint']}" if event.get("hint") else ""
            self._print(f"error: {event['message']}{hint}")
        elif kind == "control" and not event.get("ok"):
            self._print(f"refused {event['command']}: {event['message']}")
        elif kind == "finished":
            self._print(f"Grid written: {quote(event['path'])}")
        elif kind == "stopped":
            self._print(f"Stopped after {event['step']} images; no grid was written")
        elif kind == "failed":
            self._print(f"Failed after {event['step']} images: {event['message']}")

    def _on_status(self, e: dict) -> None:
        current, total = e.get("current"), e.get("total")
        text = f"[{current}/{total}] {e['message']}" if current is not None and total is not None else e["message"]
        if self.interactive and total is not None and current != total:
            self.out.write("\r" + escape_controls(text) + "\x1b[K")
            self.out.flush()
            self._line_open = True
        else:
            self._print(text)

    def _print(self, text: str) -> None:
        if self._line_open:
            self.out.write("\n")
            self._line_open = False
        self.out.write(escape_controls(text, keep="\n") + "\n")
        self.out.flush()


def follow_grid(record, out: TextIO = sys.stdout) -> int:
    """Print a grid job's progress from its first event until it ends, then show the PNG where the
    terminal can. Ctrl+C detaches: the job goes on."""
    from loratui.jobs.follow import follow_to_end

    progress = GridProgress(out)
    detached = (
        f"Detached; grid job {record.job_id} goes on. Re-attach: {attach_command(record.job_id)}   "
        f"stop it: {stop_command(record.job_id)}"
    )
    ended = follow_to_end(record, progress.handle, detached)
    if ended is None:
        return ExitCode.OK
    final, error = ended
    if final is None:
        print(
            f"error: the grid job ended without finishing (killed or crashed); see {record.log_path}", file=sys.stderr
        )
        return ExitCode.FAILED
    if final["type"] == "finished":
        show_png(Path(final["path"]), out)
    return exit_code_of_run(final, error)


def show_png(path: Path, out: TextIO = sys.stdout) -> bool:
    """Draw the PNG in the terminal (Kitty graphics, Sixel, else half-blocks: textual-image picks what
    the terminal answers it has); nothing when the output is no terminal. True when drawn."""
    if not out.isatty():
        return False
    try:
        from rich.console import Console
        from textual_image.renderable import Image as TerminalImage

        console = Console(file=out)
        console.print(TerminalImage(str(path), width=min(console.width, GRID_SHOWN_COLUMNS)))
    except Exception as exc:  # a picture the terminal cannot take is no reason to fail the command
        print(escape_controls(f"(cannot show the image here: {exc})"), file=out)
        return False
    return True


def start_run_grid(run_folder: Path):
    """Start the default grid of a run (its checkpoints x 0.4..1.0, its first sample prompt) as a job;
    the job and the spec. A UserError when the run cannot make one (a single checkpoint, no prompt)."""
    from loratui.grid_spec import GridRequest, resolve_grid
    from loratui.jobs.launch import start_grid_job

    spec, run = resolve_grid(GridRequest([str(run_folder)]))
    return start_grid_job(spec.to_json(), grid_log_dir(run, None), grid_job_name(spec)), spec


def lora_checkpoint_count(summary) -> int:
    """How many LoRA files a run saved (a grid needs two)."""
    from loratui.grid_spec import LORA_KINDS

    return len({checkpoint.path for checkpoint in summary.checkpoints if checkpoint.kind in LORA_KINDS})
