"""Where loratui keeps files that belong to no project (the built-in tiny model, job registry)."""

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
