"""Importing a kohya_ss GUI config into the wizard: the path dialog and the report."""

from loratui.tui.kohya.screens import ImportReportScreen, KohyaImportScreen

__all__ = ["ImportReportScreen", "KohyaImportScreen"]
