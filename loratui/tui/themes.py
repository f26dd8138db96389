"""Colour themes: TOML files, each one :class:`textual.theme.Theme`, registered when the app starts.

See ``themes/README.md`` at the repository root for the file format and the search order. The
built-in themes are the package ``loratui.themes``: the checkout's top-level ``themes/`` folder,
mapped to that name by pyproject.toml, so a wheel or pipx install carries them and an editable
install reads them from the checkout.
"""

from __future__ import annotations

import os
import tomllib
from importlib import resources
from pathlib import Path

from textual.color import Color, ColorParseError
from textual.theme import Theme

from loratui.errors import Problem, UserError
from loratui.settings import config_dir

DEFAULT_THEME = "loratui-dark"
DEFAULT_THEME_256 = "loratui-256"  # the default on terminals without true colour
FALLBACK_THEME = "textual-dark"  # Textual's own; used when no theme file could be loaded
BUILTIN_THEMES_PACKAGE = "loratui.themes"

_COLOR_KEYS = (
    "primary",
    "secondary",
    "warning",
    "error",
    "success",
    "accent",
    "foreground",
    "background",
    "surface",
    "panel",
    "boost",
)
_FLOAT_KEYS = ("luminosity_spread", "text_alpha")
_THEME_KEYS = ("name", "dark", "variables", *_COLOR_KEYS, *_FLOAT_KEYS)


def terminal_colours(env: dict[str, str] | None = None) -> str:
    """ "truecolor", "256" or "other", judged from the environment the way Rich does.

    Over SSH and in tmux, TERM=xterm-256color without COLORTERM=truecolor is common; there the
    dark theme's close greys would be rounded into one, so the 256-colour theme is the default.
    """
    env = os.environ if env is None else env
    forced = env.get("TEXTUAL_COLOR_SYSTEM", "").lower()
    if forced:
        return {"truecolor": "truecolor", "256": "256"}.get(forced, "other")
    if env.get("COLORTERM", "").lower() in ("truecolor", "24bit"):
        return "truecolor"
    term = env.get("TERM", "").lower()
    if term.endswith(("-truecolor", "-direct")):
        return "truecolor"
    return "256" if "256" in term else "other"


def default_theme_name(env: dict[str, str] | None = None) -> str:
    return DEFAULT_THEME_256 if terminal_colours(env) == "256" else DEFAULT_THEME


def builtin_themes_dir() -> Path:
    """The folder of the package ``loratui.themes``: ``<checkout>/themes`` in an editable install,
    ``site-packages/loratui/themes`` in a wheel's."""
    try:
        return Path(str(resources.files(BUILTIN_THEMES_PACKAGE)))
    except ModuleNotFoundError:
        # loratui imported straight from a checkout that was never installed (PYTHONPATH=<checkout>, or
        # an editable install in setuptools' "compat" mode): there the folder sits beside the package.
        return Path(__file__).resolve().parent.parent.parent / "themes"


def user_themes_dir() -> Path:
    return config_dir() / "themes"


def theme_dirs() -> list[Path]:
    """Where themes are looked for, in order; a later theme with the same name wins."""
    dirs = [builtin_themes_dir()]
    extra = os.environ.get("LORATUI_THEMES_DIR", "")
    dirs += [Path(part).expanduser() for part in extra.split(os.pathsep) if part.strip()]
    dirs.append(user_themes_dir())
    return dirs


def load_theme_file(path: Path) -> Theme:
    """One theme file; UserError naming the file and key for any mistake."""
    where = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as err:
        raise UserError(
            f"cannot read the theme file: {err.strerror or err}", where, "check the file's permissions"
        ) from err
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"not valid TOML: {err}", where, 'write one key per line, e.g. primary = "#4fb3d9"') from err
    unknown = sorted(set(data) - set(_THEME_KEYS))
    if unknown:
        raise UserError(
            f"unknown key '{unknown[0]}'", f"{where}: {unknown[0]}", f"remove it; the keys are {', '.join(_THEME_KEYS)}"
        )
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name.strip():
        raise UserError("name must be text", f"{where}: name", f'write name = "{path.stem}"')
    if "primary" not in data:
        raise UserError("a theme needs a primary colour", f"{where}: primary", 'add e.g. primary = "#4fb3d9"')
    kwargs: dict[str, object] = {"name": name.strip()}
    for key in _COLOR_KEYS:
        if key in data:
            kwargs[key] = _color(data[key], f"{where}: {key}")
    for key in _FLOAT_KEYS:
        if key in data:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                example = "1.0" if key == "text_alpha" else "0.15"
                raise UserError(
                    f"{key} must be a number from 0 to 1, got {value!r}",
                    f"{where}: {key}",
                    f"write e.g. {key} = {example}",
                )
            kwargs[key] = float(value)
    if "dark" in data:
        if not isinstance(data["dark"], bool):
            raise UserError("dark must be true or false", f"{where}: dark", "write dark = true or dark = false")
        kwargs["dark"] = data["dark"]
    variables = data.get("variables", {})
    if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
        raise UserError(
            "variables must be a table of text values",
            f"{where}: variables",
            'write [variables] and then lines like "border" = "#ffffff"',
        )
    kwargs["variables"] = {str(k): v for k, v in variables.items()}
    return Theme(**kwargs)  # type: ignore[arg-type]


def _color(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise UserError(f"expected a colour in quotes, got {value!r}", where, 'write e.g. "#4fb3d9"')
    try:
        Color.parse(value)
    except ColorParseError as err:
        raise UserError(
            f"{value!r} is not a colour", where, 'use a CSS colour such as "#4fb3d9" or "rgb(79,179,217)"'
        ) from err
    return value


def load_themes(dirs: list[Path] | None = None) -> tuple[list[Theme], list[Problem]]:
    """Every theme in ``dirs`` (default :func:`theme_dirs`), and a problem per unusable file."""
    themes: dict[str, Theme] = {}
    problems: list[Problem] = []
    for folder in dirs if dirs is not None else theme_dirs():
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.toml")):
            try:
                theme = load_theme_file(path)
            except UserError as err:
                problems.append(Problem(err.where, f"theme skipped: {err.message}", err.fix, "warning"))
                continue
            themes[theme.name] = theme
    return list(themes.values()), problems


def available_theme_names() -> list[str]:
    """Every theme name the app offers: the theme files' and Textual's built-in ones."""
    from textual.theme import BUILTIN_THEMES

    themes, _problems = load_themes()
    return sorted({*BUILTIN_THEMES, *(theme.name for theme in themes)})


def check_theme_name(name: str | None) -> None:
    """UserError naming ``--theme`` and the choices when ``name`` is no theme."""
    if not name:
        return
    names = available_theme_names()
    if name not in names:
        raise UserError(f"unknown theme {name!r}", "--theme", f"use one of: {', '.join(names)}")
