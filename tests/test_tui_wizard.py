"""The setup wizard, driven by the keyboard through Textual's Pilot, as a user at 80x24 would."""

from __future__ import annotations

import asyncio
import io
import shutil
from pathlib import Path

import pytest
from rich.console import Console
from textual.content import Content
from textual.widgets import Checkbox, Input, OptionList, Select, Static

from loratui.check import check_run
from loratui.config import load_config, save_config
from loratui.errors import UserError
from loratui.tui import make_edit_app, make_new_app
from loratui.tui.dashboard import DashboardScreen
from loratui.tui.dialogs import ConfirmQuitScreen
from loratui.tui.wizard.dataset_panel import DatasetPanel
from loratui.tui.wizard.screen import WizardScreen

from .conftest import SAMPLE, small_config, workers_done, write_config
from .fake_launcher import FakeLauncher

FIXTURES = Path(__file__).parent / "fixtures" / "kohya"
SIZE = (80, 24)


pytestmark = pytest.mark.usefixtures("private_tui_settings")


def run(coro):
    return asyncio.run(coro)


def text_of(widget: Static) -> str:
    """The text a Static shows, as plain text (Rich tables rendered at the widget's width)."""
    content = widget.content
    if isinstance(content, str):
        return content
    if isinstance(content, Content):
        return content.plain
    console = Console(width=max(widget.size.width, 40), color_system=None, record=True, file=io.StringIO())
    console.print(content)
    return console.export_text()


async def settle(pilot, delay: float = 0.05) -> None:
    """Let timers fire, workers (dataset scan, check) finish and their messages be handled."""
    await pilot.pause(delay)
    await workers_done(pilot.app)
    await pilot.pause()
    await workers_done(pilot.app)
    await pilot.pause()


async def settle_scan(pilot) -> None:
    await settle(pilot, 0.4)  # the scan waits for typing to pause (0.3 s)


# A dashboard's workers follow its job until the screen closes: tests wait for what they expect
# on screen instead of for every worker, and leave the GPUs alone.
NO_GPUS = {"read_gpus": False}


def wizard(app) -> WizardScreen:
    screen = app.screen
    assert isinstance(screen, WizardScreen), type(screen)
    return screen


def problem_under(app, field: str) -> str:
    row = wizard(app).query_one(f"#row-f-{field.replace('.', '-').replace('_', '-')}")
    box = row.query_one(".field-problem", Static)
    return text_of(box) if box.display else ""


async def type_into(pilot, input_id: str, text: str) -> None:
    """Focus an input the way a user would (it is on the current step), clear it and type."""
    widget = pilot.app.screen.query_one(f"#{input_id}", Input)
    widget.focus()
    await pilot.pause()
    await pilot.press("end", "ctrl+u")
    if text:
        await pilot.press(*text)
    await pilot.pause()


@pytest.fixture
def new_project(project: Path) -> Path:
    """A project folder with the sample images and no config yet (what `loratui new` is run on)."""
    return project


# ---------------------------------------------------------------------------------------------


def test_whole_flow_from_a_new_folder_to_a_config_check_run_accepts(new_project: Path, tmp_path: Path):
    launcher = FakeLauncher(tmp_path / "jobs")
    app = make_new_app(new_project, on_launch=launcher, dashboard_options=NO_GPUS)
    assert {p.name for p in new_project.iterdir()} >= {"img", "model", "log", "reg"}

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await settle_scan(pilot)
            screen = wizard(app)
            assert screen.step.id == "model"
            # The model step starts on the preset picker; Tab goes to the base model field.
            assert app.focused.id == "preset"
            await pilot.press("tab")
            assert app.focused.id == "f-model-path"
            await pilot.press(*"loratui:tiny-sd")
            await pilot.pause()
            assert problem_under(app, "model.path") == ""
            # Step through every step with PageDown.
            for expected in ("dataset", "training", "network", "optimizer", "output", "sample", "review"):
                await pilot.press("pagedown")
                await pilot.pause()
                assert screen.step.id == expected
            await settle(pilot)
            status = text_of(screen.query_one("#review-status", Static))
            assert status.startswith("✓ Ready to launch")
            summary = text_of(screen.query_one("#review-summary", Static))
            assert "8 in img" in summary and "800 steps = 10 epochs x 80 steps" in summary
            await pilot.press("ctrl+l")
            # the job's dashboard, over the wizard
            await until(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard")
            assert app.screen.record.job_id == launcher.records[0].job_id

    run(scenario())
    config_path = new_project / "loratui.toml"
    assert launcher.calls == [config_path]  # saved first, then launched
    cfg = load_config(config_path)
    assert cfg.model.path == "loratui:tiny-sd"
    assert cfg.output.name == new_project.name
    checked = check_run(cfg)
    assert checked.ok, [str(p) for p in checked.errors]
    assert checked.schedule is not None and checked.schedule.total_steps == 800


def test_preset_by_keyboard_sets_the_guides_numbers(new_project: Path):
    app = make_new_app(new_project)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await settle_scan(pilot)
            screen = wizard(app)
            select = screen.query_one("#preset", Select)
            assert app.focused is select
            await pilot.press("enter")  # opens the list; the first entry is "no preset"
            await pilot.press("down", "enter")  # -> "SD1.5 face / person"
            await settle(pilot)
            assert select.value == "sd15-face"
            assert screen.cfg.network.rank == 128 and screen.cfg.network.alpha == 64
            await pilot.press("pagedown", "pagedown", "pagedown")
            await pilot.pause()
            assert screen.step.id == "network"
            assert screen.query_one("#f-network-rank", Input).value == "128"
            assert screen.query_one("#f-network-alpha", Input).value == "64"
            assert screen.query_one("#f-training-batch-size", Input).value == "1"
            await pilot.press("pagedown")
            await pilot.pause()
            assert screen.query_one("#f-optimizer-scheduler", Select).value == "cosine_with_restarts"
            assert screen.query_one("#f-optimizer-scheduler-cycles", Input).value == "3"
            assert "(unsaved)" in app.screen.sub_title

    run(scenario())


def test_escape_and_pageup_go_back_and_ctrl_n_goes_forward(new_project: Path):
    app = make_new_app(new_project)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await settle_scan(pilot)
            screen = wizard(app)
            await pilot.press("ctrl+n", "ctrl+n", "ctrl+n")
            await pilot.pause()
            assert screen.step.id == "network"
            assert app.focused.id == "f-network-type"  # a step opens on its first field
            await pilot.press("escape")
            await pilot.pause()
            assert screen.step.id == "training"
            await pilot.press("pageup")
            await pilot.pause()
            assert screen.step.id == "dataset"
            await pilot.press("escape")
            await pilot.pause()
            assert screen.step.id == "model"
            # Back from the first step closes the wizard; nothing is saved yet, so it asks first.
            await pilot.press("escape")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmQuitScreen)
            await pilot.press("escape")  # Cancel: the wizard stays as it was
            await pilot.pause()
            assert app.screen is screen and screen.step.id == "model"
            # An open drop-down keeps PageDown for itself (it pages through the list).
            await pilot.press("enter")
            await pilot.press("pagedown")
            await pilot.pause()
            assert screen.step.id == "model"
            await pilot.press("escape")  # closes the list, and stays on the step
            await pilot.pause()
            assert screen.step.id == "model" and app.focused.id == "preset"
            # Shift+Tab walks back through the fields.
            await pilot.press("tab", "tab")
            assert app.focused.id == "f-model-family"
            await pilot.press("shift+tab")
            assert app.focused.id == "f-model-path"

    run(scenario())


def test_ctrl_s_saves_atomically_at_any_step_and_keeps_the_wizard_open(new_project: Path):
    app = make_new_app(new_project)
    config_path = new_project / "loratui.toml"

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await settle_scan(pilot)
            screen = wizard(app)
            await pilot.press("pagedown", "pagedown", "pagedown")  # Network
            await type_into(pilot, "f-network-rank", "64")
            await type_into(pilot, "f-network-alpha", "32")
            assert "(unsaved)" in screen.sub_title
            assert not config_path.exists()
            await pilot.press("ctrl+s")
            await pilot.pause()
            assert config_path.exists()
            assert screen.sub_title == f"{new_project.name}/loratui.toml"
            assert screen.step.id == "network"
            # No temp file is left beside it.
            assert [p.name for p in new_project.iterdir() if p.name.startswith(".")] == []
            await pilot.press("ctrl+q")
            await pilot.pause()
        return app.return_value

    result = run(scenario())
    cfg = load_config(config_path)
    assert (cfg.network.rank, cfg.network.alpha) == (64, 32.0)
    assert result.config_path == config_path and not result.launched
    assert result.farewell() == [(f"Saved {config_path}. Train it with: loratui train {config_path}", False)]


def test_field_error_is_shown_at_the_field_with_the_fix(new_project: Path):
    app = make_new_app(new_project)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await settle_scan(pilot)
            screen = wizard(app)
            await pilot.press("pagedown", "pagedown", "pagedown")
            await type_into(pilot, "f-network-rank", "0")
            shown = problem_under(app, "network.rank")
            assert "rank 0 is below 1 (allowed: 1..1024)" in shown and "fix: use 4 to 128" in shown
            # The step bar marks the step with the error.
            assert "4 Network ✗" in text_of(screen.query_one("#step-bar", Static))
            # Alpha above rank: the guides' advice, as a warning at the alpha field.
            await type_into(pilot, "f-network-rank", "16")
            await type_into(pilot, "f-network-alpha", "32")
            assert problem_under(app, "network.rank") == ""
            alpha = problem_under(app, "network.alpha")
            assert alpha.startswith("!") and "half the rank" in alpha and "set alpha = 8" in alpha
            # Text that is no number at all (an emptied field) is reported at the field too...
            await type_into(pilot, "f-network-rank", "")
            assert "Rank (dim) is empty" in problem_under(app, "network.rank")
            # ...and saving is refused, naming the field.
            await pilot.press("ctrl+s")
            await pilot.pause()
            assert not (new_project / "loratui.toml").exists()
            assert app.focused.id == "f-network-rank"

    run(scenario())


def test_an_adaptive_optimizer_gets_the_guides_settings_with_one_key(new_project: Path):
    app = make_new_app(new_project)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await settle_scan(pilot)
            screen = wizard(app)
            for _ in range(4):
                await pilot.press("pagedown")
            await pilot.pause()
            assert app.focused.id == "f-optimizer-name"
            assert not screen.query_one("#optimizer-apply").display  # AdamW8bit at 1e-4: nothing to advise
            await pilot.press("enter", "down", "down", "enter")  # AdamW8bit -> DAdaptAdam
            await pilot.pause()
            assert screen.cfg.optimizer.name == "DAdaptAdam"
            # DAdaptAdam at 1e-4: validation says why, at the LR field.
            assert "expects unet_lr = 1.0" in problem_under(app, "optimizer.unet_lr")
            advice = text_of(screen.query_one("#optimizer-advice", Static))
            assert "decouple=True weight_decay=0.01 betas=0.9,0.999" in advice
            await pilot.press("tab", "enter")  # the "Use these settings" button
            await pilot.pause()
            opt = screen.cfg.optimizer
            assert opt.args == ["decouple=True", "weight_decay=0.01", "betas=0.9,0.999"]
            assert opt.unet_lr == opt.text_encoder_lr == 1.0
            assert screen.query_one("#f-optimizer-unet-lr", Input).value == "1"
            assert problem_under(app, "optimizer.unet_lr") == ""
            assert not screen.query_one("#optimizer-apply").display

    run(scenario())


def test_launch_is_refused_while_errors_remain(project: Path, tmp_path: Path):
    """The refusal goes to the field at fault with its error under it; Review lists every problem."""
    config_path = write_config(project, small_config(model={"path": "models/gone.safetensors"}))
    launcher = FakeLauncher(tmp_path / "jobs")
    app = make_edit_app(config_path, on_launch=launcher, dashboard_options=NO_GPUS)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await settle_scan(pilot)
            screen = wizard(app)
            await pilot.press("pagedown", "pagedown")  # launched from the Training step
            await pilot.press("ctrl+l")
            await settle(pilot)
            await settle(pilot)
            assert app.is_running and app.screen is screen
            assert screen.step.id == "model" and app.focused.id == "f-model-path"
            assert problem_under(app, "model.path").startswith("✗ checkpoint file not found")
            assert any("Launch refused" == n.title for n in app._notifications)
            assert not launcher.calls
            review = screen.query_one("#review-problems", OptionList)
            assert str(review.get_option_at_index(0).prompt).startswith("✗ model.path: checkpoint file not found")
            # Fixing it lets the launch through: the job's dashboard opens over the wizard.
            await pilot.press("end", "ctrl+u", *"loratui:tiny-sd")
            await pilot.press("ctrl+l")
            await until(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard")

    run(scenario())
    assert launcher.calls == [config_path]


def test_a_failed_launch_shows_the_error_at_the_field_it_names(project: Path, tmp_path: Path):
    """The check passed, then starting the job failed on a field (a log folder it cannot write)."""
    config_path = write_config(project, small_config())
    error = UserError(
        "cannot create a run folder in /p/log: Permission denied", "output.log_dir", "choose a folder you can write to"
    )
    launcher = FakeLauncher(tmp_path / "jobs", error=error)
    app = make_edit_app(config_path, on_launch=launcher)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await settle_scan(pilot)
            screen = wizard(app)
            await pilot.press("ctrl+l")
            await settle(pilot)
            await settle(pilot)
            assert launcher.calls == [config_path]
            assert app.screen is screen and screen.step.id == "output"
            assert app.focused.id == "f-output-log-dir"
            shown = problem_under(app, "output.log_dir")
            assert "cannot create a run folder in /p/log" in shown and "choose a folder you can write to" in shown
            # Editing the field is fixing it: the launch's complaint goes.
            await pilot.press("end", "backspace")
            await pilot.pause()
            assert "cannot create a run folder" not in problem_under(app, "output.log_dir")

    run(scenario())


def test_launch_failure_from_the_jobs_layer_is_shown_and_the_wizard_stays(project: Path):
    config_path = write_config(project, small_config())

    def refuse(path: Path):
        raise UserError("no GPU server is reachable", "ssh", "check the connection with `ssh gpu-box`")

    app = make_edit_app(config_path, on_launch=refuse)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await settle_scan(pilot)
            await pilot.press("ctrl+l")
            await settle(pilot)
            await settle(pilot)
            assert app.is_running and isinstance(app.screen, WizardScreen)
            messages = [n.message for n in app._notifications]
            assert any("no GPU server is reachable" in m and "ssh gpu-box" in m for m in messages)

    run(scenario())


def test_dataset_step_shows_the_scan_and_the_step_calculator(project: Path):
    shutil.copytree(SAMPLE / "reg", project / "reg")
    (project / "img" / "10_ohwx shape" / "shape_02.txt").unlink()
    config_path = write_config(project, small_config())
    app = make_edit_app(config_path)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await settle_scan(pilot)
            screen = wizard(app)
            await pilot.press("pagedown")
            panel = screen.query_one(DatasetPanel)
            summary = text_of(panel.query_one("#scan-summary", Static))
            assert "10_ohwx shape" in summary and "7/8" in summary  # one caption missing
            problems = text_of(panel.query_one("#scan-problems", Static))
            assert "1 of 8 images have no .txt caption" in problems
            formula = text_of(panel.query_one("#calc-formula", Static))
            assert "8 x 10 = 80 per epoch" in formula
            assert "/ batch 4 = 20 steps per epoch" in formula
            assert "x 2 epochs = 40 steps in total" in formula
            # Changing the epochs in the calculator changes the Training step's field and the total.
            await type_into(pilot, "calc-training-epochs", "5")
            assert "x 5 epochs = 100 steps in total" in text_of(panel.query_one("#calc-formula", Static))
            assert screen.cfg.training.epochs == 5
            # The repeats that reach a target (the guide's example: 4800 steps, 32 images, 10 epochs -> 15).
            await type_into(pilot, "calc-target", "400")
            repeats = text_of(panel.query_one("#calc-repeats", Static))
            assert repeats.startswith("40 repeats per image reach about 400 steps")
            assert "10_ohwx shape -> 40_ohwx shape" in repeats
            assert "between 10 and 30" in repeats
            # A reg folder doubles the items per epoch.
            await type_into(pilot, "f-dataset-reg-dir", "reg")
            await settle_scan(pilot)
            formula = text_of(panel.query_one("#calc-formula", Static))
            assert "+ 80 regularisation = 160" in formula
            # The Training step shows the epochs typed into the calculator, and edits go back.
            await pilot.press("pagedown")
            await pilot.pause()
            assert screen.query_one("#f-training-epochs", Input).value == "5"
            await type_into(pilot, "f-training-epochs", "4")
            assert screen.query_one("#calc-training-epochs", Input).value == "4"

    run(scenario())


def test_image_folder_field_completes_paths_from_the_project_folder(project: Path):
    config_path = write_config(project, small_config(dataset={"image_dir": ""}))
    app = make_edit_app(config_path)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await settle_scan(pilot)
            await pilot.press("pagedown")
            field = app.screen.query_one("#f-dataset-image-dir", Input)
            assert app.focused is field
            assert "no image folder is set" in problem_under(app, "dataset.image_dir")
            await pilot.press("i")
            await settle(pilot)
            await pilot.press("right")  # accept the suggestion
            await pilot.pause()
            assert field.value == "img/"
            await settle_scan(pilot)
            assert problem_under(app, "dataset.image_dir") == ""
            assert "10_ohwx shape" in text_of(app.screen.query_one("#scan-summary", Static))

    run(scenario())


def test_import_a_kohya_config_from_the_wizard_and_read_the_report(project: Path):
    shutil.copy(FIXTURES / "sd15 - EDG_LoraOptiSettings.json", project / "edg.json")
    config_path = write_config(project, small_config())
    app = make_edit_app(config_path)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await settle_scan(pilot)
            screen = wizard(app)
            await pilot.press("ctrl+o")
            await pilot.pause()
            path_input = app.screen.query_one("#kohya-path", Input)
            assert app.focused is path_input
            await pilot.press(*"missing.json", "enter")
            await pilot.pause()
            assert "kohya_ss config not found" in text_of(app.screen.query_one("#kohya-error", Static))
            await pilot.press("end", "ctrl+u", *"edg.json", "enter")
            await settle(pilot)
            report = text_of(app.screen.query_one("#report-text", Static))
            assert report.startswith("edg.json: 39 settings imported (2 changed on the way), 1 not supported")
            assert "mem_eff_attn = true" in report
            assert 'max_resolution = "512,650" -> dataset.resolution = 576' in report
            await pilot.press("escape")
            await pilot.pause()
            assert app.screen is screen
            assert screen.cfg.network.rank == 64 and screen.cfg.training.batch_size == 3
            # The import does not touch what the file does not set (the model path here).
            assert screen.cfg.model.path == "loratui:tiny-sd"
            await pilot.press("pagedown", "pagedown", "pagedown")
            assert screen.query_one("#f-network-rank", Input).value == "64"
            assert "(unsaved)" in screen.sub_title

    run(scenario())


def test_a_second_import_starts_from_the_defaults_not_from_the_first(project: Path):
    """SDXL's file sets a noise offset and caches text outputs; the SD 1.5 file after it uses multires
    noise (no plain offset) and caches nothing: nothing of the first import survives the second."""
    config_path = write_config(project, small_config())
    app = make_edit_app(config_path, kohya_json=FIXTURES / "SDXL-Standard-Adafactor.json")

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await settle_scan(pilot)
            await pilot.press("enter")  # close the first report
            await pilot.pause()
            screen = wizard(app)
            assert screen.cfg.training.noise_offset == 0.0357 and screen.cfg.network.train_unet_only is True
            shutil.copy(FIXTURES / "Standard-AdamW.json", project / "sd15.json")
            await pilot.press("ctrl+o")
            await pilot.pause()
            await pilot.press(*"sd15.json", "enter")
            await settle(pilot)
            report = text_of(app.screen.query_one("#report-text", Static))
            assert "noise_offset = 0.05 (only used with noise_offset_type Original, and it is Multires)" in report
            cfg = screen.cfg
            assert cfg.model.family == "sd1" and cfg.training.noise_offset == 0.0
            assert cfg.training.multires_noise_iterations == 8
            assert cfg.network.train_unet_only is False and cfg.dataset.cache_text_encoder_outputs == "off"
            assert cfg.dataset.bucket_reso_steps == 64 and cfg.dataset.resolution == 512
            # What is the project's own stays: the model the file does not name a local copy of is
            # the file's; the image folder the file names is not here, so the project's is kept.
            assert cfg.dataset.image_dir == small_config()["dataset"]["image_dir"]

    run(scenario())


def test_import_of_a_flux_config_shows_the_flux_fields(project: Path):
    config_path = write_config(project, small_config())
    app = make_edit_app(config_path, kohya_json=FIXTURES / "flux1D - adamw8bit fp8.json")

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await settle_scan(pilot)
            report = text_of(app.screen.query_one("#report-text", Static))
            assert "NOT SUPPORTED YET" not in report
            await pilot.press("enter")
            await pilot.pause()
            assert app.screen.query_one("#f-model-family", Select).value == "flux"
            assert problem_under(app, "model.family") == ""
            # The GUI's placeholders land in the FLUX.1 file fields, and the model path says what is wrong.
            assert shown(app, "model.ae_path") and not shown(app, "model.clip_skip")
            assert app.screen.query_one("#f-model-ae-path", Input).value == "put the full path to ae.sft here"
            assert "not found" in problem_under(app, "model.path")

    run(scenario())


def shown(app, field: str) -> bool:
    """Whether a field's row is on screen (the fields of another model family are hidden)."""
    return wizard(app).query_one(f"#row-f-{field.replace('.', '-').replace('_', '-')}").display


def test_choosing_sdxl_shows_the_second_text_encoder_and_hides_clip_skip(new_project: Path):
    app = make_new_app(new_project)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await settle_scan(pilot)
            screen = wizard(app)
            assert shown(app, "model.clip_skip")
            await pilot.press("tab", "tab")
            assert app.focused.id == "f-model-family"
            await pilot.press("enter", "down", "down", "enter")  # sd1 -> sd2 -> sdxl
            await pilot.pause()
            assert screen.cfg.model.family == "sdxl"
            assert not shown(app, "model.clip_skip")
            # Tab skips the hidden field: from v-prediction to the tokenizer.
            await pilot.press("tab")
            assert app.focused.id == "f-model-v-prediction"
            await pilot.press("tab")
            assert app.focused.id == "f-model-tokenizer"
            for _ in range(4):
                await pilot.press("pagedown")
            await pilot.pause()
            assert screen.step.id == "optimizer" and shown(app, "optimizer.text_encoder_2_lr")
            await type_into(pilot, "f-optimizer-text-encoder-2-lr", "1e-5")
            assert screen.cfg.optimizer.text_encoder_2_lr == 1e-5
            # Caching the text outputs while both encoders train: the fix names train_unet_only.
            await pilot.press("pageup", "pageup", "pageup")
            await pilot.pause()
            assert screen.step.id == "dataset"
            cache = screen.query_one("#f-dataset-cache-text-encoder-outputs", Select)
            cache.focus()
            await pilot.press("enter", "down", "enter")  # off -> memory
            await pilot.pause()
            problem = problem_under(app, "dataset.cache_text_encoder_outputs")
            assert "needs frozen text encoders" in problem and "network.train_unet_only = true" in problem
            # Back to SD 1.x: clip skip again, no second text encoder.
            await pilot.press("pageup")
            await pilot.pause()
            family = screen.query_one("#f-model-family", Select)
            family.focus()
            await pilot.press("enter", "up", "up", "enter")
            await pilot.pause()
            assert screen.cfg.model.family == "sd1"
            assert shown(app, "model.clip_skip") and not shown(app, "optimizer.text_encoder_2_lr")

    run(scenario())


def test_a_clip_skip_sdxl_would_ignore_shows_until_it_is_set_back(project: Path):
    sdxl = {"path": "loratui:tiny-sdxl", "family": "sdxl", "clip_skip": 2}
    config_path = write_config(project, small_config(model=sdxl, dataset={"bucket_reso_steps": 32}))
    app = make_edit_app(config_path)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await settle_scan(pilot)
            assert shown(app, "model.clip_skip")
            assert "clip_skip 2 is ignored: SDXL has no clip skip" in problem_under(app, "model.clip_skip")
            await type_into(pilot, "f-model-clip-skip", "1")
            assert wizard(app).cfg.model.clip_skip == 1
            assert not shown(app, "model.clip_skip")
            await pilot.pause()
            assert app.focused.id == "f-model-tokenizer"  # the next field

    run(scenario())


def test_import_of_an_sdxl_config_makes_an_sdxl_config(project: Path):
    config_path = write_config(project, small_config())
    app = make_edit_app(config_path, kohya_json=FIXTURES / "SDXL-Standard-Adafactor.json")

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await settle_scan(pilot)
            report = text_of(app.screen.query_one("#report-text", Static))
            assert "NOT SUPPORTED" not in report
            assert 'sdxl = true -> model.family = "sdxl"' in report
            await pilot.press("enter")
            await pilot.pause()
            screen = wizard(app)
            assert screen.query_one("#f-model-family", Select).value == "sdxl"
            assert problem_under(app, "model.family") == ""
            assert not shown(app, "model.clip_skip")
            assert screen.cfg.network.train_unet_only is True
            assert screen.cfg.dataset.cache_text_encoder_outputs == "memory"
            assert screen.cfg.dataset.bucket_reso_steps == 32

    run(scenario())


def _write_images(folder: Path, count: int, size: int = 64) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    for index in range(count):
        Image.new("RGB", (size, size), (index * 7 % 256, 90, 160)).save(folder / f"{index:03d}.png")


def test_the_sdxl_person_preset_gives_the_guides_steps(tmp_path: Path):
    """The SDXL guide: 13 images x 25 repeats, a reg folder at 1 repeat, batch 2, 8 epochs: 2600 steps."""
    project = tmp_path / "person"
    _write_images(project / "img" / "25_ohwx woman", 13)
    _write_images(project / "reg" / "1_woman", 5)
    config_path = write_config(project, small_config(dataset={"reg_dir": "reg"}))
    app = make_edit_app(config_path)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await settle_scan(pilot)
            screen = wizard(app)
            select = screen.query_one("#preset", Select)
            select.focus()
            await pilot.press("enter", *["down"] * 5, "enter")  # the fifth preset: SDXL face / person
            await settle_scan(pilot)
            assert select.value == "sdxl-person"
            cfg = screen.cfg
            assert (cfg.model.family, cfg.dataset.resolution, cfg.training.epochs) == ("sdxl", 1024, 8)
            assert cfg.network.train_unet_only and cfg.dataset.cache_text_encoder_outputs == "memory"
            assert not shown(app, "model.clip_skip")
            await pilot.press("pagedown")
            await settle_scan(pilot)
            formula = text_of(screen.query_one(DatasetPanel).query_one("#calc-formula", Static))
            assert "13 x 25 = 325 per epoch, + 325 regularisation = 650" in formula
            assert "/ batch 2 = 325 steps per epoch" in formula
            assert "x 8 epochs = 2,600 steps in total" in formula
            # The guide's reg folder holds as many images as there are train items.
            assert "325 reg images" in formula and "the reg folder has 5" in formula

    run(scenario())


def test_quit_with_unsaved_changes_asks_first(project: Path):
    config_path = write_config(project, small_config())
    before = config_path.read_text()
    app = make_edit_app(config_path)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await settle_scan(pilot)
            await pilot.press("pagedown", "pagedown")  # Training
            checkbox = app.screen.query_one("#f-training-gradient-checkpointing", Checkbox)
            checkbox.focus()
            await pilot.press("space")
            await pilot.pause()
            assert wizard(app).cfg.training.gradient_checkpointing is True
            await pilot.press("ctrl+q")
            await pilot.pause()
            assert app.is_running  # the question is shown
            await pilot.press("escape")
            await pilot.pause()
            assert isinstance(app.screen, WizardScreen)
            await pilot.press("ctrl+q")
            await pilot.pause()
            await pilot.press("d")  # quit without saving
            await pilot.pause()
        return app.return_value

    result = run(scenario())
    assert config_path.read_text() == before
    assert result.config_path == config_path and not result.launched


def test_edit_refuses_a_broken_config_with_a_plain_message(tmp_path: Path):
    path = tmp_path / "loratui.toml"
    path.write_text('[network]\nrank = "sixteen"\n')
    with pytest.raises(UserError) as caught:
        make_edit_app(path)
    assert "network.rank" in str(caught.value)


def test_new_refuses_a_folder_that_already_has_a_config(tmp_path: Path):
    cfg = load_config(write_config(tmp_path, small_config()))
    save_config(cfg, tmp_path / "loratui.toml")
    with pytest.raises(UserError) as caught:
        make_new_app(tmp_path)
    assert "already exists" in caught.value.message and "loratui edit" in caught.value.fix


def test_unknown_theme_is_refused_before_anything_is_created(tmp_path: Path):
    with pytest.raises(UserError) as caught:
        make_new_app(tmp_path / "fresh", theme="no-such-theme")
    assert caught.value.where == "--theme" and "loratui-dark" in caught.value.fix
    assert not (tmp_path / "fresh").exists()


def test_dataset_step_rescans_images_copied_in_while_the_wizard_is_open(project: Path):
    images = project / "img" / "10_ohwx shape"
    parked = project / "parked"
    images.rename(parked)  # the folder is empty when the wizard opens
    config_path = write_config(project, small_config())
    app = make_edit_app(config_path)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await settle_scan(pilot)
            parked.rename(images)  # the user copies the images in from another terminal
            await pilot.press("pagedown")
            await settle_scan(pilot)
            summary = text_of(wizard(app).query_one(DatasetPanel).query_one("#scan-summary", Static))
            assert "10_ohwx shape" in summary and "8/8" in summary

    run(scenario())


@pytest.mark.slow
def test_launch_from_the_wizard_starts_a_real_job_on_the_tiny_model(project: Path, tmp_path, monkeypatch):
    """Review > Ctrl+L with the app's own launcher: a job is registered and its dashboard opens;
    q goes back to the wizard and the job trains on to its end."""
    from loratui.jobs.follow import follow
    from loratui.jobs.process import is_running
    from loratui.jobs.registry import find_job

    monkeypatch.setenv("LORATUI_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = small_config()
    data["training"]["max_train_steps"] = 3
    app = make_edit_app(write_config(project, data), dashboard_options=NO_GPUS)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await settle_scan(pilot)
            await pilot.press("ctrl+l")  # the check and the launch run in workers
            await until(pilot, lambda: isinstance(app.screen, DashboardScreen), "the dashboard", tries=1200)
            await pilot.press("q")
            await pilot.pause()
            assert isinstance(app.screen, WizardScreen)
            await pilot.press("ctrl+q")
            await pilot.pause()
        return app.return_value

    result = run(scenario())
    assert result is not None and result.job_id, result
    record = find_job(result.job_id)
    events = list(follow(record.events_path, lambda: is_running(record.identity)))
    assert events[-1]["type"] == "finished", events[-3:]
    assert (project / "model" / "test_lora.safetensors").is_file()


# ---------------------------------------------------------- the Dataset step: mark, watch, rename


def step_bar(app) -> str:
    return text_of(wizard(app).query_one("#step-bar", Static))


async def until(pilot, predicate, what: str, tries: int = 200) -> None:
    """Let the app run until ``predicate()`` holds (a failure after ``tries`` pauses, not a timing)."""
    for _ in range(tries):
        if predicate():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"never happened: {what}")


def test_dataset_tab_is_marked_when_the_scan_finds_an_error(project: Path):
    images = project / "img" / "10_ohwx shape"
    parked = project / "parked"
    images.rename(parked)
    images.mkdir()  # a concept folder without images: the scan's errors name it and img/, no field
    config_path = write_config(project, small_config())
    app = make_edit_app(config_path)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await settle_scan(pilot)
            assert wizard(app).query_one(DatasetPanel).error_count > 0
            assert "2 Data ✗" in step_bar(app)  # seen from the Model step (short titles at 80 columns)
            assert "1 Model ✗" not in step_bar(app)
            await pilot.press("pagedown")
            await settle_scan(pilot)
            assert "2 Dataset ✗" in step_bar(app)
            # the images come back: the mark goes when the scan finds nothing wrong
            images.rmdir()
            parked.rename(images)
            await pilot.press("pageup", "pagedown")  # a visit scans again
            await settle_scan(pilot)
            assert "Dataset ✗" not in step_bar(app)

    run(scenario())


def test_dataset_step_scans_again_by_itself_when_the_folder_changes(project: Path, monkeypatch):
    from loratui.tui.wizard import dataset_panel

    monkeypatch.setattr(dataset_panel, "WATCH_S", 0.1)
    images = project / "img" / "10_ohwx shape"
    parked = project / "parked"
    images.rename(parked)  # the folder is empty while the step is open
    config_path = write_config(project, small_config())
    app = make_edit_app(config_path)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await settle_scan(pilot)
            await pilot.press("pagedown")
            await settle_scan(pilot)
            panel = wizard(app).query_one(DatasetPanel)
            summary = panel.query_one("#scan-summary", Static)
            assert "No concept folders" in text_of(summary)
            parked.rename(images)  # copied in from another terminal, no key pressed
            await until(pilot, lambda: "8/8" in text_of(summary), "a scan showing the 8 images")
            assert "10_ohwx shape" in text_of(summary)
            # a caption emptied in an editor is seen too
            (images / "shape_03.txt").write_text("  \n")
            await until(pilot, lambda: "7/8" in text_of(summary), "a scan showing the empty caption")
            # on another step the folders are not watched
            await pilot.press("pagedown")
            await settle(pilot)
            (images / "shape_03.txt").write_text("ohwx shape, red\n")
            for _ in range(10):
                await pilot.pause(0.05)
            assert "7/8" in text_of(summary)

    run(scenario())


def test_rename_the_concept_folder_to_the_repeats_the_calculator_suggests(project: Path):
    config_path = write_config(project, small_config())
    app = make_edit_app(config_path)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await settle_scan(pilot)
            await pilot.press("pagedown")
            await settle_scan(pilot)
            panel = wizard(app).query_one(DatasetPanel)
            button = panel.query_one("#calc-rename")
            assert not button.display  # no target, nothing to rename
            await type_into(pilot, "calc-target", "160")  # 8 images x 40 repeats x 2 epochs / batch 4
            assert button.display and str(button.label) == "Rename 10_ohwx shape to 40_ohwx shape"
            await pilot.press("tab")  # from the target to the button
            assert app.focused is button
            await pilot.press("enter")
            await settle_scan(pilot)
            assert (project / "img" / "40_ohwx shape" / "shape_01.png").is_file()
            assert not (project / "img" / "10_ohwx shape").exists()
            assert "40_ohwx shape" in text_of(panel.query_one("#scan-summary", Static))
            assert not button.display  # the folder has the repeats now
            messages = [str(n.message) for n in app._notifications]
            assert any("Renamed img/10_ohwx shape -> 40_ohwx shape" in m for m in messages)

    run(scenario())


def test_renaming_is_refused_when_a_folder_of_the_new_name_exists(project: Path):
    (project / "img" / "20_ohwx shape").mkdir()
    config_path = write_config(project, small_config())
    app = make_edit_app(config_path)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await settle_scan(pilot)
            await pilot.press("pagedown")
            await settle_scan(pilot)
            panel = wizard(app).query_one(DatasetPanel)
            await type_into(pilot, "calc-target", "80")  # 8 images x 20 repeats x 2 epochs / batch 4
            assert panel.suggested_repeats == 20
            button = panel.query_one("#calc-rename")
            assert button.display
            button.press()
            await settle_scan(pilot)
            messages = [str(n.message) for n in app._notifications]
            assert any(
                "cannot rename '10_ohwx shape' to '20_ohwx shape': that folder exists already" in m for m in messages
            ), messages
            assert (project / "img" / "10_ohwx shape" / "shape_01.png").is_file()  # nothing was renamed

    run(scenario())


def test_a_negative_max_train_steps_is_a_problem_at_the_field_not_a_crash(new_project: Path):
    # Typing -5 used to crash the wizard (everything unsaved lost) in the step calculator.
    app = make_new_app(new_project)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await settle_scan(pilot)
            await pilot.press("pagedown", "pagedown")  # Training
            await type_into(pilot, "f-training-max-train-steps", "-5")
            assert "max_train_steps -5 is negative" in problem_under(app, "training.max_train_steps")
            await pilot.press("pageup")  # the Dataset step's calculator
            await settle_scan(pilot)
            formula = text_of(wizard(app).query_one("#calc-formula", Static))
            assert "the steps show once" in formula
            assert app.is_running

    run(scenario())
