"""Going between the app's screens, driven through Pilot at 80x24 as a user would, and through the
real command line in a pseudo-terminal.

The rules (README, "The app"): a screen opened from another one goes back to it (``q`` on a
dashboard, ``q`` outside a text field or Esc on the first step of a wizard, which asks first about
unsaved changes); the screen the app was opened on leaves the app (``q`` on home, on the
dashboard of ``loratui attach``, leaving the wizard of ``loratui edit``); Ctrl+Q quits from
anywhere. A refused launch goes to the wizard, at the field at fault, with its error under it.
"""

from __future__ import annotations

import asyncio
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from textual.widgets import Button, Checkbox, Input, Static

from loratui.config import load_config
from loratui.jobs import registry
from loratui.jobs.status import job_status
from loratui.tui import AppResult, make_dashboard_app, make_edit_app, make_home_app
from loratui.tui.dashboard import DashboardScreen
from loratui.tui.dialogs import ConfirmQuitScreen
from loratui.tui.home import HomeScreen
from loratui.tui.wizard import WizardScreen

from .conftest import REPO, SAMPLE, small_config, workers_done, write_config
from .fake_launcher import FakeLauncher
from .test_jobs import FINISHED, STARTED, fake_record

SIZE = (80, 24)
NO_GPUS = {"read_gpus": False, "poll_s": 0.05}

pytestmark = pytest.mark.usefixtures("private_tui_settings")


@pytest.fixture(autouse=True)
def _own_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("LORATUI_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder with the sample images and a config that checks clean."""
    folder = tmp_path / "proj"
    shutil.copytree(SAMPLE / "img", folder / "img")
    write_config(folder, small_config())
    return folder


def run(coro):
    return asyncio.run(coro)


async def until(pilot, predicate, what: str, tries: int = 200) -> None:
    """Wait for what the user would wait for (a dashboard's workers run on: no waiting for all)."""
    for _ in range(tries):
        if predicate():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}; on screen: {pilot.app.screen!r}")


async def on_screen(pilot, kind: type, what: str = "") -> None:
    await until(pilot, lambda: isinstance(pilot.app.screen, kind), what or kind.__name__)
    await pilot.pause(0.1)


async def home_ready(pilot) -> HomeScreen:
    await on_screen(pilot, HomeScreen)
    await workers_done(pilot.app)  # the job list
    await pilot.pause()
    return pilot.app.screen


async def wizard_ready(pilot) -> WizardScreen:
    await on_screen(pilot, WizardScreen)
    await pilot.pause(0.4)  # the dataset scan waits for typing to pause
    await workers_done(pilot.app)
    await pilot.pause()
    return pilot.app.screen


def footer(app) -> dict[str, str]:
    """The keys the footer shows now, with their labels."""
    return {
        binding.key: binding.description
        for (_node, binding, enabled, _tip) in app.screen.active_bindings.values()
        if binding.show and enabled
    }


def problem_under(screen: WizardScreen, field: str) -> str:
    row = screen.query_one(f"#row-f-{field.replace('.', '-').replace('_', '-')}")
    box = row.query_one(".field-problem", Static)
    return str(box.render()) if box.display else ""


# ------------------------------------------------------------------------------ going back


def test_q_on_a_dashboard_opened_from_home_goes_back_home_and_q_there_quits(project: Path, tmp_path: Path):
    record = fake_record(tmp_path, [STARTED, FINISHED], job_id="done-20261122-101500")
    app = make_home_app(folder=project, dashboard_options=NO_GPUS)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            home = await home_ready(pilot)
            await pilot.press("enter")  # the job list has the focus
            await on_screen(pilot, DashboardScreen)
            assert app.screen.record.job_id == record.job_id
            assert footer(app)["q"] == "Back" and footer(app)["ctrl+q"] == "Quit"
            await pilot.press("escape")  # Esc is back too
            await on_screen(pilot, HomeScreen)
            assert app.screen is home and app.is_running
            await pilot.press("enter")
            await on_screen(pilot, DashboardScreen)
            await pilot.press("q")
            await on_screen(pilot, HomeScreen)
            assert app.screen is home and app.is_running
            assert footer(app)["q"] == "Quit"
            await pilot.press("q")
            await pilot.pause()
            assert not app.is_running

    run(scenario())
    result = app.return_value
    assert isinstance(result, AppResult) and result.dashboard is None
    assert result.farewell() == [] and result.exit_code == 0


def test_q_on_the_dashboard_of_a_launch_goes_back_to_the_wizard_and_the_job_runs_on(project: Path, tmp_path: Path):
    config_path = project / "loratui.toml"
    launcher = FakeLauncher(tmp_path / "jobs", running=True)
    app = make_edit_app(config_path, on_launch=launcher, dashboard_options=NO_GPUS)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            wizard = await wizard_ready(pilot)
            await pilot.press("ctrl+l")
            await on_screen(pilot, DashboardScreen, "the launched job's dashboard")
            await pilot.press("q")
            await on_screen(pilot, WizardScreen)
            assert app.screen is wizard and wizard.step.id == "review"
            assert job_status(launcher.records[0]).state == "running"  # leaving its dashboard left it alone
            await pilot.press("ctrl+q")
            await pilot.pause()
            assert not app.is_running

    run(scenario())
    job_id = launcher.records[0].job_id
    result = app.return_value
    assert launcher.calls == [config_path] and result.launched == (job_id,)
    # Left from the wizard: how to get back to the job, and no "Saved ... Train it with" (it was launched).
    assert result.farewell() == [(f"Started from the app: job {job_id}. Its dashboard: loratui attach {job_id}", True)]


def test_leaving_a_wizard_opened_from_home_goes_back_home_asking_about_unsaved_changes(project: Path):
    config_path = project / "loratui.toml"
    before = config_path.read_text()
    app = make_home_app(folder=project)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            home = await home_ready(pilot)
            await pilot.press("e")
            wizard = await wizard_ready(pilot)
            # Esc on the first step, nothing changed: straight back home.
            await pilot.press("escape")
            await on_screen(pilot, HomeScreen)
            assert app.screen is home
            await pilot.press("e")
            wizard = await wizard_ready(pilot)
            # q in a text field is a letter; elsewhere it leaves.
            model_path = wizard.query_one("#f-model-path", Input)
            model_path.focus()
            await pilot.press("end", "q")
            await pilot.pause()
            assert app.screen is wizard and model_path.value.endswith("q")
            await pilot.press("backspace")
            await pilot.press("pagedown", "pagedown")  # Training
            checkbox = wizard.query_one("#f-training-gradient-checkpointing", Checkbox)
            checkbox.focus()
            await pilot.press("space")
            await pilot.pause()
            assert wizard.dirty
            await pilot.press("q")
            await on_screen(pilot, ConfirmQuitScreen, "the unsaved-changes question")
            labels = [str(button.label) for button in app.screen.query("Button")]
            assert labels == ["Save and close (s)", "Close without saving (d)", "Cancel (Esc)"]
            await pilot.press("escape")  # cancel: still editing
            await on_screen(pilot, WizardScreen)
            assert wizard.cfg.training.gradient_checkpointing is True
            await pilot.press("q")
            await on_screen(pilot, ConfirmQuitScreen)
            await pilot.press("d")
            await on_screen(pilot, HomeScreen)
            assert app.screen is home and app.is_running

    run(scenario())
    assert config_path.read_text() == before


@pytest.mark.parametrize("changed", [False, True])
def test_a_wizard_opened_directly_goes_home_and_home_quits_saying_how_to_train(project: Path, changed: bool):
    """`loratui edit CONFIG`: the wizard opens over home, so leaving it (after asking to save,
    when there is something to save) goes home, as from anywhere; only home quits on q."""
    config_path = project / "loratui.toml"
    app = make_edit_app(config_path)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            wizard = await wizard_ready(pilot)
            if changed:
                await pilot.press("pagedown", "pagedown")  # Training
                wizard.query_one("#f-training-gradient-checkpointing", Checkbox).focus()
                await pilot.press("space", "q")
                await on_screen(pilot, ConfirmQuitScreen)
                assert str(app.screen.query_one("#save", Button).label) == "Save and close (s)"
                await pilot.press("s")
            else:
                await pilot.press("escape")  # back from the first step
            await on_screen(pilot, HomeScreen)
            assert app.is_running and app.screen.folder == project.absolute()
            await pilot.press("q")
            await pilot.pause()
            assert not app.is_running

    run(scenario())
    assert load_config(config_path).training.gradient_checkpointing is changed
    assert app.return_value.farewell() == [(f"Saved {config_path}. Train it with: loratui train {config_path}", False)]


def test_q_on_the_dashboard_of_loratui_attach_quits_with_the_reattach_line(tmp_path: Path):
    me = os.getpid()
    from loratui.jobs.process import identity_of

    record = fake_record(
        tmp_path, [STARTED], job_id="live-20261122-101500", pid=me, start_time=identity_of(me).start_time
    )
    app = make_dashboard_app(record, dashboard_options=NO_GPUS)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await on_screen(pilot, DashboardScreen)
            await until(pilot, lambda: app.screen.view.loaded, "the history")
            assert footer(app)["q"] == "Quit" and "ctrl+q" not in footer(app)
            await pilot.press("q")
            await pilot.pause()
            assert not app.is_running

    run(scenario())
    result = app.return_value
    assert result.dashboard.state == "running" and result.exit_code == 0
    detached = (
        f"Detached; job {record.job_id} runs on. Re-attach: loratui attach {record.job_id}   "
        f"stop it: loratui stop {record.job_id}"
    )
    assert result.farewell() == [(detached, True)]


@pytest.mark.parametrize("where", ["home", "wizard", "dashboard"])
def test_ctrl_q_quits_from_any_screen(project: Path, tmp_path: Path, where: str):
    record = fake_record(tmp_path, [STARTED, FINISHED], job_id="done-20261122-101500")
    app = make_home_app(folder=project, dashboard_options=NO_GPUS)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await home_ready(pilot)
            if where == "wizard":
                await pilot.press("e")
                await wizard_ready(pilot)
            elif where == "dashboard":
                await pilot.press("enter")
                await on_screen(pilot, DashboardScreen)
                await until(pilot, lambda: app.screen.view.loaded, "the history")
            await pilot.press("ctrl+q")
            await pilot.pause()
            assert not app.is_running

    run(scenario())
    result = app.return_value
    if where == "dashboard":  # left from the finished job's dashboard: its outcome is printed
        assert result.dashboard.job_id == record.job_id and result.exit_code == 0
        assert ("LoRA: /p/ohwx.safetensors", False) in result.farewell()
    else:
        assert result.dashboard is None and result.farewell() == []


# --------------------------------------------------------------------------- failed launches


def test_train_here_with_a_missing_model_opens_the_wizard_at_model_path(project: Path):
    """Home's t with the app's own launcher: the check refuses, nothing is started."""
    config_path = write_config(project, small_config(model={"path": "models/gone.safetensors"}))
    app = make_home_app(folder=project)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await home_ready(pilot)
            await pilot.press("t")
            wizard = await wizard_ready(pilot)
            await pilot.pause(0.2)
            assert wizard.config_path == config_path
            assert wizard.step.id == "model" and app.focused.id == "f-model-path"
            assert problem_under(wizard, "model.path").startswith("✗ checkpoint file not found")
            # Leaving the wizard goes back home, where nothing was started.
            await pilot.press("escape")
            home = await home_ready(pilot)
            assert home.rows == []

    run(scenario())
    assert registry.all_records() == []


@pytest.mark.parametrize("empty", ["image folder", "concept folder"])
def test_train_here_with_an_empty_dataset_folder_shows_why_under_the_image_folder(project: Path, empty: str):
    concepts = list((project / "img").iterdir())
    for concept in concepts:
        if empty == "image folder":
            shutil.rmtree(concept)
        else:
            for image in concept.iterdir():
                image.unlink()
    expected = (
        "✗ image_dir has no concept folders"
        if empty == "image folder"
        else f"✗ img/{concepts[0].name}: the folder has no images"
    )
    app = make_home_app(folder=project)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await home_ready(pilot)
            await pilot.press("t")
            wizard = await wizard_ready(pilot)
            await until(pilot, lambda: wizard.step.id == "dataset", "the Dataset step")
            await pilot.pause(0.2)
            assert app.focused.id == "f-dataset-image-dir"
            assert problem_under(wizard, "dataset.image_dir").startswith(expected)
            assert any(n.title == "Launch refused" for n in app._notifications)

    run(scenario())
    assert registry.all_records() == []


# ----------------------------------------------------------------------- the real command line


class PtyApp:
    """``loratui ARGS`` in an 80x24 pseudo-terminal, read as a terminal would."""

    def __init__(self, args: list[str], env: dict) -> None:
        self.pid, self.master = pty.fork()
        if self.pid == 0:  # the child: the pty is its controlling terminal
            import fcntl
            import struct
            import termios

            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
            os.execvpe(sys.executable, [sys.executable, "-m", "loratui.cli", *args], env)
        self.output = b""

    def read_until(self, text: str, timeout: float = 20) -> None:
        """Read until ``text`` is on screen (the terminal's escape codes left out)."""
        deadline = time.monotonic() + timeout
        while text not in self.text() and time.monotonic() < deadline:
            self._read(0.2)
        assert text in self.text(), self.text()[-2000:]

    def _read(self, wait: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], wait)
        if ready:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return False
            self.output += chunk
            return bool(chunk)
        return True

    def send(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def exit_code(self, timeout: float = 15) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._read(0.05)
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                while self._read(0.1):
                    pass
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        raise AssertionError(f"loratui did not exit; it showed: {self.output[-2000:]!r}")

    def text(self) -> str:
        return re.sub(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][A-Z0-9]|\x1b[=>]", "", self.output.decode("utf-8", "replace"))


def _live_job(tmp_path: Path) -> tuple[subprocess.Popen, str]:
    """A registered job whose engine is a sleeping stand-in: it counts as running."""
    from loratui.jobs.process import identity_of

    engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    ident = identity_of(engine.pid)
    record = fake_record(
        tmp_path, [STARTED], job_id="live-20261122-101500", pid=engine.pid, start_time=ident.start_time
    )
    return engine, record.job_id


def _env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("COLORTERM", "TEXTUAL_COLOR_SYSTEM")}
    env.update(TERM="xterm-256color", PYTHONPATH=str(REPO), LORATUI_STATE_DIR=str(tmp_path / "state"))
    return env


def test_loratui_attach_then_q_prints_the_reattach_line_and_the_job_runs_on(tmp_path: Path):
    engine, job_id = _live_job(tmp_path)
    try:
        app = PtyApp(["attach", job_id], _env(tmp_path))
        app.read_until("Step")
        app.send(b"q")
        assert app.exit_code() == 0
        assert f"Detached; job {job_id} runs on. Re-attach: loratui attach {job_id}" in app.text()
        assert engine.poll() is None
    finally:
        engine.kill()
        engine.wait()


def test_loratui_home_to_a_dashboard_and_back_then_q_quits_quietly(tmp_path: Path):
    engine, job_id = _live_job(tmp_path)
    try:
        app = PtyApp([], _env(tmp_path))
        app.read_until(job_id)  # the job list
        app.send(b"\r")  # Enter: its dashboard
        app.read_until("Back")
        app.send(b"q")
        app.read_until("New project")
        app.send(b"q")
        assert app.exit_code() == 0
        assert "Detached" not in app.text()  # nothing to say: the user went back, then quit from home
        assert engine.poll() is None
    finally:
        engine.kill()
        engine.wait()


def test_closing_the_terminal_closes_the_home_screen_too(tmp_path: Path):
    """The whole app watches its terminal: a dropped SSH link ends it quietly, on any screen."""
    app = PtyApp([], _env(tmp_path))
    app.read_until("New project")
    os.close(app.master)  # the kernel hangs the terminal up (SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done, status = os.waitpid(app.pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(app.pid, signal.SIGKILL)
    os.waitpid(app.pid, 0)
    raise AssertionError("the app did not close when its terminal went away")
