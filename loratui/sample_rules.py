"""The check's rules for the ``[sample]`` section and the TensorBoard log: prompts that parse,
sample sizes the family's pipeline renders, a schedule with prompts to render, the diffusers
pipeline class the family samples with, and the tensorboard package ``log_with`` asks for.

Registered with :func:`loratui.rules.rule` (imported at the end of that module). Torch-free: the
installed diffusers is judged by its version number, never imported.
"""

from __future__ import annotations

import importlib.metadata
import re
from typing import TYPE_CHECKING

from loratui import preflight
from loratui.errors import Problem, UserError, error, note, warning
from loratui.families import family_name
from loratui.rules import rule
from loratui.sample_prompts import PromptLine, SamplePrompt, prompt_lines, run_prompts

if TYPE_CHECKING:
    from loratui.config import RunConfig

MIN_SAMPLE_SIDE = 64  # sd-scripts' smallest sample side
# A sample's sides: diffusers' SD and SDXL pipelines refuse sides that are not multiples of 8 (the VAE's
# factor). SDXL renders them although its U-Net halves the latents twice: the tiny SDXL in
# StableDiffusionXLPipeline (diffusers 0.42) rendered 200x136, whose latents are odd, as it pads the
# upsampling (checked by hand; sd-scripts rounds SD and SDXL sample sides down to 8s too). FLUX.1
# packs 2x2 latent patches: 16s.
SIDE_MULTIPLE = {"sd1": 8, "sd2": 8, "sdxl": 8, "flux": 16}

# The diffusers pipeline each family samples with, and the first release that has it (read from
# diffusers' tags: StableDiffusionPipeline in v0.2.0, v-prediction for SD 2.x in v0.9.0,
# StableDiffusionXLPipeline in v0.18.0, FluxPipeline in v0.30.0).
SAMPLE_PIPELINES = {
    "sd1": ("StableDiffusionPipeline", (0, 2, 0)),
    "sd2": ("StableDiffusionPipeline", (0, 9, 0)),
    "sdxl": ("StableDiffusionXLPipeline", (0, 18, 0)),
    "flux": ("FluxPipeline", (0, 30, 0)),
}

_PROMPT_SETTINGS = ("sample.prompts", "sample.prompt_file")
_SCHEDULE_SETTINGS = ("sample.every_n_epochs", "sample.every_n_steps", "sample.at_start")


@rule(*_PROMPT_SETTINGS, "sample.sampler", "model.family", "dataset.resolution", "training.seed")
def _sample_prompts(cfg: RunConfig) -> list[Problem]:
    """Each prompt parses, and its size is one the family's pipeline renders."""
    try:
        prompts = run_prompts(cfg)
        lines = prompt_lines(cfg)
    except UserError as err:
        return [error(err.where or "sample.prompts", err.message, err.fix)]
    multiple = SIDE_MULTIPLE.get(cfg.model.family)
    if multiple is None:
        return []  # a family loratui does not know: validation names it
    resolution = cfg.dataset.resolution
    return [
        problem
        for prompt, line in zip(prompts, lines, strict=True)
        if (problem := _size_problem(line, prompt, resolution, multiple, cfg.model.family)) is not None
    ]


def _size_problem(
    line: PromptLine, prompt: SamplePrompt, resolution: int, multiple: int, family: str
) -> Problem | None:
    width, height = prompt.width, prompt.height
    # A side left at the training resolution is judged by the resolution's own rule: one problem per mistake.
    if all(side == resolution or (side >= MIN_SAMPLE_SIDE and side % multiple == 0) for side in (width, height)):
        return None
    message = (
        f"{line.named}: size {width}x{height} is not a multiple of {multiple} of at least {MIN_SAMPLE_SIDE}, "
        f"which {family_name(family)} samples need"
    )
    return error(line.where, message, f"write --w {_nearest(width, multiple)} --h {_nearest(height, multiple)}")


def _nearest(side: int, multiple: int) -> int:
    return max(MIN_SAMPLE_SIDE, round(side / multiple) * multiple)


@rule(*_PROMPT_SETTINGS, *_SCHEDULE_SETTINGS)
def _sample_schedule(cfg: RunConfig) -> list[Problem]:
    """Prompts without a schedule, or a schedule without prompts."""
    sample = cfg.sample
    try:
        has_prompts = bool(prompt_lines(cfg))
    except UserError:
        return []  # the prompt file cannot be read: _sample_prompts says why
    scheduled = sample.every_n_epochs > 0 or sample.every_n_steps > 0 or sample.at_start
    if scheduled and not has_prompts:
        where = next(f"sample.{key}" for key in ("every_n_epochs", "every_n_steps", "at_start") if getattr(sample, key))
        message = f"{where} is set but there are no prompts: no sample will be rendered"
        fix = "add prompts: sample.prompts or a sample.prompt_file"
        return [warning(where, message, fix)]
    if has_prompts and not scheduled:
        message = 'no schedule: the prompts render only on "sample now" (the dashboard, or loratui sample JOB)'
        return [
            note("sample.every_n_epochs", message, "set every_n_epochs = 1 or every_n_steps to render during training")
        ]
    return []


@rule(*_PROMPT_SETTINGS, "model.family")
def _sample_pipeline(cfg: RunConfig) -> list[Problem]:
    """The installed diffusers has the pipeline class the family samples with."""
    if cfg.model.family not in SAMPLE_PIPELINES:
        return []
    try:
        lines = prompt_lines(cfg)
    except UserError:
        return []  # _sample_prompts says why
    if not lines:
        return []
    pipeline, minimum = SAMPLE_PIPELINES[cfg.model.family]
    installed = installed_diffusers()
    if installed is not None and _version_tuple(installed) >= minimum:
        return []
    needed = f"diffusers' {pipeline} (diffusers {'.'.join(map(str, minimum))} or later)"
    found = f"diffusers {installed} is installed" if installed else "diffusers is not installed"
    message = f"{family_name(cfg.model.family)} samples need {needed}, and {found}"
    return [error(lines[0].where, message, "pip install -U diffusers, or remove the sample prompts")]


def installed_diffusers() -> str | None:
    """The installed diffusers' version, read from its metadata (importing it would load torch)."""
    try:
        return importlib.metadata.version("diffusers")
    except importlib.metadata.PackageNotFoundError:
        return None


def _version_tuple(version: str) -> tuple[int, ...]:
    """``"0.30.0.dev0"`` -> (0, 30, 0): the leading numbers of each part."""
    numbers = []
    for part in version.split(".")[:3]:
        digits = re.match(r"\d+", part)
        numbers.append(int(digits.group()) if digits else 0)
    return tuple(numbers)


# Samplers whose diffusers scheduler needs a package loratui does not install.
SAMPLER_NEEDS = {"lms": "scipy", "k_lms": "scipy"}


@rule(*_PROMPT_SETTINGS, "sample.sampler", "model.family")
def _sampler_packages(cfg: RunConfig) -> list[Problem]:
    """A sampler whose scheduler needs a package that is not installed (LMS needs scipy): refused here
    rather than failing every render during the run."""
    try:
        prompts, lines = run_prompts(cfg), prompt_lines(cfg)
    except UserError:
        return []  # _sample_prompts says why
    for prompt, line in zip(prompts, lines, strict=True):
        package = SAMPLER_NEEDS.get(prompt.sampler)
        if package and not preflight.installed(package):
            where = line.where if f"--ss {prompt.sampler}" in line.text else "sample.sampler"
            message = f"the {prompt.sampler} sampler needs the {package} package, which is not installed"
            return [error(where, message, f"pip install {package}, or choose another sampler (euler_a, dpmsolver++)")]
    return []


@rule("output.log_with")
def _tensorboard_installed(cfg: RunConfig) -> list[Problem]:
    if cfg.output.log_with != "tensorboard" or preflight.installed("tensorboard"):
        return []
    message = "log_with is tensorboard but the tensorboard package is not installed: no TensorBoard log is written"
    return [warning("output.log_with", message, 'pip install tensorboard, or set log_with = "none"')]
