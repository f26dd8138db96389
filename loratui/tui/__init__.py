"""loratui's terminal app (Textual): one app whose screens are home, the setup wizard and the job
dashboard (:mod:`loratui.tui.app`).

Entry points for the command line (each runs the app, prints its farewell and returns the exit
code)::

    from loratui.tui import run_home, run_new, run_edit, run_dashboard
    code = run_home()                                   # loratui
    code = run_new("my_lora", theme=None)               # loratui new [DIR]
    code = run_edit("my_lora/loratui.toml")             # loratui edit CONFIG
    code = run_dashboard(record)                        # loratui attach JOB, loratui train CONFIG

Importing this package is cheap (Textual is imported when an app is made) and never imports torch.
"""

from loratui.tui.entry import (
    make_dashboard_app,
    make_edit_app,
    make_home_app,
    make_new_app,
    prepare_new_project,
    run_app,
    run_dashboard,
    run_edit,
    run_home,
    run_new,
)
from loratui.tui.outcome import AppResult, LaunchFn

__all__ = [
    "AppResult",
    "LaunchFn",
    "make_dashboard_app",
    "make_edit_app",
    "make_home_app",
    "make_new_app",
    "prepare_new_project",
    "run_app",
    "run_dashboard",
    "run_edit",
    "run_home",
    "run_new",
]
