"""Path completion for Input fields: the rest of the first matching file or folder name is shown
greyed out after the cursor, and the Right arrow (or End) accepts it, as in a shell.

Relative paths complete against the project folder (where relative config paths resolve), not
against the folder the app was started from.
"""

from __future__ import annotations

import os
from pathlib import Path

from textual.suggester import Suggester

from loratui.params import BUILTIN_PREFIX

_MAX_ENTRIES = 5000  # a huge image folder is not worth listing on every key press


def complete_path(
    value: str,
    base_dir: Path,
    *,
    dirs_only: bool = False,
    suffixes: tuple[str, ...] = (),
) -> str | None:
    """``value`` completed to the first matching entry, or None when nothing matches.

    Folders come before files and get a trailing "/", so the next key press goes on into them.
    Hidden entries are offered only once the name typed so far starts with a dot. ``suffixes``
    limits the files offered (e.g. ``(".json",)``); folders are always offered.
    """
    if not value or value.startswith(BUILTIN_PREFIX):
        return None
    expanded = os.path.expanduser(value)
    head, sep, prefix = expanded.rpartition("/")
    if sep:
        folder = Path(head) if head else Path("/")
    else:
        folder = Path(".")
    if not folder.is_absolute():
        folder = base_dir / folder
    best = _first_match(folder, prefix, dirs_only, tuple(s.lower() for s in suffixes))
    if best is None:
        return None
    name, is_dir = best
    completion = name + ("/" if is_dir else "")
    if completion == prefix:
        return None
    return value + completion[len(prefix) :]


def _first_match(folder: Path, prefix: str, dirs_only: bool, suffixes: tuple[str, ...]) -> tuple[str, bool] | None:
    dirs: list[str] = []
    files: list[str] = []
    try:
        with os.scandir(folder) as entries:
            for count, entry in enumerate(entries):
                if count >= _MAX_ENTRIES:
                    break
                name = entry.name
                if not name.startswith(prefix) or (name.startswith(".") and not prefix.startswith(".")):
                    continue
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    continue
                if is_dir:
                    dirs.append(name)
                elif not dirs_only and (not suffixes or name.lower().endswith(suffixes)):
                    files.append(name)
    except OSError:
        return None
    if dirs:
        return min(dirs), True
    if files:
        return min(files), False
    return None


class PathSuggester(Suggester):
    """Suggests file system paths; see :func:`complete_path`."""

    def __init__(self, base_dir: Path, *, dirs_only: bool = False, suffixes: tuple[str, ...] = ()) -> None:
        # No cache: the folder changes while the app runs (images are copied in, runs save files).
        super().__init__(use_cache=False, case_sensitive=True)
        self.base_dir = base_dir
        self.dirs_only = dirs_only
        self.suffixes = suffixes

    async def get_suggestion(self, value: str) -> str | None:
        return complete_path(value, self.base_dir, dirs_only=self.dirs_only, suffixes=self.suffixes)
