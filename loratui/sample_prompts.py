"""The run's sample prompts: ``sample.prompts`` and ``sample.prompt_file``, in kohya's syntax.

A prompt line is the prompt, then options each starting with `` --`` (sd-scripts'
``line_to_prompt_dict``): ``--n`` negative prompt, ``--w``/``--h`` size, ``--d`` seed, ``--l`` CFG
scale, ``--s`` steps, ``--g`` FLUX.1's embedded guidance, ``--ss`` the sampler of this prompt.

Defaults differ from sd-scripts' where a user comparing samples over a run is better served:
- the size is the training resolution (sd-scripts: 512), so a 1024 SDXL run samples at 1024;
- a prompt without ``--d`` keeps one seed for the whole run, ``training.seed`` + its number
  (sd-scripts draws a new one each time), so the images of one prompt differ only by the LoRA.

Torch-free: the check reads the prompts to judge them, the engine to render them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from loratui.errors import UserError
from loratui.params import SAMPLERS

# sd-scripts' defaults, per family (reference/sdxl-flux.md section 4).
UNET_STEPS, UNET_CFG = 30, 7.5
FLUX_STEPS, FLUX_CFG, FLUX_GUIDANCE = 20, 1.0, 3.5
FLUX_SAMPLER = "flow_euler"  # FLUX.1 renders with its own flow-matching Euler whatever sample.sampler says
MAX_STEPS = 1000
MAX_SEED = 2**32 - 1  # as training.seed
QUOTE_CHARS = 40  # how much of a prompt a message quotes

# The options a prompt line may carry, and what each holds.
OPTIONS = {
    "n": "negative prompt",
    "w": "width in pixels",
    "h": "height in pixels",
    "d": "seed",
    "l": "CFG scale",
    "s": "sampling steps",
    "g": "FLUX.1 guidance",
    "ss": "sampler",
}
# " --w 512": an option starts at white space and two dashes before a letter (sd-scripts splits at " --").
_OPTION = re.compile(r"\s--(?=[A-Za-z])")


@dataclass(frozen=True)
class SamplePrompt:
    """One image to render, every option settled."""

    index: int  # its number in the run's prompt list, counting from 0
    prompt: str
    negative_prompt: str
    width: int
    height: int
    seed: int
    steps: int
    cfg_scale: float
    guidance: float | None  # FLUX.1 only
    sampler: str


@dataclass(frozen=True)
class PromptLine:
    """A prompt as written, with where it came from (for messages)."""

    text: str
    where: str  # "sample.prompts" or "sample.prompt_file"
    origin: str  # "prompt 2" or "prompts.txt line 7"

    @property
    def named(self) -> str:
        """``prompt 2 ("ohwx woman, portrait...")``: where it is and how it begins, for messages."""
        text = " ".join(self.text.split())
        if len(text) > QUOTE_CHARS:
            text = text[: QUOTE_CHARS - 3].rsplit(" ", 1)[0] + "..."  # whole words
        return f"{self.origin} ({text!r})" if text else self.origin


def prompt_lines(cfg) -> list[PromptLine]:
    """The inline prompts, then the prompt file's lines (blank lines and ``#`` comments skipped).
    A prompt file that cannot be read is a UserError naming it."""
    lines = [
        PromptLine(text, "sample.prompts", f"prompt {number}")
        for number, text in enumerate(cfg.sample.prompts, start=1)
        if text.strip()
    ]
    if cfg.sample.prompt_file.strip():
        try:
            path = cfg.resolve(cfg.sample.prompt_file)
        except ValueError:  # "loratui:..." names a built-in model, never a file
            raise UserError(
                f"{cfg.sample.prompt_file!r} is not a file path",
                "sample.prompt_file",
                "point sample.prompt_file at a .txt file with one prompt per line, or empty it",
                "config",
            ) from None
        for number, text in enumerate(_read_prompt_file(path), start=1):
            if text.strip() and not text.lstrip().startswith("#"):
                lines.append(PromptLine(text, "sample.prompt_file", f"{path.name} line {number}"))
    return lines


def _read_prompt_file(path: Path) -> list[str]:
    fix = "point sample.prompt_file at a .txt file with one prompt per line, or empty it"
    if path.suffix.lower() != ".txt":
        kind = f"a {path.suffix} file" if path.suffix else "not a .txt file"
        raise UserError(
            f"prompt file {path} is {kind}; loratui reads .txt prompt files (one prompt per line)",
            "sample.prompt_file",
            fix,
            "config",
        )
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"prompt file {path} does not exist", "sample.prompt_file", fix, "config") from None
    except IsADirectoryError:
        raise UserError(f"prompt file {path} is a folder", "sample.prompt_file", fix, "config") from None
    except UnicodeDecodeError:
        message = f"prompt file {path} is not UTF-8 text"
        raise UserError(message, "sample.prompt_file", "save it as UTF-8 text", "config") from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UserError(f"cannot read prompt file {path}: {reason}", "sample.prompt_file", fix, "config") from None


def run_prompts(cfg) -> list[SamplePrompt]:
    """Every sample prompt of the run, options settled; a UserError naming the prompt for the
    first option that is unknown, not a number where one is needed, or out of range."""
    return [parse_prompt(line, index, cfg) for index, line in enumerate(prompt_lines(cfg))]


def parse_prompt(line: PromptLine, index: int, cfg) -> SamplePrompt:
    flux = cfg.model.family == "flux"
    prompt, options = _split_options(line)
    if not prompt:
        raise _option_error(line, "has options but no prompt", "write the prompt first, then its options")
    reader = _OptionReader(line, options)
    resolution = cfg.dataset.resolution
    steps = reader.number("s", int, FLUX_STEPS if flux else UNET_STEPS, 1, MAX_STEPS)
    return SamplePrompt(
        index=index,
        prompt=prompt,
        negative_prompt=options.get("n", ""),
        width=reader.number("w", int, resolution, 1, None),
        height=reader.number("h", int, resolution, 1, None),
        seed=reader.number("d", int, (cfg.training.seed + index) % (MAX_SEED + 1), 0, MAX_SEED),
        steps=steps,
        cfg_scale=reader.number("l", float, FLUX_CFG if flux else UNET_CFG, 0, None),
        guidance=reader.number("g", float, FLUX_GUIDANCE, 0, None) if flux else None,
        sampler=FLUX_SAMPLER if flux else reader.sampler(cfg.sample.sampler),
    )


def _split_options(line: PromptLine) -> tuple[str, dict[str, str]]:
    """The prompt and its options by name (lower case, as sd-scripts matches them)."""
    parts = _OPTION.split(" " + line.text)
    options: dict[str, str] = {}
    for part in parts[1:]:
        name, _, value = part.strip().partition(" ")
        name = name.lower()
        if name not in OPTIONS:
            known = ", ".join(f"--{key} ({meaning})" for key, meaning in OPTIONS.items())
            raise _option_error(line, f"has an unknown option --{name}", f"use one of {known}")
        options[name] = value.strip()
    return parts[0].strip(), options


class _OptionReader:
    """The numbers and the sampler of one prompt line, each checked."""

    def __init__(self, line: PromptLine, options: dict[str, str]) -> None:
        self.line, self.options = line, options

    def number(self, name: str, kind: type, default, low, high):
        if name not in self.options:
            return default
        text = self.options[name]
        noun = "a whole number" if kind is int else "a number"
        if not text:
            raise _option_error(self.line, f"--{name} has no value", f"write --{name} {default}")
        try:
            value = kind(text)
        except ValueError:
            raise _option_error(self.line, f"--{name} {text!r} is not {noun}", f"write --{name} {default}") from None
        if not math.isfinite(value) or value < low or (high is not None and value > high):
            span = f"{low}..{high}" if high is not None else f"{low} or more"
            raise _option_error(self.line, f"--{name} {text} is out of range", f"use {span} for --{name}")
        return value

    def sampler(self, default: str) -> str:
        name = self.options.get("ss", default).lower()
        if name not in SAMPLERS:
            fix = f"use one of: {', '.join(SAMPLERS)}"
            raise _option_error(self.line, f"--ss {name!r} is not a sampler loratui has", fix)
        return name


def _option_error(line: PromptLine, problem: str, fix: str) -> UserError:
    return UserError(f"{line.named}: {problem}", line.where, fix, "config")
