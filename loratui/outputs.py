"""The files a run writes in ``output.output_dir``, and the rule that no run overwrites another's.

Names (``<name>`` is ``output.name``; each LoRA file may have a resumable state folder beside it):

- ``<name>-000003.safetensors`` (+ ``<name>-000003-state/``): every ``save_every_n_epochs`` epochs;
- ``<name>-step00000057.safetensors`` (+ state): every ``save_every_n_steps`` steps, and on a
  stop or a ``save`` command;
- ``<name>.safetensors`` (+ ``<name>-state/``): at the end.

``save_last_n_epochs``/``save_last_n_steps`` (and their ``_state`` variants) remove the oldest
periodic saves of the run as new ones arrive (:mod:`loratui.save_plan`).

The engine names what it saves with :func:`epoch_stem`, :func:`step_stem`, :func:`final_stem`,
:func:`lora_file` and :func:`state_folder`; :func:`output_problems` (part of ``loratui check``,
which the engine runs again before loading) recognises the same names. The policy:

- a fresh run refuses to start while files of its name exist in the folder (they are an earlier
  run's LoRA); ``--overwrite`` allows it;
- a resumed run writes beside the files of the run it continues, but refuses when a file it would
  write exists already: one saved after the state it resumes from, by the run that went on from
  that state or by another resume of it. ``--overwrite`` allows that too.

:func:`output_name_problems` refuses names the engine could not write all of those files under
(hidden, taken for an option, or over the file system's 255 bytes with every suffix added).

:func:`clean_interrupted_saves` removes what a killed save left behind (hidden temp files and
folders, by :mod:`loratui.atomic`'s names) for this run's name only, never anything else.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from loratui.atomic import ASIDE_NAME, TEMP_NAME, aside_path_for, restore_aside, temp_path_for
from loratui.config import RunConfig
from loratui.errors import Problem

LORA_SUFFIX = ".safetensors"
STATE_SUFFIX = "-state"
OVERWRITE_FLAG = "--overwrite"


def final_stem(name: str) -> str:
    return name


def epoch_stem(name: str, epoch: int) -> str:
    return f"{name}-{epoch:06d}"


def step_stem(name: str, step: int) -> str:
    return f"{name}-step{step:08d}"


def lora_file(stem: str) -> str:
    return f"{stem}{LORA_SUFFIX}"


def state_folder(stem: str) -> str:
    return f"{stem}{STATE_SUFFIX}"


@dataclass(frozen=True)
class OutputFile:
    """One file or state folder of a run, recognised by its name."""

    path: Path
    epoch: int | None = None  # set for an epoch save
    step: int | None = None  # set for a step save (stop, save command)

    @property
    def is_final(self) -> bool:
        return self.epoch is None and self.step is None

    @property
    def is_state(self) -> bool:
        return self.path.name.endswith(STATE_SUFFIX) or self.path.name.endswith(f"{STATE_SUFFIX}.old")


def _output_name_pattern(name: str) -> str:
    """What :func:`lora_file`/:func:`state_folder` of any stem of ``name`` look like."""
    return (
        rf"{re.escape(name)}(?:-(?P<epoch>\d{{6}})|-step(?P<step>\d{{8}}))?"
        rf"(?:{re.escape(LORA_SUFFIX)}|{re.escape(STATE_SUFFIX)})"
    )


def parse_output(name: str, path: Path) -> OutputFile | None:
    """``path`` as one of the outputs of a run named ``name``, or None when it is not one."""
    match = re.fullmatch(_output_name_pattern(name), path.name)
    if match is None:
        return None
    epoch, step = match["epoch"], match["step"]
    return OutputFile(path, int(epoch) if epoch else None, int(step) if step else None)


def existing_outputs(out_dir: Path, name: str) -> list[OutputFile]:
    """The outputs of runs named ``name`` in ``out_dir``: the final LoRA first, then by name.
    A state folder a killed save left moved aside (``.<stem>-state.old``) counts: the next
    engine puts it back."""
    try:
        entries = list(out_dir.iterdir())
    except (OSError, ValueError):  # ValueError: a NUL byte, which validation reports
        return []
    found = []
    for entry in entries:
        aside = ASIDE_NAME.match(entry.name)
        output = parse_output(name, entry.with_name(aside["target"]) if aside else entry)
        if output is not None and (not aside or not output.path.exists()):
            found.append(OutputFile(entry, output.epoch, output.step))
    return sorted(found, key=lambda output: (not output.is_final, output.is_state, output.path.name))


@dataclass(frozen=True)
class ResumePoint:
    """Where a state folder stands: ``epoch`` is the 0-based epoch in progress (its count of
    finished epochs), as the state's ``progress.json`` has it."""

    step: int
    epoch: int


def read_resume_point(state: Path) -> ResumePoint | None:
    """The state's position, or None when it cannot be read (the engine reports that)."""
    try:
        data = json.loads((state / "progress.json").read_text(encoding="utf-8"))
        return ResumePoint(step=int(data["step"]), epoch=int(data["epoch"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def written_after(output: OutputFile, point: ResumePoint) -> bool:
    """Whether a run resumed at ``point`` would write ``output`` (so it exists from later on)."""
    if output.step is not None:
        return output.step > point.step
    if output.epoch is not None:
        return output.epoch > point.epoch
    return True  # the final files are written at the end of every run


def output_problems(cfg: RunConfig, overwrite: bool = False) -> list[Problem]:
    """An error at ``output.name`` when the run would overwrite files of an earlier run."""
    name = cfg.output.name
    if overwrite or not name.strip() or "/" in name or "\\" in name or not cfg.output.output_dir.strip():
        return []  # no rule to apply, or a bad name or folder that validation reports
    clashes = existing_outputs(cfg.resolve(cfg.output.output_dir), name)
    resume = cfg.training.resume_from.strip()
    if resume and clashes:
        point = read_resume_point(cfg.resolve(resume))
        if point is None:
            return []  # not a readable state: the resume check says so
        clashes = [output for output in clashes if written_after(output, point)]
    if not clashes:
        return []
    shown = _shown(cfg, clashes[0].path)
    more = f" (and {len(clashes) - 1} more of its files)" if len(clashes) > 1 else ""
    if resume:
        message = (
            f"{shown} exists{more}, saved after the state you resume from (by the run that went on from it, "
            f"or another resume of it); this run would overwrite it"
        )
        fix = f"resume from the newest state, set another output.name, move the files, or run with {OVERWRITE_FLAG}"
    else:
        message = f"{shown} exists from an earlier run{more}; this run would overwrite it"
        fix = f"set another output.name, move the files, or run with {OVERWRITE_FLAG}"
    return [Problem("output.name", message, fix)]


def _shown(cfg: RunConfig, path: Path) -> str:
    """``path`` relative to the config's folder when it is inside it (``model/ohwx.safetensors``)."""
    try:
        return str(path.relative_to(cfg.base_dir))
    except ValueError:
        return str(path)


def clean_interrupted_saves(cfg: RunConfig) -> list[str]:
    """Remove what killed saves of this run's name left in its output folder: hidden temp files
    and folders; a state folder left moved aside is put back when its replacement never arrived.
    Only names :mod:`loratui.atomic` makes for this run's outputs are touched (another run's
    in-flight temp files in a shared folder have another name). Returns one line per item."""
    name = cfg.output.name
    if not name.strip() or "/" in name or "\\" in name or not cfg.output.output_dir.strip():
        return []
    out_dir = cfg.resolve(cfg.output.output_dir)
    try:
        entries = sorted(out_dir.iterdir())
    except (OSError, ValueError):  # ValueError: a NUL byte, which validation reports
        return []
    done = []
    for entry in entries:
        temp, aside = TEMP_NAME.match(entry.name), ASIDE_NAME.match(entry.name)
        target = temp or aside
        if target is None or parse_output(name, entry.with_name(target["target"])) is None:
            continue
        try:
            if aside:
                done.append(f"{restore_aside(entry)} {entry.name}")
            elif entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
                done.append(f"removed {entry.name}")
            else:
                entry.unlink()
                done.append(f"removed {entry.name}")
        except OSError as exc:
            done.append(f"could not remove {entry.name}: {exc.strerror or exc}")
    return done


# ---------------------------------------------------------------------------------------------
# The name itself: every file the engine writes must be a safe, possible file name.

NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows file systems


def engine_file_names(name: str) -> list[str]:
    """Every file and folder name the engine writes for ``output.name``, hidden temporaries too."""
    stems = [final_stem(name), epoch_stem(name, 1), step_stem(name, 1)]
    names = [lora_file(stem) for stem in stems] + [state_folder(stem) for stem in stems]
    return [*names, *(temp_path_for(Path(n)).name for n in names), *(aside_path_for(Path(n)).name for n in names)]


def output_name_problems(name: str) -> list[Problem]:
    """What makes ``name`` unusable for the files the engine writes (hidden, option-like, too long)."""
    if name in (".", ".."):
        return [Problem("output.name", f"name {name!r} is no file name", 'set name, e.g. name = "mylora"')]
    if name.startswith("."):
        return [
            Problem(
                "output.name",
                f"name {name!r} starts with '.': the LoRA files would be hidden",
                f'drop the dot: name = "{name.lstrip(".") or "mylora"}"',
            )
        ]
    if name.startswith("-"):
        return [
            Problem(
                "output.name",
                f"name {name!r} starts with '-': commands would take the file names for options",
                f'drop the dash: name = "{name.lstrip("-") or "mylora"}"',
            )
        ]
    longest = max(engine_file_names(name), key=lambda file: len(file.encode()))
    over = len(longest.encode()) - NAME_MAX
    if over > 0:
        allowed = len(name.encode()) - over
        temp = re.sub(r"\.[0-9a-f]{12}\.tmp$", ".<12 hex digits>.tmp", longest.replace(name, "NAME", 1))
        return [
            Problem(
                "output.name",
                f"name is {len(name.encode())} bytes long: with what the engine adds to it "
                f"({temp}) a file name would be {len(longest.encode())} bytes, over the "
                f"{NAME_MAX}-byte limit",
                f"shorten the name to {allowed} bytes or less",
            )
        ]
    return []
