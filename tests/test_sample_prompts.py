"""The run's sample prompts in kohya's syntax (loratui.sample_prompts): every option, inline and
from a prompt file, the defaults of each family, and one plain UserError for each bad input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from loratui.config import RunConfig
from loratui.errors import UserError
from loratui.sample_prompts import SamplePrompt, prompt_lines, run_prompts


def config(tmp_path: Path, family: str = "sd1", prompts=(), prompt_file: str = "", **sample) -> RunConfig:
    cfg = RunConfig(base_dir=tmp_path)
    cfg.model.family = family
    cfg.dataset.resolution = 768
    cfg.training.seed = 40
    cfg.sample.prompts = list(prompts)
    cfg.sample.prompt_file = prompt_file
    for key, value in sample.items():
        setattr(cfg.sample, key, value)
    return cfg


def only(cfg: RunConfig) -> SamplePrompt:
    (prompt,) = run_prompts(cfg)
    return prompt


def test_every_option_of_an_inline_prompt(tmp_path):
    line = "ohwx woman, portrait, city at night --n blurry, lowres --w 512 --h 640 --d 42 --l 6.5 --s 28 --ss ddim"
    assert only(config(tmp_path, prompts=[line])) == SamplePrompt(
        index=0,
        prompt="ohwx woman, portrait, city at night",
        negative_prompt="blurry, lowres",
        width=512,
        height=640,
        seed=42,
        steps=28,
        cfg_scale=6.5,
        guidance=None,
        sampler="ddim",
    )


def test_options_in_any_order_and_case_as_sd_scripts_reads_them(tmp_path):
    prompt = only(config(tmp_path, prompts=["a cat --S 12 --W 576  --n  dog, bird  --D 3"]))
    assert (prompt.prompt, prompt.steps, prompt.width, prompt.negative_prompt, prompt.seed) == (
        "a cat",
        12,
        576,
        "dog, bird",
        3,
    )


def test_sd_and_sdxl_defaults(tmp_path):
    for family in ("sd1", "sd2", "sdxl"):
        first, second = run_prompts(config(tmp_path, family, prompts=["a cat", "a dog"], sampler="euler"))
        # The size is the training resolution; each prompt keeps seed training.seed + its number.
        assert (first.width, first.height, first.seed, second.seed) == (768, 768, 40, 41)
        assert (first.steps, first.cfg_scale, first.guidance, first.sampler) == (30, 7.5, None, "euler")
        assert (first.index, second.index, first.negative_prompt) == (0, 1, "")


def test_flux_defaults_and_its_guidance_option(tmp_path):
    plain, guided = run_prompts(config(tmp_path, "flux", prompts=["a cat", "a dog --g 2.5 --l 3 --ss ddim"]))
    assert (plain.steps, plain.cfg_scale, plain.guidance, plain.sampler) == (20, 1.0, 3.5, "flow_euler")
    # FLUX.1 samples with its own Euler whatever --ss asks, as sd-scripts does.
    assert (guided.guidance, guided.cfg_scale, guided.sampler) == (2.5, 3.0, "flow_euler")


def test_guidance_is_a_flux_option_only(tmp_path):
    assert only(config(tmp_path, "sdxl", prompts=["a cat --g 2"])).guidance is None


def test_the_prompt_file_skips_comments_and_blank_lines_and_follows_the_inline_prompts(tmp_path):
    (tmp_path / "prompts.txt").write_text(
        "# portraits\n\nohwx woman, smiling --w 512 --h 512\n   \n  # another comment\nohwx woman, in a garden --d 9\n",
        encoding="utf-8",
    )
    cfg = config(tmp_path, prompts=["a test"], prompt_file="prompts.txt")
    prompts = run_prompts(cfg)
    assert [p.prompt for p in prompts] == ["a test", "ohwx woman, smiling", "ohwx woman, in a garden"]
    assert [p.index for p in prompts] == [0, 1, 2]
    assert [p.seed for p in prompts] == [40, 41, 9]
    assert [line.origin for line in prompt_lines(cfg)] == ["prompt 1", "prompts.txt line 3", "prompts.txt line 6"]


def test_no_prompts_is_an_empty_list(tmp_path):
    assert run_prompts(config(tmp_path, prompts=["", "  "])) == []


def failure(cfg: RunConfig) -> UserError:
    with pytest.raises(UserError) as raised:
        run_prompts(cfg)
    return raised.value


@pytest.mark.parametrize(
    "line,says,fix",
    [
        ("a cat --x 3", "has an unknown option --x", "use one of --n (negative prompt)"),
        ("a cat --cn control.png", "has an unknown option --cn", "--g (FLUX.1 guidance)"),
        ("a cat --w wide", "--w 'wide' is not a whole number", "write --w 768"),
        ("a cat --h 512.5", "--h '512.5' is not a whole number", "write --h 768"),
        ("a cat --d lucky", "--d 'lucky' is not a whole number", "write --d 41"),
        ("a cat --l high", "--l 'high' is not a number", "write --l 7.5"),
        ("a cat --l nan", "--l nan is out of range", "use 0 or more for --l"),
        ("a cat --s", "--s has no value", "write --s 30"),
        ("a cat --s 0", "--s 0 is out of range", "use 1..1000 for --s"),
        ("a cat --s 5000", "--s 5000 is out of range", "use 1..1000 for --s"),
        ("a cat --d -1", "--d -1 is out of range", "use 0..4294967295 for --d"),
        ("a cat --w -8", "--w -8 is out of range", "use 1 or more for --w"),
        ("a cat --ss warp", "--ss 'warp' is not a sampler loratui has", "use one of: euler_a, euler"),
        ("--w 512 --h 512", "has options but no prompt", "write the prompt first"),
    ],
)
def test_a_bad_inline_prompt_is_one_error_naming_the_setting_and_the_prompt(tmp_path, line, says, fix):
    error = failure(config(tmp_path, prompts=["a good one", line]))
    assert error.where == "sample.prompts"
    assert error.message.startswith("prompt 2 (")
    assert line.split(" --")[0] in error.message or line.startswith("--")
    assert says in error.message
    assert fix in error.fix
    assert "Traceback" not in str(error)


def test_a_long_prompt_is_quoted_short_in_the_message(tmp_path):
    line = "a very long prompt that goes on and on about a cat sitting on a mat --q 1"
    error = failure(config(tmp_path, prompts=[line]))
    assert error.message.startswith("prompt 1 ('a very long prompt that goes on and...'): has an unknown option --q")


def test_a_bad_line_of_the_prompt_file_is_named_by_its_file_and_line(tmp_path):
    (tmp_path / "prompts.txt").write_text("# mine\na cat\na dog --s many\n", encoding="utf-8")
    error = failure(config(tmp_path, prompt_file="prompts.txt"))
    assert error.where == "sample.prompt_file"
    assert error.message == "prompts.txt line 3 ('a dog --s many'): --s 'many' is not a whole number"


def test_a_missing_prompt_file(tmp_path):
    error = failure(config(tmp_path, prompt_file="nowhere.txt"))
    assert (error.where, error.message) == (
        "sample.prompt_file",
        f"prompt file {tmp_path / 'nowhere.txt'} does not exist",
    )
    assert "one prompt per line, or empty it" in error.fix


def test_a_prompt_file_that_is_a_folder(tmp_path):
    (tmp_path / "prompts.txt").mkdir()
    error = failure(config(tmp_path, prompt_file="prompts.txt"))
    assert (error.where, error.message) == ("sample.prompt_file", f"prompt file {tmp_path / 'prompts.txt'} is a folder")


def test_an_unreadable_prompt_file(tmp_path, monkeypatch):
    path = tmp_path / "prompts.txt"
    path.write_text("a cat\n", encoding="utf-8")
    if os.geteuid() == 0:  # root reads any file: fail the read as a user's permissions would
        denied = PermissionError(13, "Permission denied")
        monkeypatch.setattr(Path, "read_text", lambda *args, **kwargs: (_ for _ in ()).throw(denied))
    else:
        path.chmod(0)
    try:
        error = failure(config(tmp_path, prompt_file="prompts.txt"))
    finally:
        path.chmod(0o644)
    assert error.where == "sample.prompt_file"
    assert error.message == f"cannot read prompt file {path}: Permission denied"


def test_a_prompt_file_that_is_not_utf8_text(tmp_path):
    (tmp_path / "prompts.txt").write_bytes(b"\xff\xfe\x00a cat")
    error = failure(config(tmp_path, prompt_file="prompts.txt"))
    assert (error.where, error.fix) == ("sample.prompt_file", "save it as UTF-8 text")


@pytest.mark.parametrize(
    "name,kind", [("prompts.toml", "a .toml file"), ("prompts.json", "a .json file"), ("prompts", "not a .txt file")]
)
def test_a_prompt_file_that_is_not_txt(tmp_path, name, kind):
    (tmp_path / name).write_text("a cat\n", encoding="utf-8")
    error = failure(config(tmp_path, prompt_file=name))
    assert error.where == "sample.prompt_file"
    assert (
        error.message
        == f"prompt file {tmp_path / name} is {kind}; loratui reads .txt prompt files (one prompt per line)"
    )


def test_a_bad_prompt_prints_as_one_line_with_control_characters_escaped(tmp_path):
    error = failure(config(tmp_path, prompts=["a \x1b[31mred\x1b[0m cat --zz 1"]))
    printed = str(error)
    assert "\x1b" not in printed and "\n" not in printed
    assert printed.startswith("sample.prompts: prompt 1 (")
