"""The setup wizard: one screen with a step per config section, a live dataset view and a review."""

from loratui.tui.wizard.screen import WizardScreen

__all__ = ["WizardScreen"]
