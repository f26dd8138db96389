"""The wizard's Samples step, driven by the keyboard at 80x24: prompts typed in quotes, a prompt
file completed from the project folder, the sampler chosen, and what is saved."""

from __future__ import annotations

import pytest
from textual.widgets import Input, Select

from loratui.config import load_config, save_config
from loratui.tui import make_edit_app, make_new_app
from loratui.tui.wizard.steps import STEP_IDS

from .test_tui_wizard import SIZE, problem_under, run, settle, settle_scan, step_bar, type_into, wizard

pytestmark = pytest.mark.usefixtures("private_tui_settings")

TO_SAMPLES = ["pagedown"] * STEP_IDS.index("sample")


def test_typed_prompts_a_prompt_file_and_the_sampler_are_saved(project):
    (project / "prompts.txt").write_text("# portraits\nohwx woman, smiling --w 512 --h 512\n", encoding="utf-8")
    app = make_new_app(project)
    config_path = project / "loratui.toml"

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await settle_scan(pilot)
            await pilot.press(*TO_SAMPLES)
            assert wizard(app).step.id == "sample"
            await type_into(pilot, "f-sample-prompts", '"ohwx woman, portrait --w 512 --h 768" "a cat --d 3"')
            # The prompt file completes from the project folder with the Right arrow.
            await type_into(pilot, "f-sample-prompt-file", "pro")
            await pilot.pause(0.2)
            await pilot.press("right")
            await settle(pilot)
            assert app.screen.query_one("#f-sample-prompt-file", Input).value == "prompts.txt"
            await type_into(pilot, "f-sample-every-n-epochs", "1")
            select = app.screen.query_one("#f-sample-sampler", Select)
            select.focus()
            await pilot.press("enter", "down", "down", "enter")  # euler_a -> euler -> ddim
            await settle(pilot)
            assert problem_under(app, "sample.prompts") == ""
            assert problem_under(app, "sample.prompt_file") == ""
            await pilot.press("ctrl+s")
            await pilot.pause()

    run(scenario())
    sample = load_config(config_path).sample
    assert sample.prompts == ["ohwx woman, portrait --w 512 --h 768", "a cat --d 3"]
    assert (sample.prompt_file, sample.every_n_epochs, sample.sampler) == ("prompts.txt", 1, "ddim")


def test_a_bad_prompt_is_shown_at_its_field_with_the_fix(project):
    app = make_new_app(project)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await settle_scan(pilot)
            await pilot.press(*TO_SAMPLES)
            await type_into(pilot, "f-sample-prompts", '"a cat --steps 20"')
            await settle(pilot)
            unknown = problem_under(app, "sample.prompts")
            await type_into(pilot, "f-sample-prompts", '"a cat --w 100"')
            await settle(pilot)
            size = problem_under(app, "sample.prompts")
            await type_into(pilot, "f-sample-prompts", '"a cat')
            await settle(pilot)
            unclosed = problem_under(app, "sample.prompts")
            await type_into(pilot, "f-sample-prompt-file", "nowhere.txt")
            await settle(pilot)
            missing = problem_under(app, "sample.prompt_file")
            return unknown, size, unclosed, missing

    unknown, size, unclosed, missing = (" ".join(text.split()) for text in run(scenario()))
    assert "prompt 1 ('a cat --steps 20'): has an unknown option --steps" in unknown
    assert "size 100x" in size and "is not a multiple of 8" in size and "write --w 96 --h" in size
    assert 'each prompt in double quotes, e.g. "ohwx woman --w 512" "a cat"' in unclosed
    assert "nowhere.txt does not exist" in missing


def test_saved_prompts_are_shown_each_in_double_quotes(project):
    from loratui.tui.entry import new_project_config, prepare_new_project

    config_path = prepare_new_project(project)
    cfg = new_project_config(config_path)
    cfg.sample.prompts = ["ohwx woman's portrait --w 512", "plain"]
    save_config(cfg, config_path)
    app = make_edit_app(config_path)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await settle_scan(pilot)
            await pilot.press(*TO_SAMPLES)
            return app.screen.query_one("#f-sample-prompts", Input).value

    assert run(scenario()) == '"ohwx woman\'s portrait --w 512" plain'


@pytest.mark.parametrize(
    "size,bar",
    [
        ((120, 40), " 1 Model ✗  2 Dataset  3 Training  4 Network  5 Optimizer  6 Output  7 Samples  8 Review "),
        ((80, 24), " 1 Model ✗  2 Data  3 Train  4 Net  5 Optim  6 Output  7 Samples  8 Review "),
        ((60, 24), " 1 ✗  2  3  4  5  6  7 Samples  8 "),
    ],
)
def test_the_step_bar_stays_on_one_line_shortening_the_other_titles(project, size, bar):
    app = make_new_app(project)

    async def scenario():
        async with app.run_test(size=size) as pilot:
            await settle_scan(pilot)
            await pilot.press(*TO_SAMPLES)
            await settle(pilot)
            return step_bar(app)

    assert run(scenario()) == bar
