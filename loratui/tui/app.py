"""The Textual app: one app whose screens are Home, Wizard and Dashboard; themes, user settings,
the command palette, going back, quitting, and the terminal going away.

Screens, by feature (each in its own folder with its widgets):

- ``home/``: the start screen (the project in this folder, the jobs, recent projects, new
  project): ``loratui`` with no command;
- ``wizard/``: the setup wizard (``loratui new``, ``loratui edit``, or from home);
- ``kohya/``: importing a kohya_ss config (dialogs pushed by the wizard);
- ``dashboard/``: the live view of a job (``loratui attach``, ``loratui train``, a launch from the
  wizard or home, or a job picked on home).

Going back: every screen the app pushes returns to the one it was opened from: ``q`` on a
dashboard goes back to home or to the wizard it was launched from (the job runs on), leaving a
wizard (``q`` outside a text field, Esc on its first step) goes back to home, asking first about
unsaved changes; ``loratui new``/``edit`` open the wizard over home, so leaving it goes home too.
Only home quits on ``q``, and the dashboard of ``loratui attach``/``train``, which was opened from
the shell and goes back there (printing how to re-attach). Ctrl+Q quits from anywhere (asking
about unsaved wizard changes).

The app exits with an :class:`~loratui.tui.outcome.AppResult`: what the command line prints once
the full-screen view is gone, and the exit code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from loratui.config import RunConfig, load_config
from loratui.core.terminal_text import escape_controls
from loratui.errors import UserError
from loratui.jobs.record import JobRecord
from loratui.settings import load_settings, settings_path, update_settings
from loratui.tui.dashboard import DashboardResult, DashboardScreen
from loratui.tui.dialogs import ConfirmQuitScreen
from loratui.tui.entry import new_project_config, prepare_new_project
from loratui.tui.home import HomeScreen
from loratui.tui.launcher import launch_checked
from loratui.tui.outcome import AppResult, LaunchFn
from loratui.tui.terminal_watch import TerminalWatch
from loratui.tui.themes import FALLBACK_THEME, default_theme_name, load_themes
from loratui.tui.wizard import WizardScreen

# -- where the app opens -------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenHome:
    folder: Path | None = None  # the folder whose project home shows; None: the current one


@dataclass(frozen=True)
class OpenWizard:
    config: RunConfig
    config_path: Path
    new_project: bool = False  # the config file does not exist yet
    kohya_json: Path | None = None  # a kohya_ss GUI config to import at start


@dataclass(frozen=True)
class OpenDashboard:
    record: JobRecord


Start = OpenHome | OpenWizard | OpenDashboard


class BackDashboardScreen(DashboardScreen):
    """The dashboard opened from another screen of the app: ``q`` (or Esc) goes back there (the
    job runs on), and Ctrl+Q, which quits the whole app, is shown beside it."""

    CSS_PATH = str(Path(__file__).parent / "dashboard" / "dashboard.tcss")  # beside DashboardScreen, not this file
    BINDINGS = [
        Binding("q", "detach", "Back", tooltip="Back to the screen you came from; the job runs on"),
        Binding("escape", "detach", "Back", show=False),
        Binding("ctrl+q", "app.quit", "Quit", priority=True, tooltip="Quit loratui; the job runs on"),
    ]


class LoratuiApp(App[AppResult]):
    """loratui's terminal app. Opens on home, a wizard or a dashboard (``start``) and exits with an
    :class:`AppResult`."""

    TITLE = "loratui"
    # Shown in the footer by the screens that quit with it (the first dashboard says "q Quit").
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", show=False, priority=True)]
    CSS_PATH = ["app.tcss", "wizard/wizard.tcss", "kohya/kohya.tcss", "home/home.tcss"]

    def __init__(
        self,
        start: Start | None = None,
        *,
        on_launch: LaunchFn | None = None,
        theme: str | None = None,
        settings_file: Path | None = None,
        watch_terminal: bool = False,
        dashboard_options: dict | None = None,
    ) -> None:
        """``start``: the screen to open on (home by default).
        ``on_launch``: starts a job for a saved config (default: check it and start it for real).
        ``theme``: a theme name from ``--theme``; None = the saved choice, else loratui-dark
        (loratui-256 on a terminal without true colour). Raises UserError for an unknown name.
        ``watch_terminal``: close silently when the terminal goes away (the command line; off in
        tests). ``dashboard_options`` go to every :class:`DashboardScreen` (``poll_s``, ``now``...)."""
        super().__init__()
        self.start = start or OpenHome()
        self.on_launch = on_launch or launch_checked
        self.dashboard_options = dashboard_options or {}
        self.settings_file = settings_file or settings_path()
        self.settings, self.startup_problems = load_settings(self.settings_file)
        themes, theme_problems = load_themes()
        self.startup_problems += theme_problems
        for loaded in themes:
            self.register_theme(loaded)
        self.theme = self._initial_theme(theme)
        self._theme_seen = self.theme
        # `loratui edit CONFIG` counts its config as saved: leaving says how to train it, as ever.
        opened_on_file = isinstance(self.start, OpenWizard) and not self.start.new_project
        self.saved: list[Path] = [self.start.config_path] if opened_on_file else []
        self.launched: list[str] = []
        self._first: Screen | None = None  # the screen the app opened on: leaving it leaves the app
        self.terminal_watch = TerminalWatch(self.terminal_went_away) if watch_terminal else None

    @property
    def terminal_gone(self) -> bool:
        return self.terminal_watch is not None and self.terminal_watch.gone

    def _initial_theme(self, requested: str | None) -> str:
        names = sorted(self.available_themes)
        if requested:
            if requested not in self.available_themes:
                raise UserError(f"unknown theme {requested!r}", "--theme", f"use one of: {', '.join(names)}")
            return requested
        saved = self.settings.theme
        if saved and saved in self.available_themes:
            return saved
        if saved:
            self.startup_problems.append(
                UserError(
                    f"theme {saved!r} in the settings is not installed; using the default",
                    str(self.settings_file),
                    f"pick one with Ctrl+P > Theme (there are: {', '.join(names)})",
                )
            )
        default = default_theme_name()
        return default if default in self.available_themes else FALLBACK_THEME

    def on_mount(self) -> None:
        for problem in self.startup_problems:
            self.notify(escape_controls(str(problem)), title="Settings", severity="warning", timeout=10, markup=False)
        start = self.start
        if isinstance(start, OpenDashboard):
            self.open_dashboard(start.record)
        elif isinstance(start, OpenWizard):
            # Leaving the wizard goes home (its project, the jobs), as from anywhere else: only
            # home quits on q, so a wizard closed by mistake costs one key, not the session.
            self._push(HomeScreen(start.config_path.parent))
            self.open_wizard(
                start.config, start.config_path, new_project=start.new_project, kohya_json=start.kohya_json
            )
        else:
            self._push(HomeScreen(start.folder))
        if self.terminal_watch is not None:
            self.terminal_watch.start(self)

    def on_unmount(self) -> None:
        if self.terminal_watch is not None:
            self.terminal_watch.stop()

    # -- opening screens (home and the wizard call these) ----------------------------------------

    def _push(self, screen: Screen, when_closed: Callable[[object], None] | None = None) -> None:
        if self._first is None:
            self._first = screen

        def closed(result: object) -> None:
            if when_closed is not None:
                when_closed(result)
            elif screen is self._first:
                self.exit(self._result())

        self.push_screen(screen, callback=closed)

    def is_first_screen(self, screen: Screen) -> bool:
        """Whether ``screen`` is the one the app opened on (leaving it leaves the app)."""
        return screen is self._first

    def open_dashboard(self, record: JobRecord) -> None:
        """The job's dashboard, over the current screen (or as the first one)."""
        first = self._first is None
        screen = (DashboardScreen if first else BackDashboardScreen)(record, **self.dashboard_options)

        def closed(result: DashboardResult | None) -> None:
            if first:  # `loratui attach` / `train`: q leaves the app and says how to re-attach
                self.exit(self._result(dashboard=result))
            # else back where it was opened from; the job runs on

        self._push(screen, closed)

    def open_wizard(
        self,
        cfg: RunConfig,
        config_path: Path,
        *,
        new_project: bool = False,
        kohya_json: Path | None = None,
        launch_error: UserError | None = None,
    ) -> None:
        self._push(
            WizardScreen(
                cfg,
                config_path,
                new_project=new_project,
                on_launch=self.on_launch,
                kohya_json=kohya_json,
                launch_error=launch_error,
            )
        )

    def open_new_project(self, folder: Path) -> None:
        """Home's New project: create the folder with its kohya folders and open the wizard."""
        try:
            config_path = prepare_new_project(folder)
        except UserError as err:
            self.notify(escape_controls(str(err)), title="No new project", severity="error", timeout=10, markup=False)
            return
        self.open_wizard(new_project_config(config_path), config_path, new_project=True)

    def open_config(self, config_path: Path, launch_error: UserError | None = None) -> None:
        """The wizard on an existing config; ``launch_error``: why its launch just failed (shown at
        the field at fault)."""
        path = config_path.expanduser().absolute()
        try:
            cfg = load_config(path)
        except UserError as err:
            self.notify(
                escape_controls(str(err)), title="Cannot open the config", severity="error", timeout=10, markup=False
            )
            return
        self.open_wizard(cfg, path, launch_error=launch_error)

    def job_launched(self, record: JobRecord, config_path: Path) -> None:
        """A job was started from the app: remember it (leaving names it), and show it."""
        self.launched.append(record.job_id)
        path = config_path.absolute()
        self.saved = [saved for saved in self.saved if saved.absolute() != path]
        self.open_dashboard(record)

    # -- what the screens tell the app ---------------------------------------------------------

    def on_wizard_screen_saved(self, message: WizardScreen.Saved) -> None:
        path = message.path
        self.saved = [saved for saved in self.saved if saved != path] + [path]

    def on_wizard_screen_launched(self, message: WizardScreen.Launched) -> None:
        self.job_launched(message.record, message.config_path)

    # -- theme persistence -----------------------------------------------------------------------

    def watch_theme(self, theme: str) -> None:
        """A theme picked later (command palette: Theme) is remembered; the startup one is not."""
        if theme == getattr(self, "_theme_seen", theme):
            return
        self._theme_seen = theme
        try:
            self.settings = update_settings(self.settings_file, theme=theme)
        except UserError as err:
            self.notify(
                escape_controls(str(err)), title="Theme not remembered", severity="warning", timeout=10, markup=False
            )

    # -- quitting --------------------------------------------------------------------------------

    def _result(self, dashboard: DashboardResult | None = None, terminal_gone: bool = False) -> AppResult:
        return AppResult(tuple(self.saved), tuple(self.launched), dashboard, terminal_gone)

    def result_now(self) -> AppResult:
        """What leaving from the current screen means (also when Textual closed the app itself)."""
        screen = self.dashboard()
        return self._result(dashboard=screen.result() if screen is not None else None)

    async def action_quit(self) -> None:
        """Ctrl+Q: leave the app from any screen, asking first about unsaved wizard changes."""
        if isinstance(self.screen, ConfirmQuitScreen):
            return  # the question is on screen already
        wizard = self._wizard()
        if wizard is None:
            self.exit(self.result_now())
        else:
            wizard.confirm_leave(lambda: self.exit(self.result_now()), quitting=True)

    def terminal_went_away(self) -> None:
        """Close at once and say nothing: a job goes on, there is no terminal to write to."""
        screen = self.dashboard()
        self.exit(self._result(dashboard=screen.result("terminal") if screen is not None else None, terminal_gone=True))

    def dashboard(self) -> DashboardScreen | None:
        """The dashboard on screen (nothing is ever opened over one but its dialogs), or None."""
        return next((s for s in reversed(self.screen_stack) if isinstance(s, DashboardScreen)), None)

    def _wizard(self) -> WizardScreen | None:
        return next((s for s in reversed(self.screen_stack) if isinstance(s, WizardScreen)), None)

    # -- command palette -----------------------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if not isinstance(screen, WizardScreen):
            return
        wizard = screen
        yield SystemCommand("Save config", f"Write {wizard.config_path.name} (Ctrl+S)", wizard.action_save)
        yield SystemCommand(
            "Import kohya_ss config", "Load a kohya_ss GUI .json into the wizard (Ctrl+O)", wizard.action_import_kohya
        )
        yield SystemCommand(
            "Launch", "Check, save and start training (Ctrl+L)", lambda: wizard.call_later(wizard.action_launch)
        )
        yield SystemCommand("Next step", "PageDown", lambda: wizard.call_later(wizard.action_next_step))
        yield SystemCommand("Previous step", "PageUp or Esc", lambda: wizard.call_later(wizard.action_prev_step))
        from loratui.tui.wizard.steps import STEPS

        for step in STEPS:
            yield SystemCommand(
                f"Go to step: {step.title}", step.intro, lambda s=step.id: wizard.call_later(wizard.goto_step, s)
            )
