"""Starting a job from the app (the wizard's Launch, the home screen's Train here).

The same check as ``loratui train``: a config the check refuses starts nothing. Its first error
is raised as a UserError whose ``where`` names the field or file at fault, so that the wizard can
focus that field and show the error under it.
"""

from __future__ import annotations

from pathlib import Path

from loratui.errors import UserError
from loratui.jobs.record import JobRecord


def launch_checked(config_path: Path) -> JobRecord:
    """Check the saved config at ``config_path`` and start its job. Runs in a worker thread: the
    check scans the dataset, and starting the engine takes a moment."""
    from loratui.check import check_run
    from loratui.config import load_config
    from loratui.jobs.launch import refuse_a_second_run, start_job

    cfg = load_config(config_path)
    refuse_a_second_run(config_path, cfg)  # first, as `loratui train` does: it explains the files it writes
    result = check_run(cfg)
    if not result.ok:
        first = result.errors[0]
        raise UserError(first.message, first.where, first.fix)
    return start_job(config_path, cfg).record
