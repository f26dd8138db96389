"""The home screen (`loratui` with no command): the project here, jobs to attach to, new project."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loratui.tui.app import LoratuiApp
from loratui.tui.home import HomeChoice, HomeScreen
from tests.conftest import REPO, small_config, workers_done, write_config
from tests.test_jobs import FINISHED, STARTED, fake_record


@pytest.fixture(autouse=True)
def _private(tmp_path, monkeypatch):
    monkeypatch.setenv("LORATUI_CONFIG_DIR", str(tmp_path / "user-config"))
    monkeypatch.setenv("LORATUI_STATE_DIR", str(tmp_path / "state"))


def run_home(folder: Path, keys: list[str]):
    async def scenario():
        app = LoratuiApp()
        app._first_screen = lambda: HomeScreen(folder)  # the folder `loratui` was started in
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause(0.2)
            await workers_done(app)
            await pilot.pause()
            screen = app.screen
            for key in keys:
                await pilot.press(key)
                await pilot.pause()
            shown = {"here": str(screen.query_one("#here").render()),
                     "jobs": [row.job_id + " " + row.state for row in screen.rows],
                     "recent": [str(path) for path in screen.recent]}
        return app.return_value, shown

    return asyncio.run(scenario())


def test_jobs_are_listed_and_enter_attaches_to_the_newest(tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    config = write_config(project, small_config())
    fake_record(tmp_path, [STARTED, FINISHED], job_id="older-20261122-101500", config=str(config))
    fake_record(tmp_path, [STARTED], job_id="newer-20261122-111500", config=str(config))
    choice, shown = run_home(project, ["enter"])
    assert shown["jobs"] == ["newer-20261122-111500 failed", "older-20261122-101500 finished"]
    assert shown["recent"] == [str(config)]
    assert "Project here" in shown["here"]
    assert choice == HomeChoice("attach", job_id="newer-20261122-111500")


@pytest.mark.parametrize("key,action", [("e", "edit"), ("t", "train")])
def test_the_project_here_can_be_edited_or_trained(tmp_path, key, action):
    config = write_config(tmp_path, small_config())
    choice, _ = run_home(tmp_path, [key])
    assert choice == HomeChoice(action, path=config)


def test_without_a_config_here_n_starts_a_new_project(tmp_path):
    choice, shown = run_home(tmp_path, ["e", "t", "n", "ctrl+u", *"mylora", "enter"])  # e and t do nothing here
    assert "No loratui.toml" in shown["here"] and shown["jobs"] == []
    assert choice == HomeChoice("new", path=Path("mylora"))


def test_loratui_without_a_terminal_prints_help_instead_of_starting_the_app():
    result = subprocess.run([sys.executable, "-m", "loratui.cli"], capture_output=True, text=True, cwd=REPO,
                            stdin=subprocess.DEVNULL, timeout=60)
    assert result.returncode == 0 and "usage: loratui" in result.stdout
