"""The Review step: every problem left (from the full check, dataset included), the run's length,
and the config exactly as it will be saved."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.message import Message
from textual.widgets import Button, OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from loratui.check import CheckResult, check_run
from loratui.config import RunConfig, to_toml
from loratui.core.terminal_text import escape_controls
from loratui.errors import Problem
from loratui.families import lora_parts
from loratui.memory_check import add_memory_check
from loratui.quantities import count
from loratui.report import network_kind
from loratui.save_plan import output_summary
from loratui.tui.wizard.dataset_panel import shown_path, shown_problem
from loratui.tui.wizard.field_row import SEVERITY_ORDER, problem_text


class ReviewPanel(Vertical):
    """Shows a CheckResult; runs check_run in a worker thread on request."""

    class CheckFinished(Message):
        def __init__(self, result: CheckResult, purpose: str) -> None:
            super().__init__()
            self.result = result
            self.purpose = purpose  # "review" (just show it) or "launch" (launch if it passed)

    class ProblemChosen(Message):
        """The user pressed Enter on a problem: go to its field."""

        def __init__(self, problem: Problem) -> None:
            super().__init__()
            self.problem = problem

    def __init__(self) -> None:
        super().__init__(id="review-panel")
        self.result: CheckResult | None = None
        self._problems: list[Problem] = []

    def compose(self) -> ComposeResult:
        yield Static("Checking ...", id="review-status")
        yield Static("", id="review-summary")
        yield OptionList(id="review-problems")
        with Horizontal(id="review-buttons"):
            yield Button("Save  Ctrl+S", id="review-save", compact=True)
            yield Button("Launch  Ctrl+L", id="review-launch", variant="primary", compact=True)
        yield Static("The config file", classes="panel-title")
        yield Static("", id="review-toml")

    def start_check(self, cfg: RunConfig, purpose: str = "review") -> None:
        self.result = None
        self.query_one("#review-status", Static).update("Checking the config and the dataset ...")
        self.run_worker(
            lambda: self._check(cfg, purpose), thread=True, exclusive=True, group="review-check", name="check run"
        )

    def _check(self, cfg: RunConfig, purpose: str) -> None:
        """Runs in a worker thread: check_run scans the dataset."""
        result = check_run(cfg)
        if not get_current_worker().is_cancelled:
            # The VRAM estimate runs in a helper process (seconds, the first time) when there is a GPU.
            result = add_memory_check(result)
        if not get_current_worker().is_cancelled:
            self.post_message(self.CheckFinished(result, purpose))

    def show_toml(self, cfg: RunConfig) -> None:
        self.query_one("#review-toml", Static).update(toml_content(to_toml(cfg)))

    def show_result(self, result: CheckResult, extra: list[Problem]) -> None:
        """``extra``: problems the check cannot see (fields whose text does not parse)."""
        self.result = result
        cfg = result.config
        base = cfg.base_dir
        problems = sorted([*extra, *result.problems], key=lambda p: SEVERITY_ORDER.get(p.severity, 3))
        self._problems = problems
        errors = sum(p.severity == "error" for p in problems)
        warnings = sum(p.severity == "warning" for p in problems)
        status = self.query_one("#review-status", Static)
        if errors:
            status.update(
                Content.styled(
                    f"✗ {errors} error{'s' if errors != 1 else ''} left: launch is refused until "
                    f"{'they are' if errors != 1 else 'it is'} fixed. Enter on a problem goes to its field.",
                    "$error bold",
                )
            )
        else:
            ready = "✓ Ready to launch" + (
                f" ({warnings} warning{'s' if warnings != 1 else ''} worth reading)" if warnings else ""
            )
            status.update(Content.styled(ready, "$success bold"))
        status.set_class(bool(errors), "-error")
        status.set_class(not errors, "-ok")
        # Content, not markup: the summary names folders and the model (escaped)
        self.query_one("#review-summary", Static).update(Content(escape_controls(self._summary(result), keep="\n")))
        options = self.query_one("#review-problems", OptionList)
        options.clear_options()
        options.add_options([Option(problem_text(shown_problem(p, base), with_where=True)) for p in problems])
        options.display = bool(problems)
        if problems:
            options.highlighted = 0
        self.show_toml(cfg)

    def _summary(self, result: CheckResult) -> str:
        cfg = result.config
        base = cfg.base_dir
        lines = []
        model = cfg.model.path or "(no base model)"
        lines.append(f"Model    {model} ({cfg.model.family})")
        dataset = result.dataset
        if dataset is not None:
            reg = f", {dataset.num_reg_images} regularisation" if dataset.num_reg_images else ""
            lines.append(
                f"Images   {dataset.num_images} in {_image_folders(dataset, cfg, base)}{reg}, "
                f"{dataset.num_items_per_epoch} per epoch with repeats"
            )
        if result.schedule is not None:
            s = result.schedule
            lines.append(
                f"Length   {count(s.total_steps, 'step')} = {count(s.epochs, 'epoch')} x "
                f"{count(s.steps_per_epoch, 'step')}, "
                f"batch {cfg.training.batch_size}"
            )
        net = cfg.network
        denoiser = lora_parts(cfg.model.family)[0]
        lines.append(
            f"LoRA     {network_kind(net) + ' ' if network_kind(net) else ''}rank {net.rank}, alpha {net.alpha:g}; "
            f"{cfg.optimizer.name}, "
            f"{denoiser.label} LR {cfg.optimizer.unet_lr:g}"
        )
        if cfg.output.output_dir.strip() and cfg.output.name.strip():
            out = shown_path(cfg.resolve(cfg.output.output_dir), base)
            # and how many epoch and step files the run writes and keeps (output.save_every_n_*, save_last_n_*)
            lines.append(f"Writes   {out}/{cfg.output.name}.safetensors{output_summary(cfg, result.schedule)}")
        lines += [line.rstrip() for line in result.memory]
        return "\n".join(lines)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if 0 <= event.option_index < len(self._problems):
            self.post_message(self.ProblemChosen(self._problems[event.option_index]))


def _image_folders(dataset, cfg: RunConfig, base) -> str:
    """Where the images are: image_dir, and the [[subsets]] tables (which may hold them all)."""
    folders = shown_path(dataset.image_dir, base) if dataset.image_dir is not None else ""
    if cfg.subsets:
        folders += (" + " if folders else "") + count(len(cfg.subsets), "[[subsets]] table")
    return folders


def toml_content(toml: str) -> Content:
    """TOML with the theme's colours: section headers, keys, comments (no fixed palette, so it
    reads in every theme and in 256 colours)."""
    lines: list[Content] = []
    for line in toml.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            lines.append(Content.styled(line, "$text-muted"))
        elif stripped.startswith("["):
            lines.append(Content.styled(line, "$accent bold"))
        elif " = " in line:
            key, _, value = line.partition(" = ")
            lines.append(Content.assemble((key, "$primary"), " = ", value))
        else:
            lines.append(Content(line))
    return Content("\n").join(lines)
