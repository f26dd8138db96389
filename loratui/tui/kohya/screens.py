"""Two modal screens: ask for the kohya_ss .json to import, then show where every key went."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from loratui.errors import UserError
from loratui.kohya_import import ImportReport, KohyaImport, load_kohya_json
from loratui.tui.suggest import PathSuggester
from loratui.tui.widgets import SteadyInput


@dataclass
class ImportChoice:
    path: Path
    result: KohyaImport


class KohyaImportScreen(ModalScreen[ImportChoice | None]):
    """A path input (completing folders and .json files); Enter imports, Esc cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, base_dir: Path, initial: str = "") -> None:
        super().__init__(classes="dialog-screen")
        self.base_dir = base_dir
        self.initial = initial

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="kohya-dialog"):
            yield Static("Import a kohya_ss GUI config", classes="dialog-title")
            yield Static(
                "The .json file the kohya_ss GUI saves. Its settings replace the wizard's (what it leaves out "
                "goes back to loratui's defaults; this project's folders and model stay); a report then lists "
                "every key: imported, changed on the way, not supported, unknown or ignored.",
                classes="dialog-text",
            )
            yield SteadyInput(
                self.initial,
                placeholder="path/to/config.json",
                id="kohya-path",
                compact=True,
                suggester=PathSuggester(self.base_dir, suffixes=(".json",)),
            )
            yield Static("", id="kohya-error")
            yield Static("Enter import   Right arrow complete the path   Esc cancel", classes="dialog-keys")

    def on_mount(self) -> None:
        self.query_one("#kohya-path", Input).focus()

    @on(Input.Submitted, "#kohya-path")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        raw = event.value.strip()
        error = self.query_one("#kohya-error", Static)
        if not raw:
            error.update(
                Content.styled(
                    "✗ type the path of a kohya_ss .json config, e.g. ~/kohya/configs/my_lora.json", "$error"
                )
            )
            return
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = self.base_dir / path
        try:
            result = load_kohya_json(path)
        except UserError as err:
            error.update(Content.styled(f"✗ {err}", "$error"))
            return
        self.dismiss(ImportChoice(path, result))

    @on(Input.Changed, "#kohya-path")
    def _changed(self, event: Input.Changed) -> None:
        event.stop()
        self.query_one("#kohya-error", Static).update("")

    def action_cancel(self) -> None:
        self.dismiss(None)


class ImportReportScreen(ModalScreen[None]):
    """The import report, scrollable; Esc or Enter closes it."""

    BINDINGS = [Binding("escape,enter,q", "close", "Close")]

    def __init__(self, report: ImportReport) -> None:
        super().__init__(classes="dialog-screen")
        self.report = report

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="report-dialog"):
            yield Static("kohya_ss import report", classes="dialog-title")
            with VerticalScroll(id="report-scroll"):
                yield Static(report_text(self.report), id="report-text")
            yield Static("Up/Down/PgUp/PgDn scroll   Enter or Esc close", classes="dialog-keys")

    def on_mount(self) -> None:
        self.query_one("#report-scroll").focus()

    def action_close(self) -> None:
        self.dismiss(None)


def report_text(report: ImportReport) -> Content:
    """The report's lines; the sections that need the user's attention stand out in theme colours."""
    styles = {
        "NOT SUPPORTED YET": "$error bold",
        "Not supported": "$warning bold",
        "Unknown": "$warning bold",
        "Changed on the way": "$warning bold",
        "Imported": "$success bold",
        "Ignored": "bold",
    }
    lines: list[Content] = []
    muted = False
    for line in report.lines():
        style = next((s for prefix, s in styles.items() if line.startswith(prefix)), None)
        if style is not None:
            muted = line.startswith("Ignored")
            lines.append(Content.styled(line, style))
        else:
            lines.append(Content.styled(line, "$text-muted" if muted else ""))
    return Content("\n").join(lines)
