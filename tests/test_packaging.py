"""A wheel install (``pip install .``, ``pipx install .``) is the whole app: every package, the TUI's
stylesheets and the theme files travel in the wheel, and the installed app starts with loratui's themes.

The wheel is built from a copy of the sources and installed into a fresh venv without downloading
anything: the venv has no pip and no dependencies of its own; a ``.pth`` file with a plain path line
lends it this environment's site-packages (textual, rich, torch...). A plain path line does not run
that folder's own ``.pth`` files, so the editable install of this checkout is not picked up there: the
tests check that ``loratui`` is imported from the venv.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from textual.color import Color

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "loratui", "engine", "themes")  # what the build reads
THEME_FILES = sorted((REPO / "themes").glob("*.toml"))

# Run inside the venv: start the app headless with each theme asked for (None: the default one) and
# report where loratui came from and which theme, with which colours, the app ended up with.
START_APP = """
import asyncio, json, sys
import engine, loratui
from loratui.tui.app import LoratuiApp
from loratui.checkpoint_configs import shipped_configs
from loratui.tui.themes import builtin_themes_dir

async def start(name):
    app = LoratuiApp(theme=name)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        theme, css = app.current_theme, app.get_css_variables()
        return {"theme": app.theme, "primary": theme.primary, "background": theme.background,
                "css_primary": css["primary"], "screen": type(app.screen).__name__,
                "problems": [str(problem) for problem in app.startup_problems]}

started = {name or "": asyncio.run(start(name)) for name in json.loads(sys.argv[1])}
print(json.dumps({"loratui": loratui.__file__, "engine": engine.__file__,
                  "themes_dir": str(builtin_themes_dir()), "sdxl_configs": str(shipped_configs()),
                  "started": started}))
"""


def _clean_env(home: Path) -> dict[str, str]:
    """No PYTHONPATH or pip settings of the caller; private settings, jobs and a true-colour terminal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_", "LORATUI_", "VIRTUAL_ENV"))}
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        COLORTERM="truecolor",
        TERM="xterm-256color",
        LORATUI_CONFIG_DIR=str(home / "config"),
        LORATUI_STATE_DIR=str(home / "state"),
        LORATUI_CACHE_DIR=str(home / "cache"),
    )
    return env


def _run(command: list, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [str(part) for part in command]
    result = subprocess.run(command, check=False, cwd=cwd, env=env, capture_output=True, text=True)
    shown = " ".join(part if len(part) < 200 else "SCRIPT" for part in command)
    assert result.returncode == 0, f"{shown} exited {result.returncode}:\n{result.stdout}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """The working folder of every command here: outside the checkout, so nothing imports from it."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A copy of the sources to build from: a build in the checkout would leave build/ there, and a
    stale build/ can carry files that no longer exist."""
    source = tmp_path_factory.mktemp("source")
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=junk)
        else:
            shutil.copy2(REPO / name, source / name)
    return source


@pytest.fixture(scope="module")
def wheel(tmp_path_factory, source: Path, home: Path) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "-q",
            "-w",
            out,
            source,
        ],
        home,
        _clean_env(home),
    )
    (built,) = out.glob("loratui-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel: Path, home: Path) -> Path:
    """A fresh venv with the wheel installed and this environment's site-packages lent for the dependencies."""
    root = tmp_path_factory.mktemp("venv")
    env = _clean_env(home)
    _run([sys.executable, "-m", "venv", "--without-pip", root], home, env)
    python = root / "bin" / "python"
    purelib = Path(
        _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], home, env).stdout.strip()
    )
    lent = [path for path in [*site.getsitepackages(), sysconfig.get_path("purelib")] if Path(path).is_dir()]
    (purelib / "lent-dependencies.pth").write_text("".join(f"{path}\n" for path in dict.fromkeys(lent)))
    # This environment's pip, run by the venv's python, installs into the venv and writes its `loratui`
    # script there. --ignore-installed: the lent editable loratui is not the venv's to uninstall.
    _run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--ignore-installed",
            "-q",
            "--disable-pip-version-check",
            "--no-warn-script-location",
            wheel,
        ],
        home,
        env,
    )
    return root


@pytest.fixture(scope="module")
def started(venv: Path, home: Path) -> dict:
    """What the installed app reports after starting once per theme file and once with the default."""
    names = [path.stem for path in THEME_FILES] + [None]
    result = _run([venv / "bin" / "python", "-c", START_APP, json.dumps(names)], home, _clean_env(home))
    return json.loads(result.stdout.strip().splitlines()[-1])


def _files_to_ship(source: Path) -> set[str]:
    """Every file of ``source`` the app needs at run time, by its path in the wheel."""
    names = {
        str(path.relative_to(source))
        for folder in ("loratui", "engine")
        for path in (source / folder).rglob("*")
        if path.suffix in (".py", ".tcss", ".json")  # .json: loratui/model_configs
    }
    names |= {f"loratui/themes/{path.name}" for path in (source / "themes").iterdir() if path.is_file()}
    return names


def test_the_wheel_carries_every_module_stylesheet_config_and_theme(source: Path, wheel: Path):
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(_files_to_ship(source) - in_wheel)
    assert not missing, f"not in the wheel (add the package to [tool.setuptools] packages in pyproject.toml): {missing}"
    assert {f"loratui/themes/{path.name}" for path in THEME_FILES} <= in_wheel


def test_the_installed_app_is_imported_from_the_venv_not_the_checkout(venv: Path, started: dict):
    for name in ("loratui", "engine", "themes_dir"):
        assert Path(started[name]).is_relative_to(venv), f"{name} came from {started[name]}"
    assert Path(started["themes_dir"]).name == "themes"


def test_the_installed_app_finds_its_sdxl_configs(venv: Path, started: dict):
    folder = Path(started["sdxl_configs"])
    assert folder.is_relative_to(venv)
    assert json.loads((folder / "unet" / "config.json").read_text())["cross_attention_dim"] == 2048
    assert (folder / "text_encoder_2" / "config.json").is_file()


@pytest.mark.parametrize("path", THEME_FILES, ids=lambda path: path.stem)
def test_the_installed_app_starts_with_each_theme_and_its_colours(path: Path, started: dict):
    theme_file = tomllib.loads(path.read_text(encoding="utf-8"))
    app = started["started"][path.stem]
    assert app["theme"] == path.stem
    assert app["screen"] == "HomeScreen"
    assert not app["problems"]
    assert Color.parse(app["primary"]) == Color.parse(theme_file["primary"])
    assert Color.parse(app["css_primary"]) == Color.parse(theme_file["primary"])
    if "background" in theme_file:
        assert Color.parse(app["background"]) == Color.parse(theme_file["background"])


def test_the_installed_app_defaults_to_loratuis_theme_not_textuals(started: dict):
    app = started["started"][""]  # on a true-colour terminal, with no saved choice
    assert app["theme"] == "loratui-dark"
    assert not app["problems"]


def test_the_installed_loratui_command_runs(venv: Path, home: Path):
    script = venv / "bin" / "loratui"
    assert script.read_text().splitlines()[0] == f"#!{venv / 'bin' / 'python'}"
    result = _run([script, "--help"], home, _clean_env(home))
    assert result.stdout.startswith("usage: loratui")
    assert "--theme" in result.stdout


def test_the_installed_engine_runs(venv: Path, home: Path):
    result = _run([venv / "bin" / "python", "-m", "engine", "--help"], home, _clean_env(home))
    assert result.stdout.startswith("usage: python -m engine")
