"""The Textual app shell: themes, user settings, the command palette, quitting, and the screens.

Screens, by feature (each in its own folder with its widgets):

- ``wizard/``: the setup wizard;
- ``kohya/``: importing a kohya_ss config (dialogs pushed by the wizard);
- ``home/``: the start screen (the project here, jobs to attach to, recent projects, new
  project), shown when the app is started without a config;
- ``dashboard/`` (to come, another engineer's): the live view of a running job, opened with
  :meth:`LoratuiApp.push_screen` after a launch, or from the home screen.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from loratui.config import RunConfig
from loratui.errors import UserError
from loratui.settings import load_settings, settings_path, update_settings
from loratui.tui.dialogs import ConfirmQuitScreen
from loratui.tui.home import HomeChoice, HomeScreen
from loratui.tui.outcome import LaunchFn, WizardResult
from loratui.tui.themes import FALLBACK_THEME, default_theme_name, load_themes
from loratui.tui.wizard import WizardScreen


class LoratuiApp(App["WizardResult | HomeChoice"]):
    """loratui's terminal app. With a config it opens the wizard and exits with a
    :class:`WizardResult`; without one it opens the home screen and exits with a :class:`HomeChoice`
    (or None when the user quits)."""

    TITLE = "loratui"
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", priority=True)]
    CSS_PATH = ["app.tcss", "wizard/wizard.tcss", "kohya/kohya.tcss", "home/home.tcss"]

    def __init__(
        self,
        *,
        config: RunConfig | None = None,
        config_path: Path | None = None,
        new_project: bool = False,
        on_launch: LaunchFn | None = None,
        theme: str | None = None,
        kohya_json: Path | None = None,
        settings_file: Path | None = None,
    ) -> None:
        """``theme``: a theme name from ``--theme``; None = the saved choice, else loratui-dark
        (loratui-256 on a terminal without true colour).
        Raises UserError for an unknown theme name, naming the ones there are."""
        super().__init__()
        self.config = config
        self.config_path = config_path
        self.new_project = new_project
        self.on_launch = on_launch
        self.kohya_json = kohya_json
        self.settings_file = settings_file or settings_path()
        self.settings, self.startup_problems = load_settings(self.settings_file)
        themes, theme_problems = load_themes()
        self.startup_problems += theme_problems
        for loaded in themes:
            self.register_theme(loaded)
        self.theme = self._initial_theme(theme)
        self._theme_seen = self.theme
        self.result: WizardResult | None = WizardResult(None if new_project else config_path) if config else None

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
            self.startup_problems.append(UserError(
                f"theme {saved!r} in the settings is not installed; using the default",
                str(self.settings_file), f"pick one with Ctrl+P > Theme (there are: {', '.join(names)})"))
        default = default_theme_name()
        return default if default in self.available_themes else FALLBACK_THEME

    def on_mount(self) -> None:
        for problem in self.startup_problems:
            self.notify(str(problem), title="Settings", severity="warning", timeout=10)
        self.push_screen(self._first_screen())

    def _first_screen(self) -> Screen:
        if self.config is None:
            return HomeScreen()
        return WizardScreen(self.config, self.config_path, new_project=self.new_project,
                            on_launch=self.on_launch, kohya_json=self.kohya_json)

    # -- theme persistence -------------------------------------------------------------------

    def watch_theme(self, theme: str) -> None:
        """A theme picked later (command palette: Theme) is remembered; the startup one is not."""
        if theme == getattr(self, "_theme_seen", theme):
            return
        self._theme_seen = theme
        try:
            self.settings = update_settings(self.settings_file, theme=theme)
        except UserError as err:
            self.notify(str(err), title="Theme not remembered", severity="warning", timeout=10)

    # -- saving and quitting -----------------------------------------------------------------

    def on_wizard_screen_saved(self, message: WizardScreen.Saved) -> None:
        self.result = WizardResult(message.path)

    async def action_quit(self) -> None:
        wizard = self._wizard()
        if wizard is None or not wizard.dirty:
            self.exit(self.result)
            return

        def decided(choice: str | None) -> None:
            if choice == "save":
                if wizard.action_save():
                    self.exit(self.result)
            elif choice == "discard":
                self.exit(self.result)

        self.push_screen(ConfirmQuitScreen(wizard.config_path.name, exists=wizard.config_path.exists()), decided)

    def _wizard(self) -> WizardScreen | None:
        for screen in reversed(self.screen_stack):
            if isinstance(screen, WizardScreen):
                return screen
        return None

    # -- command palette ---------------------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        wizard = self._wizard()
        if wizard is None:
            return
        yield SystemCommand("Save config", f"Write {wizard.config_path.name} (Ctrl+S)", wizard.action_save)
        yield SystemCommand("Import kohya_ss config", "Load a kohya_ss GUI .json into the wizard (Ctrl+O)",
                            wizard.action_import_kohya)
        yield SystemCommand("Launch", "Check, save and start training (Ctrl+L)",
                            lambda: wizard.call_later(wizard.action_launch))
        yield SystemCommand("Next step", "PageDown", lambda: wizard.call_later(wizard.action_next_step))
        yield SystemCommand("Previous step", "PageUp or Esc", lambda: wizard.call_later(wizard.action_prev_step))
        from loratui.tui.wizard.steps import STEPS

        for step in STEPS:
            yield SystemCommand(f"Go to step: {step.title}", step.intro, lambda s=step.id: wizard.call_later(wizard.goto_step, s))
