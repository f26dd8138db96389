"""The home screen: what ``loratui`` with no arguments shows."""

from loratui.tui.home.screen import HomeChoice, HomeScreen

__all__ = ["HomeChoice", "HomeScreen"]
