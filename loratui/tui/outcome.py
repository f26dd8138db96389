"""What the app hands back to its caller when it exits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Starts a training job for a saved config and returns its job id; raises UserError when it
# cannot (the wizard shows the message and stays open). The jobs layer passes one in.
LaunchFn = Callable[[Path], str]


@dataclass(frozen=True)
class WizardResult:
    """How the wizard ended.

    config_path: the config file last saved, or None when nothing was saved.
    launch_requested: the user launched from the Review step (with no errors left). Without an
        ``on_launch`` function nothing was started: the caller decides what to do with the file.
    job_id: what ``on_launch`` returned, when one was given and the launch went through.
    """

    config_path: Path | None = None
    launch_requested: bool = False
    job_id: str | None = None
