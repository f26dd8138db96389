"""The exit statuses of ``python -m engine`` and of ``loratui`` commands, declared once.

A script can tell a finished run from a stopped one and a mistake of its own from a bug.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # the run finished; the command did what was asked
    FAILED = 1  # a bug in loratui, an engine that died, or `loratui check` found errors
    USER_ERROR = 2  # a mistake the user can fix; the message names the field or file and the fix
    STOPPED = 3  # the run stopped on request and saved a resumable state
    INTERRUPTED = 130  # Ctrl+C ended the command (128 + SIGINT, as shells report it); a started job goes on


def exit_code_of_run(final: dict | None, error: dict | None = None) -> ExitCode:
    """The exit status that tells how a run ended, from its final event and the error before it.

    No final event means the engine died without a word (killed, out of memory): FAILED.
    """
    kind = final.get("type") if final else None
    if kind == "finished":
        return ExitCode.OK
    if kind == "stopped":
        return ExitCode.STOPPED
    if kind == "failed" and error and error.get("kind") != "internal":
        return ExitCode.USER_ERROR
    return ExitCode.FAILED
