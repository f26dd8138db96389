"""The home screen (`loratui` with no command): the project here, jobs to open, new project. Each
choice opens a screen of the same app over home; leaving it comes back (tests/test_tui_navigation.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from loratui.tui import make_home_app
from loratui.tui.dashboard import DashboardScreen
from loratui.tui.home import HomeScreen
from loratui.tui.wizard import WizardScreen
from tests.conftest import REPO, small_config, workers_done, write_config
from tests.fake_launcher import FakeLauncher
from tests.test_jobs import FINISHED, STARTED, fake_record


@pytest.fixture(autouse=True)
def _private(tmp_path, monkeypatch):
    monkeypatch.setenv("LORATUI_CONFIG_DIR", str(tmp_path / "user-config"))
    monkeypatch.setenv("LORATUI_STATE_DIR", str(tmp_path / "state"))


def run_home(folder: Path, keys: list[str], launcher=None):
    """Start `loratui` in ``folder``, press ``keys``; return the screen on top and what home showed."""

    async def scenario():
        app = make_home_app(folder=folder, on_launch=launcher, dashboard_options={"read_gpus": False})
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause(0.2)
            await workers_done(app)
            await pilot.pause()
            home = app.screen
            assert isinstance(home, HomeScreen)
            shown = {
                "here": str(home.query_one("#here").render()),
                "jobs": [row.job_id + " " + row.status.state for row in home.rows],
                "recent": [str(path) for path in home.recent],
            }
            for key in keys:
                await pilot.press(key)
                await pilot.pause()
            for _ in range(100):  # a launch runs in a worker; a wizard builds its first step
                await pilot.pause(0.05)
                if app.screen is not home:
                    break
            await pilot.pause(0.2)
            return app.screen, shown

    return asyncio.run(scenario())


def test_jobs_are_listed_newest_first_and_enter_opens_the_dashboard(tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    config = write_config(project, small_config())
    fake_record(tmp_path, [STARTED, FINISHED], job_id="older-20261122-101500", config=str(config))
    fake_record(tmp_path, [STARTED], job_id="newer-20261122-111500", config=str(config))
    screen, shown = run_home(project, ["enter"])
    assert shown["jobs"] == ["newer-20261122-111500 failed", "older-20261122-101500 finished"]
    assert shown["recent"] == [str(config)]
    assert "Project here" in shown["here"]
    assert isinstance(screen, DashboardScreen) and screen.record.job_id == "newer-20261122-111500"


def test_the_project_here_opens_in_the_wizard(tmp_path):
    config = write_config(tmp_path, small_config())
    screen, _ = run_home(tmp_path, ["e"])
    assert isinstance(screen, WizardScreen) and screen.config_path == config and not screen.new_project


def test_train_here_launches_the_project_here_and_shows_its_dashboard(tmp_path):
    config = write_config(tmp_path, small_config())
    launcher = FakeLauncher(tmp_path / "jobs")
    screen, _ = run_home(tmp_path, ["t"], launcher)
    assert launcher.calls == [config]
    assert isinstance(screen, DashboardScreen) and screen.record.job_id == launcher.records[0].job_id


def test_without_a_config_here_n_starts_a_new_project(tmp_path):
    screen, shown = run_home(tmp_path, ["e", "t", "n", "ctrl+u", *"mylora", "enter"])  # e and t do nothing here
    assert "No loratui.toml" in shown["here"] and shown["jobs"] == []
    assert isinstance(screen, WizardScreen) and screen.new_project
    assert screen.config_path == tmp_path / "mylora" / "loratui.toml"  # relative to where loratui started
    assert {p.name for p in (tmp_path / "mylora").iterdir()} >= {"img", "model", "log", "reg"}


def test_the_job_list_is_the_same_query_as_loratui_jobs(tmp_path):
    """Home and `loratui jobs` list the same jobs in the same states (one query in the jobs layer)."""
    from loratui.jobs.listing import list_jobs

    fake_record(tmp_path, [STARTED, FINISHED], job_id="a-20261122-101500")
    fake_record(tmp_path, [STARTED], job_id="b-20261122-111500")
    oldest_first = [(row.job_id, row.status.state, row.steps) for row in list_jobs()]
    assert oldest_first == [("a-20261122-101500", "finished", "80/80"), ("b-20261122-111500", "failed", "0/80")]
    assert [row.job_id for row in list_jobs(newest_first=True)] == ["b-20261122-111500", "a-20261122-101500"]
    out = subprocess.run(
        [sys.executable, "-m", "loratui.cli", "jobs"],
        capture_output=True,
        text=True,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    lines = out.stdout.splitlines()
    assert lines[1].split()[:3] == ["a-20261122-101500", "finished", "80/80"]
    assert lines[2].split()[:3] == ["b-20261122-111500", "failed", "0/80"]


def test_loratui_without_a_terminal_prints_help_instead_of_starting_the_app():
    result = subprocess.run(
        [sys.executable, "-m", "loratui.cli"],
        capture_output=True,
        text=True,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert result.returncode == 0 and "usage: loratui" in result.stdout
