"""The home screen: what ``loratui`` with no arguments shows."""

from loratui.tui.home.screen import HomeScreen

__all__ = ["HomeScreen"]
