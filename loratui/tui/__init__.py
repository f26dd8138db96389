"""loratui's terminal app (Textual): the home screen, the setup wizard and the job dashboard
(``loratui/tui/dashboard/``).

Entry points for the command line::

    from loratui.tui import run_home, run_new, run_edit
    choice = run_home()                                        # loratui
    result = run_new("my_lora", theme=None, on_launch=None)   # loratui new [DIR]
    result = run_edit("my_lora/loratui.toml")                  # loratui edit CONFIG
    result.config_path, result.launch_requested, result.job_id

Importing this package is cheap (Textual is imported when an app is made) and never imports torch.
"""

from loratui.tui.entry import make_edit_app, make_new_app, prepare_new_project, run_edit, run_home, run_new
from loratui.tui.outcome import LaunchFn, WizardResult

__all__ = [
    "LaunchFn", "WizardResult", "make_edit_app", "make_new_app", "prepare_new_project", "run_edit", "run_home",
    "run_new",
]
