"""Commands printed for a person to paste into a shell.

Every command loratui prints (re-attach, stop, resume, logs, train) is built here, so that a job
id, a config path with spaces, quotes or ``$(...)`` in it pastes as one word and runs as shown.
Paths are made absolute: a printed command works from whatever folder it is pasted in.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from loratui.core.terminal_text import CONTROL_CHARACTERS, has_controls


def command_line(*argv: str | Path) -> str:
    """``argv`` as one shell line, each word quoted only when it needs it."""
    return " ".join(quote(str(word)) for word in argv)


def quote(word: str) -> str:
    """One word for the shell. A word with characters a terminal acts on (an escape character in
    a folder's name) is written in bash's ``$'...'`` form, each of those characters as the bytes
    the file system holds (``\\x1b``; U+009B as ``\\xc2\\x9b``): printing the command cannot drive
    the terminal, and pasting it gives the exact name, in any locale. Any other word is
    ``shlex.quote``'d."""
    if not has_controls(word):
        return shlex.quote(word)
    return "$'" + CONTROL_CHARACTERS.sub(_as_bytes, word.replace("\\", "\\\\").replace("'", "\\'")) + "'"


def _as_bytes(match: re.Match[str]) -> str:
    char = match.group()
    try:
        data = os.fsencode(char)  # a name's undecodable byte comes back as itself
    except UnicodeEncodeError:  # a lone surrogate no file name can hold
        return f"\\u{ord(char):04x}"
    return "".join(f"\\x{byte:02x}" for byte in data)


def absolute(path: str | Path) -> str:
    """``path`` as it resolves from the current folder (not following links: it stays recognisable)."""
    return os.path.abspath(os.path.expanduser(str(path)))


def loratui_command(*argv: str | Path) -> str:
    """``loratui ARGV...`` quoted for the shell."""
    return command_line("loratui", *argv)


def attach_command(job_id: str) -> str:
    return loratui_command("attach", job_id)


def stop_command(job_id: str) -> str:
    return loratui_command("stop", job_id)


def logs_command(job_id: str, *options: str) -> str:
    return loratui_command("logs", job_id, *options)


def train_command(config: str | Path, *options: str | Path) -> str:
    return loratui_command("train", absolute(config), *options)


def resume_command(config: str | Path, state: str | Path) -> str:
    """The command that continues a run from its saved state folder."""
    return train_command(config, "--resume", absolute(state))
