"""Noticing that the terminal has gone away, so that the app closes instead of lingering.

Made for a terminal over SSH. When the connection drops or the window is closed, the kernel sends
SIGHUP (a session manager may send SIGTERM); a watchdog also notices when the app's input stops
being a terminal, should no signal come (a pty closed under a multiplexer). Either way the app is
told once and closes without a word: there is nobody to read it. A job the app shows runs in a
session of its own and goes on.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections.abc import Callable

from textual.app import App

WATCHDOG_S = 2.0
HANGUP_EXIT_S = 3.0
GONE_SIGNALS = ("SIGHUP", "SIGTERM")


class TerminalWatch:
    """Calls ``on_gone`` (on the app's thread) once the terminal is gone."""

    def __init__(self, on_gone: Callable[[], None]) -> None:
        self.on_gone = on_gone
        self.gone = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, app: App) -> None:
        """Install the signal handlers (main thread only) and the watchdog; call from on_mount."""
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            for number in _gone_signals():
                try:
                    loop.add_signal_handler(number, self._went_away)
                except (NotImplementedError, RuntimeError, ValueError):  # not on this platform / loop
                    continue
            self._loop = loop
        app.set_interval(WATCHDOG_S, self._check)

    def stop(self) -> None:
        if self._loop is None:
            return
        for number in _gone_signals():
            try:
                self._loop.remove_signal_handler(number)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        self._loop = None

    def _check(self) -> None:
        try:
            alive = os.isatty(sys.__stdin__.fileno())
        except (AttributeError, OSError, ValueError):
            alive = False
        if not alive:
            self._went_away()

    def _went_away(self) -> None:
        if self.gone:
            return
        self.gone = True
        # Restoring a terminal that is gone can block (writes to a hung-up tty, an input thread
        # waiting on it). Nothing is left to save, so if the orderly exit has not finished in a
        # few seconds the process ends anyway: a viewer must never linger without a screen.
        safety_net = threading.Timer(HANGUP_EXIT_S, os._exit, args=(0,))
        safety_net.daemon = True
        safety_net.start()
        self.on_gone()


def _gone_signals() -> list[int]:
    return [number for name in GONE_SIGNALS if (number := getattr(signal, name, None)) is not None]
