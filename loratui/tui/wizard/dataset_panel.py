"""The Dataset step's live view: what the image folder holds (scanned in a worker thread), and the
step calculator: images x repeats x epochs / batch = steps, and the repeats that reach a target.

While the step is shown the panel watches the folders: every :data:`WATCH_S` a worker takes their
:func:`~loratui.dataset_folders.tree_signature` (names, sizes and times of the files, no image is
read) and the panel scans again when it differs from the one of the last scan. When the calculator
suggests other repeats, a button renames the concept folders to them (``img/10_ohwx woman`` ->
``img/15_ohwx woman``), refusing when a folder of that name exists, and scans again."""

from __future__ import annotations

import copy
from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.message import Message
from textual.widgets import Button, Input, Label, Static
from textual.worker import get_current_worker

from loratui.config import RunConfig
from loratui.core.terminal_text import escape_controls
from loratui.dataset import DatasetReport, repeats_for_target
from loratui.dataset_folders import Signature, rename_repeats, renamed_for_repeats, tree_signature
from loratui.errors import Problem, UserError
from loratui.held_out import held_out_summary, scan_run_dataset
from loratui.quantities import count
from loratui.schedule import resolve_schedule
from loratui.tui.widgets import SteadyInput
from loratui.tui.wizard.field_row import SEVERITY_ORDER, FieldRow, problem_text
from loratui.tui.wizard.fields import FIELDS

# Changing any of these changes what the scan finds.
SCAN_FIELDS = frozenset(
    {
        "dataset.image_dir",
        "dataset.reg_dir",
        "dataset.caption_extension",
        "dataset.resolution",
        "dataset.enable_buckets",
        "dataset.min_bucket_reso",
        "dataset.max_bucket_reso",
        "dataset.bucket_reso_steps",
        "dataset.bucket_no_upscale",  # each image's bucket follows its size
        # which images are held out for the validation loss (loratui/held_out.py)
        "dataset.validation_split",
        "dataset.validation_dir",
        "training.seed",
    }
)

WATCH_S = 1.5  # how often the folders are looked at while the step is shown


def shown_path(path: Path, base_dir: Path) -> str:
    """A path relative to the project folder when it is inside it: short, and the same on every machine."""
    try:
        return str(path.relative_to(base_dir)) or "."
    except ValueError:
        return str(path)


def shown_problem(problem: Problem, base_dir: Path) -> Problem:
    where = problem.where
    if where.startswith("/"):
        where = shown_path(Path(where), base_dir)
    message = problem.message.replace(str(base_dir) + "/", "")
    fix = problem.fix.replace(str(base_dir) + "/", "")
    return Problem(where, message, fix, problem.severity)


class DatasetPanel(Vertical):
    """Scan results and the step calculator. The screen feeds it the config; it scans on request."""

    class ScanFinished(Message):
        def __init__(self, report: DatasetReport, signature: Signature | None = None) -> None:
            super().__init__()
            self.report = report
            self.signature = signature  # the folders as they were when the scan began

    class FoldersChanged(Message):
        """The watch found the folders changed since the last scan."""

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(id="dataset-panel")
        self.cfg = cfg
        self.report: DatasetReport | None = None
        self.scanning = False
        self.suggested_repeats: int | None = None  # repeats the calculator suggests renaming the folders to
        self._roots: tuple[Path | None, ...] | None = None  # the folders of the last scan
        self._scanned: Signature | None = None  # their signature when it began
        self._watch_timer = None

    @property
    def error_count(self) -> int:
        """Errors the last scan found (files and folders: they belong to no field of the wizard)."""
        return sum(problem.severity == "error" for problem in self.report.problems) if self.report else 0

    def compose(self) -> ComposeResult:
        yield Static("Dataset scan", classes="panel-title")
        yield Static("", id="scan-summary")
        yield Static("", id="scan-problems")
        yield Static("Step calculator", classes="panel-title")
        yield Static("", id="calc-formula")
        base = self.cfg.base_dir
        yield FieldRow(FIELDS["training.epochs"], self.cfg.training.epochs, base, id_prefix="calc", compact_help=True)
        yield FieldRow(
            FIELDS["training.batch_size"], self.cfg.training.batch_size, base, id_prefix="calc", compact_help=True
        )
        with Horizontal(classes="field-line"):
            yield Label("Target steps", classes="field-label")
            yield SteadyInput(
                placeholder="e.g. 3000 (the guides use 3000-5000)",
                type="integer",
                compact=True,
                id="calc-target",
                select_on_focus=False,
            )
        yield Static("", id="calc-repeats")
        rename = Button("", id="calc-rename", compact=True)
        rename.display = False
        yield rename

    # -- scanning ------------------------------------------------------------------------------

    def start_scan(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        data = cfg.dataset
        summary = self.query_one("#scan-summary", Static)
        if not data.image_dir.strip() and not cfg.subsets:
            self.report = None
            self._roots = None
            summary.update("Set the image folder above to scan it.")
            self.query_one("#scan-problems", Static).update("")
            self.update_calculator(cfg)
            return
        image_dir = cfg.resolve(data.image_dir) if data.image_dir.strip() else None
        reg_dir = cfg.resolve(data.reg_dir) if data.reg_dir.strip() else None
        self.scanning = True
        validation_dir = cfg.resolve(data.validation_dir) if data.validation_dir.strip() else None
        subset_dirs = [cfg.resolve(subset.image_dir) for subset in cfg.subsets if subset.image_dir.strip()]
        self._roots = (image_dir, reg_dir, validation_dir, *subset_dirs)
        scanned = shown_path(image_dir, cfg.base_dir) if image_dir is not None else "the [[subsets]] folders"
        summary.update(Content(escape_controls(f"Scanning {scanned} ...")))
        scanned_cfg, roots = copy.deepcopy(cfg), self._roots  # the worker's own: the fields may change meanwhile
        self.run_worker(
            lambda: self._scan(scanned_cfg, roots),
            thread=True,
            exclusive=True,
            group="dataset-scan",
            name="dataset scan",
        )

    def _scan(self, cfg: RunConfig, roots: tuple[Path | None, ...]) -> None:
        """Runs in a worker thread: reading thousands of image headers takes seconds."""
        # Taken first: a file that changes during the scan changes the signature again, so the
        # watch scans once more rather than missing it.
        signature = tree_signature(*roots)
        # The same scan as the check's and the engine's: held-out images are out of the counts.
        report = scan_run_dataset(cfg)
        if not get_current_worker().is_cancelled:
            self.post_message(self.ScanFinished(report, signature))

    @on(ScanFinished)
    def _scan_finished(self, message: ScanFinished) -> None:
        self.scanning = False
        self.report = message.report
        self._scanned = message.signature
        self._show_report()
        self.update_calculator(self.cfg)

    # -- watching the folders ------------------------------------------------------------------

    def watch_folders(self, on: bool) -> None:
        """Look at the folders every :data:`WATCH_S` (while the step is shown), or stop."""
        if on and self._watch_timer is None:
            self._watch_timer = self.set_interval(WATCH_S, self._look)
        elif not on and self._watch_timer is not None:
            self._watch_timer.stop()
            self._watch_timer = None

    def _look(self) -> None:
        if self.scanning or self._roots is None or self._scanned is None:
            return
        roots, scanned = self._roots, self._scanned
        self.run_worker(
            lambda: self._compare(roots, scanned),
            thread=True,
            exclusive=True,
            group="dataset-watch",
            name="dataset watch",
        )

    def _compare(self, roots: tuple[Path | None, ...], scanned: Signature) -> None:
        """Runs in a worker thread: a stat per file (thousands in a large dataset)."""
        if tree_signature(*roots) != scanned and not get_current_worker().is_cancelled:
            self.post_message(self.FoldersChanged())

    @on(FoldersChanged)
    def _folders_changed(self, message: FoldersChanged) -> None:
        message.stop()
        if not self.scanning:
            self.start_scan(self.cfg)

    def _show_report(self) -> None:
        report, base = self.report, self.cfg.base_dir
        assert report is not None
        concepts = (*report.concepts, *report.reg_concepts)
        if concepts:
            table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold", expand=False)
            for column, justify in (
                ("Folder", "left"),
                ("Images", "right"),
                ("Repeats", "right"),
                ("Per epoch", "right"),
                ("Captions", "right"),
                ("Small", "right"),
            ):
                table.add_column(column, justify=justify, no_wrap=column != "Folder", overflow="fold")
            for concept in concepts:
                images = len(concept.images)
                captions = concept.captioned
                label = Text(escape_controls(("reg " if concept.is_reg else "") + concept.folder.name))  # not markup
                table.add_row(
                    label,
                    str(images),
                    str(concept.repeats),
                    str(images * concept.repeats),
                    f"{captions}/{images}",
                    str(len(concept.small_images)),
                )
            if self.cfg.subsets:  # not editable here: say where they come from
                tables = count(len(self.cfg.subsets), "[[subsets]] table")
                note = Text(f"With {tables} from the TOML file (edit them there; each is one row below).")
                self.query_one("#scan-summary", Static).update(Group(note, table))
            else:
                self.query_one("#scan-summary", Static).update(table)
        else:
            folder = escape_controls(shown_path(report.image_dir or base, base))
            self.query_one("#scan-summary", Static).update(
                Content(
                    f"No concept folders in {folder}: put your images in "
                    f"{folder}/<repeats>_<token class>/, e.g. 15_ohwx woman/."
                )
            )
        problems = sorted(report.problems, key=lambda p: SEVERITY_ORDER.get(p.severity, 3))
        box = self.query_one("#scan-problems", Static)
        if problems:
            text = Content("\n").join(problem_text(shown_problem(p, base), with_where=True) for p in problems)
            box.update(text)
            box.set_class(any(p.severity == "error" for p in problems), "-error")
        else:
            box.update(Content.styled("✓ no problems found in the images and captions", "$success"))
            box.set_class(False, "-error")

    # -- the calculator ------------------------------------------------------------------------

    def sync_field(self, name: str, value: object) -> None:
        for row in self.query(FieldRow):
            if row.spec.name == name:
                row.set_value(value)

    def update_calculator(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        formula = self.query_one("#calc-formula", Static)
        repeats_box = self.query_one("#calc-repeats", Static)
        report = self.report
        if report is None or report.num_images == 0:
            formula.update("steps = images x repeats x epochs / batch size: the numbers appear once images are found.")
            repeats_box.update("")
            self._show_rename(None)
            return
        training = cfg.training
        batch, epochs = training.batch_size, training.epochs
        items = report.num_train_items
        reg = report.num_reg_items
        per_epoch = report.num_items_per_epoch
        parts = [" + ".join(f"{len(c.images)} x {c.repeats}" for c in report.concepts if c.images)]
        lines = [
            f"images x repeats: {parts[0]} = {items} per epoch"
            + (f", + {reg} regularisation = {per_epoch}" if reg else "")
        ]
        if report.held_out:  # out of the folders' counts above
            lines.append(f"({held_out_summary(report)})")
        batches = report.steps_per_epoch(batch) if batch >= 1 else 0
        schedule = resolve_schedule(cfg, batches)  # None while a length setting is invalid
        if schedule is not None:
            rounding = "" if batches == -(-per_epoch // batch) else " (rounded up in each aspect bucket)"
            accumulation = (
                f" / accumulation {training.gradient_accumulation_steps}"
                if training.gradient_accumulation_steps > 1
                else ""
            )
            per_epoch_steps = count(schedule.steps_per_epoch, "step")
            lines.append(f"/ batch {batch}{accumulation} = {per_epoch_steps} per epoch{rounding}")
            if schedule.note:
                lines.append(f"x {count(schedule.epochs, 'epoch')}: {schedule.note}")
            else:
                lines.append(f"x {count(epochs, 'epoch')} = {count(schedule.total_steps, 'step')} in total")
        else:
            lines.append("the steps show once batch size, epochs or max train steps and accumulation are valid")
        if cfg.model.family == "sdxl" and report.num_reg_images and report.num_reg_images != items:
            # kohya cycles the reg images to fill the places; the SDXL guide fills each with its own.
            lines.append(
                f"The SDXL guide: {items} reg images, one per image x repeat, in reg/1_<class>; "
                f"the reg folder has {report.num_reg_images}."
            )
        formula.update("\n".join(lines))
        self._show_repeats()

    def _show_repeats(self) -> None:
        """The repeats that reach the target, and the button that renames the folders to them."""
        assert self.report is not None
        text, repeats = self._repeats_text(self.report, self.cfg.training.batch_size, self.cfg.training.epochs)
        # folder names are text, not markup, with their control characters escaped
        self.query_one("#calc-repeats", Static).update(Content(escape_controls(text)))
        self._show_rename(repeats)

    def _repeats_text(self, report: DatasetReport, batch: int, epochs: int) -> tuple[str, int | None]:
        """What the calculator says, and the repeats it suggests renaming the folders to (None:
        no target, or the folders have them already)."""
        raw = self.query_one("#calc-target", Input).value.strip()
        if not raw:
            return "Type a target step count to get the repeats that reach it.", None
        try:
            target = int(raw)
        except ValueError:
            return f"{raw!r} is not a whole number; type a step count such as 3000.", None
        if target < 1 or batch < 1 or epochs < 1:
            return "The target, the batch size and the epochs must be 1 or more.", None
        # Regularisation images double the items of every epoch (kohya's reg factor).
        factor = 2 if report.num_reg_images else 1
        repeats = repeats_for_target(target, report.num_images * factor, epochs, batch)
        reached = -(-report.num_images * repeats * factor // batch) * epochs
        renames = [
            f"{folder.name} -> {target.name}"
            for folder in self._renamable(report)
            if (target := renamed_for_repeats(folder, repeats)) is not None
        ]
        reg_factor = " x 2 (reg)" if factor == 2 else ""
        reach = "reaches" if repeats == 1 else "reach"
        text = (
            f"{count(repeats, 'repeat')} per image {reach} about {count(reached, 'step')} "
            f"({count(report.num_images, 'image')} x {repeats}{reg_factor} x {count(epochs, 'epoch')} "
            f"/ batch {batch})."
        )
        if renames:
            text += " Rename: " + "; ".join(renames)
        if not 10 <= repeats <= 30:
            text += " The guides keep repeats between 10 and 30: adjust the epochs or the target."
        return text, repeats if renames else None

    def _renamable(self, report: DatasetReport) -> list[Path]:
        """The kohya concept folders: a [[subsets]] folder's repeats are in the TOML, not in its name."""
        subsets = {self.cfg.resolve(subset.image_dir) for subset in self.cfg.subsets if subset.image_dir.strip()}
        return [concept.folder for concept in report.concepts if concept.folder not in subsets]

    def _show_rename(self, repeats: int | None) -> None:
        self.suggested_repeats = repeats
        button = self.query_one("#calc-rename", Button)
        folders = self._renamable(self.report) if self.report and repeats else []
        moves = [(folder, target) for folder in folders if (target := renamed_for_repeats(folder, repeats)) is not None]
        button.display = bool(moves)
        if len(moves) == 1:
            folder, target = moves[0]
            button.label = Content(escape_controls(f"Rename {folder.name} to {target.name}"))
        elif moves:
            button.label = Content(f"Rename {count(len(moves), 'folder')} to {count(repeats, 'repeat')}")

    @on(Button.Pressed, "#calc-rename")
    def _rename_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if self.report is None or self.suggested_repeats is None:
            return
        base = self.cfg.base_dir
        try:
            done = rename_repeats(self._renamable(self.report), self.suggested_repeats)
        except UserError as err:
            self.notify(
                str(err).replace(str(base) + "/", ""), title="Not renamed", severity="error", timeout=10, markup=False
            )
            return
        renamed = "; ".join(f"{shown_path(old, base)} -> {new.name}" for old, new in done)
        self.notify(escape_controls(f"Renamed {renamed}"), title="Repeats", timeout=6, markup=False)
        self.start_scan(self.cfg)
        self.query_one("#calc-target", Input).focus()

    @on(Input.Changed, "#calc-target")
    def _target_changed(self, event: Input.Changed) -> None:
        event.stop()
        if self.report is not None:
            self._show_repeats()
