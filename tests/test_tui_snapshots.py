"""SVG snapshots of the wizard (pytest-textual-snapshot): every step at 80x24, the size of a
default SSH terminal, one at 120x40, and the kohya import report. After an intended change of
the look, review the diff and run `pytest tests/test_tui_snapshots.py --snapshot-update`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from loratui.tui import make_edit_app, make_new_app
from loratui.tui.wizard.steps import STEP_IDS

from .conftest import SAMPLE, workers_done

FIXTURES = Path(__file__).parent / "fixtures" / "kohya"


pytestmark = pytest.mark.usefixtures("private_tui_settings")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A new project folder with a fixed name (the header shows it) and the sample images."""
    folder = tmp_path / "mylora"
    shutil.copytree(SAMPLE / "img", folder / "img")
    return folder


async def _settle(pilot) -> None:
    await pilot.pause(0.4)
    await workers_done(pilot.app)
    await pilot.pause()
    await workers_done(pilot.app)
    await pilot.pause()


def _go_to(step: str):
    async def run_before(pilot) -> None:
        await _settle(pilot)
        for _ in range(STEP_IDS.index(step)):
            await pilot.press("pagedown")
        await _settle(pilot)

    return run_before


@pytest.mark.parametrize("step", STEP_IDS)
def test_wizard_step_at_80x24(snap_compare, project: Path, step: str):
    """A new project (no base model yet), on each step, in a default-sized terminal."""
    assert snap_compare(make_new_app(project), terminal_size=(80, 24), run_before=_go_to(step))


def test_dataset_step_at_120x40(snap_compare, project: Path):
    """A larger terminal shows the scan and the calculator with the fields."""
    assert snap_compare(make_new_app(project), terminal_size=(120, 40), run_before=_go_to("dataset"))


def test_kohya_import_report_at_80x24(snap_compare, project: Path, monkeypatch):
    monkeypatch.setattr("loratui.kohya_import.installed", lambda package: False)  # the same on every machine
    shutil.copy(FIXTURES / "SDXL-Standard-Adafactor.json", project / "sdxl.json")
    app = make_new_app(project, kohya_json=project / "sdxl.json")
    assert snap_compare(app, terminal_size=(80, 24), run_before=_settle)


def test_review_of_a_ready_config_at_80x24(snap_compare, project: Path):
    """The tiny test preset over the sample images: nothing left to fix."""
    from loratui.config import save_config
    from loratui.tui.entry import new_project_config, prepare_new_project
    from loratui.tui.presets import PRESETS_BY_KEY, apply_preset

    config_path = prepare_new_project(project)
    save_config(apply_preset(new_project_config(config_path), PRESETS_BY_KEY["tiny-test"]), config_path)
    assert snap_compare(make_edit_app(config_path), terminal_size=(80, 24), run_before=_go_to("review"))
