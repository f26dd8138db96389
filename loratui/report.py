"""The text ``loratui check`` prints: what will be trained, then every problem found."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from loratui.check import CheckResult
from loratui.core.terminal_text import escape_controls
from loratui.dataset import DatasetReport
from loratui.errors import Problem
from loratui.families import lora_parts, text_encoder_parts, trains
from loratui.held_out import held_out_summary
from loratui.params import LYCORIS_NAMES
from loratui.quantities import count, noun_for
from loratui.save_plan import output_summary
from loratui.scheduler_rules import schedule_text

_LABEL = {"error": "error  ", "warning": "warning", "note": "note   "}
_ORDER = {"error": 0, "warning": 1, "note": 2}


class _EscapedLines:
    """Writes to ``out`` with every control character escaped but the line breaks: the report
    shows folder, file and model names, which whoever made the files chose (a name can hold
    escape sequences that set the title, write the clipboard or clear the screen)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def write(self, text: str) -> None:
        self.out.write(escape_controls(text, keep="\n"))


def print_problems(problems: list[Problem], out: TextIO) -> None:
    out = _EscapedLines(out)
    for problem in sorted(problems, key=lambda p: _ORDER.get(p.severity, 3)):
        out.write(f"  {_LABEL.get(problem.severity, problem.severity)}  {problem}\n")


def _concept_lines(dataset: DatasetReport, batch_size: int) -> list[str]:
    lines = []
    for concept in (*dataset.concepts, *dataset.reg_concepts):
        # escaped before it is padded, so that the columns stay aligned
        label = escape_controls(("reg " if concept.is_reg else "") + concept.folder.name)
        captions = concept.captioned
        buckets = ", ".join(f"{w}x{h}: {n}" for (w, h), n in sorted(concept.bucket_counts.items()))
        images, repeats = len(concept.images), concept.repeats
        lines.append(  # the nouns padded to one width, so that the columns stay aligned
            f"  {label:<26} {images:>4} {noun_for(images, 'image'):<6} x {repeats:>3} {noun_for(repeats, 'repeat'):<7}"
            f" = {images * repeats:>5}   captions {captions}/{images}   buckets {buckets}"
        )
    return lines


def network_kind(net) -> str:
    """A LyCORIS network in words, ``LyCORIS LoKr (full) + DoRA``; "" for kohya's plain LoRA (LoCon included)."""
    if net.type == "lora":
        return ""
    return f"LyCORIS {LYCORIS_NAMES.get(net.type, net.type)} ({net.preset})" + (" + DoRA" if net.dora else "")


def print_check_report(config_path: Path, result: CheckResult, out: TextIO) -> None:
    out = _EscapedLines(out)
    cfg = result.config
    out.write(f"Config   {config_path}\n")
    out.write(f"Model    {cfg.model.path} ({cfg.model.family})\n")
    net = cfg.network
    conv = f", conv rank {net.conv_rank} alpha {net.conv_alpha:g}" if net.conv_rank else ""
    kind = network_kind(net) or "LoRA"
    out.write(
        f"Network  {kind} rank {net.rank}, alpha {net.alpha:g} (scale {net.alpha / max(net.rank, 1):.3g}){conv}\n"
    )
    denoiser = lora_parts(cfg.model.family)[0]
    te = ", ".join(
        f"{part.label} LR {float(cfg.get(part.lr_setting)):g}" if trains(cfg, part) else f"{part.label} frozen"
        for part in text_encoder_parts(cfg.model.family)
    )
    unet = f"{denoiser.label} LR {cfg.optimizer.unet_lr:g}" if trains(cfg, denoiser) else f"{denoiser.label} frozen"
    out.write(f"Optim    {cfg.optimizer.name}, {unet}, {te}, {schedule_text(cfg)}\n")
    dataset = result.dataset
    if dataset is not None:
        folders = str(dataset.image_dir) if dataset.image_dir is not None else ""
        if cfg.subsets:  # each [[subsets]] table is one concept line below
            folders += (" + " if folders else "") + count(len(cfg.subsets), "[[subsets]] table")
        out.write(f"Dataset  {folders}" + (f" (reg: {dataset.reg_dir})" if dataset.reg_dir else "") + "\n")
        for line in _concept_lines(dataset, cfg.training.batch_size):
            out.write(line + "\n")
        if dataset.held_out:  # out of the folders above: counted in no step
            out.write(f"  {held_out_summary(dataset)}\n")
    if result.schedule is not None:
        s = result.schedule
        reg = (
            f" (+{dataset.num_items_per_epoch - _train_items(dataset)} reg)"
            if dataset and dataset.num_reg_images
            else ""
        )
        out.write(
            f"Steps    {_train_items(dataset)} images x repeats{reg} per epoch, batch {cfg.training.batch_size}"
            + (
                f", accumulation {cfg.training.gradient_accumulation_steps}"
                if cfg.training.gradient_accumulation_steps > 1
                else ""
            )
            + f" -> {count(s.steps_per_epoch, 'step')} per epoch x {count(s.epochs, 'epoch')}"
            f" = {count(s.total_steps, 'step')}\n"
        )
    out.write(
        f"Output   {cfg.resolve(cfg.output.output_dir) / cfg.output.name}.safetensors"
        + output_summary(cfg, result.schedule)  # every n epochs/steps, with the files written and kept
        + "\n"
    )
    for line in result.memory:  # the VRAM estimate (loratui.memory_check)
        out.write(line + "\n")
    if result.problems:
        out.write("\nProblems:\n")
        print_problems(result.problems, out)
    errors = len(result.errors)
    fix = "Fix them" if errors != 1 else "Fix it"
    out.write(
        "\n"
        + (
            f"{count(errors, 'error')}: training would fail. {fix} and run `loratui check` again.\n"
            if errors
            else "OK: ready to train.\n"
        )
    )


def _train_items(dataset: DatasetReport | None) -> int:
    return sum(len(c.images) * c.repeats for c in dataset.concepts) if dataset else 0
