"""The validation loss on the dashboard: its value above the chart, its marks on the chart with a
legend, and the best checkpoint marked. Driven with Pilot from a recorded event stream, as the
other dashboard tests (tests/test_tui_dashboard.py, whose helpers these use)."""

from __future__ import annotations

import pytest

from loratui.tui.dashboard import chart
from loratui.tui.dashboard.loss_panel import LossChart, legend_for

from . import fake_nvml
from .fake_nvml import GIB, FakeGpu
from .test_tui_dashboard import _private, loaded, make_app, run, run_folder, screen_text, started  # noqa: F401

# validation losses by step: lowest at step 80 (the end of epoch 2), rising after it
VALIDATIONS = {0: 0.40, 40: 0.23, 80: 0.21, 120: 0.27}


def _marks(drawing: LossChart) -> int:
    """The validation marks in the plot (the last line is the step axis and the legend)."""
    return "".join(line.plain for line in drawing._lines[:-1]).count(chart.MARK)


def _log_with_validation():
    log = started(total_steps=200, steps_per_epoch=40)
    log.add("validation", step=0, epoch=0, loss=VALIDATIONS[0], images=2)
    for first in (1, 41, 81):
        log.steps(first, first + 39)  # ends with the epoch's epoch_end, eval and checkpoint
        last = first + 39
        log.add("validation", step=last, epoch=last // 40, loss=VALIDATIONS[last], images=2)
    return log


def test_the_validation_loss_shows_on_the_chart_beside_the_training_loss(tmp_path):
    log = _log_with_validation()
    record = run_folder(tmp_path, log)

    async def scenario():
        async with make_app(record, log).run_test(size=(120, 40)) as pilot:
            screen = await loaded(pilot)
            text = screen_text(pilot.app)
            assert "validation 0.2700  best 0.2100 (step 80)  first 0.4000" in text
            drawing = screen.query_one(LossChart)
            assert _marks(drawing) == len(VALIDATIONS)
            low, high = drawing.y_range
            assert low <= min(VALIDATIONS.values()) and high >= max(VALIDATIONS.values())
            assert "● validation" in text  # the legend names the marks
            checkpoints = screen.query_one("#dash-checkpoints").shown_text
            starred = [line for line in checkpoints.splitlines() if "★" in line]
            assert len(starred) == 2 and "x-000002.safetensors" in starred[0]
            assert starred[1] == "★ best: lowest val loss 0.2100 (step 80)"

    run(scenario())


def test_at_80x24_the_validation_value_and_marks_fit(tmp_path):
    log = _log_with_validation()
    record = run_folder(tmp_path, log)

    async def scenario():
        async with make_app(record, log).run_test(size=(80, 24)) as pilot:
            screen = await loaded(pilot)
            text = screen_text(pilot.app)
            assert "validation 0.2700  best 0.2100 (step 80)" in text
            assert _marks(screen.query_one(LossChart)) == 4

    run(scenario())


def test_a_run_without_validation_keeps_the_chart_as_it_was(tmp_path):
    log = started(total_steps=200, steps_per_epoch=40)
    log.steps(1, 80)
    record = run_folder(tmp_path, log)

    async def scenario():
        async with make_app(record, log).run_test(size=(120, 40)) as pilot:
            screen = await loaded(pilot)
            assert "validation" not in screen.query_one("#loss-values").shown_text
            assert "validation" not in screen_text(pilot.app)
            assert _marks(screen.query_one(LossChart)) == 0
            assert "★" not in screen.query_one("#dash-checkpoints").shown_text

    run(scenario())


@pytest.mark.parametrize("room, expected", [(40, "▆ raw  ─ smoothed  ● validation"), (22, "▆ raw ─ smooth ● val")])
def test_the_legend_takes_the_longest_wording_that_fits(room, expected):
    assert legend_for(room, validation=True).plain == expected


def test_dashboard_snapshot_with_validation(snap_compare, tmp_path, monkeypatch):
    fake_nvml.install(monkeypatch, [FakeGpu(name="NVIDIA GeForce RTX 4090", total=24 * GIB, used=int(17.2 * GIB))])
    log = _log_with_validation()
    record = run_folder(tmp_path, log)
    assert snap_compare(make_app(record, log, later_s=0.4), terminal_size=(80, 24), run_before=loaded)


def test_a_best_checkpoint_among_the_earlier_ones_is_named_under_the_list(tmp_path):
    log = started(total_steps=400, steps_per_epoch=40)
    for epoch in range(1, 9):  # 8 files: the panel lists the newest 6
        log.steps(epoch * 40 - 39, epoch * 40)
        log.add("validation", step=epoch * 40, epoch=epoch, loss=0.2 + abs(epoch - 1) / 100, images=3)
    record = run_folder(tmp_path, log)

    async def scenario():
        async with make_app(record, log).run_test(size=(120, 40)) as pilot:
            screen = await loaded(pilot)
            checkpoints = screen.query_one("#dash-checkpoints").shown_text
            assert "x-000001.safetensors  " not in checkpoints  # not listed: one of the earlier ones
            assert "★ best: x-000001.safetensors, lowest val loss 0.2000 (step 40)" in checkpoints

    run(scenario())


@pytest.mark.usefixtures("private_tui_settings")
def test_the_wizards_step_calculator_leaves_the_held_out_images_out_as_the_check_does(project):
    from textual.widgets import Static

    from loratui.check import check_run
    from loratui.config import load_config
    from loratui.tui import make_edit_app
    from loratui.tui.wizard.dataset_panel import DatasetPanel

    from .conftest import small_config, write_config
    from .test_tui_wizard import settle_scan, text_of, type_into, wizard

    config_path = write_config(project, small_config())
    app = make_edit_app(config_path)

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            await settle_scan(pilot)
            screen = wizard(app)
            await pilot.press("pagedown")
            panel = screen.query_one(DatasetPanel)
            assert "x 2 epochs = 40 steps in total" in text_of(panel.query_one("#calc-formula", Static))
            await type_into(pilot, "f-dataset-validation-split", "0.25")
            await settle_scan(pilot)
            formula = text_of(panel.query_one("#calc-formula", Static))
            assert "6 x 10 = 60 per epoch" in formula
            assert "2 images held out for the validation loss" in formula
            assert "x 2 epochs = 30 steps in total" in formula
            await pilot.press("ctrl+s")
            await pilot.pause()

    run(scenario())
    cfg = load_config(config_path)
    assert cfg.dataset.validation_split == 0.25
    assert check_run(cfg).schedule.total_steps == 30  # the check's count, and the engine's (test_validation_loss)
