"""The start screen: the project in this folder, the jobs to attach to, recent projects, new run.

It chooses and leaves: the app exits with a :class:`HomeChoice` and the command line opens the
wizard, launches or attaches (each is its own full-screen app). The job list is read in a worker
(checking a job's state reads its events and /proc), so the screen paints at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

CONFIG_NAME = "loratui.toml"


@dataclass(frozen=True)
class HomeChoice:
    action: str  # "new" (path: a folder), "edit" or "train" (path: a config), "attach" (job_id)
    path: Path | None = None
    job_id: str | None = None


@dataclass(frozen=True)
class JobRow:
    job_id: str
    state: str
    step: str
    started: str
    config: str


def read_jobs() -> list[JobRow]:
    """Every registered job, newest first (reads the registry and each job's state)."""
    from loratui.jobs.registry import all_records
    from loratui.jobs.status import job_status

    rows = []
    for record in reversed(all_records()):
        status = job_status(record)
        step = f"{status.step}/{status.total_steps}" if status.total_steps else str(status.step)
        started = time.strftime("%m-%d %H:%M", time.localtime(record.started_at))
        rows.append(JobRow(record.job_id, status.state, step, started, record.config))
    return rows


def recent_projects(rows: list[JobRow], limit: int = 8) -> list[Path]:
    """The configs of recent jobs that still exist, newest first: the registry is the history."""
    seen: list[Path] = []
    for row in rows:
        path = Path(row.config)
        if path not in seen and path.is_file():
            seen.append(path)
    return seen[:limit]


class NewProjectDialog(ModalScreen[Path | None]):
    """Asks where the new project goes."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, suggestion: Path) -> None:
        super().__init__(classes="dialog-screen")
        self.suggestion = suggestion

    def compose(self) -> ComposeResult:
        from loratui.tui.suggest import PathSuggester

        with Vertical(classes="dialog"):
            yield Static("New project", classes="dialog-title")
            yield Static("The folder for the project (created with img/, model/, log/ and reg/):", classes="dialog-text")
            yield Input(str(self.suggestion), id="folder", suggester=PathSuggester(Path.cwd(), dirs_only=True))
            yield Static("Enter: create   Esc: cancel", classes="dialog-keys")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        if value:
            self.dismiss(Path(value).expanduser())

    def action_cancel(self) -> None:
        self.dismiss(None)


class HomeScreen(Screen[None]):
    BINDINGS = [
        Binding("n", "new", "New project"),
        Binding("e", "edit_here", "Edit here"),
        Binding("t", "train_here", "Train here"),
        Binding("r", "refresh", "Refresh"),
        Binding("q", "app.quit", "Quit", show=False),
    ]

    class JobsRead(Message):
        def __init__(self, rows: list[JobRow]) -> None:
            super().__init__()
            self.rows = rows

    def __init__(self, folder: Path | None = None) -> None:
        super().__init__()
        self.folder = (folder or Path.cwd()).absolute()
        self.here = self.folder / CONFIG_NAME
        self.rows: list[JobRow] = []
        self.recent: list[Path] = []

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="home"):
            yield Static(self._here_text(), id="here")
            yield Static("Jobs  (Enter: attach)", classes="section-title")
            yield DataTable(id="jobs", cursor_type="row", zebra_stripes=True)
            yield Static("Reading jobs...", id="jobs-empty")
            yield Static("Recent projects  (Enter: edit)", classes="section-title")
            yield DataTable(id="recent", cursor_type="row", show_header=False)
        yield Footer()

    def on_mount(self) -> None:
        self.title = "loratui"
        self.sub_title = "LoRA training from a terminal"
        jobs = self.query_one("#jobs", DataTable)
        jobs.add_columns("Job", "State", "Step", "Started")
        self.query_one("#recent", DataTable).add_columns("Config")
        self.action_refresh()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("edit_here", "train_here"):
            return self.here.is_file()  # False hides the key in the footer when there is no config here
        return True

    def _here_text(self) -> str:
        if self.here.is_file():
            return f"Project here: {self.here}\n  e: edit it in the wizard   t: train it (opens the dashboard)"
        return f"No {CONFIG_NAME} in {self.folder}\n  n: start a new project (the wizard creates the kohya folders)"

    # -- jobs, read in a worker --------------------------------------------------------------
    @work(thread=True, exclusive=True, group="jobs")
    def action_refresh(self) -> None:
        self.post_message(self.JobsRead(read_jobs()))

    def on_home_screen_jobs_read(self, message: JobsRead) -> None:
        self.rows = message.rows
        self.recent = recent_projects(message.rows)
        jobs = self.query_one("#jobs", DataTable)
        jobs.clear()
        for row in self.rows:
            jobs.add_row(row.job_id, row.state, row.step, row.started, key=row.job_id)
        self.query_one("#jobs-empty", Static).update(
            "" if self.rows else "No jobs yet: start one with t (train here) or from the wizard.")
        recent = self.query_one("#recent", DataTable)
        recent.clear()
        for path in self.recent:
            recent.add_row(str(path), key=str(path))
        if self.rows:
            jobs.focus()

    @on(DataTable.RowSelected, "#jobs")
    def job_selected(self, event: DataTable.RowSelected) -> None:
        self.app.exit(HomeChoice("attach", job_id=str(event.row_key.value)))

    @on(DataTable.RowSelected, "#recent")
    def recent_selected(self, event: DataTable.RowSelected) -> None:
        self.app.exit(HomeChoice("edit", path=Path(str(event.row_key.value))))

    # -- actions -----------------------------------------------------------------------------
    def action_new(self) -> None:
        suggestion = self.folder / "new-lora" if self.here.is_file() else self.folder

        def chosen(folder: Path | None) -> None:
            if folder is not None:
                self.app.exit(HomeChoice("new", path=folder))

        self.app.push_screen(NewProjectDialog(suggestion), chosen)

    def action_edit_here(self) -> None:
        if self.here.is_file():
            self.app.exit(HomeChoice("edit", path=self.here))

    def action_train_here(self) -> None:
        if self.here.is_file():
            self.app.exit(HomeChoice("train", path=self.here))
