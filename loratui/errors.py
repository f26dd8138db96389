"""The one error type for a user's mistake: what went wrong, where, and how to fix it.

Both sides raise it. The CLI prints it as one plain line and exits non-zero; the engine turns it
into an ``error`` event. Anything else that escapes is a bug in loratui, not the user's doing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from loratui.core.terminal_text import escape_controls


@dataclass
class UserError(Exception):
    """A problem the user can fix. ``where`` names the file or config field."""

    message: str
    where: str = ""
    fix: str = ""
    kind: str = "config"  # config | dataset | model | output | runtime
    # The message is a list of lines, each escaped already (rendered problems): its line breaks
    # are ours and are kept; any other control character is still escaped.
    escaped_lines: bool = False

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return rendered(self.where, self.message, self.fix, keep="\n" if self.escaped_lines else "")


@dataclass(frozen=True)
class Problem:
    """One finding of a check. Checks collect every problem at once rather than stopping at the first.

    severity: ``error`` blocks training, ``warning`` is worth reading, ``note`` explains a choice
    loratui made for the user (e.g. how max_train_steps and epochs were reconciled).
    """

    where: str  # a config field ("network.rank") or a path
    message: str
    fix: str = ""
    severity: str = "error"  # error | warning | note

    def __str__(self) -> str:
        return rendered(self.where, self.message, self.fix)


def rendered(where: str, message: str, fix: str, keep: str = "") -> str:
    """``where: message (fix: fix)``, one line safe to print: the parts name files and folders,
    and a file's name may hold characters a terminal acts on (escaped here, see
    :mod:`loratui.core.terminal_text`). The fields themselves keep the exact text. ``keep``: what
    the message may hold as it is (the line breaks of a list of problems rendered already)."""
    text = escape_controls(message, keep)
    if where:
        text = f"{escape_controls(where)}: {text}"
    if fix:
        text += f" (fix: {escape_controls(fix)})"
    return text


def error(where: str, message: str, fix: str) -> Problem:
    """A problem that blocks training."""
    return Problem(where, message, fix, "error")


def warning(where: str, message: str, fix: str) -> Problem:
    return Problem(where, message, fix, "warning")


def note(where: str, message: str, fix: str = "") -> Problem:
    return Problem(where, message, fix, "note")


def failed_settings(problems: Iterable[Problem]) -> set[str]:
    """Where the errors among ``problems`` are: the settings a later check must not work on."""
    return {problem.where for problem in problems if problem.severity == "error"}
