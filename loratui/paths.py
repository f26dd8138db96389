"""Where loratui keeps files that belong to no project: the built-in tiny model (cache) and the
job registry (state)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$LORATUI_CACHE_DIR``, else ``$XDG_CACHE_HOME/loratui``, else ``~/.cache/loratui``."""
    explicit = os.environ.get("LORATUI_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "loratui"


def state_dir() -> Path:
    """``$LORATUI_STATE_DIR``, else ``$XDG_STATE_HOME/loratui``, else ``~/.local/state/loratui``.

    Holds the job registry: per user, so ``loratui jobs`` finds every run from any folder.
    """
    explicit = os.environ.get("LORATUI_STATE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "loratui"
