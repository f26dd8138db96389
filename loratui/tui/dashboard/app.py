"""A small app that shows one job's dashboard: ``loratui attach JOB``, and ``loratui train`` after
the launch.

Made for a terminal over SSH: it leaves the job alone whatever happens to the terminal. When the
terminal goes away (the SSH connection drops, the window is closed) the kernel sends SIGHUP; the
app then closes without a word (there is nobody to read it). A watchdog also closes it when its
input stops being a terminal, should no SIGHUP come (a pty closed under a multiplexer). The app
uses the themes of the main app (the saved choice, else the default for the terminal's colours).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from typing import Callable

from textual.app import App
from textual.binding import Binding

from loratui.errors import UserError
from loratui.jobs.record import JobRecord
from loratui.tui.dashboard.result import DashboardResult
from loratui.tui.dashboard.screen import DashboardScreen

WATCHDOG_S = 2.0
HANGUP_EXIT_S = 3.0
GONE_SIGNALS = ("SIGHUP", "SIGTERM")


class DashboardApp(App[DashboardResult]):
    TITLE = "loratui"
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", show=False, priority=True)]

    def __init__(
        self,
        record: JobRecord,
        *,
        theme: str | None = None,
        now: Callable[[], float] = time.time,
        watch_terminal: bool = True,
        **screen_options,
    ) -> None:
        """``theme``: a theme name (UserError if there is none of that name); None = the saved
        choice, else the default for this terminal (loratui-256 without true colour).
        ``watch_terminal``: close on SIGHUP/SIGTERM and when stdin stops being a terminal (off in
        tests). ``screen_options`` go to :class:`DashboardScreen` (``poll_s``, ``read_gpus``...)."""
        super().__init__()
        self.record = record
        self.now = now
        self.watch_terminal = watch_terminal
        self.screen_options = screen_options
        self.terminal_gone = False
        self._register_themes(theme)

    def _register_themes(self, requested: str | None) -> None:
        from loratui.settings import load_settings
        from loratui.tui.themes import FALLBACK_THEME, default_theme_name, load_themes

        themes, _problems = load_themes()
        for theme in themes:
            self.register_theme(theme)
        if requested:
            if requested not in self.available_themes:
                names = ", ".join(sorted(self.available_themes))
                raise UserError(f"unknown theme {requested!r}", "--theme", f"use one of: {names}")
            self.theme = requested
            return
        settings, _problems = load_settings()
        default = default_theme_name()
        for name in (settings.theme, default, FALLBACK_THEME):
            if name and name in self.available_themes:
                self.theme = name
                return

    def on_mount(self) -> None:
        self.push_screen(DashboardScreen(self.record, now=self.now, **self.screen_options), callback=self.exit)
        if self.watch_terminal:
            self._watch_terminal()

    def dashboard(self) -> DashboardScreen | None:
        return next((s for s in reversed(self.screen_stack) if isinstance(s, DashboardScreen)), None)

    async def action_quit(self) -> None:
        screen = self.dashboard()
        if screen is not None:
            self.exit(screen.result())
        else:
            self.exit()

    # -- the terminal going away ------------------------------------------------------------------

    def _watch_terminal(self) -> None:
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            for name in GONE_SIGNALS:
                number = getattr(signal, name, None)
                if number is not None:
                    try:
                        loop.add_signal_handler(number, self.terminal_went_away)
                    except (NotImplementedError, RuntimeError, ValueError):  # not on this platform / loop
                        pass
        self.set_interval(WATCHDOG_S, self._check_terminal)

    def _check_terminal(self) -> None:
        try:
            alive = os.isatty(sys.__stdin__.fileno())
        except (AttributeError, OSError, ValueError):
            alive = False
        if not alive:
            self.terminal_went_away()

    def terminal_went_away(self) -> None:
        """Close at once and say nothing: the job goes on, there is no terminal to write to."""
        if self.terminal_gone:
            return
        self.terminal_gone = True
        # Restoring a terminal that is gone can block (writes to a hung-up tty, an input thread
        # waiting on it). Nothing is left to save here, so if the orderly exit has not finished
        # in a few seconds the process ends anyway: a viewer must never linger without a screen.
        safety_net = threading.Timer(HANGUP_EXIT_S, os._exit, args=(0,))
        safety_net.daemon = True
        safety_net.start()
        screen = self.dashboard()
        self.exit(screen.result("terminal") if screen is not None else None)

    def on_unmount(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        for name in GONE_SIGNALS:
            number = getattr(signal, name, None)
            if number is not None:
                try:
                    loop.remove_signal_handler(number)
                except (NotImplementedError, RuntimeError, ValueError):
                    pass
