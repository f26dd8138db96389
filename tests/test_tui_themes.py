"""Themes, user settings, path completion, and the rule that the terminal side never imports torch."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from rich.color import Color as RichColor
from rich.color import ColorSystem
from textual.color import Color

from loratui.errors import UserError
from loratui.settings import Settings, config_dir, load_settings, save_settings, settings_path, update_settings
from loratui.tui import make_new_app
from loratui.tui.suggest import complete_path
from loratui.tui.themes import DEFAULT_THEME, builtin_themes_dir, load_theme_file, load_themes

REPO = Path(__file__).resolve().parent.parent
THEME_FILES = sorted((REPO / "themes").glob("*.toml"))


pytestmark = pytest.mark.usefixtures("private_tui_settings")


# -- themes ------------------------------------------------------------------------------------


def test_the_themes_folder_is_found_beside_the_package():
    assert builtin_themes_dir() == REPO / "themes"
    names = {path.stem for path in THEME_FILES}
    assert {"loratui-dark", "loratui-light", "loratui-high-contrast", "loratui-256"} <= names


@pytest.mark.parametrize("path", THEME_FILES, ids=lambda p: p.stem)
def test_each_theme_file_loads_and_is_named_like_its_file(path: Path):
    theme = load_theme_file(path)
    assert theme.name == path.stem


def _palette_index(color: Color) -> int:
    return RichColor.from_rgb(color.r, color.g, color.b).downgrade(ColorSystem.EIGHT_BIT).number


def _resolved(variables: dict[str, str], name: str) -> Color:
    """A theme variable as an opaque colour (translucent ones blended over the background)."""
    background = Color.parse(variables["background"])
    value = variables[name]
    if value.startswith("auto"):  # Textual's contrast colour: black or white text, at an alpha
        percent = value.split()[1].rstrip("%") if " " in value else "100"
        return background + background.get_contrast_text(float(percent) / 100)
    return background + Color.parse(value)


# What a user must be able to tell apart: text and signal colours on the background.
READABLE_ON_BACKGROUND = ("foreground", "primary", "error", "warning", "success", "text-muted")


@pytest.mark.parametrize("path", THEME_FILES, ids=lambda p: p.stem)
def test_every_theme_keeps_text_readable_in_256_colours(path: Path):
    variables = load_theme_file(path).to_color_system().generate()
    background = _palette_index(_resolved(variables, "background"))
    for name in READABLE_ON_BACKGROUND:
        assert _palette_index(_resolved(variables, name)) != background, f"{name} vanishes into the background"


def test_the_256_colour_theme_keeps_every_surface_and_signal_apart():
    theme = load_theme_file(REPO / "themes" / "loratui-256.toml")
    data = tomllib.loads((REPO / "themes" / "loratui-256.toml").read_text())
    # Every colour it names is an exact xterm-256 palette entry: nothing gets rounded.
    for key in (
        "primary",
        "secondary",
        "accent",
        "warning",
        "error",
        "success",
        "foreground",
        "background",
        "surface",
        "panel",
    ):
        color = Color.parse(data[key])
        downgraded = RichColor.from_rgb(color.r, color.g, color.b).downgrade(ColorSystem.EIGHT_BIT)
        assert downgraded.get_truecolor() == (color.r, color.g, color.b), key
    variables = theme.to_color_system().generate()
    names = ("background", "surface", "panel", "foreground", "text-muted", "primary", "error", "warning", "success")
    indexes = {name: _palette_index(_resolved(variables, name)) for name in names}
    assert len(set(indexes.values())) == len(names), indexes


def test_a_broken_theme_file_is_skipped_with_the_file_and_key_named(tmp_path: Path):
    good = tmp_path / "mine.toml"
    good.write_text('primary = "#ff0000"\n')
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nprimary = "#ff0000"\nprimry = "#00ff00"\n')
    not_a_colour = tmp_path / "colour.toml"
    not_a_colour.write_text('primary = "reddish"\n')
    themes, problems = load_themes([tmp_path])
    assert [t.name for t in themes] == ["mine"]
    wheres = sorted(p.where for p in problems)
    assert wheres == [f"{bad}: primry", f"{not_a_colour}: primary"]
    assert all(p.fix for p in problems)


def test_user_themes_are_loaded_and_win_over_builtin_ones(tmp_path: Path):
    user_dir = config_dir() / "themes"
    user_dir.mkdir(parents=True)
    (user_dir / "loratui-dark.toml").write_text('name = "loratui-dark"\nprimary = "#123456"\n')
    themes, problems = load_themes()
    assert not problems
    dark = next(t for t in themes if t.name == "loratui-dark")
    assert dark.primary == "#123456"


# -- settings ----------------------------------------------------------------------------------


def test_settings_live_in_the_config_dir_override(tmp_path: Path):
    assert settings_path() == tmp_path / "user-config" / "settings.toml"


def test_settings_follow_xdg_config_home_without_the_override(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("LORATUI_CONFIG_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert settings_path() == tmp_path / "xdg" / "loratui" / "settings.toml"


def test_settings_round_trip_and_keep_keys_they_do_not_know():
    path = settings_path()
    path.parent.mkdir(parents=True)
    path.write_text('theme = "nord"\nfuture_key = 3\n')
    settings, problems = load_settings()
    assert settings.theme == "nord" and not problems
    update_settings(theme="loratui-light")
    data = tomllib.loads(path.read_text())
    assert data == {"theme": "loratui-light", "future_key": 3}
    assert [p.name for p in path.parent.iterdir()] == ["settings.toml"]  # no temp file left


def test_missing_settings_are_the_defaults():
    assert load_settings() == (Settings(), [])


def test_broken_settings_give_a_plain_problem_not_a_crash():
    path = settings_path()
    path.parent.mkdir(parents=True)
    path.write_text("theme = nord\n")
    settings, problems = load_settings()
    assert settings.theme == ""
    assert problems and "not valid TOML" in problems[0].message and problems[0].fix
    path.write_text("theme = 3\n")
    settings, problems = load_settings()
    assert settings.theme == "" and problems[0].where.endswith("theme")


def test_unwritable_settings_raise_a_user_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError) as caught:
        save_settings(Settings(theme="x"), blocker / "settings.toml")
    assert "LORATUI_CONFIG_DIR" in caught.value.fix


# -- the app's theme choice ----------------------------------------------------------------------


def _run(coro):
    return asyncio.run(coro)


def test_the_default_theme_is_loratui_dark(tmp_path: Path):
    app = make_new_app(tmp_path / "p")
    assert app.theme == DEFAULT_THEME


def test_a_256_colour_terminal_gets_the_256_colour_theme(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("COLORTERM")
    monkeypatch.setenv("TERM", "xterm-256color")
    assert make_new_app(tmp_path / "p").theme == "loratui-256"
    monkeypatch.setenv("COLORTERM", "truecolor")
    assert make_new_app(tmp_path / "q").theme == DEFAULT_THEME


def test_the_saved_theme_is_used_and_a_palette_choice_is_remembered(tmp_path: Path):
    save_settings(Settings(theme="loratui-high-contrast"))
    app = make_new_app(tmp_path / "p")
    assert app.theme == "loratui-high-contrast"

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            app.theme = "loratui-256"  # what the command palette's Theme command does
            await pilot.pause()

    _run(scenario())
    assert load_settings()[0].theme == "loratui-256"


def test_the_theme_option_wins_for_the_session_and_is_not_remembered(tmp_path: Path):
    save_settings(Settings(theme="loratui-light"))
    app = make_new_app(tmp_path / "p", theme="loratui-256")
    assert app.theme == "loratui-256"

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()

    _run(scenario())
    assert load_settings()[0].theme == "loratui-light"


def test_a_saved_theme_that_is_gone_falls_back_with_a_message(tmp_path: Path):
    save_settings(Settings(theme="deleted-theme"))
    app = make_new_app(tmp_path / "p")
    assert app.theme == DEFAULT_THEME
    assert any("deleted-theme" in str(problem) for problem in app.startup_problems)


def test_the_command_palette_offers_the_wizard_commands(tmp_path: Path):
    app = make_new_app(tmp_path / "p")

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            return [command.title for command in app.get_system_commands(app.screen)]

    titles = _run(scenario())
    for title in ("Theme", "Save config", "Import kohya_ss config", "Launch", "Go to step: Review"):
        assert title in titles


# -- path completion ---------------------------------------------------------------------------


def test_paths_complete_from_the_project_folder(tmp_path: Path):
    (tmp_path / "img" / "10_ohwx woman").mkdir(parents=True)
    (tmp_path / "img" / "notes.txt").write_text("")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "kohya.json").write_text("{}")
    (tmp_path / "kohya.yaml").write_text("")
    assert complete_path("i", tmp_path) == "img/"
    assert complete_path("img/1", tmp_path) == "img/10_ohwx woman/"
    assert complete_path("img/n", tmp_path) == "img/notes.txt"
    assert complete_path("img/n", tmp_path, dirs_only=True) is None
    assert complete_path(".h", tmp_path) == ".hidden/"
    assert complete_path("x", tmp_path) is None
    assert complete_path("koh", tmp_path, suffixes=(".json",)) == "kohya.json"
    assert complete_path(f"{tmp_path}/im", Path("/")) == f"{tmp_path}/img/"
    assert complete_path("loratui:t", tmp_path) is None
    assert complete_path("img/", tmp_path) == "img/10_ohwx woman/"  # folders before files


def test_home_is_expanded_but_kept_as_typed(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "loras").mkdir()
    assert complete_path("~/lo", Path("/")) == "~/loras/"


# -- torch stays out ---------------------------------------------------------------------------


def test_the_terminal_app_never_imports_torch(tmp_path: Path):
    """Import every module of the app and run the wizard through the Review step (which runs the
    full check and the dataset scan) in a fresh interpreter: torch must not be loaded."""
    script = f"""
import asyncio, shutil, sys
from pathlib import Path
import loratui.tui, loratui.tui.app, loratui.tui.entry, loratui.kohya_import, loratui.settings
from loratui.tui import make_new_app
from textual.worker import WorkerCancelled
project = Path({str(tmp_path / "p")!r})
shutil.copytree({str(REPO / "sample_project" / "img")!r}, project / 'img')
app = make_new_app(project, kohya_json={str(REPO / "tests" / "fixtures" / "kohya" / "Standard-AdamW.json")!r})
async def main():
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.3)
        await pilot.press("escape")
        for _ in range(6):
            await pilot.press("pagedown")
        await pilot.pause(0.3)
        try:
            await app.workers.wait_for_complete()
        except WorkerCancelled:  # a scan replaced by a newer one
            await app.workers.wait_for_complete()
        await pilot.pause()
asyncio.run(main())
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "diffusers", "transformers", "peft", "accelerate")))
print("LOADED", loaded)
"""
    env = {**os.environ, "LORATUI_CONFIG_DIR": str(tmp_path / "cfg")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "LOADED []" in done.stdout, done.stdout
