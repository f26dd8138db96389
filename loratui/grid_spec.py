"""What a checkpoint x weight grid renders, resolved from what the user typed (torch-free).

``loratui grid RUN_OR_FILES`` takes either a run (its run folder, or its job id) or LoRA files:

- a run: its events say everything: the config it trained with (so the base model and its family),
  the LoRA files it saved, in order, and its sample prompts (the default prompt);
- LoRA files: their ``ss_*`` / ``modelspec.*`` metadata (read from the safetensors header, no
  tensors loaded) give each file's family, base model and epoch, but never the base model's
  path: ``--model PATH`` or ``--config TOML`` says which model to load.

The result is a :class:`GridSpec`, written as JSON into the grid job's run folder and read by the
engine (``python -m engine.grid SPEC``). Every mistake is a UserError naming the input and the fix.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loratui.errors import UserError
from loratui.params import LYCORIS_NETWORK_MODULE
from loratui.sample_prompts import PromptLine, SamplePrompt, parse_prompt

SPEC_FORMAT = 1
LORA_KINDS = ("epoch", "step", "final", "stop", "manual")  # checkpoint events of LoRA files (not "state")
MAX_WEIGHT = 10.0  # a LoRA weight beyond +-10 renders noise; far past any use
MAX_CELLS = 400


@dataclass(frozen=True)
class GridRow:
    """One checkpoint: a row of the grid."""

    path: str  # absolute path of the LoRA file
    label: str  # what the row is called in the image: "epoch 2", else the file's name
    epoch: int | None = None
    step: int | None = None


@dataclass
class GridSpec:
    """Everything the engine needs to render the grid, and the image needs to be labelled."""

    config: dict  # the run config as in TOML (loads the base model through its family)
    config_dir: str  # the folder the config's relative paths resolve against
    family: str
    rows: list[GridRow]
    weights: list[float]
    prompt: SamplePrompt
    output: str  # absolute path of the PNG to write
    source: str  # the run id or "files", for the title and the PNG's metadata
    validation_losses: list[float | None] = field(default_factory=list)  # per row, when the run measured them
    best_row: int | None = None  # the row the validation loss favours (loratui.core.checkpoint_losses)
    format: int = SPEC_FORMAT

    @property
    def cells(self) -> int:
        return len(self.rows) * len(self.weights)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> GridSpec:
        data = json.loads(text)
        if data.get("format") != SPEC_FORMAT:
            raise ValueError("not a grid spec of this loratui version")
        data["rows"] = [GridRow(**row) for row in data["rows"]]
        data["prompt"] = SamplePrompt(**data["prompt"])
        return cls(**data)


# ----------------------------------------------------------------------------- weights and output
def parse_weights(text: str) -> list[float]:
    """``0.4,0.6,0.8,1.0`` as numbers; a UserError for anything that is not a list of numbers."""
    fix = "give numbers separated by commas, e.g. --weights 0.4,0.6,0.8,1.0"
    words = [word.strip() for word in text.split(",")]
    if not text.strip() or any(not word for word in words):
        raise UserError(f"{text!r} is not a list of weights", "--weights", fix)
    weights = []
    for word in words:
        try:
            weight = float(word)
        except ValueError:
            raise UserError(f"{word!r} is not a number", "--weights", fix) from None
        if not math.isfinite(weight) or abs(weight) > MAX_WEIGHT:
            raise UserError(
                f"{word} is out of range", "--weights", f"use weights from -{MAX_WEIGHT:g} to {MAX_WEIGHT:g}"
            )
        weights.append(weight)
    return weights


def check_output(path: Path) -> Path:
    """``path`` made absolute, once its folder is known to be writable (a PNG written after minutes
    of rendering must not fail for a typo in its name)."""
    path = Path(os.path.abspath(os.path.expanduser(str(path))))
    fix = "give --output a .png path in a folder you can write"
    if path.suffix.lower() != ".png":
        raise UserError(f"{path} is not a .png file name", "--output", fix, "output")
    if path.is_dir():
        raise UserError(f"{path} is a folder", "--output", fix, "output")
    folder = path.parent
    if not folder.is_dir():
        raise UserError(f"the folder {folder} does not exist", "--output", fix, "output")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"cannot write {path}: permission denied", "--output", fix, "output")
    return path


def default_output(folder: Path, stem: str) -> Path:
    """A new PNG beside the LoRA files, never an earlier grid's: ``<stem>-grid-YYYYmmdd-HHMMSS.png``."""
    return folder / f"{stem}-grid-{time.strftime('%Y%m%d-%H%M%S')}.png"


# ----------------------------------------------------------------------------- the prompt
def grid_prompt(cfg, text: str | None, seed: int | None, default: str | None) -> SamplePrompt:
    """The grid's prompt: ``--prompt`` (kohya options such as ``--s 20 --w 768`` allowed at its end),
    else the run's first sample prompt; ``--seed`` wins over a ``--d`` in it."""
    if text is None or not text.strip():
        text = default
    if text is None or not text.strip():
        raise UserError(
            "no prompt: this run has no sample prompts", "--prompt", 'give one, e.g. --prompt "ohwx woman, portrait"'
        )
    prompt = parse_prompt(PromptLine(text, "--prompt", "--prompt"), 0, cfg)
    if seed is not None:
        prompt = SamplePrompt(**{**asdict(prompt), "seed": seed})
    return prompt


def first_sample_prompt(cfg) -> str | None:
    """The run's first sample prompt as written (options kept), or None when it has none."""
    from loratui.sample_prompts import prompt_lines

    try:
        lines = prompt_lines(cfg)
    except UserError:  # its prompt file went away since the run: the user gives one instead
        return None
    return lines[0].text if lines else None


# ----------------------------------------------------------------------------- a run
@dataclass
class RunCheckpoints:
    """What a finished (or running) run offers a grid: its config and its LoRA files, in order."""

    run_id: str
    config: dict
    config_dir: str
    rows: list[GridRow]
    summary: object  # the RunSummary folded from its events (validation losses for the pick view)
    output_dir: Path
    folder: Path  # the run folder


def run_folder_of(text: str) -> Path:
    """The run folder ``text`` names: a folder holding ``events.jsonl``, or a job's id (or prefix)."""
    from loratui.jobs.record import EVENTS_FILE
    from loratui.jobs.registry import find_job

    path = Path(os.path.expanduser(text))
    if path.is_dir():
        if not (path / EVENTS_FILE).is_file():
            raise UserError(
                f"{path} is not a run folder (it has no {EVENTS_FILE})",
                text,
                "give a run folder under the project's log/ folder, a job id (`loratui jobs` lists them), "
                "or LoRA .safetensors files with --model",
            )
        return path.resolve()
    return find_job(text, running_only_default=False).folder


def run_checkpoints(folder: Path) -> RunCheckpoints:
    """The run's config and its LoRA files, oldest first; a UserError when they cannot make a grid."""
    from loratui.jobs.rebuild import rebuild
    from loratui.jobs.record import EVENTS_FILE

    summary, _ = rebuild(folder / EVENTS_FILE)
    if not summary.config:
        raise UserError(
            f"run {folder.name} never started training, so it has no checkpoints", str(folder), "pick another run"
        )
    rows, seen = [], set()
    for checkpoint in sorted(summary.checkpoints, key=lambda c: c.step):
        if checkpoint.kind not in LORA_KINDS or checkpoint.path in seen:
            continue
        seen.add(checkpoint.path)
        rows.append(GridRow(checkpoint.path, _row_label(checkpoint), checkpoint.epoch, checkpoint.step))
    missing = [row.path for row in rows if not Path(row.path).is_file()]
    if missing:
        raise UserError(
            f"the LoRA file {missing[0]} this run saved is gone", missing[0], "put it back, or give the files to use"
        )
    if len(rows) < 2:
        saved = "only one" if rows else "none"
        raise UserError(
            f"a grid compares checkpoints: this run saved {saved}",
            str(folder),
            "set output.save_every_n_epochs (e.g. 1) so that the run saves a LoRA every epoch, and train again",
        )
    output_dir = Path(rows[-1].path).parent
    config_dir = summary.config_dir or str(folder)
    return RunCheckpoints(folder.name, summary.config, config_dir, rows, summary, output_dir, folder)


def _row_label(checkpoint) -> str:
    if checkpoint.kind in ("epoch", "final"):
        return f"epoch {checkpoint.epoch}"
    return f"step {checkpoint.step}"


# ----------------------------------------------------------------------------- LoRA files
# modelspec.architecture of the LoRA (what loratui and sd-scripts write) -> model.family.
ARCHITECTURE_FAMILIES = (
    ("stable-diffusion-xl", "sdxl"),
    ("stable-diffusion-v2", "sd2"),
    ("stable-diffusion-v1", "sd1"),
    ("flux-1", "flux"),
)
# kohya's ss_base_model_version for files without a model spec.
BASE_VERSION_FAMILIES = (("sdxl", "sdxl"), ("sd_v2", "sd2"), ("sd_v1", "sd1"), ("flux", "flux"))
FAMILY_NAMES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "flux": "FLUX.1"}


@dataclass(frozen=True)
class LoraFile:
    path: Path
    family: str | None
    base_model: str  # ss_sd_model_name, "" when unknown
    epoch: int | None
    step: int | None


def read_lora_file(text: str) -> LoraFile:
    """A LoRA file's facts from its header alone; a UserError when it is missing or no LoRA."""
    from loratui.model_files import ModelFileError, safetensors_header

    path = Path(os.path.abspath(os.path.expanduser(text)))
    fix = "give the LoRA .safetensors files a run saved (its output_dir)"
    if not path.exists():
        raise UserError(f"{path} does not exist", text, fix)
    if not path.is_file() or path.suffix.lower() != ".safetensors":
        raise UserError(f"{path} is not a .safetensors file", text, fix)
    try:
        header = safetensors_header(path)
    except (ModelFileError, OSError) as exc:
        raise UserError(f"{path} cannot be read as safetensors: {exc}", text, fix) from None
    meta = header.metadata
    if meta.get("ss_network_module") == LYCORIS_NETWORK_MODULE:
        # diffusers' loader, which the grid renders with, reads kohya LoRA files only (no LoHa, LoKr, iA3).
        raise UserError(
            f"{path} is a LyCORIS file ({_lycoris_algo(meta)}): the grid renders kohya LoRA files only",
            text,
            "compare LyCORIS checkpoints in ComfyUI or A1111/Forge, or with the samples rendered while training",
        )
    if not any(".lora_down." in name or ".lora_A." in name for name in header.shapes):
        raise UserError(f"{path} holds no LoRA weights", text, fix)
    return LoraFile(
        path, _family_of(meta), meta.get("ss_sd_model_name", ""), _int(meta, "ss_epoch"), _int(meta, "ss_steps")
    )


def _lycoris_algo(meta: dict[str, str]) -> str:
    try:
        return str(json.loads(meta.get("ss_network_args", "{}")).get("algo", "LyCORIS"))
    except (ValueError, AttributeError):
        return "LyCORIS"


def _family_of(meta: dict[str, str]) -> str | None:
    architecture = meta.get("modelspec.architecture", "")
    for start, family in ARCHITECTURE_FAMILIES:
        if architecture.startswith(start):
            return family
    version = meta.get("ss_base_model_version", "")
    for start, family in BASE_VERSION_FAMILIES:
        if version.startswith(start):
            return family
    if "ss_v2" in meta:
        return "sd2" if meta["ss_v2"] == "True" else "sd1"
    return None


def _int(meta: dict[str, str], key: str) -> int | None:
    try:
        return int(meta[key])
    except (KeyError, ValueError):
        return None


def file_rows(texts: list[str]) -> tuple[list[GridRow], str | None]:
    """The files as rows (in the order given) and their shared family; a UserError when they are of
    different families or base models (a grid compares one model's checkpoints)."""
    files = [read_lora_file(text) for text in texts]
    if len(files) < 2:
        raise UserError(
            "a grid compares checkpoints: give two or more LoRA files (or a run)",
            texts[0] if texts else "FILES",
            "list every epoch's file, e.g. model/name-000001.safetensors model/name-000002.safetensors",
        )
    families = {file.family for file in files if file.family}
    if len(families) > 1:
        shown = ", ".join(f"{f.path.name} is {FAMILY_NAMES.get(f.family or '', 'unknown')}" for f in files)
        raise UserError(
            f"the files are of different model families ({shown})", "FILES", "give LoRA files of one model family"
        )
    bases = {file.base_model for file in files if file.base_model}
    if len(bases) > 1:
        shown = ", ".join(f"{f.path.name} on {f.base_model}" for f in files if f.base_model)
        raise UserError(
            f"the files were trained on different base models ({shown})",
            "FILES",
            "give LoRA files trained on one base model",
        )
    rows = [GridRow(str(f.path), f"epoch {f.epoch}" if f.epoch else f.path.stem, f.epoch, f.step) for f in files]
    if len({row.label for row in rows}) < len(rows):  # two runs' "epoch 1": the file names tell them apart
        rows = [GridRow(row.path, Path(row.path).stem, row.epoch, row.step) for row in rows]
    return rows, families.pop() if families else None


def files_config(model: str | None, config: str | None, family: str | None) -> tuple[dict, str]:
    """The config (as TOML data) and its folder for LoRA files: ``--config`` as it is, or a config
    of ``--model`` and the files' family."""
    from loratui.config import config_to_dict, load_config

    if config:
        cfg = load_config(config)
        data = config_to_dict(cfg)
        if model:
            data["model"]["path"] = os.path.abspath(os.path.expanduser(model)) if ":" not in model else model
        if family and data["model"].get("family", family) != family:
            raise UserError(
                f"the LoRA files are {FAMILY_NAMES[family]}, the config's model.family is {data['model']['family']}",
                config,
                "give the config the files were trained with",
            )
        return data, str(cfg.base_dir)
    if not model:
        raise UserError(
            "a LoRA file does not say where its base model is",
            "--model",
            "add --model PATH (the model the files were trained on), or --config TOML (the run's config)",
        )
    path = model if model.startswith("loratui:") else os.path.abspath(os.path.expanduser(model))
    if not model.startswith("loratui:") and not Path(path).exists():
        raise UserError(f"{path} does not exist", "--model", "give the base model's folder or .safetensors file")
    data = {"model": {"path": path, **({"family": family} if family else {})}}
    return data, os.getcwd()


# ----------------------------------------------------------------------------- all together
@dataclass
class GridRequest:
    """``loratui grid``'s arguments, as typed."""

    inputs: list[str]
    weights: str = "0.4,0.6,0.8,1.0"
    prompt: str | None = None
    seed: int | None = None
    output: str | None = None
    model: str | None = None
    config: str | None = None


def is_lora_file_list(inputs: list[str]) -> bool:
    """LoRA files, not a run: every input names a .safetensors file (existing or not: a missing one
    is reported as missing, not as "no job with that id")."""
    return bool(inputs) and all(text.lower().endswith(".safetensors") for text in inputs)


def resolve_grid(request: GridRequest) -> tuple[GridSpec, RunCheckpoints | None]:
    """The spec to render, and the run it comes from (None for files); a UserError for bad input."""
    from loratui.config import config_from_dict

    weights = parse_weights(request.weights)
    run = None
    if is_lora_file_list(request.inputs):
        rows, family = file_rows(request.inputs)
        data, config_dir = files_config(request.model, request.config, family)
        source, output_folder, stem = "files", Path(rows[-1].path).parent, Path(rows[-1].path).stem
    else:
        if len(request.inputs) != 1:
            raise UserError(
                "give one run (its folder or job id), or LoRA .safetensors files",
                "RUN_OR_FILES",
                "see loratui grid --help",
            )
        run = run_checkpoints(run_folder_of(request.inputs[0]))
        rows, data, config_dir = run.rows, run.config, run.config_dir
        source, output_folder, stem = run.run_id, run.output_dir, Path(rows[-1].path).stem
    if len(rows) * len(weights) > MAX_CELLS:
        raise UserError(
            f"{len(rows)} checkpoints x {len(weights)} weights is {len(rows) * len(weights)} images",
            "--weights",
            f"keep the grid under {MAX_CELLS} images: fewer weights, or fewer files",
        )
    cfg = config_from_dict(data, Path(config_dir))
    prompt = grid_prompt(cfg, request.prompt, request.seed, first_sample_prompt(cfg))
    output = check_output(Path(request.output) if request.output else default_output(output_folder, stem))
    spec = GridSpec(
        config=data,
        config_dir=config_dir,
        family=cfg.model.family,
        rows=rows,
        weights=weights,
        prompt=prompt,
        output=str(output),
        source=source,
        validation_losses=row_losses(run) if run else [],
        best_row=best_row(run) if run else None,
    )
    return spec, run


def row_losses(run: RunCheckpoints) -> list[float | None]:
    """Each row's held-out validation loss: the one measured at its step, when the run measured one."""
    from loratui.core.checkpoint_losses import checkpoint_losses

    by_path = {checkpoint.path: loss for checkpoint, loss in checkpoint_losses(run.summary)}
    return [by_path.get(row.path) for row in run.rows]


def best_row(run: RunCheckpoints) -> int | None:
    """The row of the checkpoint the validation loss favours, or None (no validation measured)."""
    from loratui.core.checkpoint_losses import best_checkpoint

    best = best_checkpoint(run.summary)
    return next((index for index, row in enumerate(run.rows) if best and row.path == best.path), None)
