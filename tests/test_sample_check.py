"""`loratui check` on the [sample] settings and log_with: each mistake is one line naming the
setting, the prompt and the fix, with a non-zero exit for errors. Built-in tiny models only."""

from __future__ import annotations

from pathlib import Path

import pytest

from loratui import cli, preflight, sample_rules

from .conftest import small_config, write_config

TINY = {
    "sd1": {"path": "loratui:tiny-sd"},
    "sdxl": {"path": "loratui:tiny-sdxl", "family": "sdxl"},
    "flux": {"path": "loratui:tiny-flux", "family": "flux"},
}


@pytest.fixture(autouse=True)
def gpu_machine(monkeypatch):
    """A bf16 GPU, so that the precision settings are judged, not the test machine."""
    monkeypatch.setattr(preflight, "this_machine", lambda: preflight.Machine("NVIDIA RTX 4090", (8, 9)))


def check(project: Path, capsys, family: str = "sd1", **sections) -> tuple[int, list[str]]:
    """The exit status and the lines of `loratui check` about [sample] and log_with."""
    data = small_config(model=TINY[family], **sections)
    if family == "sdxl":
        data["dataset"]["bucket_reso_steps"] = 32
    code = cli.main(["check", str(write_config(project, data))])
    out = capsys.readouterr().out
    lines = [line.strip() for line in out.splitlines() if "sample." in line or "log_with" in line]
    return code, lines


def test_prompts_on_a_schedule_are_ready(project, capsys):
    (project / "prompts.txt").write_text("# one more\nohwx, a garden --w 192 --h 128\n", encoding="utf-8")
    sample = {"prompts": ["ohwx, portrait --w 64 --h 136"], "prompt_file": "prompts.txt", "every_n_steps": 10}
    assert check(project, capsys, sample=sample) == (0, [])


@pytest.mark.parametrize(
    "family,prompt,says,fix",
    [
        (
            "sd1",
            "a cat --w 100 --h 128",
            "size 100x128 is not a multiple of 8 of at least 64, which SD 1.x",
            "--w 96 --h 128",
        ),
        ("sd1", "a cat --w 32 --h 32", "size 32x32 is not a multiple of 8 of at least 64", "--w 64 --h 64"),
        ("sdxl", "a cat --w 1020 --h 1024", "size 1020x1024 is not a multiple of 8", "--w 1024 --h 1024"),
        (
            "flux",
            "a cat --w 520 --h 512",
            "size 520x512 is not a multiple of 16 of at least 64, which FLUX.1",
            "--w 512 --h 512",
        ),
    ],
)
def test_a_sample_size_the_family_cannot_render(project, capsys, family, prompt, says, fix):
    code, lines = check(project, capsys, family, sample={"prompts": ["a dog", prompt], "every_n_epochs": 1})
    assert code != 0
    (line,) = lines
    assert line.startswith(f"error    sample.prompts: prompt 2 ({prompt!r}): {says}")
    assert line.endswith(f"(fix: write {fix})")


def test_sdxl_samples_need_sides_of_8_not_32(project, capsys):
    # 200x136 is no multiple of 32, yet StableDiffusionXLPipeline renders it (see loratui.sample_rules).
    assert check(project, capsys, "sdxl", sample={"prompts": ["a cat --w 200 --h 136"], "every_n_epochs": 1}) == (0, [])


def test_a_size_left_at_a_bad_resolution_is_one_problem_at_the_resolution(project, capsys):
    data = small_config(
        model=TINY["flux"], dataset={"resolution": 136}, sample={"prompts": ["a cat"], "every_n_steps": 5}
    )
    code = cli.main(["check", str(write_config(project, data))])
    problems = [line.strip() for line in capsys.readouterr().out.splitlines() if line.strip().startswith("error")]
    assert code != 0
    assert problems == [
        "error    dataset.resolution: resolution 136 is not a multiple of 16, which FLUX.1 needs (it packs 2x2 latent "
        "patches) (fix: use 128, or 1024 (512 trains faster))"
    ]


def test_an_unknown_option_in_the_prompt_file(project, capsys):
    (project / "prompts.txt").write_text("a cat\na dog --steps 20\n", encoding="utf-8")
    code, lines = check(project, capsys, sample={"prompt_file": "prompts.txt", "every_n_epochs": 1})
    assert code != 0
    (line,) = lines
    assert line.startswith(
        "error    sample.prompt_file: prompts.txt line 2 ('a dog --steps 20'): has an unknown option --steps"
    )
    assert "(fix: use one of --n (negative prompt)" in line


def test_a_prompt_file_that_does_not_exist(project, capsys):
    code, lines = check(project, capsys, sample={"prompt_file": "nowhere.txt", "every_n_epochs": 1})
    assert code != 0
    assert lines == [
        f"error    sample.prompt_file: prompt file {project / 'nowhere.txt'} does not exist "
        "(fix: point sample.prompt_file at a .txt file with one prompt per line, or empty it)"
    ]


def test_a_bad_number_in_an_inline_prompt(project, capsys):
    code, lines = check(project, capsys, sample={"prompts": ["a cat --s lots"], "every_n_epochs": 1})
    assert code != 0
    assert lines == [
        "error    sample.prompts: prompt 1 ('a cat --s lots'): --s 'lots' is not a whole number (fix: write --s 30)"
    ]


@pytest.mark.parametrize("schedule", [{"every_n_epochs": 1}, {"every_n_steps": 50}, {"at_start": True}])
def test_a_schedule_without_prompts_renders_nothing(project, capsys, schedule):
    code, lines = check(project, capsys, sample=schedule)
    assert code == 0
    (key,) = schedule
    assert lines == [
        f"warning  sample.{key}: sample.{key} is set but there are no prompts: no sample will be rendered "
        "(fix: add prompts: sample.prompts or a sample.prompt_file)"
    ]


def test_prompts_without_a_schedule_render_only_when_asked(project, capsys):
    code, lines = check(project, capsys, sample={"prompts": ["a cat"]})
    assert code == 0
    (line,) = lines
    assert line.startswith('note     sample.every_n_epochs: no schedule: the prompts render only on "sample now"')


@pytest.mark.parametrize(
    "family,version,says",
    [
        (
            "sd1",
            None,
            "SD 1.x samples need diffusers' StableDiffusionPipeline (diffusers 0.2.0 or later), and diffusers is not installed",
        ),
        (
            "sdxl",
            "0.17.1",
            "SDXL samples need diffusers' StableDiffusionXLPipeline (diffusers 0.18.0 or later), and diffusers 0.17.1 is installed",
        ),
        (
            "flux",
            "0.29.2",
            "FLUX.1 samples need diffusers' FluxPipeline (diffusers 0.30.0 or later), and diffusers 0.29.2 is installed",
        ),
    ],
)
def test_sampling_a_family_whose_pipeline_diffusers_lacks(project, capsys, monkeypatch, family, version, says):
    monkeypatch.setattr(sample_rules, "installed_diffusers", lambda: version)
    code, lines = check(project, capsys, family, sample={"prompts": ["a cat --w 128 --h 128"], "every_n_epochs": 1})
    assert code != 0
    assert lines == [f"error    sample.prompts: {says} (fix: pip install -U diffusers, or remove the sample prompts)"]


def test_a_diffusers_with_the_pipeline_passes(project, capsys, monkeypatch):
    monkeypatch.setattr(sample_rules, "installed_diffusers", lambda: "0.30.0.dev0")
    assert check(project, capsys, "flux", sample={"prompts": ["a cat --w 128 --h 128"], "every_n_epochs": 1}) == (0, [])


def test_without_prompts_the_diffusers_version_does_not_matter(project, capsys, monkeypatch):
    monkeypatch.setattr(sample_rules, "installed_diffusers", lambda: None)
    assert check(project, capsys) == (0, [])


def test_tensorboard_logging_without_the_tensorboard_package(project, capsys, monkeypatch):
    installed = preflight.installed
    monkeypatch.setattr(preflight, "installed", lambda package: package != "tensorboard" and installed(package))
    code, lines = check(project, capsys)
    assert code == 0
    assert lines == [
        "warning  output.log_with: log_with is tensorboard but the tensorboard package is not installed: no "
        'TensorBoard log is written (fix: pip install tensorboard, or set log_with = "none")'
    ]
    assert check(project, capsys, output={"log_with": "none"}) == (0, [])


@pytest.mark.parametrize("sample", [{"sampler": "k_lms"}, {"prompts": ["a cat --ss lms"]}])
def test_the_lms_sampler_without_scipy_is_refused_before_the_run(project, capsys, monkeypatch, sample):
    """LMS's diffusers scheduler imports scipy, which loratui does not install: without it every
    render would fail during the run, so the check refuses it first."""
    installed = preflight.installed
    monkeypatch.setattr(preflight, "installed", lambda package: package != "scipy" and installed(package))
    sample = {"prompts": ["a cat"], "every_n_epochs": 1, **sample}
    code, lines = check(project, capsys, sample=sample)
    assert code != 0
    where = "sample.prompts" if "--ss" in sample["prompts"][0] else "sample.sampler"
    assert any(line.startswith(f"error    {where}: ") and "needs the scipy package" in line for line in lines), lines
