"""Is a config ready to train? Every problem at once, each naming its setting and the fix.

Three layers, in order:

1. each setting against its own declaration (:mod:`loratui.params`): range, multiple, choices,
   control characters in text;
2. the rules across settings and against the disk (:mod:`loratui.rules`), skipped for settings
   that already failed 1;
3. what this machine and these files allow (:mod:`loratui.preflight`): a GPU for mixed
   precision, an installed attention backend, a model file that really is a model, a tokenizer
   for a single-file checkpoint, optimizer arguments the optimizer takes.

The wizard runs it on every keystroke: everything slow in it is cached.

Needs no dataset (``loratui.check.check_run`` adds the dataset scan and the schedule).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING

from loratui import rules
from loratui.errors import Problem, error, failed_settings
from loratui.families import setting_applies
from loratui.outputs import NAME_MAX
from loratui.params import BUILTIN_PREFIX, SETTINGS, Setting
from loratui.preflight import preflight

PATH_MAX = 4096  # bytes in one path (Linux); NAME_MAX is one name's

if TYPE_CHECKING:
    from loratui.config import RunConfig


def validate(cfg: RunConfig) -> list[Problem]:
    """Every problem in cfg; an empty list (or notes and warnings only) means ready to train."""
    declared = [problem for setting in SETTINGS for problem in setting_problems(setting, cfg)]
    failed = failed_settings(declared)
    found = [*declared, *rules.rule_problems(cfg, skip=failed)]
    return [*found, *preflight(cfg, found)]


def setting_problems(setting: Setting, cfg: RunConfig) -> list[Problem]:
    """One setting checked against its declaration alone."""
    if setting.when is not None and not setting.when.holds(cfg):
        return []  # it does not matter in this config (bucket sides without buckets)
    if not setting_applies(setting.families, str(cfg.model.family)):
        return []  # a setting of other model families (clip skip for SDXL): unused, so not judged
    value = cfg.get(setting.name)
    if setting.choices:
        return _choice_problems(setting, str(value))
    if setting.type in (int, float):
        return _range_problems(setting, value)  # type: ignore[arg-type]
    if setting.type is str:
        return _text_problems(setting, str(value))
    return []


def _choice_problems(setting: Setting, value: str) -> list[Problem]:
    if value in setting.choices:
        return []
    choices = ", ".join(setting.choices)
    if value.lower() in setting.not_yet:
        message = f"{setting.key} {value!r} is not supported yet; loratui does {choices} for now"
        return [error(setting.name, message, f"use one of: {choices}")]
    by_lower = {choice.lower(): choice for choice in setting.choices}
    close = difflib.get_close_matches(value.lower(), by_lower, n=1)
    suggestion = f"; did you mean '{by_lower[close[0]]}'?" if close else ""
    return [error(setting.name, f"{value!r} is not a valid choice{suggestion}", f"use one of: {choices}")]


def _range_problems(setting: Setting, value: float) -> list[Problem]:
    low, high = setting.minimum, setting.maximum
    shown = _shown_number(value)
    if low is not None and (value <= low if setting.above_minimum else value < low):
        if setting.above_minimum:
            what = f"must be above {low:g}"
        else:
            what = "is negative" if low == 0 else f"is below {low:g}"
    elif high is not None and value > high:
        what = f"is above {high:_}" if isinstance(high, int) else f"is above {high:g}"
    elif setting.multiple_of and value % setting.multiple_of:
        nearest = round(value / setting.multiple_of) * setting.multiple_of
        nearest = min(max(nearest, low or setting.multiple_of), high or nearest)
        message = f"{setting.key} {shown} is not a multiple of {setting.multiple_of}"
        return [error(setting.name, message, f"use {nearest}")]
    else:
        return []
    message = f"{setting.key} {shown} {what} (allowed: {setting.range_text()})"
    return [error(setting.name, message, setting.range_fix)]


def _shown_number(value: float) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    digits = str(value)
    # A pasted run of hundreds of digits would fill the screen; its length says enough.
    return digits if len(digits) <= 24 else f"of {len(digits.lstrip('-'))} digits"


def _text_problems(setting: Setting, value: str) -> list[Problem]:
    problems = _control_character_problems(setting, value)
    if problems or setting.kind not in ("path", "dir"):
        return problems
    longest = max(value.split("/"), key=lambda part: len(part.encode()))
    if len(longest.encode()) > NAME_MAX or len(value.encode()) > PATH_MAX:
        # The file system refuses such a name outright (ENAMETOOLONG) whatever is done with it.
        too_long = (
            f"the name {longest[:40]!r}... is {len(longest.encode())} bytes"
            if len(longest.encode()) > NAME_MAX
            else f"the path is {len(value.encode())} bytes"
        )
        message = f"{setting.key} is too long for a file system: {too_long}"
        return [error(setting.name, message, f"use at most {NAME_MAX} bytes per name, {PATH_MAX} in all")]
    if setting.kind == "dir" and value.startswith(BUILTIN_PREFIX):
        message = f"{setting.key} {value!r} names a built-in model, not a folder"
        return [error(setting.name, message, "give a folder path; only model.path takes loratui: names")]
    if value.startswith("~"):
        try:
            Path(value).expanduser()
        except RuntimeError:  # "~nosuchuser/img": no such user, so no home folder to expand
            user = value[1:].split("/", 1)[0]
            message = f"{setting.key} {value!r} starts with ~{user}, but there is no user {user!r} here"
            problems.append(error(setting.name, message, "write the full path, or ~/ for your own home folder"))
    return problems


def _control_character_problems(setting: Setting, value: str) -> list[Problem]:
    # A NUL byte cannot be in a file name and makes every path call fail; other control
    # characters in a name or path would be printed raw to terminals.
    allowed = "\t\n" if setting.free_text else ""
    bad = sorted({char for char in value if (ord(char) < 32 or ord(char) == 127) and char not in allowed})
    if not bad:
        return []
    shown = ", ".join(repr(char) for char in bad)
    message = f"{setting.key} contains the control character{'s' if len(bad) > 1 else ''} {shown}"
    return [error(setting.name, message, "remove it; names and paths are plain text")]
