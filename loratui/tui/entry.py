"""The functions the command line calls: ``loratui new [DIR]`` and ``loratui edit CONFIG``.

Both run the app in the terminal and return a :class:`WizardResult` once it exits. A user's
mistake (an existing project, a broken config, an unknown theme) raises UserError before the
app starts, so the CLI prints it as one plain line.
"""

from __future__ import annotations

import re
from pathlib import Path

from loratui.config import RunConfig, load_config
from loratui.errors import UserError
from loratui.tui.outcome import LaunchFn, WizardResult

CONFIG_NAME = "loratui.toml"
# The kohya layout the guides teach: images, finished LoRAs, logs, regularisation images.
PROJECT_FOLDERS = ("img", "model", "log", "reg")


def prepare_new_project(directory: str | Path, *, create_folders: bool = True) -> Path:
    """Create ``directory`` with the img/, model/, log/ and reg/ folders; return its config path.

    The config itself is written when the user saves. Refuses a folder that already has one.
    """
    folder = Path(directory).expanduser().absolute()
    config_path = folder / CONFIG_NAME
    if config_path.exists():
        raise UserError(f"{config_path} already exists", str(folder),
                        f"edit it with `loratui edit {config_path}`, or choose another folder")
    if folder.exists() and not folder.is_dir():
        raise UserError("this is a file, not a folder", str(folder), "give the path of a new or existing folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if create_folders:
            for name in PROJECT_FOLDERS:
                (folder / name).mkdir(exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the project folder: {err.strerror or err}", str(folder),
                        "choose a folder you may write to") from err
    return config_path


def new_project_config(config_path: Path) -> RunConfig:
    """The config a new project starts from: loratui's defaults, named after the folder."""
    cfg = RunConfig(base_dir=config_path.parent)
    cfg.output.name = _lora_name(config_path.parent.name)
    return cfg


def _lora_name(folder_name: str) -> str:
    cleaned = re.sub(r"[^\w.\- ]+", "_", folder_name).strip(" ._") or "lora"
    return cleaned


def make_new_app(directory: str | Path, *, theme: str | None = None, on_launch: LaunchFn | None = None,
                 kohya_json: str | Path | None = None):
    """The app for a new project in ``directory`` (created with its folders), not yet running."""
    from loratui.tui.app import LoratuiApp
    from loratui.tui.themes import check_theme_name

    check_theme_name(theme)  # before anything is created on disk
    config_path = prepare_new_project(directory)
    return LoratuiApp(config=new_project_config(config_path), config_path=config_path, new_project=True,
                      on_launch=on_launch, theme=theme, kohya_json=_path_or_none(kohya_json))


def make_edit_app(config_path: str | Path, *, theme: str | None = None, on_launch: LaunchFn | None = None,
                  kohya_json: str | Path | None = None):
    """The app editing an existing config file (loaded and type-checked first), not yet running."""
    from loratui.tui.app import LoratuiApp

    path = Path(config_path).expanduser().absolute()
    cfg = load_config(path)
    return LoratuiApp(config=cfg, config_path=path, on_launch=on_launch, theme=theme,
                      kohya_json=_path_or_none(kohya_json))


def run_new(directory: str | Path = ".", *, theme: str | None = None, on_launch: LaunchFn | None = None,
            kohya_json: str | Path | None = None) -> WizardResult:
    """``loratui new [DIR]``: the wizard for a new project folder.

    ``theme``: from ``--theme`` (not remembered; the command palette's choice is).
    ``on_launch``: starts a job for the saved config and returns its id; without it, Launch saves
    the config and exits with ``launch_requested=True`` for the caller to act on.
    ``kohya_json``: a kohya_ss GUI config to import at start.
    """
    app = make_new_app(directory, theme=theme, on_launch=on_launch, kohya_json=kohya_json)
    return app.run() or app.result


def run_edit(config_path: str | Path, *, theme: str | None = None, on_launch: LaunchFn | None = None,
             kohya_json: str | Path | None = None) -> WizardResult:
    """``loratui edit CONFIG``: the wizard on an existing config; same parameters as run_new."""
    app = make_edit_app(config_path, theme=theme, on_launch=on_launch, kohya_json=kohya_json)
    return app.run() or app.result


def _path_or_none(value: str | Path | None) -> Path | None:
    return Path(value).expanduser() if value else None


def run_home(*, theme: str | None = None):
    """``loratui`` with no command: the home screen. Returns the user's HomeChoice, or None."""
    from loratui.tui.app import LoratuiApp
    from loratui.tui.home import HomeChoice

    choice = LoratuiApp(theme=theme).run()
    return choice if isinstance(choice, HomeChoice) else None
