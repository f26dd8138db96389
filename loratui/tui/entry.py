"""The functions the command line calls to open the app: on home (``loratui``), on the wizard
(``loratui new [DIR]``, ``loratui edit CONFIG``) or on a job's dashboard (``loratui attach``,
``loratui train``).

Each ``run_*`` runs the app in the terminal until the user leaves it, then prints what the app
has to say (how to re-attach to a job, how it ended, the config saved) and returns the exit code.
A user's mistake (an existing project, a broken config, an unknown theme) raises UserError before
the app starts, so the CLI prints it as one plain line. The ``make_*`` functions build the app
without running it (tests drive it with Pilot).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from loratui.config import RunConfig, load_config
from loratui.core.exit_codes import ExitCode
from loratui.core.run_files import make_private_dirs
from loratui.errors import UserError
from loratui.shell import logs_command, loratui_command

if TYPE_CHECKING:
    from loratui.jobs.record import JobRecord
    from loratui.tui.app import LoratuiApp

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
        raise UserError(
            f"{config_path} already exists",
            str(folder),
            f"edit it with `{loratui_command('edit', config_path)}`, or choose another folder",
        )
    if folder.exists() and not folder.is_dir():
        raise UserError("this is a file, not a folder", str(folder), "give the path of a new or existing folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if create_folders:
            for name in PROJECT_FOLDERS:
                if name == "log":  # run folders and their control FIFOs go here: owner-only, whatever the umask
                    make_private_dirs(folder / name)
                else:
                    (folder / name).mkdir(exist_ok=True)
    except OSError as err:
        raise UserError(
            f"cannot create the project folder: {err.strerror or err}", str(folder), "choose a folder you may write to"
        ) from err
    return config_path


def new_project_config(config_path: Path) -> RunConfig:
    """The config a new project starts from: loratui's defaults, named after the folder, in the
    mixed precision this machine allows (bf16 where the GPU has it, else fp16, no on a CPU)."""
    from loratui.preflight import precision_for, this_machine

    cfg = RunConfig(base_dir=config_path.parent)
    cfg.output.name = _lora_name(config_path.parent.name)
    cfg.training.mixed_precision = precision_for(this_machine())
    return cfg


def _lora_name(folder_name: str) -> str:
    cleaned = re.sub(r"[^\w.\- ]+", "_", folder_name).strip(" ._") or "lora"
    return cleaned


def make_home_app(*, theme: str | None = None, folder: Path | None = None, **options) -> LoratuiApp:
    """The app on its home screen for ``folder`` (default: the current one). ``options`` go to
    :class:`~loratui.tui.app.LoratuiApp` (``on_launch``, ``watch_terminal``, ``dashboard_options``)."""
    from loratui.tui.app import LoratuiApp, OpenHome

    return LoratuiApp(OpenHome(folder), theme=theme, **options)


def make_new_app(
    directory: str | Path, *, theme: str | None = None, kohya_json: str | Path | None = None, **options
) -> LoratuiApp:
    """The app on the wizard for a new project in ``directory`` (created with its folders)."""
    from loratui.tui.app import LoratuiApp, OpenWizard
    from loratui.tui.themes import check_theme_name

    check_theme_name(theme)  # before anything is created on disk
    config_path = prepare_new_project(directory)
    start = OpenWizard(
        new_project_config(config_path), config_path, new_project=True, kohya_json=_path_or_none(kohya_json)
    )
    return LoratuiApp(start, theme=theme, **options)


def make_edit_app(
    config_path: str | Path, *, theme: str | None = None, kohya_json: str | Path | None = None, **options
) -> LoratuiApp:
    """The app on the wizard editing an existing config file (loaded and type-checked first)."""
    from loratui.tui.app import LoratuiApp, OpenWizard

    path = Path(config_path).expanduser().absolute()
    start = OpenWizard(load_config(path), path, kohya_json=_path_or_none(kohya_json))
    return LoratuiApp(start, theme=theme, **options)


def make_dashboard_app(record: JobRecord, *, theme: str | None = None, **options) -> LoratuiApp:
    """The app on a job's dashboard."""
    from loratui.tui.app import LoratuiApp, OpenDashboard

    return LoratuiApp(OpenDashboard(record), theme=theme, **options)


def _path_or_none(value: str | Path | None) -> Path | None:
    return Path(value).expanduser() if value else None


# -- running it in the terminal ------------------------------------------------------------------


def run_home(*, theme: str | None = None) -> int:
    """``loratui`` with no command."""
    return run_app(make_home_app(theme=theme, watch_terminal=True))


def run_new(directory: str | Path = ".", *, theme: str | None = None, kohya_json: str | Path | None = None) -> int:
    """``loratui new [DIR]``. ``theme``: from ``--theme`` (not remembered; the command palette's
    choice is). ``kohya_json``: a kohya_ss GUI config to import at start."""
    return run_app(make_new_app(directory, theme=theme, kohya_json=kohya_json, watch_terminal=True))


def run_edit(config_path: str | Path, *, theme: str | None = None, kohya_json: str | Path | None = None) -> int:
    """``loratui edit CONFIG``; same parameters as run_new."""
    return run_app(make_edit_app(config_path, theme=theme, kohya_json=kohya_json, watch_terminal=True))


def run_dashboard(record: JobRecord, *, theme: str | None = None) -> int:
    """``loratui attach JOB``, and ``loratui train CONFIG`` once the job is started: its dashboard
    until the user leaves or the terminal goes away. The job is never stopped by leaving."""
    from loratui.tui.dashboard import terminal_problem

    problem = terminal_problem()
    if problem:
        print(
            f"error: the dashboard needs a terminal ({problem}); follow the job with "
            f"`{loratui_command('attach', record.job_id, '--no-tui')}` or "
            f"`{logs_command(record.job_id, '--follow')}`",
            file=sys.stderr,
        )
        return ExitCode.USER_ERROR
    return run_app(make_dashboard_app(record, theme=theme, watch_terminal=True))


def run_app(app: LoratuiApp) -> int:
    """Run the app, then print its farewell (where to re-attach, how a job ended, the config
    saved) once the full-screen view is gone; return the exit code."""
    from loratui.tui.images import prepare_graphics

    prepare_graphics()  # asks the terminal which graphics it draws: only possible before the app runs
    result = app.run()
    if result is None:  # closed another way (an error Textual reported): say what leaving says
        result = app.result_now()
    if app.terminal_gone:
        return result.exit_code
    try:
        for line, to_stderr in result.farewell():
            print(line, file=sys.stderr if to_stderr else sys.stdout)
    except OSError:
        pass
    return app.return_code or result.exit_code
