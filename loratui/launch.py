"""Starting the engine as a child process whose life does not depend on the terminal.

Each run gets a folder under the project's log dir (``log/<name>-YYYYmmdd-HHMMSS/``) holding
``events.jsonl`` (the engine's stdout, appended) and ``engine.log`` (its stderr). The engine runs
in a session of its own, with stdin from /dev/null, so a closed terminal, a dropped SSH link or
a killed viewer never reaches it; anything that wants to watch the run reads ``events.jsonl``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from loratui.config import RunConfig

EVENTS_FILE = "events.jsonl"
LOG_FILE = "engine.log"


@dataclass
class Run:
    run_id: str
    folder: Path
    process: subprocess.Popen

    @property
    def events_path(self) -> Path:
        return self.folder / EVENTS_FILE

    @property
    def log_path(self) -> Path:
        return self.folder / LOG_FILE


def new_run_folder(cfg: RunConfig) -> Path:
    log_dir = cfg.resolve(cfg.output.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{cfg.output.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    for suffix in ["", *(f"-{n}" for n in range(2, 1000))]:
        folder = log_dir / f"{stem}{suffix}"
        try:
            folder.mkdir()  # atomic: two launches in the same second get different folders
            return folder
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot create a run folder in {log_dir}")


def start_run(config_path: Path, cfg: RunConfig, resume: str | None = None) -> Run:
    folder = new_run_folder(cfg)
    command = [sys.executable, "-m", "engine", str(config_path.resolve()), "--run-id", folder.name]
    if resume:
        command += ["--resume", resume]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # The engine package sits beside this one; make sure the child finds it from any directory.
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    with open(folder / EVENTS_FILE, "ab") as events, open(folder / LOG_FILE, "ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=events,
            stderr=log,
            start_new_session=True,  # its own session: no SIGHUP or Ctrl+C from our terminal
            cwd=str(cfg.base_dir),
            env=env,
        )
    return Run(run_id=folder.name, folder=folder, process=process)
