"""User settings that belong to no project, such as the colour theme of the terminal app.

They live in one small TOML file::

    # ~/.config/loratui/settings.toml
    theme = "loratui-dark"

The folder is ``$LORATUI_CONFIG_DIR`` when set (tests use it), else ``$XDG_CONFIG_HOME/loratui``,
else ``~/.config/loratui``. The file is written atomically, and keys this version does not know
are kept as they are when it is rewritten, so an older loratui never deletes a newer one's
settings.

A broken settings file never stops the app: :func:`load_settings` returns the defaults for what it
cannot use, plus a :class:`~loratui.errors.Problem` per mistake for the app to show.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from loratui.atomic import write_text_atomic
from loratui.errors import Problem, UserError

SETTINGS_FILE = "settings.toml"


def config_dir() -> Path:
    """``$LORATUI_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/loratui``, else ``~/.config/loratui``."""
    explicit = os.environ.get("LORATUI_CONFIG_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "loratui"


def settings_path() -> Path:
    return config_dir() / SETTINGS_FILE


@dataclass
class Settings:
    """The user's settings. Field comments are the help texts."""

    # Name of the colour theme of the terminal app; "" = the default theme (loratui-dark).
    theme: str = ""
    # Keys written by other loratui versions; kept untouched when the file is saved.
    extra: dict = field(default_factory=dict, compare=False)


_KNOWN = {f.name: f.type for f in dataclasses.fields(Settings) if f.name != "extra"}


def load_settings(path: Path | None = None) -> tuple[Settings, list[Problem]]:
    """The settings in ``path`` (default: :func:`settings_path`) and every problem found in it.

    A missing file is no problem: it means the defaults.
    """
    path = path or settings_path()
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return Settings(), []
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        fix = "check the file's permissions, or delete it to start from the defaults"
        return Settings(), [Problem(where, f"cannot read the settings file: {reason}", fix, "warning")]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        fix = 'correct it (e.g. theme = "loratui-dark"), or delete it to start from the defaults'
        return Settings(), [Problem(where, f"not valid TOML: {err}", fix, "warning")]

    settings = Settings()
    problems: list[Problem] = []
    for key, value in data.items():
        if key not in _KNOWN:
            settings.extra[key] = value
        elif not isinstance(value, str):
            message = f"{key} must be text in quotes, got {value!r}; the default is used"
            problems.append(Problem(f"{where}: {key}", message, f'write {key} = "{value}"', "warning"))
        else:
            setattr(settings, key, value)
    return settings, problems


def save_settings(settings: Settings, path: Path | None = None) -> Path:
    """Write ``settings`` atomically, creating the folder; returns the file written."""
    path = path or settings_path()
    data = dict(settings.extra)
    data.update({key: getattr(settings, key) for key in _KNOWN})
    header = "# loratui user settings (written by loratui; safe to edit)\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, header + tomli_w.dumps(data))
    except OSError as err:
        message = f"cannot write the settings file: {err.strerror or err}"
        fix = "check that you may write to the folder, or set LORATUI_CONFIG_DIR to another folder"
        raise UserError(message, str(path), fix, "config") from err
    return path


def update_settings(path: Path | None = None, **changes: str) -> Settings:
    """Re-read the file, apply ``changes`` and save, so that concurrent edits of other keys survive."""
    settings, _problems = load_settings(path)
    for key, value in changes.items():
        if key not in _KNOWN:
            raise ValueError(f"unknown setting {key!r}")  # a bug in the caller, not the user's doing
        setattr(settings, key, value)
    save_settings(settings, path)
    return settings
