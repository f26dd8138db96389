"""The start screen: the project in this folder, the jobs to attach to, recent projects, new run.

Every choice opens a screen of the app over this one (the wizard, a job's dashboard), and leaving
that screen comes back here, with the job list read again. ``q`` quits. The job list is read in a
worker (checking a job's state reads its events and /proc), so the screen paints at once.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from loratui.core.terminal_text import escape_controls
from loratui.errors import UserError
from loratui.jobs.listing import JobRow
from loratui.jobs.record import JobRecord

CONFIG_NAME = "loratui.toml"


def recent_projects(rows: list[JobRow], limit: int = 8) -> list[Path]:
    """The configs of recent jobs that still exist, newest first: the registry is the history."""
    seen: list[Path] = []
    for row in rows:
        path = Path(row.record.config)
        if path not in seen and path.is_file():
            seen.append(path)
    return seen[:limit]


class NewProjectDialog(ModalScreen[Path | None]):
    """Asks where the new project goes."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, suggestion: Path, base: Path) -> None:
        """``base``: the folder a relative path is taken from (where ``loratui`` was started)."""
        super().__init__(classes="dialog-screen")
        self.suggestion = suggestion
        self.base = base

    def compose(self) -> ComposeResult:
        from loratui.tui.suggest import PathSuggester

        with Vertical(classes="dialog"):
            yield Static("New project", classes="dialog-title")
            yield Static(
                "The folder for the project (created with img/, model/, log/ and reg/):", classes="dialog-text"
            )
            yield Input(str(self.suggestion), id="folder", suggester=PathSuggester(self.base, dirs_only=True))
            yield Static("Enter: create   Esc: cancel", classes="dialog-keys")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        if value:
            folder = Path(value).expanduser()
            self.dismiss(folder if folder.is_absolute() else self.base / folder)

    def action_cancel(self) -> None:
        self.dismiss(None)


class HomeScreen(Screen[None]):
    BINDINGS = [
        Binding("n", "new", "New project"),
        Binding("e", "edit_here", "Edit here"),
        Binding("t", "train_here", "Train here"),
        Binding("r", "refresh", "Refresh"),
        Binding("q", "app.quit", "Quit"),
    ]

    class JobsRead(Message):
        def __init__(self, rows: list[JobRow]) -> None:
            super().__init__()
            self.rows = rows

    class LaunchFinished(Message):
        def __init__(self, config_path: Path, record: JobRecord | None, error: UserError | None) -> None:
            super().__init__()
            self.config_path = config_path
            self.record = record
            self.error = error

    def __init__(self, folder: Path | None = None) -> None:
        super().__init__()
        self.folder = (folder or Path.cwd()).absolute()
        self.here = self.folder / CONFIG_NAME
        self.rows: list[JobRow] = []
        self.recent: list[Path] = []
        self._launching = False

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="home"):
            yield Static(self._here_text(), id="here")
            yield Static("Jobs  (Enter: open its dashboard)", classes="section-title")
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

    def on_screen_resume(self) -> None:
        """Shown first, or back from a wizard or a dashboard: jobs may have started or ended."""
        self.query_one("#here", Static).update(self._here_text())
        self.refresh_bindings()
        self.action_refresh()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("edit_here", "train_here"):
            return self.here.is_file()  # False hides the key in the footer when there is no config here
        return True

    def _here_text(self) -> Content:
        # Content, not markup: a folder's name is text ("[draft]"), with its control characters escaped
        if self.here.is_file():
            text = f"Project here: {self.here}\n  e: edit it in the wizard   t: train it (opens the dashboard)"
        else:
            text = f"No {CONFIG_NAME} in {self.folder}\n  n: start a new project (the wizard creates the kohya folders)"
        return Content(escape_controls(text, keep="\n"))

    # -- jobs, read in a worker --------------------------------------------------------------
    @work(thread=True, exclusive=True, group="jobs")
    def action_refresh(self) -> None:
        from loratui.jobs.listing import list_jobs

        self.post_message(self.JobsRead(list_jobs(newest_first=True)))

    def on_home_screen_jobs_read(self, message: JobsRead) -> None:
        self.rows = message.rows
        self.recent = recent_projects(message.rows)
        jobs = self.query_one("#jobs", DataTable)
        cursor = jobs.cursor_row
        jobs.clear()
        for row in self.rows:
            started = time.strftime("%m-%d %H:%M", time.localtime(row.record.started_at))
            jobs.add_row(row.job_id, row.status.state, row.steps, started, key=row.job_id)
        if self.rows:
            jobs.move_cursor(row=min(cursor, len(self.rows) - 1))
        self.query_one("#jobs-empty", Static).update(
            "" if self.rows else "No jobs yet: start one with t (train here) or from the wizard."
        )
        recent = self.query_one("#recent", DataTable)
        recent.clear()
        for path in self.recent:
            recent.add_row(Text(escape_controls(str(path))), key=str(path))  # a Text: a path is not markup
        if self.rows and not isinstance(self.focused, DataTable):  # keep a table the user is in
            jobs.focus()

    @on(DataTable.RowSelected, "#jobs")
    def job_selected(self, event: DataTable.RowSelected) -> None:
        record = next((row.record for row in self.rows if row.job_id == event.row_key.value), None)
        if record is not None and record.kind == "grid":  # a grid job is no training run: no dashboard of it
            from loratui.shell import attach_command

            self.notify(f"a grid job: `{attach_command(record.job_id)}` shows it and its image", markup=False)
        elif record is not None:
            self.app.open_dashboard(record)

    @on(DataTable.RowSelected, "#recent")
    def recent_selected(self, event: DataTable.RowSelected) -> None:
        self.app.open_config(Path(str(event.row_key.value)))

    # -- actions -----------------------------------------------------------------------------
    def action_new(self) -> None:
        suggestion = self.folder / "new-lora" if self.here.is_file() else self.folder

        def chosen(folder: Path | None) -> None:
            if folder is not None:
                self.app.open_new_project(folder)

        self.app.push_screen(NewProjectDialog(suggestion, self.folder), chosen)

    def action_edit_here(self) -> None:
        if self.here.is_file():
            self.app.open_config(self.here)

    def action_train_here(self) -> None:
        """Check the config here and start its job; a refused launch opens the wizard at the field
        at fault, a started one its dashboard."""
        if not self.here.is_file() or self._launching:
            return
        self._launching = True
        self.notify(f"Checking {self.here.name} and starting the job ...", timeout=4)
        self._launch(self.here)

    @work(thread=True, exclusive=True, group="launch")
    def _launch(self, config_path: Path) -> None:
        try:
            record = self.app.on_launch(config_path)
        except UserError as err:
            self.post_message(self.LaunchFinished(config_path, None, err))
        else:
            self.post_message(self.LaunchFinished(config_path, record, None))

    @on(LaunchFinished)
    def _launch_finished(self, message: LaunchFinished) -> None:
        self._launching = False
        if message.record is not None:
            self.app.job_launched(message.record, message.config_path)
            return
        self.app.open_config(message.config_path, launch_error=message.error)  # it says why, at the field
