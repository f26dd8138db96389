"""The settings of one training run, stored as a TOML file.

A run config has six sections. Every key is optional: a missing key takes the default shown.

    [model]                      # the base model the LoRA is trained against
    path = "models/sd15"         # diffusers folder, .safetensors/.ckpt file, or "loratui:tiny-sd"
    family = "sd1"               # sd1 | sd2
    v_prediction = false
    tokenizer = ""
    clip_skip = 1

    [dataset]                    # where the images are and how they are sized
    image_dir = "img"
    reg_dir = ""
    caption_extension = ".txt"
    resolution = 512
    enable_buckets = true
    min_bucket_reso = 256
    max_bucket_reso = 1024
    bucket_reso_steps = 64
    cache_latents = "memory"     # off | memory | disk

    [network]                    # the shape of the LoRA (kohya: network_dim, network_alpha)
    rank = 32
    alpha = 16.0
    conv_rank = 0
    conv_alpha = 1.0

    [training]                   # how long and how the run goes
    batch_size = 1
    epochs = 10
    max_train_steps = 0
    gradient_accumulation_steps = 1
    mixed_precision = "bf16"     # no | fp16 | bf16
    gradient_checkpointing = false
    attention = "sdpa"           # sdpa | xformers
    seed = 42
    noise_offset = 0.0
    min_snr_gamma = 0.0
    max_grad_norm = 1.0
    resume_from = ""

    [optimizer]                  # optimizer, learning rates and schedule
    name = "AdamW8bit"
    args = []                    # kohya-style "key=value" strings, e.g. ["weight_decay=0.01"]
    unet_lr = 1e-4
    text_encoder_lr = 5e-5
    scheduler = "cosine"
    warmup_steps = 0
    scheduler_cycles = 1
    scheduler_power = 1.0

    [output]                     # what gets written, and where
    name = "lora"
    output_dir = "model"
    log_dir = "log"
    save_every_n_epochs = 1
    save_precision = "fp16"      # fp16 | bf16 | float
    save_state = true
    comment = ""

Relative paths are resolved against the folder of the TOML file (``RunConfig.base_dir``), so a
project folder can be moved or shared as a whole.

Loading checks types and names only, and reports every such mistake at once (``load_config``);
``validate`` then checks ranges and choices and returns a list of ``Problem``s for the user.
This module never imports torch or any other part of the training engine.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from loratui.atomic import write_text_atomic
from loratui.errors import Problem, UserError

# ---------------------------------------------------------------------------------------------
# Choices. Kept as tuples in the order a user would read them in a help text or an error's fix.

MODEL_FAMILIES = ("sd1", "sd2")
UNSUPPORTED_FAMILIES = ("sdxl", "flux")
BUILTIN_PREFIX = "loratui:"
BUILTIN_MODELS = ("loratui:tiny-sd", "loratui:sd15-random")
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
TOKENIZER_FILES = ("vocab.json", "merges.txt")
FAST_TOKENIZER_FILE = "tokenizer.json"
CACHE_LATENTS_CHOICES = ("off", "memory", "disk")
MIXED_PRECISION_CHOICES = ("no", "fp16", "bf16")
ATTENTION_CHOICES = ("sdpa", "xformers")
OPTIMIZERS = ("AdamW", "AdamW8bit", "Adafactor", "DAdaptAdam", "Prodigy", "Lion", "Lion8bit")
# These estimate the step size themselves; the configured LR only scales their estimate.
ADAPTIVE_OPTIMIZERS = ("DAdaptAdam", "Prodigy")
SCHEDULERS = (
    "constant",
    "constant_with_warmup",
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
)
SAVE_PRECISIONS = ("fp16", "bf16", "float")


# ---------------------------------------------------------------------------------------------
# The model. Field comments double as the help texts of the settings.


@dataclass
class ModelSettings:
    """[model]: the base model the LoRA is trained against."""

    # A local diffusers folder, one .safetensors/.ckpt checkpoint, or "loratui:tiny-sd" (built in).
    path: str = ""
    # Model architecture: "sd1" (SD 1.x) or "sd2" (SD 2.x). SDXL and Flux are not supported yet.
    family: str = "sd1"
    # Train with v-prediction; SD 2.x 768-v models need it.
    v_prediction: bool = False
    # Folder with vocab.json and merges.txt; only needed for single-file checkpoints.
    tokenizer: str = ""
    # Which CLIP layer feeds the U-Net, counted from the end: 1 = last, 2 = the one before.
    clip_skip: int = 1

    @property
    def is_builtin(self) -> bool:
        """True for a model shipped with loratui, which is named rather than stored at a path."""
        return self.path.startswith(BUILTIN_PREFIX)


@dataclass
class DatasetSettings:
    """[dataset]: the training images and how they are sized."""

    # Folder with the training images and their caption files.
    image_dir: str = "img"
    # Folder with regularisation images; "" = none.
    reg_dir: str = ""
    # Captions are read from the file with the image's name and this extension.
    caption_extension: str = ".txt"
    # Training resolution in pixels (the side of a square image of the same area).
    resolution: int = 512
    # Group images by aspect ratio instead of cropping them all to a square.
    enable_buckets: bool = True
    # Smallest bucket side in pixels.
    min_bucket_reso: int = 256
    # Largest bucket side in pixels.
    max_bucket_reso: int = 1024
    # Bucket sides are multiples of this many pixels.
    bucket_reso_steps: int = 64
    # Keep VAE latents: "off" (encode every step), "memory" (in RAM) or "disk" (beside the images).
    cache_latents: str = "memory"


@dataclass
class NetworkSettings:
    """[network]: the shape of the LoRA."""

    # LoRA rank (kohya "network_dim"): size of the low-rank update; larger learns more detail.
    rank: int = 32
    # LoRA alpha (kohya "network_alpha"): the update is scaled by alpha / rank.
    alpha: float = 16.0
    # Rank of the LoCon convolution layers; 0 = train no conv layers.
    conv_rank: int = 0
    # Alpha of the LoCon convolution layers.
    conv_alpha: float = 1.0


@dataclass
class TrainingSettings:
    """[training]: how long the run is and how each step is computed."""

    # Images per batch.
    batch_size: int = 1
    # Passes over the dataset; ignored when max_train_steps is set.
    epochs: int = 10
    # Total optimizer steps; 0 = derived from epochs.
    max_train_steps: int = 0
    # Batches whose gradients are summed before one optimizer step.
    gradient_accumulation_steps: int = 1
    # Precision of the forward pass: "no" (fp32), "fp16" or "bf16".
    mixed_precision: str = "bf16"
    # Recompute activations in the backward pass: less memory, slower steps.
    gradient_checkpointing: bool = False
    # Attention implementation: "sdpa" (PyTorch built-in) or "xformers".
    attention: str = "sdpa"
    # Random seed, for reproducible runs.
    seed: int = 42
    # Offset added to the noise; helps very dark and very bright images. 0 = off.
    noise_offset: float = 0.0
    # Min-SNR loss weighting gamma; 5 is the usual value. 0 = off.
    min_snr_gamma: float = 0.0
    # Clip the gradient norm to this value; 0 = no clipping.
    max_grad_norm: float = 1.0
    # A saved "-state" folder to continue from; "" = a fresh run.
    resume_from: str = ""


@dataclass
class OptimizerSettings:
    """[optimizer]: the optimizer, its learning rates and the LR schedule."""

    # AdamW, AdamW8bit, Adafactor, DAdaptAdam, Prodigy, Lion or Lion8bit.
    name: str = "AdamW8bit"
    # Extra optimizer arguments as "key=value" strings, as in kohya's optimizer_args.
    args: list[str] = field(default_factory=list)
    # Learning rate of the U-Net LoRA.
    unet_lr: float = 1e-4
    # Learning rate of the text encoder LoRA; 0 freezes the text encoder.
    text_encoder_lr: float = 5e-5
    # LR schedule: constant, constant_with_warmup, linear, cosine, cosine_with_restarts, polynomial.
    scheduler: str = "cosine"
    # Steps over which the LR ramps up from 0.
    warmup_steps: int = 0
    # Number of restarts for cosine_with_restarts.
    scheduler_cycles: int = 1
    # Power of the polynomial schedule.
    scheduler_power: float = 1.0


@dataclass
class OutputSettings:
    """[output]: the files a run writes and where they go."""

    # File stem of the LoRA: <name>.safetensors, and <name>-000001.safetensors per saved epoch.
    name: str = "lora"
    # Folder for the LoRA files.
    output_dir: str = "model"
    # Folder for training logs.
    log_dir: str = "log"
    # Save a checkpoint every n epochs; 0 = only the final file.
    save_every_n_epochs: int = 1
    # Precision of the saved weights: "fp16", "bf16" or "float" (fp32).
    save_precision: str = "fp16"
    # Also write a resumable "<name>-000001-state" folder beside each checkpoint.
    save_state: bool = True
    # Free text stored in the LoRA's metadata.
    comment: str = ""


@dataclass
class RunConfig:
    """Everything one training run needs, one attribute per TOML section."""

    model: ModelSettings = field(default_factory=ModelSettings)
    dataset: DatasetSettings = field(default_factory=DatasetSettings)
    network: NetworkSettings = field(default_factory=NetworkSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    # Folder of the TOML file; relative paths resolve against it. It is not saved, and equality
    # ignores it: two configs with the same settings are equal wherever their files live.
    base_dir: Path = field(default_factory=Path.cwd, compare=False)

    def resolve(self, path_str: str) -> Path:
        """The path a config field points at: ``~`` expanded, relative paths joined to base_dir.

        Empty fields mean "none" and built-in model names are no paths, so resolving either
        raises ValueError instead of silently pointing at base_dir or a made-up file.
        """
        if not path_str.strip():
            raise ValueError("an empty path field means 'none'; check it before resolving")
        if path_str.startswith(BUILTIN_PREFIX):
            raise ValueError(f"{path_str!r} names a built-in model, not a path")
        path = Path(path_str).expanduser()
        return path if path.is_absolute() else self.base_dir / path


# The TOML section names, in file order, and the dataclass each one is read into.
SECTIONS: dict[str, type] = {
    "model": ModelSettings,
    "dataset": DatasetSettings,
    "network": NetworkSettings,
    "training": TrainingSettings,
    "optimizer": OptimizerSettings,
    "output": OutputSettings,
}

# kohya sd-scripts names that users bring along, mapped to (section, key) here. Only used to
# turn "unknown key" into "this is called X here".
KOHYA_NAMES: dict[str, tuple[str, str]] = {
    "pretrained_model_name_or_path": ("model", "path"),
    "v_parameterization": ("model", "v_prediction"),
    "train_data_dir": ("dataset", "image_dir"),
    "reg_data_dir": ("dataset", "reg_dir"),
    "network_dim": ("network", "rank"),
    "network_alpha": ("network", "alpha"),
    "conv_dim": ("network", "conv_rank"),
    "train_batch_size": ("training", "batch_size"),
    "max_train_epochs": ("training", "epochs"),
    "resume": ("training", "resume_from"),
    "optimizer_type": ("optimizer", "name"),
    "optimizer_args": ("optimizer", "args"),
    "learning_rate": ("optimizer", "unet_lr"),
    "lr_scheduler": ("optimizer", "scheduler"),
    "lr_warmup_steps": ("optimizer", "warmup_steps"),
    "lr_scheduler_num_cycles": ("optimizer", "scheduler_cycles"),
    "lr_scheduler_power": ("optimizer", "scheduler_power"),
    "output_name": ("output", "name"),
    "logging_dir": ("output", "log_dir"),
    "training_comment": ("output", "comment"),
}


# ---------------------------------------------------------------------------------------------
# Loading: TOML text -> dict -> RunConfig, with every type and name mistake reported at once.


def load_config(path: str | Path) -> RunConfig:
    """Read a run config from a TOML file; raise UserError naming the file for any mistake."""
    path = Path(path).expanduser()
    where = str(path)
    data = _parse_toml(_read_text(path, where), where)
    return _build_config(data, path.parent.absolute(), where)


def config_from_dict(data: dict, base_dir: Path | None = None) -> RunConfig:
    """Build a RunConfig from parsed TOML; the same checks as load_config, minus the file."""
    return _build_config(data, Path(base_dir).absolute() if base_dir is not None else Path.cwd(), "")


def _read_text(path: Path, where: str) -> str:
    if path.is_dir():
        raise UserError("this is a folder, not a config file", where, "give the path of the .toml file")
    try:
        raw = path.read_bytes()
    except FileNotFoundError as err:
        fix = f"check the path; a relative path starts in the current folder ({Path.cwd()})"
        raise UserError("config file not found", where, fix) from err
    except OSError as err:
        message = f"cannot read the config file: {err.strerror or err}"
        raise UserError(message, where, "check that the file exists and you may read it") from err
    try:
        # utf-8-sig drops the byte-order mark some Windows editors put at the start.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        message = f"the file is not UTF-8 text (unreadable byte at position {err.start})"
        raise UserError(message, where, "save the file as UTF-8 in your editor") from err


# tomllib ends its messages with "(at line 3, column 8)" or "(at end of document)".
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_AT_END = re.compile(r"\s*\(at end of document\)\s*$")


def _parse_toml(text: str, where: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise _toml_syntax_error(str(err), where) from err


def _toml_syntax_error(detail: str, where: str) -> UserError:
    """Reword tomllib's message so the position comes first, in plain words."""
    hint = (
        'text needs quotes (name = "mylora"), true/false are lowercase, '
        'lists use brackets (args = ["a=1", "b=2"]) and a key may appear only once per section'
    )
    position = _TOML_POSITION.search(detail)
    if position:
        line, column = position.groups()
        reason = _lower_first(detail[: position.start()])
        message = f"not valid TOML at line {line}, column {column}: {reason}"
        return UserError(message, where, f"correct line {line}: {hint}")
    at_end = _TOML_AT_END.search(detail)
    reason = _lower_first(detail[: at_end.start()] if at_end else detail)
    message = f"not valid TOML at the end of the file: {reason}"
    return UserError(message, where, f"check the last lines: {hint}")


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _build_config(data: dict, base_dir: Path, where: str) -> RunConfig:
    values, problems = _read_sections(data)
    if problems:
        raise _load_error(problems, where)
    sections = {name: cls(**values.get(name, {})) for name, cls in SECTIONS.items()}
    cfg = RunConfig(**sections, base_dir=base_dir)
    # Optimizer names are matched case-insensitively and stored as spelled in the docs, so the
    # engine compares exact names. Unknown names stay as written for validate() to report.
    cfg.optimizer.name = canonical_optimizer(cfg.optimizer.name) or cfg.optimizer.name
    return cfg


def _load_error(problems: list[Problem], where: str) -> UserError:
    """One UserError for all problems, so the user fixes the file in one go."""
    if len(problems) == 1:
        only = problems[0]
        return UserError(f"{only.where}: {only.message}", where, only.fix, "config")
    lines = "\n".join(f"  {problem}" for problem in problems)
    return UserError(f"{len(problems)} problems in the config:\n{lines}", where, "", "config")


def _read_sections(data: dict) -> tuple[dict[str, dict[str, object]], list[Problem]]:
    """Checked values per section, plus a problem for everything that could not be used."""
    values: dict[str, dict[str, object]] = {}
    problems: list[Problem] = []
    for name, table in data.items():
        if name not in SECTIONS:
            problems.append(_stray_entry_problem(name, table))
        elif not isinstance(table, dict):
            message = f"[{name}] must be a section, got {_describe(table)}"
            problems.append(Problem(name, message, f"write a [{name}] header followed by its keys"))
        else:
            values[name], section_problems = _read_section(name, table)
            problems.extend(section_problems)
    return values, problems


def _read_section(section: str, table: dict) -> tuple[dict[str, object], list[Problem]]:
    cls = SECTIONS[section]
    types = typing.get_type_hints(cls)
    defaults = {f.name: _default_of(f) for f in dataclasses.fields(cls)}
    accepted: dict[str, object] = {}
    problems: list[Problem] = []
    for key, value in table.items():
        if key not in defaults:
            problems.append(_unknown_key_problem(section, key))
        elif not _has_type(value, types[key]):
            problems.append(_type_problem(section, key, value, types[key], defaults[key]))
        else:
            accepted[key] = _normalised(value, types[key])
    return accepted, problems


def _default_of(f: dataclasses.Field) -> object:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _has_type(value: object, expected: object) -> bool:
    # bool is a subclass of int in Python, but "rank = true" is a mistake, never a number.
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return is_number and math.isfinite(value)
    if expected is str:
        return isinstance(value, str)
    if expected == list[str]:
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    raise TypeError(f"config field type {expected!r} has no check")  # a bug in this module


def _normalised(value: object, expected: object) -> object:
    # "alpha = 16" is a fine float; store 16.0 so the value has the declared type.
    if expected is float:
        return float(value)  # type: ignore[arg-type]
    if expected == list[str]:
        return list(value)  # type: ignore[call-overload]
    return value


# ---------------------------------------------------------------------------------------------
# Messages for load problems.

_EXPECTED_TEXT: dict[object, str] = {
    bool: "true or false",
    int: "a whole number",
    float: "a number",
    str: "text in quotes",
    list[str]: 'a list of quoted strings (["a", "b"])',
}


def _type_problem(section: str, key: str, value: object, expected: object, default: object) -> Problem:
    message = f"expected {_EXPECTED_TEXT[expected]}, got {_describe(value)}"
    meant = _probably_meant(value, expected)
    if meant is _NO_GUESS:
        fix = f"write a value like the default: {_toml_line(key, default)}"
    elif isinstance(value, str) and expected != list[str]:
        fix = f"write {_toml_line(key, meant)}, without quotes"
    else:
        fix = f"write {_toml_line(key, meant)}"
    return Problem(f"{section}.{key}", message, fix)


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"the whole number {value}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return f"{value!r}, which is not a finite number"
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, list):
        others = [item for item in value if not isinstance(item, str)]
        return f"a list containing {_describe(others[0])}" if others else "a list"
    if isinstance(value, dict):
        return "a table"
    return f"a TOML {type(value).__name__}"  # dates and times


_NO_GUESS = object()
_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _probably_meant(value: object, expected: object) -> object:
    """The value the user most likely meant to write, or _NO_GUESS when there is no safe guess."""
    if isinstance(value, str) and expected in (bool, int, float):
        return _parse_scalar(value.strip(), expected)
    if expected is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if expected is bool and type(value) is int and value in (0, 1):
        return bool(value)
    if expected is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if expected == list[str] and isinstance(value, str):
        return value.split()  # kohya's command line separates optimizer_args with spaces
    if expected == list[str] and isinstance(value, list):
        return [str(item) for item in value]
    return _NO_GUESS


def _parse_scalar(text: str, expected: object) -> object:
    if expected is bool and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if expected is int and _INTEGER.fullmatch(text):
        return int(text)
    if expected is float and _NUMBER.fullmatch(text):
        return float(text)
    return _NO_GUESS


def _toml_line(key: str, value: object) -> str:
    """``key = value`` on one line, for messages (tomli_w spreads lists over several lines)."""
    if isinstance(value, list):
        items = ", ".join(_toml_value(item) for item in value)
        return f"{_toml_key(key)} = [{items}]"
    return f"{_toml_key(key)} = {_toml_value(value)}"


def _toml_value(value: object) -> str:
    return tomli_w.dumps({"v": value}).partition("=")[2].strip()


def _toml_key(key: str) -> str:
    return tomli_w.dumps({key: 0}).rpartition("=")[0].strip()


def _stray_entry_problem(name: str, value: object) -> Problem:
    """A top-level entry that is not one of the sections: a misspelt section or a loose key."""
    if isinstance(value, dict):
        close = difflib.get_close_matches(name, SECTIONS, n=1)
        if close:
            message = f"unknown section [{name}]; did you mean [{close[0]}]?"
            return Problem(name, message, f"rename the header to [{close[0]}]")
        fix = f"remove it; the sections are {_section_list()}"
        return Problem(name, f"unknown section [{name}]", fix)
    home = _home_of(name)
    if home:
        section, key = home
        fix = f"move it under [{section}]" if key == name else f"write it as {key} under [{section}]"
        return Problem(name, f"'{name}' is outside any section", fix)
    fix = f"remove it; settings go in {_section_list()}"
    return Problem(name, f"unknown key '{name}' outside any section", fix)


def _unknown_key_problem(section: str, key: str) -> Problem:
    where = f"{section}.{key}"
    keys = [f.name for f in dataclasses.fields(SECTIONS[section])]
    home = _home_of(key)
    if home and home[1] == key:
        message = f"key '{key}' belongs in [{home[0]}], not [{section}]"
        return Problem(where, message, f"move it under [{home[0]}]")
    if home:
        message = f"unknown key '{key}' in [{section}]; kohya's {key} is called '{home[1]}' here"
        if home[0] == section:
            fix = f"rename it to {home[1]}"
        else:
            fix = f"write it as {home[1]} under [{home[0]}]"
        return Problem(where, message, fix)
    close = difflib.get_close_matches(key, keys, n=1)
    if close:
        message = f"unknown key '{key}' in [{section}]; did you mean '{close[0]}'?"
        return Problem(where, message, f"rename it to {close[0]}")
    fix = f"remove it; the keys of [{section}] are {', '.join(keys)}"
    return Problem(where, f"unknown key '{key}' in [{section}]", fix)


def _home_of(key: str) -> tuple[str, str] | None:
    """(section, key) where a key from another section, or a kohya name, belongs."""
    for section, cls in SECTIONS.items():
        if key in (f.name for f in dataclasses.fields(cls)):
            return section, key
    return KOHYA_NAMES.get(key)


def _section_list() -> str:
    return ", ".join(f"[{name}]" for name in SECTIONS)


# ---------------------------------------------------------------------------------------------
# Saving.


def config_to_dict(cfg: RunConfig) -> dict:
    """The TOML-ready sections of cfg (base_dir is not part of the file)."""
    return {name: dataclasses.asdict(getattr(cfg, name)) for name in SECTIONS}


def to_toml(cfg: RunConfig) -> str:
    header = "# loratui run config. Relative paths are resolved against the folder of this file.\n\n"
    return header + tomli_w.dumps(config_to_dict(cfg))


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write cfg to path atomically: readers see the old file or the new one, never a mix.

    Relative paths are written as they are, so they resolve against the new file's folder.
    """
    path = Path(path).expanduser()
    try:
        write_text_atomic(path, to_toml(cfg))
    except OSError as err:
        message = f"cannot write the config file: {err.strerror or err}"
        fix = "check that the folder exists and you may write to it"
        raise UserError(message, str(path), fix) from err


# ---------------------------------------------------------------------------------------------
# Optimizer arguments.


def canonical_optimizer(name: str) -> str | None:
    """The documented spelling of an optimizer name given in any case, or None if unknown."""
    by_lower = {known.lower(): known for known in OPTIMIZERS}
    return by_lower.get(name.strip().lower())


def parse_optimizer_args(args: list[str]) -> dict[str, object]:
    """Turn kohya-style ["key=value", ...] into keyword arguments for the optimizer.

    Values: true/false (any case) -> bool, None -> None, whole numbers -> int, other numbers
    (1e-3 too) -> float, comma-separated numbers -> tuple of floats ("0.9,0.999" -> (0.9, 0.999));
    anything else stays a string.
    """
    kwargs: dict[str, object] = {}
    for entry in args:
        key, raw_value = _split_arg(entry)
        if key in kwargs:
            raise _arg_error(f"'{key}' is given twice", "keep one of the two entries")
        kwargs[key] = _parse_arg_value(raw_value)
    return kwargs


def _split_arg(entry: str) -> tuple[str, str]:
    key, sep, value = entry.partition("=")
    key, value = key.strip(), value.strip()
    example = 'write each entry as key=value, e.g. "weight_decay=0.01"'
    if not sep:
        raise _arg_error(f"entry {entry!r} has no '='", example)
    if not key:
        raise _arg_error(f"entry {entry!r} has no key before '='", example)
    if not key.isidentifier():
        raise _arg_error(f"entry {entry!r}: '{key}' is not a valid argument name", example)
    if not value:
        raise _arg_error(f"entry {entry!r} has no value after '='", example)
    return key, value


def _arg_error(message: str, fix: str) -> UserError:
    return UserError(message, "optimizer.args", fix, "config")


def _parse_arg_value(text: str) -> object:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if text == "None":  # exact, as in Python; "none" may be a legitimate string value
        return None
    if _INTEGER.fullmatch(text):
        return int(text)
    if _NUMBER.fullmatch(text):
        return float(text)
    # Users paste betas as "0.9,0.999" or the Python spelling "(0.9, 0.999)".
    parts = [part.strip() for part in text.strip("()[]").split(",")]
    if "," in text and all(_NUMBER.fullmatch(part) for part in parts):
        return tuple(float(part) for part in parts)
    return text


# ---------------------------------------------------------------------------------------------
# Validation: ranges and choices, every problem at once.


def validate(cfg: RunConfig) -> list[Problem]:
    """Every range and choice problem in cfg; an empty list (or notes only) means ready to train.

    Needs no dataset. It looks at the disk only for model.path, model.tokenizer and
    training.resume_from, which must exist before a run can start.
    """
    return [
        *_check_model(cfg),
        *_check_dataset(cfg.dataset),
        *_check_network(cfg.network),
        *_check_training(cfg),
        *_check_optimizer(cfg.optimizer),
        *_check_output(cfg.output),
    ]


def _error(where: str, message: str, fix: str) -> Problem:
    return Problem(where, message, fix, "error")


def _warning(where: str, message: str, fix: str) -> Problem:
    return Problem(where, message, fix, "warning")


def _note(where: str, message: str, fix: str = "") -> Problem:
    return Problem(where, message, fix, "note")


def _choice(where: str, value: str, choices: tuple[str, ...]) -> list[Problem]:
    if value in choices:
        return []
    by_lower = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(value.lower(), by_lower, n=1)
    suggestion = f"; did you mean '{by_lower[close[0]]}'?" if close else ""
    message = f"{value!r} is not a valid choice{suggestion}"
    return [_error(where, message, f"use one of: {', '.join(choices)}")]


def _check_model(cfg: RunConfig) -> list[Problem]:
    model = cfg.model
    problems: list[Problem] = []
    if not model.path.strip():
        fix = (
            "set path to a diffusers folder, a .safetensors or .ckpt file, "
            'or "loratui:tiny-sd" (the built-in test model)'
        )
        problems.append(_error("model.path", "no base model is set", fix))
    elif model.is_builtin:
        if model.path not in BUILTIN_MODELS:
            message = f"unknown built-in model {model.path!r}"
            problems.append(_error("model.path", message, f"use one of: {', '.join(BUILTIN_MODELS)}"))
    else:
        problems.extend(_model_path_problems(cfg))
    problems.extend(_family_problems(model.family))
    if not 1 <= model.clip_skip <= 12:
        fix = "use 1 (the usual value) or 2 (common for anime models)"
        problems.append(_error("model.clip_skip", f"clip_skip {model.clip_skip} is outside 1..12", fix))
    if model.tokenizer.strip():
        problems.extend(_tokenizer_problems(cfg))
    return problems


def _model_path_problems(cfg: RunConfig) -> list[Problem]:
    path = cfg.resolve(cfg.model.path)
    is_checkpoint = path.suffix.lower() in CHECKPOINT_SUFFIXES
    where_from = f"relative paths start at the config's folder ({cfg.base_dir})"
    if path.is_dir() or (path.is_file() and is_checkpoint):
        return []
    if path.is_file():
        message = f"{path} is a file but not a .safetensors or .ckpt checkpoint"
        fix = "point path at a diffusers folder (with model_index.json) or a .safetensors/.ckpt file"
        return [_error("model.path", message, fix)]
    if is_checkpoint:
        fix = f"check the file name; {where_from}"
        return [_error("model.path", f"checkpoint file not found: {path}", fix)]
    message = f"model folder not found: {path} (expected a diffusers folder with model_index.json)"
    fix = f"check the folder name, or give a .safetensors/.ckpt file; {where_from}"
    return [_error("model.path", message, fix)]


def _family_problems(family: str) -> list[Problem]:
    if family.lower() in UNSUPPORTED_FAMILIES:
        message = f"family {family!r} is not supported yet; loratui trains sd1 and sd2 models for now"
        fix = 'use an SD 1.x or SD 2.x base model with family = "sd1" or "sd2"'
        return [_error("model.family", message, fix)]
    return _choice("model.family", family, MODEL_FAMILIES)


def _tokenizer_problems(cfg: RunConfig) -> list[Problem]:
    folder = cfg.resolve(cfg.model.tokenizer)
    fix = "point tokenizer at a CLIP tokenizer folder (vocab.json and merges.txt, or tokenizer.json), or set it to \"\""
    if not folder.is_dir():
        return [_error("model.tokenizer", f"tokenizer folder not found: {folder}", fix)]
    if (folder / FAST_TOKENIZER_FILE).is_file():  # transformers 5 saves only this one
        return []
    missing = [name for name in TOKENIZER_FILES if not (folder / name).is_file()]
    if missing:
        return [_error("model.tokenizer", f"{folder} has no {' or '.join(missing)}", fix)]
    return []


def _check_dataset(dataset: DatasetSettings) -> list[Problem]:
    problems: list[Problem] = []
    if not dataset.image_dir.strip():
        fix = 'set image_dir to the folder with your training images, e.g. image_dir = "img"'
        problems.append(_error("dataset.image_dir", "no image folder is set", fix))
    extension = dataset.caption_extension
    if not extension.startswith(".") or len(extension) < 2:
        fixed = "." + (extension.lstrip(".") or "txt")
        message = f"caption_extension {extension!r} must start with a dot"
        fix = f'write caption_extension = "{fixed}"'
        problems.append(_error("dataset.caption_extension", message, fix))
    problems.extend(_resolution_problems(dataset.resolution))
    if dataset.enable_buckets:
        problems.extend(_bucket_problems(dataset))
    problems.extend(_choice("dataset.cache_latents", dataset.cache_latents, CACHE_LATENTS_CHOICES))
    return problems


def _resolution_problems(resolution: int) -> list[Problem]:
    nearest_64 = max(64, min(4096, round(resolution / 64) * 64))
    if not 64 <= resolution <= 4096:
        fix = "use 512 for SD 1.x, 768 for SD 2.x 768-v models"
        return [_error("dataset.resolution", f"resolution {resolution} is outside 64..4096", fix)]
    if resolution % 8:
        message = f"resolution {resolution} is not a multiple of 8 (the VAE works in 8-pixel blocks)"
        return [_error("dataset.resolution", message, f"use {nearest_64}")]
    if resolution % 64:
        message = (
            f"resolution {resolution} is not a multiple of 64; "
            "the base models were trained on multiples of 64"
        )
        return [_warning("dataset.resolution", message, f"use {nearest_64}")]
    return []


def _bucket_problems(dataset: DatasetSettings) -> list[Problem]:
    problems: list[Problem] = []
    steps, resolution = dataset.bucket_reso_steps, dataset.resolution
    if steps < 8 or steps % 8:
        message = f"bucket_reso_steps {steps} is not a positive multiple of 8"
        problems.append(_error("dataset.bucket_reso_steps", message, "use 64 (the usual value) or 32"))
    if dataset.min_bucket_reso < 64:
        message = f"min_bucket_reso {dataset.min_bucket_reso} is below 64"
        problems.append(_error("dataset.min_bucket_reso", message, "use 256 (the usual value)"))
    elif dataset.min_bucket_reso > resolution:
        message = f"min_bucket_reso {dataset.min_bucket_reso} is above resolution {resolution}"
        fix = f"set min_bucket_reso to {resolution} or less (256 is usual)"
        problems.append(_error("dataset.min_bucket_reso", message, fix))
    if dataset.max_bucket_reso < resolution:
        message = f"max_bucket_reso {dataset.max_bucket_reso} is below resolution {resolution}"
        fix = f"set max_bucket_reso to {resolution} or more (twice the resolution is usual)"
        problems.append(_error("dataset.max_bucket_reso", message, fix))
    return problems


def _check_network(network: NetworkSettings) -> list[Problem]:
    problems: list[Problem] = []
    rank, alpha = network.rank, network.alpha
    if not 1 <= rank <= 1024:
        message = f"rank {rank} is outside 1..1024"
        problems.append(_error("network.rank", message, "use 4 to 128; 32 is a common start"))
    half_rank = f"{max(rank, 1) / 2:g}"
    if alpha <= 0:
        message = f"alpha {alpha:g} must be above 0"
        problems.append(_error("network.alpha", message, f"use alpha = {half_rank} (half the rank)"))
    elif alpha > rank >= 1:
        message = (
            f"alpha {alpha:g} is above rank {rank}: alpha above rank scales the update up; "
            "the guides advise alpha at half the rank or less"
        )
        problems.append(_warning("network.alpha", message, f"set alpha = {half_rank} or lower"))
    if network.conv_rank < 0:
        message = f"conv_rank {network.conv_rank} is negative"
        fix = "use 0 (no conv layers) or 4 to 32 for LoCon"
        problems.append(_error("network.conv_rank", message, fix))
    elif network.conv_rank > 0 and network.conv_alpha <= 0:
        message = f"conv_alpha {network.conv_alpha:g} must be above 0 when conv_rank is set"
        problems.append(_error("network.conv_alpha", message, "use 1.0, or half of conv_rank"))
    return problems


def _check_training(cfg: RunConfig) -> list[Problem]:
    training = cfg.training
    problems: list[Problem] = []
    if training.batch_size < 1:
        message = f"batch_size {training.batch_size} is below 1"
        problems.append(_error("training.batch_size", message, "use 1, or more if memory allows"))
    if training.max_train_steps < 0:
        message = f"max_train_steps {training.max_train_steps} is negative"
        fix = "use 0 (run for epochs) or a positive step count"
        problems.append(_error("training.max_train_steps", message, fix))
    elif training.max_train_steps == 0 and training.epochs < 1:
        message = f"epochs {training.epochs} is below 1 and max_train_steps is 0: the run would be empty"
        fix = "set epochs to 1 or more (10 is a common start)"
        problems.append(_error("training.epochs", message, fix))
    if training.gradient_accumulation_steps < 1:
        message = f"gradient_accumulation_steps {training.gradient_accumulation_steps} is below 1"
        fix = "use 1 (no accumulation) or more"
        problems.append(_error("training.gradient_accumulation_steps", message, fix))
    precision = training.mixed_precision
    problems.extend(_choice("training.mixed_precision", precision, MIXED_PRECISION_CHOICES))
    problems.extend(_choice("training.attention", training.attention, ATTENTION_CHOICES))
    if training.seed < 0:
        message = f"seed {training.seed} is negative"
        problems.append(_error("training.seed", message, "use a whole number from 0 up, e.g. 42"))
    if not 0 <= training.noise_offset <= 1:
        message = f"noise_offset {training.noise_offset:g} is outside 0..1"
        fix = "use 0 (off) or a small value such as 0.05"
        problems.append(_error("training.noise_offset", message, fix))
    if training.min_snr_gamma < 0:
        message = f"min_snr_gamma {training.min_snr_gamma:g} is negative"
        problems.append(_error("training.min_snr_gamma", message, "use 0 (off) or 5 (the usual value)"))
    if training.max_grad_norm < 0:
        message = f"max_grad_norm {training.max_grad_norm:g} is negative"
        problems.append(_error("training.max_grad_norm", message, "use 1.0, or 0 to turn clipping off"))
    if training.resume_from.strip():
        problems.extend(_resume_problems(cfg))
    return problems


def _resume_problems(cfg: RunConfig) -> list[Problem]:
    folder = cfg.resolve(cfg.training.resume_from)
    if folder.is_dir():
        return []
    fix = (
        'point it at a "<name>-000001-state" folder from a run with save_state = true, '
        'or set resume_from = "" to start fresh'
    )
    found = "is a file, not a state folder" if folder.exists() else "does not exist"
    return [_error("training.resume_from", f"{folder} {found}", fix)]


def _check_optimizer(optimizer: OptimizerSettings) -> list[Problem]:
    problems: list[Problem] = []
    name = canonical_optimizer(optimizer.name)
    if name is None:
        problems.extend(_choice("optimizer.name", optimizer.name, OPTIMIZERS))
    if name in ADAPTIVE_OPTIMIZERS and 0 < optimizer.text_encoder_lr != optimizer.unet_lr:
        # Both estimate one step size for all parameters and refuse per-group LRs other than 0.
        problems.append(_error("optimizer.text_encoder_lr",
                               f"{name} needs the same LR for the UNet and the text encoder (or 0 to freeze it)",
                               f"set optimizer.text_encoder_lr to {optimizer.unet_lr:g} or to 0"))
    try:
        args = parse_optimizer_args(optimizer.args)
    except UserError as err:
        problems.append(_error(err.where, err.message, err.fix))
        args = {}
    problems.extend(_learning_rate_problems(optimizer))
    problems.extend(_choice("optimizer.scheduler", optimizer.scheduler, SCHEDULERS))
    if optimizer.warmup_steps < 0:
        message = f"warmup_steps {optimizer.warmup_steps} is negative"
        fix = "use 0 (no warmup) or a positive step count"
        problems.append(_error("optimizer.warmup_steps", message, fix))
    if optimizer.scheduler_cycles < 1:
        message = f"scheduler_cycles {optimizer.scheduler_cycles} is below 1"
        problems.append(_error("optimizer.scheduler_cycles", message, "use 1 or more"))
    if optimizer.scheduler_power <= 0:
        message = f"scheduler_power {optimizer.scheduler_power:g} must be above 0"
        problems.append(_error("optimizer.scheduler_power", message, "use 1.0 (a linear decay)"))
    problems.extend(_optimizer_specific_problems(optimizer, name, args))
    return problems


def _learning_rate_problems(optimizer: OptimizerSettings) -> list[Problem]:
    problems: list[Problem] = []
    if optimizer.unet_lr <= 0:
        message = f"unet_lr {optimizer.unet_lr:g} must be above 0"
        fix = "use 1e-4 for AdamW, or 1.0 for DAdaptAdam/Prodigy"
        problems.append(_error("optimizer.unet_lr", message, fix))
    if optimizer.text_encoder_lr < 0:
        message = f"text_encoder_lr {optimizer.text_encoder_lr:g} is negative"
        fix = "use 5e-5, or 0 to freeze the text encoder"
        problems.append(_error("optimizer.text_encoder_lr", message, fix))
    elif optimizer.text_encoder_lr == 0:
        message = "text encoder frozen: text_encoder_lr is 0, so only the U-Net is trained"
        fix = "set text_encoder_lr (e.g. 5e-5) to train it too"
        problems.append(_note("optimizer.text_encoder_lr", message, fix))
    return problems


def _optimizer_specific_problems(
    optimizer: OptimizerSettings, name: str | None, args: dict[str, object]
) -> list[Problem]:
    problems: list[Problem] = []
    if name in ADAPTIVE_OPTIMIZERS:
        for key, lr in (("unet_lr", optimizer.unet_lr), ("text_encoder_lr", optimizer.text_encoder_lr)):
            if 0 < lr < 0.1:
                message = f"{name} adapts the step size itself and expects {key} = 1.0, got {lr:g}"
                problems.append(_warning(f"optimizer.{key}", message, f"set {key} = 1.0"))
    if name == "Adafactor" and args.get("relative_step") is True:
        message = (
            "Adafactor with relative_step=True sets its own step size; "
            "unet_lr and text_encoder_lr are ignored"
        )
        fix = "remove relative_step=True to use the LR fields"
        problems.append(_note("optimizer.args", message, fix))
    return problems


# Letters and digits of any script, plus these; everything else is risky in a file name.
_NAME_EXTRA_CHARS = "-_. "


def _check_output(output: OutputSettings) -> list[Problem]:
    problems = _output_name_problems(output.name)
    if output.save_every_n_epochs < 0:
        message = f"save_every_n_epochs {output.save_every_n_epochs} is negative"
        fix = "use 0 (only the final file) or 1 or more"
        problems.append(_error("output.save_every_n_epochs", message, fix))
    problems.extend(_choice("output.save_precision", output.save_precision, SAVE_PRECISIONS))
    return problems


def _output_name_problems(name: str) -> list[Problem]:
    if not name.strip():
        return [_error("output.name", "no file name is set", 'set name, e.g. name = "mylora"')]
    if "/" in name or "\\" in name:
        message = f"name {name!r} contains a path separator"
        fix = 'give only the file stem, e.g. name = "mylora"; folders go in output_dir'
        return [_error("output.name", message, fix)]
    bad = sorted({char for char in name if not (char.isalnum() or char in _NAME_EXTRA_CHARS)})
    if bad:
        cleaned = "".join(char if char.isalnum() or char in _NAME_EXTRA_CHARS else "_" for char in name)
        message = (
            f"name {name!r} contains {' '.join(bad)}; "
            "only letters, digits, '-', '_', '.' and spaces are allowed"
        )
        return [_error("output.name", message, f'e.g. name = "{cleaned}"')]
    suffix = Path(name).suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES:
        message = f"name {name!r} ends in {suffix}; the file would be called {name}.safetensors"
        return [_warning("output.name", message, f'drop the extension: name = "{name[: -len(suffix)]}"')]
    return []


# ---------------------------------------------------------------------------------------------
# Schedule: how epochs, max_train_steps and gradient accumulation combine.


@dataclass(frozen=True)
class Schedule:
    """The length of a run, in the numbers a user sees."""

    steps_per_epoch: int  # optimizer updates per epoch (batches / gradient accumulation, rounded up)
    epochs: int  # epochs that run; the last one may be partial when max_train_steps is set
    total_steps: int  # optimizer updates in the whole run
    note: str  # plain-words explanation when max_train_steps overrides epochs, else ""


def resolve_schedule(cfg: RunConfig, steps_per_epoch: int) -> Schedule:
    """Combine the dataset's batches per epoch with the config into the run's length.

    steps_per_epoch counts batches. One optimizer update happens every
    gradient_accumulation_steps batches, and "steps" everywhere else mean updates.
    If max_train_steps is above 0 it wins over epochs.
    """
    training = cfg.training
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be at least 1, got {steps_per_epoch}")
    if training.gradient_accumulation_steps < 1 or training.max_train_steps < 0:
        raise ValueError("the config has an invalid training length; run validate() first")
    # A partial accumulation at the end of an epoch still makes one update.
    updates_per_epoch = _ceil_div(steps_per_epoch, training.gradient_accumulation_steps)
    if training.max_train_steps > 0:
        return _schedule_from_max_steps(training, updates_per_epoch)
    if training.epochs < 1:
        raise ValueError("epochs must be at least 1 when max_train_steps is 0; run validate() first")
    return Schedule(updates_per_epoch, training.epochs, training.epochs * updates_per_epoch, "")


def _schedule_from_max_steps(training: TrainingSettings, updates_per_epoch: int) -> Schedule:
    total = training.max_train_steps
    epochs = _ceil_div(total, updates_per_epoch)
    partial = " (the last one partial)" if total % updates_per_epoch else ""
    note = (
        f"max_train_steps = {total} overrides epochs = {training.epochs}: "
        f"training runs {total} steps, {_count(epochs, 'epoch')}{partial}"
    )
    return Schedule(updates_per_epoch, epochs, total, note)


def _ceil_div(numerator: int, denominator: int) -> int:
    # Integer arithmetic: float division would round wrongly for very large step counts.
    return -(-numerator // denominator)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
