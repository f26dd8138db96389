"""One setting on screen: its label and input on one line, the help text, and any problem with it."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Checkbox, Input, Label, Select, Static

from loratui.core.terminal_text import escape_controls
from loratui.errors import Problem
from loratui.tui.suggest import PathSuggester
from loratui.tui.widgets import SteadyInput
from loratui.tui.wizard.fields import FieldInputError, FieldSpec, format_value, parse_value

SEVERITY_MARK = {"error": "✗", "warning": "!", "note": "i"}
SEVERITY_ORDER = {"error": 0, "warning": 1, "note": 2}


SEVERITY_STYLE = {"error": "$error", "warning": "$warning", "note": "$text-muted"}


def problem_text(problem: Problem, *, with_where: bool = False) -> Content:
    """``✗ message  fix: ...`` in the theme's colour for its severity (the mark says it without colour).
    The parts name files and folders: their control characters are escaped."""
    colour = SEVERITY_STYLE.get(problem.severity, "")
    mark = SEVERITY_MARK.get(problem.severity, "-")
    parts: list[tuple[str, str] | str] = [(f"{mark} ", f"{colour} bold")]
    if with_where and problem.where:
        parts.append((f"{escape_controls(problem.where)}: ", f"{colour} bold"))
    parts.append((escape_controls(problem.message), colour))
    if problem.fix:
        parts.append(("  fix: ", "bold"))
        parts.append(escape_controls(problem.fix))
    return Content.assemble(*parts)


class FieldRow(Vertical):
    """Edits one config field. Posts :class:`FieldRow.Edited` on every change the user makes."""

    class Edited(Message):
        """The user changed the field: ``value`` when it parses, ``error`` when it does not."""

        def __init__(self, row: FieldRow, value: object = None, error: Problem | None = None) -> None:
            super().__init__()
            self.row = row
            self.field = row.spec.name
            self.value = value
            self.error = error

    def __init__(
        self, spec: FieldSpec, value: object, base_dir: Path, *, id_prefix: str = "f", compact_help: bool = False
    ) -> None:
        super().__init__(id=f"row-{id_prefix}-{spec.name.replace('.', '-').replace('_', '-')}", classes="field-row")
        self.spec = spec
        self.base_dir = base_dir
        self._value = value
        self._id_prefix = id_prefix
        self._compact_help = compact_help
        self._shown_problems: tuple[Problem, ...] = ()

    @property
    def input_id(self) -> str:
        return self.spec.dom_id if self._id_prefix == "f" else f"{self._id_prefix}-{self.spec.dom_id[2:]}"

    def compose(self) -> ComposeResult:
        with Horizontal(classes="field-line"):
            yield Label(self.spec.label, classes="field-label")
            yield self._make_input()
        if not self._compact_help:
            yield Static(self.spec.help, classes="field-help", markup=False)
        yield Static("", classes="field-problem")

    def _make_input(self) -> Widget:
        spec, value = self.spec, self._value
        if spec.kind == "bool":
            return Checkbox(_on_off(bool(value)), bool(value), id=self.input_id, compact=True)
        if spec.kind == "choice":
            return Select(
                self._options(str(value)), value=str(value), allow_blank=False, compact=True, id=self.input_id
            )
        suggester = None
        if spec.kind in ("path", "dir"):
            suggester = PathSuggester(self.base_dir, dirs_only=spec.kind == "dir")
        input_type = {"int": "integer", "float": "number"}.get(spec.kind, "text")
        return SteadyInput(
            format_value(spec, value),
            placeholder=spec.placeholder,
            type=input_type,
            compact=True,
            suggester=suggester,
            id=self.input_id,
            select_on_focus=False,
            valid_empty=True,
        )

    def _options(self, current: str) -> list[tuple[str, str]]:
        options = [(choice, choice) for choice in self.spec.choices]
        if current not in self.spec.choices:
            # An imported or hand-written value the wizard does not offer: shown, so that its
            # validation problem makes sense, and replaced as soon as a real choice is picked.
            options.append((f"{current} (not supported)", current))
        return options

    # -- programmatic updates (presets, imports, the same field shown on another step) ------------

    def set_value(self, value: object) -> None:
        """Show a new value without it counting as the user's edit."""
        self._value = value
        widget = self.query_one(f"#{self.input_id}")
        if isinstance(widget, Checkbox):
            if widget.value != bool(value):
                with widget.prevent(Checkbox.Changed):
                    widget.value = bool(value)
                widget.label = _on_off(bool(value))
        elif isinstance(widget, Select):
            current = str(value)
            with widget.prevent(Select.Changed):
                widget.set_options(self._options(current))
                widget.value = current
        elif isinstance(widget, Input):
            text = format_value(self.spec, value)
            try:
                if parse_value(self.spec, widget.value) == value:
                    return  # "1e-4" and "0.0001" are the same value: keep what the user typed
            except FieldInputError:
                pass
            with widget.prevent(Input.Changed):
                widget.value = text
                widget.cursor_position = len(text)

    def show_problems(self, problems: list[Problem]) -> None:
        """Show the most severe problems under the field (all of them, worst first)."""
        shown = tuple(problems)
        if shown == self._shown_problems:
            return  # nothing changed: no restyle, no relayout
        self._shown_problems = shown
        box = self.query_one(".field-problem", Static)
        for severity in SEVERITY_ORDER:
            box.remove_class(f"-{severity}")
            self.remove_class(f"-{severity}")
        if not problems:
            box.update("")
            box.display = False
            return
        ordered = sorted(problems, key=lambda p: SEVERITY_ORDER.get(p.severity, 3))
        text = Content("\n").join(problem_text(problem) for problem in ordered)
        box.update(text)
        box.add_class(f"-{ordered[0].severity}")
        self.add_class(f"-{ordered[0].severity}")
        box.display = True

    # -- user edits --------------------------------------------------------------------------

    def _emit(self, text_or_value: object, parse: bool) -> None:
        if parse:
            try:
                value = parse_value(self.spec, str(text_or_value))
            except FieldInputError as err:
                self.post_message(self.Edited(self, error=err.problem))
                return
        else:
            value = text_or_value
        self._value = value
        self.post_message(self.Edited(self, value=value))

    @on(Input.Changed)
    def _input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._emit(event.value, parse=True)

    @on(Checkbox.Changed)
    def _checkbox_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        event.checkbox.label = _on_off(event.value)
        if event.value != self._value:
            self._emit(event.value, parse=False)

    @on(Select.Changed)
    def _select_changed(self, event: Select.Changed) -> None:
        event.stop()
        if event.value is Select.NULL or event.value == self._value:
            return  # a Select reports its first value when it mounts: that is no edit
        if str(self._value) not in self.spec.choices and str(event.value) in self.spec.choices:
            # Drop the "(not supported)" entry once a real choice is made.
            with event.select.prevent(Select.Changed):
                event.select.set_options(self._options(str(event.value)))
                event.select.value = event.value
        self._emit(event.value, parse=False)


def _on_off(value: bool) -> str:
    return "on" if value else "off"
