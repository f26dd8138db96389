"""The setup wizard: Model, Dataset, Training, Network, Optimizer, Output, Review.

Keys (also in the footer and the command palette): Tab / Shift+Tab move between fields,
PageDown (or Ctrl+N) and PageUp (or Esc) move between steps, Ctrl+S saves the config at any step,
Ctrl+O imports a kohya_ss config, Ctrl+L launches from any step. Every change is validated at once
and the reason is shown under the field. A refused or failed launch goes to the field at fault and
shows why under it (the Review step lists every problem). Esc on the first step, or q outside a
text field, closes the wizard (asking first about unsaved changes): the app goes back to where
the wizard was opened from.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Button, ContentSwitcher, Footer, Header, Label, OptionList, Select, Static
from textual.widgets._select import SelectOverlay
from textual.worker import get_current_worker

from loratui.check import config_problems
from loratui.config import RunConfig, config_from_dict, config_to_dict, save_config
from loratui.core.terminal_text import escape_controls
from loratui.errors import Problem, UserError
from loratui.families import setting_applies
from loratui.jobs.record import JobRecord
from loratui.kohya_import import apply_import, load_kohya_json
from loratui.optimizer_args import canonical_optimizer
from loratui.schedule import resolve_schedule
from loratui.tui.dialogs import ConfirmQuitScreen
from loratui.tui.kohya import ImportReportScreen, KohyaImportScreen
from loratui.tui.kohya.screens import ImportChoice
from loratui.tui.outcome import LaunchFn
from loratui.tui.presets import PRESETS, PRESETS_BY_KEY, SDXL_ADAFACTOR_ARGS, apply_preset
from loratui.tui.wizard.dataset_panel import SCAN_FIELDS, DatasetPanel
from loratui.tui.wizard.field_row import FieldRow
from loratui.tui.wizard.fields import FIELDS, get_value, set_value
from loratui.tui.wizard.problem_field import field_problem
from loratui.tui.wizard.review import ReviewPanel
from loratui.tui.wizard.steps import STEP_IDS, STEPS, Step, step_of

# The guides' settings per optimizer: (args, U-Net LR, text encoder LR).
OPTIMIZER_ADVICE: dict[str, tuple[list[str], float, float]] = {
    "AdamW8bit": ([], 1e-4, 5e-5),
    "AdamW": ([], 1e-4, 5e-5),
    "Adafactor": (["relative_step=True", "scale_parameter=True", "warmup_init=True"], 1.0, 1.0),
    "DAdaptAdam": (["decouple=True", "weight_decay=0.01", "betas=0.9,0.999"], 1.0, 1.0),
    "Prodigy": (
        ["decouple=True", "weight_decay=0.01", "d_coef=2", "use_bias_correction=True", "safeguard_warmup=True"],
        1.0,
        1.0,
    ),
}

# What differs for SDXL: kohya_ss's SDXL presets run Adafactor at a fixed rate.
SDXL_OPTIMIZER_ADVICE: dict[str, tuple[list[str], float, float]] = {
    **OPTIMIZER_ADVICE,
    "Adafactor": (list(SDXL_ADAFACTOR_ARGS), 1e-3, 1e-4),
}


# The settings the advice depends on.
ADVICE_FIELDS = frozenset(
    {"optimizer.name", "optimizer.args", "optimizer.unet_lr", "optimizer.text_encoder_lr", "model.family"}
)


def optimizer_advice(name: str, family: str) -> tuple[list[str], float, float] | None:
    return (SDXL_OPTIMIZER_ADVICE if family == "sdxl" else OPTIMIZER_ADVICE).get(name)


# Built with the screen: the first step, and the Dataset step whose scan starts at once.
EAGER_STEPS = frozenset({"model", "dataset"})

_SCAN_DELAY_S = 0.3  # wait for typing to pause before scanning the folder again


class WizardScreen(Screen[None]):
    """Edits one run config, step by step; the App owns the result and the quit decision."""

    BINDINGS = [
        Binding("ctrl+s", "save", "Save", priority=True),
        Binding("pagedown,ctrl+n", "next_step", "Next", key_display="PgDn", priority=True),
        Binding("pageup", "prev_step", "Back", key_display="PgUp/Esc", priority=True),
        Binding("escape", "prev_step", "Back", show=False),
        Binding("ctrl+o", "import_kohya", "Import", priority=True),
        Binding("ctrl+l", "launch", "Launch", priority=True),
        Binding("ctrl+q", "app.quit", "Quit", priority=True),
        Binding("q", "leave", "Close", show=False),  # only reaches here outside text fields
    ]

    class Saved(Message):
        def __init__(self, path: Path) -> None:
            super().__init__()
            self.path = path

    class LaunchFinished(Message):
        def __init__(self, record: JobRecord | None, error: UserError | None) -> None:
            super().__init__()
            self.record = record
            self.error = error

    class Launched(Message):
        """A job was started from this wizard (the app shows its dashboard over the wizard)."""

        def __init__(self, record: JobRecord, config_path: Path) -> None:
            super().__init__()
            self.record = record
            self.config_path = config_path

    def __init__(
        self,
        cfg: RunConfig,
        config_path: Path,
        *,
        new_project: bool = False,
        on_launch: LaunchFn,
        kohya_json: Path | None = None,
        launch_error: UserError | None = None,
    ) -> None:
        """``on_launch``: starts the job of the saved config. ``launch_error``: why launching this
        config just failed (home's Train here): shown at the field at fault once the wizard is up."""
        super().__init__(id="wizard")
        self.cfg = cfg
        self.config_path = config_path
        self.new_project = new_project
        self.on_launch = on_launch
        self.kohya_json = kohya_json
        self.launch_error = launch_error
        self.step_index = 0
        self.dirty = new_project  # a new project's config does not exist until it is saved
        self.parse_errors: dict[str, Problem] = {}
        self.problems: list[Problem] = []
        # Why the last launch was refused, by the field shown at fault; kept until that field is
        # edited or the next launch (a dataset problem has no field of its own to go with it).
        self.launch_problems: dict[str, Problem] = {}
        self._scan_timer = None
        self._launching = False
        self._built: set[str] = set(EAGER_STEPS)

    # -- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header(icon="")
        yield Static("", id="step-bar")
        with ContentSwitcher(initial=f"step-{STEPS[0].id}", id="steps"):
            for step in STEPS:
                with VerticalScroll(id=f"step-{step.id}", classes="step-pane"):
                    if step.id in EAGER_STEPS:
                        yield from self._step_widgets(step)
        yield Footer()

    def _step_widgets(self, step: Step) -> list[Widget]:
        """What one step shows. Later steps are built on their first visit: a screen of ~400
        widgets takes a noticeable second to start on a small server, one step a fraction."""
        base = self.cfg.base_dir
        widgets: list[Widget] = [Static(f"{step.title}: {step.intro}", classes="step-intro", markup=False)]
        if step.id == "model":
            presets = Select(
                [(p.title, p.key) for p in PRESETS], prompt="Start from a preset (optional)", id="preset", compact=True
            )
            widgets.append(
                Horizontal(Label("Preset", classes="field-label"), presets, classes="field-line", id="preset-line")
            )
            widgets.append(
                Static(
                    "Sets the guides' numbers for the kind of LoRA (rank 128 for faces, 64 for styles; FLUX.1 "
                    "by card memory), or a built-in tiny model for a quick test. Paths stay as they are.",
                    classes="field-help",
                    id="preset-help",
                    markup=False,
                )
            )
        if step.id == "review":
            widgets.append(ReviewPanel())
        for spec in step.specs:
            widgets.append(FieldRow(spec, get_value(self.cfg, spec.name), base))
            if spec.name == step.panel_after and step.id == "dataset":
                widgets.append(DatasetPanel(self.cfg))
            if spec.name == "optimizer.name":
                widgets.append(Static("", id="optimizer-advice", markup=False))
                widgets.append(Button("", id="optimizer-apply", compact=True))
        return widgets

    async def _build_step(self, step: Step) -> None:
        if step.id in self._built:
            return
        self._built.add(step.id)
        await self.query_one(f"#step-{step.id}").mount_all(self._step_widgets(step))
        self._revalidate()
        if step.id == "optimizer":
            self._update_optimizer_advice()

    def on_mount(self) -> None:
        self._update_titles()
        self._revalidate()
        self.query_one(DatasetPanel).start_scan(self.cfg)
        self._focus_step()
        if self.kohya_json is not None:
            # After the first refresh: every field has mounted and shown its first value by then.
            self.call_after_refresh(self._import_path, self.kohya_json)
        if self.launch_error is not None:
            error = self.launch_error
            # str() of a UserError is escaped for the terminal already (loratui.errors.rendered).
            self.notify(str(error), title="Launch refused", severity="error", timeout=12, markup=False)
            self.call_after_refresh(self.show_launch_problem, Problem(error.where, error.message, error.fix))

    # -- steps -------------------------------------------------------------------------------

    @property
    def step(self) -> Step:
        return STEPS[self.step_index]

    async def goto_step(self, step_id: str, focus: str | None = None) -> None:
        await self._build_step(STEPS[STEP_IDS.index(step_id)])
        self.step_index = STEP_IDS.index(step_id)
        self.query_one("#steps", ContentSwitcher).current = f"step-{step_id}"
        self._update_step_bar()
        self._update_titles()
        panel = self.query_one(DatasetPanel) if step_id == "dataset" else None
        if panel is not None and not panel.scanning:
            # Images are often copied in while the wizard is open: show the folder as it is now.
            panel.start_scan(self.cfg)
        # and while the step is shown, scan again whenever the folders change
        self.query_one(DatasetPanel).watch_folders(step_id == "dataset")
        if step_id == "review":
            review = self.query_one(ReviewPanel)
            review.show_toml(self.cfg)
            if not self._launching:
                review.start_check(copy.deepcopy(self.cfg))
        self._focus_step(focus)

    def _focus_step(self, focus: str | None = None) -> None:
        pane = self.query_one(f"#step-{self.step.id}")

        def do_focus() -> None:
            if self.step.id == "review" and not focus:
                # The problems to fix when there are any (once the check has run), else Launch.
                review = self.query_one(ReviewPanel)
                problems = review.query_one("#review-problems", OptionList)
                has_problems = review.result is not None and problems.display
                (problems if has_problems else review.query_one("#review-launch")).focus(scroll_visible=False)
                pane.scroll_home(animate=False)
                return
            if focus:
                target = self.query_one(f"#{focus}")
                target.focus(scroll_visible=False)
                target.scroll_visible(animate=False, top=True)
                return
            # A step opens at its top, with the first field focused.
            first: Widget | None = next((w for w in pane.query("*") if w.focusable), None)
            if first is not None:
                first.focus(scroll_visible=False)
            pane.scroll_home(animate=False)

        self.call_after_refresh(do_focus)

    # The focused field's label is highlighted. A class on its one line restyles that line only;
    # a :focus-within rule would restyle the whole screen on every focus change.

    def on_descendant_focus(self, event) -> None:
        parent = event.widget.parent
        if parent is not None and parent.has_class("field-line"):
            parent.add_class("-focused")

    def on_descendant_blur(self, event) -> None:
        parent = event.widget.parent
        if parent is not None and parent.has_class("field-line"):
            parent.remove_class("-focused")

    async def action_next_step(self) -> None:
        if self.step_index + 1 < len(STEPS):
            await self.goto_step(STEPS[self.step_index + 1].id)
        else:
            self.notify("This is the last step: Ctrl+L launches, Ctrl+S saves.", timeout=4)

    async def action_prev_step(self) -> None:
        if self.step_index > 0:
            await self.goto_step(STEPS[self.step_index - 1].id)
        else:
            self.action_leave()  # back from the first step: back to where the wizard was opened from

    def action_leave(self) -> None:
        # The wizard `loratui new`/`edit` opened on has nowhere to go back to: leaving it quits.
        self.confirm_leave(self.dismiss, quitting=self.app.is_first_screen(self))

    def confirm_leave(self, leave, *, quitting: bool) -> None:
        """Call ``leave`` now, or, with unsaved changes, once the user chose to save them (and they
        were saved) or to drop them. ``quitting``: the whole app goes, not just the wizard."""
        if not self.dirty:
            leave()
            return

        def decided(choice: str | None) -> None:
            if choice == "discard" or (choice == "save" and self.action_save()):
                leave()

        self.app.push_screen(
            ConfirmQuitScreen(self.config_path.name, exists=self.config_path.exists(), quitting=quitting), decided
        )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # An open drop-down list keeps PageUp/PageDown for itself.
        if action in ("next_step", "prev_step") and isinstance(self.focused, SelectOverlay):
            return False
        return True

    def _update_step_bar(self) -> None:
        errors_per_step: dict[str, int] = defaultdict(int)
        for problem in self._all_field_problems():
            step = step_of(problem.where)
            if step is not None and problem.severity == "error":
                errors_per_step[step.id] += 1
        # The scan's problems name files and folders, not fields: they are the Dataset step's.
        errors_per_step["dataset"] += self.query_one(DatasetPanel).error_count
        bar = self.query_one("#step-bar", Static)
        # One line however narrow the terminal: the other steps' titles shorten, then go, before the bar wraps.
        for names in ("title", "short", "number"):
            content = self._step_bar_content(errors_per_step, names)
            if content.cell_length <= bar.size.width or not bar.size.width:
                break
        bar.update(content)

    def _step_bar_content(self, errors_per_step: dict[str, int], names: str) -> Content:
        """The step bar; ``names``: how the steps other than the current one are named (title, short, number)."""
        parts: list[Content | str] = []
        for index, step in enumerate(STEPS):
            mark = " ✗" if errors_per_step.get(step.id) else ""
            if index == self.step_index:
                parts.append(Content.styled(f" {index + 1} {step.title}{mark} ", "reverse bold"))
                continue
            name = {"title": f" {step.title}", "short": f" {step.short_title}", "number": ""}[names]
            parts.append(Content.assemble(f" {index + 1}{name}", (mark, "$error bold"), " "))
        return Content.assemble(*parts)

    def on_resize(self) -> None:
        self._update_step_bar()  # the titles that fit change with the width

    @on(DatasetPanel.ScanFinished)
    def _scan_finished(self, message: DatasetPanel.ScanFinished) -> None:
        self._update_step_bar()  # (the panel has shown the report: it handled the message first)

    def _update_titles(self) -> None:
        self.title = "loratui new" if self.new_project else "loratui edit"
        name = escape_controls(f"{self.config_path.parent.name}/{self.config_path.name}")
        self.sub_title = f"{name} (unsaved)" if self.dirty else name

    # -- editing -----------------------------------------------------------------------------

    @on(FieldRow.Edited)
    def _field_edited(self, message: FieldRow.Edited) -> None:
        message.stop()
        name = message.field
        if message.error is not None:
            self.parse_errors[name] = message.error
            self.launch_problems.pop(name, None)  # the user is at it
        else:
            self.parse_errors.pop(name, None)
            if get_value(self.cfg, name) != message.value:  # (a field that mounts reports its value too)
                set_value(self.cfg, name, message.value)
                self._mark_dirty()
                self.launch_problems.pop(name, None)  # the user is fixing it
            for row in self.query(FieldRow):
                if row.spec.name == name and row is not message.row:
                    row.set_value(message.value)
        self._after_change({name})

    def _after_change(self, names: set[str]) -> None:
        if "model.family" in names:
            self._drop_typing_of_other_families()
        self._revalidate()
        if names & SCAN_FIELDS:
            self._schedule_scan()
        self.query_one(DatasetPanel).update_calculator(self.cfg)
        if names & ADVICE_FIELDS:
            self._update_optimizer_advice()

    def _drop_typing_of_other_families(self) -> None:
        """A field the chosen family does not use is hidden: its half-typed text is dropped (its
        saved value stays, unused), so that it cannot block saving from out of sight."""
        for row in self.query(FieldRow):
            applies = setting_applies(row.spec.families, str(self.cfg.model.family))
            if not applies and self.parse_errors.pop(row.spec.name, None) is not None:
                row.set_value(get_value(self.cfg, row.spec.name))

    def _mark_dirty(self) -> None:
        if not self.dirty:
            self.dirty = True
            self._update_titles()

    def _schedule_scan(self) -> None:
        if self._scan_timer is not None:
            self._scan_timer.stop()
        self._scan_timer = self.set_timer(_SCAN_DELAY_S, lambda: self.query_one(DatasetPanel).start_scan(self.cfg))

    def _all_field_problems(self) -> list[Problem]:
        typed = set(self.parse_errors)
        # A field whose text does not parse shows that, not the stale value's problems.
        shown = [*self.parse_errors.values(), *(p for p in self.problems if p.where not in typed)]
        return shown + [p for p in self.launch_problems.values() if p.where not in typed and p not in shown]

    def _revalidate(self) -> None:
        self.problems = config_problems(self.cfg)  # what `loratui check` says of the config; cheap per keystroke
        by_field: dict[str, list[Problem]] = defaultdict(list)
        for problem in self._all_field_problems():
            by_field[problem.where].append(problem)
        family = str(self.cfg.model.family)
        for row in self.query(FieldRow):
            problems = by_field.get(row.spec.name, [])
            row.show_problems(problems)
            # Only the settings of the chosen family show (SDXL has no clip skip, SD no second text
            # encoder), unless one has a problem to fix (a clip skip SDXL would ignore).
            shown = setting_applies(row.spec.families, family) or bool(problems)
            if not shown and row.display and self.focused is not None and row in self.focused.ancestors:
                self.focus_next()  # the field just fixed goes: the cursor moves on, not off the screen
            row.display = shown
        self._update_step_bar()

    def replace_config(self, cfg: RunConfig, changed_by: str) -> None:
        """A preset or an import replaced many settings at once: show them all."""
        old = config_to_dict(self.cfg)
        self.cfg = cfg
        self.parse_errors.clear()
        for row in self.query(FieldRow):
            row.set_value(get_value(cfg, row.spec.name))
        new = config_to_dict(cfg)
        changed = {f"{s}.{k}" for s in new for k in new[s] if old[s].get(k) != new[s][k]}
        if changed:
            self._mark_dirty()
        self._after_change(changed | {"optimizer.name"})
        if self.step.id == "review":
            self.query_one(ReviewPanel).start_check(copy.deepcopy(self.cfg))
        self.log.info(f"config replaced by {changed_by}: {sorted(changed)}")

    @on(Select.Changed, "#preset")
    def _preset_chosen(self, event: Select.Changed) -> None:
        event.stop()
        if event.value is Select.NULL:
            return
        preset = PRESETS_BY_KEY[str(event.value)]
        self.replace_config(apply_preset(self.cfg, preset), f"preset {preset.key}")
        self.notify(f"{preset.title}: {preset.description}", title="Preset applied", timeout=6)

    # -- optimizer advice ----------------------------------------------------------------------

    def _update_optimizer_advice(self) -> None:
        if "optimizer" not in self._built:
            return  # shown when the step is built
        advice_box = self.query_one("#optimizer-advice", Static)
        button = self.query_one("#optimizer-apply", Button)
        name = canonical_optimizer(self.cfg.optimizer.name)
        advice = optimizer_advice(name or "", self.cfg.model.family)
        opt = self.cfg.optimizer
        if advice is None or (opt.args, opt.unet_lr, opt.text_encoder_lr) == advice:
            advice_box.display = False
            button.display = False
            return
        args, unet_lr, te_lr = advice
        shown_args = " ".join(args) or "no extra arguments"
        advice_box.update(
            f"The guides run {name} with {shown_args}, U-Net LR {unet_lr:g} and text encoder LR {te_lr:g}."
        )
        button.label = f"Use these settings for {name}"
        advice_box.display = True
        button.display = True

    @on(Button.Pressed, "#optimizer-apply")
    def _apply_optimizer_advice(self, event: Button.Pressed) -> None:
        event.stop()
        name = canonical_optimizer(self.cfg.optimizer.name)
        advice = optimizer_advice(name or "", self.cfg.model.family)
        if advice is None:
            return
        args, unet_lr, te_lr = advice
        data = config_to_dict(self.cfg)
        rates = {"unet_lr": unet_lr, "text_encoder_lr": te_lr, "text_encoder_2_lr": te_lr}
        data["optimizer"].update({"args": list(args), **rates})
        advised = config_from_dict(data, self.cfg.base_dir)
        advised.subsets = copy.deepcopy(self.cfg.subsets)  # the [[subsets]] tables are not sections
        self.replace_config(advised, f"optimizer advice for {name}")
        self.query_one("#f-optimizer-name").focus()

    # -- saving ------------------------------------------------------------------------------

    def _refuse_for_typing(self, what: str) -> bool:
        """True (and tells the user) when a field holds text that is no value."""
        if not self.parse_errors:
            return False
        name, problem = next(iter(self.parse_errors.items()))
        step = step_of(name)
        self.notify(f"{name}: {problem.message}. Fix: {problem.fix}", title=f"Not {what}", severity="error", timeout=8)
        if step is not None:
            self.call_later(self.goto_step, step.id, FIELDS[name].dom_id)
        return True

    def action_save(self) -> bool:
        if self._refuse_for_typing("saved"):
            return False
        try:
            self.config_path.parent.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.config_path)
        except (UserError, OSError) as err:
            self.notify(str(err), title="Not saved", severity="error", timeout=10, markup=False)
            return False
        self.dirty = False
        self._update_titles()
        errors = sum(p.severity == "error" for p in self._all_field_problems())
        left = f"; {errors} error{'s' if errors != 1 else ''} left (see Review)" if errors else ""
        self.notify(f"Saved {self.config_path.name}{left}", timeout=4)
        self.post_message(self.Saved(self.config_path))
        return True

    # -- launching ---------------------------------------------------------------------------

    async def action_launch(self) -> None:
        if self._launching:
            return
        if self._refuse_for_typing("launched"):
            return
        self._launching = True
        if self.launch_problems:
            self.launch_problems.clear()
            self._revalidate()
        await self.goto_step("review")
        self.query_one(ReviewPanel).start_check(copy.deepcopy(self.cfg), purpose="launch")

    @on(ReviewPanel.CheckFinished)
    def _check_finished(self, message: ReviewPanel.CheckFinished) -> None:
        message.stop()
        review = self.query_one(ReviewPanel)
        review.show_result(message.result, list(self.parse_errors.values()))
        problems = review.query_one("#review-problems", OptionList)
        if message.purpose != "launch":
            if problems.display and (self.focused is None or self.focused.id == "review-launch"):
                problems.focus(scroll_visible=False)
            return
        errors = [*self.parse_errors.values(), *(p for p in message.result.problems if p.severity == "error")]
        if errors:
            self._launching = False
            count = len(errors)
            more = " The Review step lists them all." if count > 1 else ""
            self.notify(
                f"{count} error{'s' if count != 1 else ''} left: fix {'them' if count != 1 else 'it'} first.{more}",
                title="Launch refused",
                severity="error",
                timeout=8,
            )
            if not self.show_launch_problem(errors[0]):
                problems.focus(scroll_visible=False)
            return
        if not self.action_save():
            self._launching = False
            return
        self.notify("Starting the job ...", timeout=4)
        self.run_worker(self._run_launch, thread=True, exclusive=True, group="launch", name="launch")

    def _run_launch(self) -> None:
        """Runs in a worker thread: checking the dataset and starting a job take a while."""
        try:
            record = self.on_launch(self.config_path)
        except UserError as err:
            if not get_current_worker().is_cancelled:
                self.post_message(self.LaunchFinished(None, err))
            return
        self.post_message(self.LaunchFinished(record, None))

    @on(LaunchFinished)
    def _launch_finished(self, message: LaunchFinished) -> None:
        self._launching = False
        if message.error is not None:
            error = message.error
            self.notify(str(error), title="Launch failed", severity="error", timeout=12, markup=False)
            self.show_launch_problem(Problem(error.where, error.message, error.fix))
            return
        assert message.record is not None
        self.post_message(self.Launched(message.record, self.config_path))

    def show_launch_problem(self, problem: Problem) -> bool:
        """Show why a launch was refused under the field at fault, and go to it. False when the
        problem concerns no field (the notification says it all then)."""
        shown = field_problem(problem, self.cfg)
        if shown is None:
            return False
        self.launch_problems[shown.where] = shown
        self._revalidate()
        step = step_of(shown.where)
        if step is not None:
            self.call_later(self.goto_step, step.id, FIELDS[shown.where].dom_id)
        return True

    @on(ReviewPanel.ProblemChosen)
    async def _problem_chosen(self, message: ReviewPanel.ProblemChosen) -> None:
        message.stop()
        where = message.problem.where
        step = step_of(where)
        if step is not None:
            await self.goto_step(step.id, focus=FIELDS[where].dom_id)
        else:
            # A file or folder of the dataset: the Dataset step shows the scan.
            await self.goto_step("dataset", focus=FIELDS["dataset.image_dir"].dom_id)

    @on(Button.Pressed, "#review-save")
    def _save_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_save()

    @on(Button.Pressed, "#review-launch")
    async def _launch_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        await self.action_launch()

    # -- kohya import ------------------------------------------------------------------------

    def action_import_kohya(self) -> None:
        self.app.push_screen(KohyaImportScreen(self.cfg.base_dir), self._import_chosen)

    def _import_path(self, path: Path) -> None:
        try:
            result = load_kohya_json(path)
        except UserError as err:
            self.notify(str(err), title="Import failed", severity="error", timeout=10, markup=False)
            return
        self._import_chosen(ImportChoice(path, result))

    def _import_chosen(self, choice: ImportChoice | None) -> None:
        if choice is None:
            return
        result = choice.result
        total = self._estimated_total_steps(result)
        if total is not None:
            # lr_warmup is a percentage of the run; the dataset scan tells how long the run is.
            result = load_kohya_json(choice.path, total_steps=total)
        try:
            # From loratui's defaults (a second import does not inherit the first one's settings),
            # with this project's folders, model and name where the file leaves them empty.
            cfg = apply_import(result, self.cfg)
        except UserError as err:
            self.notify(str(err), title="Import failed", severity="error", timeout=10, markup=False)
            return
        self.replace_config(cfg, f"kohya import of {choice.path}")
        self.app.push_screen(ImportReportScreen(result.report))

    def _estimated_total_steps(self, result) -> int | None:
        entry = result.report.entry("lr_warmup")
        report = self.query_one(DatasetPanel).report
        if (
            entry is None
            or result.report.group_of("lr_warmup") != "unsupported"
            or report is None
            or not report.num_images
        ):
            return None
        try:
            imported = result.to_config(self.cfg.base_dir)
            batch = max(1, imported.training.batch_size)
            schedule = resolve_schedule(imported, report.steps_per_epoch(batch))
            return schedule.total_steps if schedule is not None else None
        except (UserError, ValueError):
            return None
