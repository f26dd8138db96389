"""Import a kohya_ss GUI config (the JSON its "Save" button writes and users share) as a run config.

A kohya_ss GUI config is one flat JSON object with up to ~250 keys: the LoRA settings loratui
has, settings of features loratui does not have, settings of other trainers (SDXL, SD3, Flux,
DreamBooth) and pure GUI state. :func:`import_kohya` turns it into the sections
:func:`loratui.config.config_from_dict` takes, and an :class:`ImportReport` that puts **every** key
of the file into exactly one group, with its value:

- ``mapped``: the key became a loratui setting (shown with the field and the converted value);
- ``changed``: it became a setting whose value means something else on the way (a percentage
  turned into steps, a non-square resolution, xformers where it is not installed, LoKr's
  full-matrix rank, a folder that is not on this machine): imported, and worth a look;
- ``unsupported``: loratui cannot do what the key asks for at this value, so it had no effect;
- ``unknown``: loratui does not know the key at all;
- ``ignored``: the key has no effect: a GUI-only setting, or a feature at its neutral value
  (e.g. ``flip_aug = false``), or a setting that only other model types use.

Nothing is silently dropped. ``sdxl`` makes an SDXL config, with the GUI's SDXL settings
(``sdxl_no_half_vae``, ``sdxl_cache_text_encoder_outputs``) and kohya's one text encoder rate for
both SDXL encoders. ``flux1_checkbox`` (or ``LoRA_type = "Flux1"``) makes a FLUX.1 config: the
three extra files (``ae``, ``clip_l``/``flux1_clip_l``, ``t5xxl``/``flux1_t5xxl``), the timestep
and memory settings (they are declared with their GUI names in :mod:`loratui.params`), and the
Flux text-output cache (``flux1_cache_text_encoder_outputs(_to_disk)``). A model type loratui
does not train yet (SD3) is still imported (its LoRA settings carry over), the report says "not
supported yet" in its first line, and ``model.family`` is set so that validation refuses the run
until the user picks a model loratui trains.

Conversions follow kohya_ss: numbers stored as strings ("0.0001") are read as numbers, "" means
"not set" (loratui's default applies), ``max_resolution = "512,650"`` becomes the square side of
the same area, and ``lr_warmup`` is a *percentage* of the total steps, turned into
``optimizer.warmup_steps`` when the total is known and into ``optimizer.warmup_ratio`` otherwise.
``LoRA_type`` chooses ``network.type`` and which network keys count (the GUI passes each only for
some types); ``noise_offset_type`` which noise keys count; the learning rates which parts train
(``--network_train_unet_only``/``_text_encoder_only``, as the GUI derives them).
``additional_parameters`` (sd-scripts flags typed into the GUI) is split like a shell line and
each flag mapped by its sd-scripts name (the settings' ``kohya=``), after the other keys: on
sd-scripts' command line they come last and win. ``dataset_config`` is read with
:mod:`loratui.dataset_config` into ``[[subsets]]``.

:func:`apply_import` makes a project's config of an import (the wizard's Ctrl+O and
``loratui import-kohya``): loratui's defaults, the project's folders, model and name, then the
file's settings, so that a second import starts from the defaults and not from the first one.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from loratui.config import RunConfig, config_from_dict, config_to_dict
from loratui.errors import UserError
from loratui.families import family_name, setting_applies
from loratui.lycoris_rules import NO_UNET_PRESETS
from loratui.optimizer_args import canonical_optimizer
from loratui.params import BY_NAME, FLUX_ONLY, SETTINGS, Setting, kohya_cli_names
from loratui.preflight import installed
from loratui.quantities import count

SECRET_KEYS = frozenset({"huggingface_token", "wandb_api_key"})
_SECRET_MASK = "(hidden)"
# The same secrets as sd-scripts flags inside additional_parameters: the flag, then its value.
_SECRET_FLAG = re.compile(r"(--(?:huggingface_token|wandb_api_key)(?:=|\s+))(\"[^\"]*\"|'[^']*'|\S+)")


# ---------------------------------------------------------------------------------------------
# The report


@dataclass(frozen=True)
class ImportEntry:
    """One key of the kohya file and what became of it."""

    key: str
    value: object  # as in the file; secrets are masked
    target: str = ""  # the loratui field it set, e.g. "network.rank"
    converted: object = None  # the value written to that field; None = left at loratui's default
    reason: str = ""  # why it was converted this way, or why it had no effect
    # A part of a key's value, not a key of the file: a flag of additional_parameters (key "--name",
    # value its words) or a line of what the dataset_config file held.
    flag: bool = False
    part_of: str = "additional_parameters"

    def line(self) -> str:
        if self.flag:
            text = f"{self.part_of}: {self.key}" + (f" {self.value}" if self.value not in (None, "") else "")
        else:
            text = f"{self.key} = {_show(self.value)}"
        if self.target:
            shown = "loratui's default" if self.converted is None else _show(self.converted)
            text += f" -> {self.target} = {shown}"
        if self.reason:
            text += f" ({self.reason})"
        return text


# The report's groups, each key of the file in exactly one of them.
GROUPS = ("mapped", "changed", "unsupported", "unknown", "ignored")


@dataclass
class ImportReport:
    """Where every key of an imported kohya_ss config went.

    ``changed`` holds the keys that were imported but mean something else on the way (a unit, a
    percentage turned into steps, a default that differs, a value replaced): imported, and worth
    a look. The flags of ``additional_parameters`` are entries of their own (``flag=True``) in the
    group of what became of each; the key itself is in one group like any other.
    """

    source: str = ""
    blockers: list[str] = field(default_factory=list)  # model types loratui cannot train yet
    notes: list[str] = field(default_factory=list)  # how the whole file was read (e.g. its paths)
    mapped: list[ImportEntry] = field(default_factory=list)
    changed: list[ImportEntry] = field(default_factory=list)
    unsupported: list[ImportEntry] = field(default_factory=list)
    unknown: list[ImportEntry] = field(default_factory=list)
    ignored: list[ImportEntry] = field(default_factory=list)

    def _entries(self):
        for name in GROUPS:
            for entry in getattr(self, name):
                yield name, entry

    @property
    def keys(self) -> list[str]:
        """Every key accounted for, in report order (each key of the file exactly once)."""
        return [entry.key for _, entry in self._entries() if not entry.flag]

    def entry(self, key: str) -> ImportEntry | None:
        """The entry of a key, or of an additional_parameters flag ("--max_token_length")."""
        return next((entry for _, entry in self._entries() if entry.key == key), None)

    def group_of(self, key: str) -> str | None:
        return next((name for name, entry in self._entries() if entry.key == key), None)

    def summary(self) -> str:
        name = f"{Path(self.source).name}: " if self.source else ""
        # The flags of additional_parameters count as settings of their own.
        also = f" ({len(self.changed)} changed on the way)" if self.changed else ""
        return (
            f"{name}{len(self.mapped) + len(self.changed)} settings imported{also}, {len(self.unsupported)} not "
            f"supported, {len(self.unknown)} unknown, {len(self.ignored)} ignored (no effect)"
        )

    def lines(self) -> list[str]:
        """The whole report as plain text lines, most important first."""
        lines = [self.summary()]
        lines += [f"NOT SUPPORTED YET: {blocker}" for blocker in self.blockers]
        lines += self.notes
        sections = (
            ("Not supported (these settings had no effect)", self.unsupported),
            ("Unknown keys (not read)", self.unknown),
            ("Changed on the way (imported, but check these)", self.changed),
            ("Imported", self.mapped),
            ("Ignored (no effect)", self.ignored),
        )
        for title, entries in sections:
            if entries:
                lines.append("")
                lines.append(f"{title}: {len(entries)}")
                lines += [f"  {entry.line()}" for entry in entries]
        return lines

    def text(self) -> str:
        return "\n".join(self.lines())


@dataclass
class KohyaImport:
    """The result of an import: config sections for :func:`config_from_dict`, and the report."""

    sections: dict[str, dict[str, object]]
    report: ImportReport

    def to_config(self, base_dir: Path | None = None) -> RunConfig:
        """A RunConfig of the imported settings; everything not imported keeps loratui's default."""
        return config_from_dict(self.sections, base_dir)


# ---------------------------------------------------------------------------------------------
# Applying an import to a project

# The folders of a kohya_ss file that belong to the machine it was saved on: file key -> setting.
FOLDER_KEYS = {
    "train_data_dir": "dataset.image_dir",
    "reg_data_dir": "dataset.reg_dir",
    "output_dir": "output.output_dir",
    "logging_dir": "output.log_dir",
}
# What a project keeps across imports where the file leaves it empty: its folders, its base model
# and its LoRA's name. Everything else (how to train) comes from the file or loratui's defaults, so
# that a second import does not inherit the first one's settings.
PROJECT_SETTINGS = ("model.path", "output.name", *FOLDER_KEYS.values())

PATHS_AS_WRITTEN = "Paths: every path is written as it is in the file; relative ones now resolve against this folder."
PATHS_OWN_FOLDERS = (
    "Paths: a folder of the file (train_data_dir, reg_data_dir, output_dir, logging_dir) that exists on this "
    "machine is kept; one that does not (a placeholder, another machine's folder, a folder relative to where "
    "kohya_ss ran) is replaced by this project's own. The base model and FLUX.1 file paths are kept as written."
)


def apply_import(
    result: KohyaImport, project: RunConfig, *, keep_paths: bool = False, how_to_keep: str = ""
) -> RunConfig:
    """The config an import makes for ``project`` (the wizard's config, or a new project's):
    loratui's defaults, the project's own folders, model and name (PROJECT_SETTINGS), then the
    file's settings. Without ``keep_paths``, a folder of the file that does not exist here is
    replaced by the project's own, and the report lists it among the changed. UserError when the
    imported values do not make a config. ``how_to_keep``: how the caller keeps the paths as
    written instead (``--keep-paths``), for the report."""
    base_dir = project.base_dir
    data = config_to_dict(RunConfig(base_dir=base_dir))
    for name in PROJECT_SETTINGS:
        section, key = name.split(".")
        data[section][key] = project.get(name)
    if project.subsets and "subsets" not in result.sections:
        data["subsets"] = [subset.to_toml() for subset in project.subsets]  # the project's datasets, too
    report = result.report
    sections = {
        name: (dict(values) if isinstance(values, dict) else values) for name, values in result.sections.items()
    }
    if keep_paths:
        report.notes.append(PATHS_AS_WRITTEN)
    else:
        report.notes.append(f"{PATHS_OWN_FOLDERS} {how_to_keep}".rstrip())
        _own_folders(report, sections, data, base_dir)
    for section, values in sections.items():
        if isinstance(values, dict):
            data.setdefault(section, {}).update(values)
        else:
            data[section] = values  # [[subsets]]: a list of tables
    return config_from_dict(data, base_dir)


def _own_folders(report: ImportReport, sections: dict, project: dict, base_dir: Path) -> None:
    """A folder the file names that is not on this machine gives way to the project's own."""
    for key, name in FOLDER_KEYS.items():
        entry = report.entry(key)
        if entry is None or entry.target != name or not isinstance(entry.converted, str) or not entry.converted:
            continue
        written = Path(entry.converted).expanduser()
        if (written if written.is_absolute() else base_dir / written).is_dir():
            continue
        section, setting = name.split(".")
        own = project[section][setting]
        sections[section].pop(setting, None)
        shown = _show(own) if own else "none"
        why = f"not a folder on this machine: this project's own ({shown}) instead"
        group = getattr(report, report.group_of(key) or "mapped")
        group.remove(entry)
        report.changed.append(ImportEntry(entry.key, entry.value, name, own or None, why))


# ---------------------------------------------------------------------------------------------
# Entry points


def load_kohya_json(path: str | Path, *, total_steps: int | None = None) -> KohyaImport:
    """Read a kohya_ss GUI JSON file; UserError (naming the file and the fix) when it is unusable."""
    path = Path(path).expanduser()
    where = str(path)
    if path.is_dir():
        raise UserError("this is a folder, not a kohya_ss config", where, "give the path of the .json file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as err:
        raise UserError("kohya_ss config not found", where, "check the path of the .json file") from err
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise UserError(
            f"cannot read the file: {reason}", where, "check that it is a kohya_ss .json file you may read"
        ) from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        message = f"not valid JSON at line {err.lineno}, column {err.colno}: {err.msg}"
        raise UserError(message, where, "give the .json file the kohya_ss GUI saved, unchanged") from err
    except (RecursionError, ValueError) as err:
        # Python's json raises these for lists nested thousands deep and for integers of over
        # 4,300 digits: no file the GUI saves looks like that.
        message = "not a kohya_ss config: nested too deep or holds a number too long to read"
        raise UserError(message, where, "give the .json file the kohya_ss GUI saved, unchanged") from err
    if not isinstance(data, dict):
        message = f"expected a JSON object of settings, got a JSON {type(data).__name__}"
        raise UserError(message, where, "give the .json file the kohya_ss GUI saved with its Save button")
    return import_kohya(data, source=where, total_steps=total_steps)


def import_kohya(data: dict, *, source: str = "", total_steps: int | None = None) -> KohyaImport:
    """Map a parsed kohya_ss GUI config; see the module docstring.

    ``total_steps``: the run's length in optimizer steps, if the caller knows it (it depends on the
    dataset), to turn the GUI's ``lr_warmup`` percentage into steps. ``max_train_steps`` from the
    file is used when it is set.
    """
    return _Importer(data, source, total_steps).run()


# ---------------------------------------------------------------------------------------------
# Value conversion


class _Unreadable(ValueError):
    """A value that cannot be converted; its message says what was expected."""


def _is_empty(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _number(value: object) -> float | None:
    if _is_empty(value):
        return None
    if isinstance(value, bool):
        raise _Unreadable("expected a number, got true/false")
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise _Unreadable(f"expected a number, got {_show(value)}") from None
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _Unreadable(f"expected a number, got the text {value!r}") from None
    else:
        raise _Unreadable(f"expected a number, got {_show(value)}")
    if not math.isfinite(number):
        raise _Unreadable(f"expected a finite number, got {value!r}")
    return number


def _int(value: object) -> int | None:
    number = _number(value)
    if number is None:
        return None
    if not number.is_integer():
        raise _Unreadable(f"expected a whole number, got {_show(value)}")
    return int(number)


def _float(value: object) -> float | None:
    return _number(value)


def _bool(value: object) -> bool | None:
    if _is_empty(value):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise _Unreadable(f"expected true or false, got {_show(value)}")


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _Unreadable(f"expected text, got {_show(value)}")
    return str(value).strip()


def _path_text(value: object) -> str | None:
    text = _text(value)
    return text or None


def _args(value: object) -> list[str] | None:
    if _is_empty(value):
        return None
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [item for item in value if item.strip()]
    if not isinstance(value, str):
        raise _Unreadable(f"expected key=value text, got {_show(value)}")
    try:
        return shlex.split(value)
    except ValueError as err:
        raise _Unreadable(f"cannot split {value!r} into key=value entries: {err}") from None


def _show(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and abs(value) >= 10**24:  # a pasted run of digits would fill the report
        return f"(a number of {len(str(abs(value)))} digits)"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return f"{value:.1f}"
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else str(value)


# ---------------------------------------------------------------------------------------------
# Key tables


def _converter_for(setting: Setting) -> Callable[[object], object]:
    """How a GUI value becomes the setting's type. For text, "" means "not set" (loratui's
    default applies) where the default is not itself empty."""
    if setting.type is str:
        return _path_text if setting.default else _text
    return {bool: _bool, int: _int, float: _float, list: _args}[setting.type]


# kohya_ss GUI key -> (loratui setting, converter), from the declarations. Keys that need more
# than a conversion (kohya_gui_special) are handled in _Importer.
_DIRECT: dict[str, tuple[str, Callable[[object], object]]] = {
    setting.kohya_gui: (setting.name, _converter_for(setting))
    for setting in SETTINGS
    if isinstance(setting.kohya_gui, str) and not setting.kohya_gui_special
}

# Features loratui does not have: key -> (values at which the feature is off, what the feature is).
# At such a value the key is "ignored (no effect)"; at any other it is "unsupported".
_NEUTRAL: dict[str, tuple[tuple[object, ...], str]] = {
    # captions and augmentation
    "weighted_captions": ((False,), "weighted captions"),
    "color_aug": ((False,), "colour augmentation"),
    # loss and noise
    "masked_loss": ((False,), "masked loss"),
    # network variants
    "network_weights": (("",), "starting from existing LoRA weights; training.resume_from continues a loratui run"),
    "lora_network_weights": (
        ("",),
        "starting from existing LoRA weights; training.resume_from continues a loratui run",
    ),
    "dim_from_weights": ((False,), "taking the rank from existing weights"),
    "block_dims": (("",), "per-block ranks"),
    "block_alphas": (("",), "per-block alphas"),
    "conv_block_dims": (("",), "per-block conv ranks"),
    "conv_block_alphas": (("",), "per-block conv alphas"),
    "conv_dims": (("",), "per-block conv ranks"),
    "conv_alphas": (("",), "per-block conv alphas"),
    "down_lr_weight": (("",), "per-block learning rates"),
    "mid_lr_weight": (("",), "per-block learning rates"),
    "up_lr_weight": (("",), "per-block learning rates"),
    "block_lr_zero_threshold": (("",), "per-block learning rates"),
    "loraplus_lr_ratio": ((0,), "LoRA+"),
    "loraplus_unet_lr_ratio": ((0,), "LoRA+"),
    "loraplus_text_encoder_lr_ratio": ((0,), "LoRA+"),
    "bypass_mode": ((False,), "LyCORIS bypass mode"),
    "train_norm": ((False,), "training norm layers (LyCORIS)"),
    "use_scalar": ((False,), "LyCORIS scalar"),
    "rank_dropout_scale": ((False,), "LyCORIS rank dropout scale"),
    "constrain": ((0,), "LyCORIS constrain"),
    "rescaled": ((False,), "LyCORIS rescaling"),
    "decompose_both": ((False,), "LyCORIS LoKr decompose_both"),
    "unit": ((1,), "DyLoRA units"),
    # optimizer and schedule extras
    "fused_backward_pass": ((False,), "fused backward pass"),
    "fused_optimizer_groups": ((0,), "fused optimizer groups"),
    "blockwise_fused_optimizers": ((False,), "blockwise fused optimizers"),
    # precision and memory
    "full_fp16": ((False,), "full fp16 training; loratui keeps the LoRA weights in fp32"),
    "full_bf16": ((False,), "full bf16 training; loratui keeps the LoRA weights in fp32"),
    "fp8_base": ((False,), "an fp8 base model (loratui has it for FLUX.1 only)"),
    "mem_eff_save": ((False,), "memory-efficient saving"),
    "disable_mmap_load_safetensors": ((False,), "loading without mmap"),
    "vae": (("",), "a separate VAE file"),
    "vae_batch_size": ((0,), "a VAE batch size for caching"),
    "skip_cache_check": ((False,), "skipping the latent cache check"),
    "highvram": ((False,), "high-VRAM mode"),
    "lowvram": ((False,), "low-VRAM mode"),
    # saving, sampling, logging
    "save_model_as": (("safetensors",), "formats other than .safetensors"),
    "metadata_title": (("",), "LoRA metadata other than the comment (output.comment)"),
    "metadata_author": (("",), "LoRA metadata other than the comment (output.comment)"),
    "metadata_description": (("",), "LoRA metadata other than the comment (output.comment)"),
    "metadata_license": (("",), "LoRA metadata other than the comment (output.comment)"),
    "metadata_tags": (("",), "LoRA metadata other than the comment (output.comment)"),
    "log_tracker_name": (("",), "a tracker name"),
    "log_tracker_config": (("",), "a tracker config"),
    "log_config": ((False,), "logging the config to a tracker"),
    "wandb_api_key": (("",), "Weights & Biases logging"),
    "wandb_run_name": (("",), "Weights & Biases logging"),
    "use_wandb": ((False,), "Weights & Biases logging"),
    "huggingface_repo_id": (("",), "uploading to Hugging Face"),
    "huggingface_token": (("",), "uploading to Hugging Face"),
    "huggingface_repo_type": (("",), "uploading to Hugging Face"),
    "huggingface_repo_visibility": (("",), "uploading to Hugging Face"),
    "huggingface_path_in_repo": (("",), "uploading to Hugging Face"),
    "save_state_to_huggingface": ((False,), "uploading to Hugging Face"),
    "resume_from_huggingface": (("",), "resuming from Hugging Face"),
    "async_upload": ((False,), "uploading to Hugging Face"),
    # launcher
    "multi_gpu": ((False,), "multi-GPU training"),
    "num_processes": ((1,), "multi-GPU training"),
    "num_machines": ((1,), "multi-machine training"),
    "gpu_ids": (("",), "choosing GPUs in the config; set CUDA_VISIBLE_DEVICES instead"),
    "main_process_port": ((0,), "a fixed accelerate port"),
    "extra_accelerate_launch_args": (("",), "extra accelerate launch arguments"),
    "dynamo_backend": (("no",), "torch.compile (dynamo)"),
    "no_token_padding": ((False,), "disabling token padding"),
}

# Keys that never change what is trained: GUI state, or settings another key switches off.
_GUI_ONLY: dict[str, str] = {
    "model_list": "the GUI's model picker; pretrained_model_name_or_path is what counts",
    "save_as_bool": "GUI state",
    "training_preset": "GUI state",
    "num_cpu_threads_per_process": "accelerate launcher setting",
    "max_data_loader_n_workers": "loratui loads the data its own way",
    "persistent_data_loader_workers": "loratui loads the data its own way",
    "dynamo_mode": "only used with dynamo_backend",
    "dynamo_use_dynamic": "only used with dynamo_backend",
    "dynamo_use_fullgraph": "only used with dynamo_backend",
    "stop_text_encoder_training": "the kohya_ss GUI ignores it (not yet supported there)",
    "stop_text_encoder_training_pct": "the kohya_ss GUI ignores it (not yet supported there)",
    "learning_rate_te": "the DreamBooth/fine-tune tabs' text encoder LR; LoRA uses text_encoder_lr",
    "learning_rate_te1": "the DreamBooth/fine-tune tabs' SDXL text encoder LR",
    "learning_rate_te2": "the DreamBooth/fine-tune tabs' SDXL text encoder LR",
}

# Settings of model types loratui does not train yet; they only matter when that type is chosen.
# (The FLUX.1 settings loratui has are declared with their GUI names in loratui.params; the GUI's
# FLUX.1 keys loratui reads its own way are handled in _Importer._flux_settings.)
_FAMILY_ONLY: dict[str, str] = {
    **dict.fromkeys(
        (
            "sd3_cache_text_encoder_outputs",
            "sd3_cache_text_encoder_outputs_to_disk",
            "sd3_fused_backward_pass",
            "sd3_text_encoder_batch_size",
            "clip_g",
            "t5xxl_device",
            "t5xxl_dtype",
        ),
        "SD3",
    ),
    **dict.fromkeys(("save_clip", "save_t5xxl"), "SD3 and FLUX.1 fine-tuning"),
}

# The GUI's FLUX.1 keys that are not loratui settings. Each is read in _Importer._flux_settings
# when the config is a FLUX.1 one, and "only used for FLUX.1 training" otherwise.
_FLUX_GUI_KEYS = (
    "flux1_cache_text_encoder_outputs",
    "flux1_cache_text_encoder_outputs_to_disk",
    "flux1_clip_l",
    "flux1_t5xxl",
    "flux_fused_backward_pass",
    "split_mode",
    "train_blocks",
    "double_blocks_to_swap",
    "single_blocks_to_swap",
    "mem_eff_save_flux",
)

# The GUI's LoRA_type -> network.type. "Kohya LoCon" is sd-scripts' own networks.lora with conv
# layers (conv_dim): a plain LoRA with network.conv_rank here. The LyCORIS ones are the algo the GUI
# passes to lycoris.kohya.
_NETWORK_TYPES = {
    "Standard": "lora",
    "Kohya LoCon": "lora",
    "Flux1": "lora",  # sd-scripts' networks.lora_flux
    "LoCon": "locon",
    "LyCORIS/LoCon": "locon",
    "LyCORIS/LoHa": "loha",
    "LyCORIS/LoKr": "lokr",
    "LyCORIS/iA3": "ia3",
}
# The GUI's types loratui does not train, and the network.type value loratui knows them by (a
# not_yet value, refused by check) or "" when it has none.
_OTHER_TYPES = {
    "Kohya DyLoRA": ("dylora", "DyLoRA (one LoRA trained for several ranks at once)"),
    "LyCORIS/DyLoRA": ("dylora", "DyLoRA (one LoRA trained for several ranks at once)"),
    "LyCORIS/GLoRA": ("glora", "GLoRA"),
    "LyCORIS/BOFT": ("boft", "BOFT (butterfly orthogonal fine-tuning)"),
    "LyCORIS/Diag-OFT": ("diag-oft", "Diag-OFT (orthogonal fine-tuning)"),
    "LyCORIS/Native Fine-Tuning": ("full", "native fine-tuning (every weight trained, no adapter)"),
    "LoRA-FA": ("lora-fa", "LoRA-FA (a frozen down matrix)"),
    "Kohya LoHa": ("", "sd-scripts' own networks.loha (LyCORIS/LoHa is trained here)"),
    "Kohya LoKr": ("", "sd-scripts' own networks.lokr (LyCORIS/LoKr is trained here)"),
    "Flux1 OFT": ("", "orthogonal fine-tuning of FLUX.1"),
}
# The GUI's LyCORIS keys, by the network types it passes each of them for (lora_gui.py's network_args).
_LYCORIS_KEYS = {
    "LyCORIS_preset": ("locon", "loha", "lokr", "ia3"),
    "use_tucker": ("locon", "loha", "lokr"),
    "use_cp": ("lokr",),
    "factor": ("lokr",),
    "dora_wd": ("locon", "loha", "lokr"),
    "train_on_input": ("ia3",),
    "decompose_both": ("lokr",),
    "use_scalar": ("locon", "loha", "lokr"),
    "bypass_mode": ("locon", "loha", "lokr"),
    "rank_dropout_scale": ("locon", "loha", "lokr"),
    "train_norm": ("locon", "loha", "lokr"),
    "constrain": (),
    "rescaled": (),
    "unit": (),
}
# LoKr in LyCORIS: a Kronecker factor is a full matrix where the rank is at least half its side, and
# with both factors full the scale is 1 whatever the alpha (lycoris/modules/lokr.py). The kohya_ss
# presets ask for full matrices with a rank of 100000; a rank this large means the same.
_LOKR_FULL_RANK = 10_000

# Caching the text encoders' outputs: the GUI's SDXL checkbox (it has no to-disk key for SDXL), its
# two Flux checkboxes, and sd-scripts' names in a hand-edited file. Any to-disk key means "disk".
_TEXT_CACHE_KEYS = (
    "sdxl_cache_text_encoder_outputs",
    "flux1_cache_text_encoder_outputs",
    "cache_text_encoder_outputs",
)
_TEXT_CACHE_DISK_KEYS = (
    "sdxl_cache_text_encoder_outputs_to_disk",
    "flux1_cache_text_encoder_outputs_to_disk",
    "cache_text_encoder_outputs_to_disk",
)
_TEXT_CACHE_FAMILY = {"sdxl": "sdxl", "flux1": "flux"}  # a GUI key's prefix -> the model type it is for


# The noise settings the GUI passes with each noise_offset_type.
_ORIGINAL_NOISE_KEYS = ("noise_offset", "adaptive_noise_scale", "noise_offset_random_strength")
_MULTIRES_NOISE_KEYS = ("multires_noise_iterations", "multires_noise_discount")
_NOISE_TYPE_OF = {
    **dict.fromkeys(_ORIGINAL_NOISE_KEYS, "Original"),
    **dict.fromkeys(_MULTIRES_NOISE_KEYS, "Multires"),
}


# ---------------------------------------------------------------------------------------------
# The importer


class _Importer:
    def __init__(self, data: dict, source: str, total_steps: int | None) -> None:
        self.data = data
        self.report = ImportReport(source=source)
        self.sections: dict[str, dict[str, object]] = {}
        self.total_steps = total_steps
        self.done: set[str] = set()
        self.family = "sd1"
        self.network = "lora"  # network.type, once _network_type has read LoRA_type

    @property
    def _denoiser(self) -> str:
        """What the report calls the model trained on unet_lr."""
        return "transformer" if self.family == "flux" else "U-Net"

    # -- bookkeeping ---------------------------------------------------------------------------

    def _value(self, key: str) -> object:
        value = self.data.get(key)
        if key in SECRET_KEYS and not _is_empty(value):
            return _SECRET_MASK
        if key == "additional_parameters" and isinstance(value, str):
            return _SECRET_FLAG.sub(lambda match: match.group(1) + _SECRET_MASK, value)
        return value

    def _set(self, target: str, value: object) -> None:
        section, name = target.split(".")
        self.sections.setdefault(section, {})[name] = value
        if target == "optimizer.text_encoder_lr":
            # kohya has one text encoder rate: SDXL trains both encoders at it.
            self.sections[section]["text_encoder_2_lr"] = value

    def mapped(self, key: str, target: str, converted: object, reason: str = "", *, group: str = "mapped") -> None:
        if target and target not in BY_NAME:
            # A setting another part of loratui has not declared (yet): say so rather than write a key
            # that the config would refuse.
            self.unsupported(key, f"not supported yet: this loratui has no {target} setting")
            return
        if converted is not None:
            self._set(target, converted)
        if target == "optimizer.text_encoder_lr" and converted is not None and self.family == "sdxl":
            also = "also optimizer.text_encoder_2_lr: kohya trains both SDXL text encoders at one rate"
            reason = f"{reason}; {also}" if reason else also
        self._add(getattr(self.report, group), ImportEntry(key, self._value(key), target, converted, reason))

    def changed(self, key: str, target: str, converted: object, reason: str) -> None:
        """Imported, but the value means something else on the way (the reason says what)."""
        self.mapped(key, target, converted, reason, group="changed")

    def unsupported(self, key: str, reason: str) -> None:
        self._add(self.report.unsupported, ImportEntry(key, self._value(key), reason=reason))

    def ignored(self, key: str, reason: str) -> None:
        self._add(self.report.ignored, ImportEntry(key, self._value(key), reason=reason))

    def _add(self, group: list[ImportEntry], entry: ImportEntry) -> None:
        if entry.key in self.data and entry.key not in self.done:
            self.done.add(entry.key)
            group.append(entry)

    def convert(self, key: str, converter: Callable[[object], object]) -> tuple[bool, object]:
        """(ok, value); an unreadable value is reported as unsupported with the reason."""
        try:
            return True, converter(self.data.get(key))
        except _Unreadable as err:
            self.unsupported(key, f"{err}; loratui's default is used")
            return False, None

    # -- the pass ------------------------------------------------------------------------------

    def run(self) -> KohyaImport:
        self._model_type()
        self._network_type()
        self._dataset_specials()
        self._attention()
        self._noise()
        self._learning_rates()
        self._optimizer()
        self._schedule_length()
        self._sdxl_settings()
        self._text_cache()
        self._flux_settings()
        self._sample_prompts()
        self._validation()
        self._dataset_config_folders()
        self._timesteps()
        self._scheduler()
        self._network_extras()
        self.done.add("additional_parameters")  # read last (_additional_parameters)
        for key in self.data:
            if key in self.done:
                continue
            if key in _DIRECT:
                target, converter = _DIRECT[key]
                if not setting_applies(BY_NAME[target].families, self.family):
                    self._not_of_this_family(key, BY_NAME[target])
                    continue
                ok, value = self.convert(key, converter)
                if ok and value in BY_NAME[target].not_yet:
                    # Recognised, not done yet: loratui's default stays, so the rest of the file can train.
                    self.unsupported(key, f"{value!r} is not supported yet; {target} stays loratui's default")
                elif ok:
                    self.mapped(key, target, value, "" if value is not None else "empty")
            elif key in _FAMILY_ONLY:
                family = _FAMILY_ONLY[key]
                self.ignored(key, f"only used for {family} training")
            elif key in _FLUX_GUI_KEYS:
                self.ignored(key, "only used for FLUX.1 training")
            elif key in _GUI_ONLY:
                self.ignored(key, _GUI_ONLY[key])
            elif key in _NEUTRAL:
                self._neutral(key)
            else:
                self._add(
                    self.report.unknown,
                    ImportEntry(key, self._value(key), reason="not a kohya_ss setting loratui knows"),
                )
        self._dataset_config()  # after the keys: its values win over the GUI's, as in sd-scripts
        self._sdxl_bucket_steps()
        self._adafactor_defaults()
        # Last: the GUI puts these words at the end of sd-scripts' command line, where they win.
        self._additional_parameters()
        return KohyaImport(self.sections, self.report)

    # -- keys of the objective, the schedule and the network that need their own reading -------

    def _adafactor_defaults(self) -> None:
        """Adafactor without relative_step in its arguments: sd-scripts turns it on, and so does
        loratui (ADAFACTOR_DEFAULTS); say what that means for the rates the file sets."""
        optimizer = self.sections.get("optimizer", {})
        if optimizer.get("name") != "Adafactor":
            return
        args = [str(arg).replace(" ", "").lower() for arg in optimizer.get("args") or []]
        if any(arg.startswith("relative_step=") for arg in args):
            return
        entry = self.report.entry("optimizer_args")
        why = (
            "Adafactor with sd-scripts' defaults (relative_step=True, scale_parameter=True, warmup_init=False): "
            "it sets its own step size, so the learning rates and lr_scheduler have no effect (as in sd-scripts)"
        )
        group = self.report.group_of("optimizer_args")
        if entry is None or group != "mapped":
            return
        self.report.mapped[self.report.mapped.index(entry)] = ImportEntry(
            entry.key, entry.value, entry.target, entry.converted, why
        )

    def _sdxl_bucket_steps(self) -> None:
        """sd-scripts refuses SDXL buckets in steps other than multiples of 32 (a kohya_ss SDXL preset
        has 1): the next multiple of 32, listed as changed."""
        steps = self.sections.get("dataset", {}).get("bucket_reso_steps")
        entry = self.report.entry("bucket_reso_steps")
        if self.family != "sdxl" or not isinstance(steps, int) or steps % 32 == 0 or entry not in self.report.mapped:
            return
        fixed = max(32, -(-steps // 32) * 32)
        self.report.mapped.remove(entry)
        self._set("dataset.bucket_reso_steps", fixed)
        why = f"SDXL buckets step in multiples of 32; sd-scripts refuses {steps} for SDXL too"
        self.report.changed.append(ImportEntry(entry.key, entry.value, entry.target, fixed, why))

    def _timesteps(self) -> None:
        """The GUI passes max_timestep only when it is not 0: 0 (or empty) means sd-scripts' 1000."""
        key = "max_timestep"
        if key not in self.data:
            return
        if self.family == "flux":
            self._not_of_this_family(key, BY_NAME["training.max_timestep"])
            return
        ok, value = self.convert(key, _int)
        if ok and not value:
            self.mapped(key, "training.max_timestep", None, "0 or empty: the GUI passes none, sd-scripts' 1000")
        elif ok:
            self.mapped(key, "training.max_timestep", value)

    def _scheduler(self) -> None:
        """lr_scheduler "adafactor" is Adafactor's own schedule, which sd-scripts (and loratui) use
        whenever Adafactor sets its own step size (relative_step, its default)."""
        key = "lr_scheduler"
        if str(self.data.get(key) or "").strip().lower() != "adafactor":
            return
        try:
            args = " ".join(_args(self.data.get("optimizer_args")) or [])
        except _Unreadable:
            args = ""
        adafactor = self.sections.get("optimizer", {}).get("name") == "Adafactor"
        if adafactor and "relative_step=false" not in args.lower().replace(" ", ""):
            why = "Adafactor's own schedule: used whenever Adafactor sets its own step size (relative_step)"
            self.mapped(key, "optimizer.scheduler", None, why)
        else:
            self.unsupported(
                key, "only with Adafactor and relative_step (sd-scripts fails otherwise); loratui's default"
            )

    def _network_extras(self) -> None:
        """The dropouts and LyCORIS switches a network type does not take (the GUI passes them, and
        LyCORIS ignores them), and iA3 on inputs."""
        data = self.data
        takes = {"loha": ("rank_dropout", "module_dropout"), "lokr": ("rank_dropout", "module_dropout")}
        if self.network == "ia3":
            takes["ia3"] = ()  # the GUI passes neither rank nor module dropout for iA3
        for key in ("network_dropout", "rank_dropout", "module_dropout"):
            if key not in data or self.network not in takes or key in takes[self.network]:
                continue
            if _is_neutral(data[key], (0,)):
                self.ignored(key, "off at this value")
            else:
                self.ignored(key, f"LyCORIS's {self.network} layers do not apply it (sd-scripts warns and goes on)")
        if self.network == "lora":
            for key in ("network_dropout", "rank_dropout", "module_dropout"):
                if key in data and not _is_neutral(data[key], (0,)):
                    self.unsupported(
                        key, "kohya's own LoRA applies it; loratui's plain LoRA has none (network.type locon has it)"
                    )
        for key, target in (
            ("network_dropout", "network.dropout"),
            ("rank_dropout", "network.rank_dropout"),
            ("module_dropout", "network.module_dropout"),
        ):
            if key in data and key not in self.done:
                ok, value = self.convert(key, _float)
                if ok:
                    self.mapped(key, target, value, "" if value is not None else "empty")
        if self.network == "ia3" and "train_on_input" in data and _safe_bool(data["train_on_input"]):
            self.unsupported(
                "train_on_input",
                "an iA3 file trained on inputs does not load back (LyCORIS's loader reads iA3 as trained on "
                "outputs): trained on outputs",
            )

    # -- validation and dataset configs ----------------------------------------------------------

    def _validation(self) -> None:
        """The GUI's validation keys loratui has no setting for: at the value that means what
        loratui does they had no effect; at any other, loratui cannot do what they ask."""
        data = self.data
        seed = data.get("seed")
        if "validation_seed" in data:
            value = data["validation_seed"]
            if _is_neutral(value, (0,)) or _safe_number(value) == _safe_number(seed):
                self.ignored("validation_seed", "the held-out images are chosen by training.seed, kohya's default")
            else:
                self.unsupported(
                    "validation_seed", "a seed of its own for the held-out images: loratui uses training.seed"
                )
        for key, neutral, what in (
            ("validate_every_n_epochs", (0, 1), "loratui measures the validation loss at every epoch end"),
            ("max_validation_steps", (0,), "loratui measures every held-out image"),
        ):
            if key in data:
                if _is_neutral(data[key], neutral):
                    self.ignored(key, f"off at this value: {what}")
                else:
                    self.unsupported(key, f"not supported: {what}; it had no effect")

    def _dataset_config_path(self) -> str | None:
        try:
            return _path_text(self.data.get("dataset_config"))
        except _Unreadable:
            return None

    def _dataset_config_folders(self) -> None:
        """With a dataset config, sd-scripts ignores train_data_dir and reg_data_dir."""
        self.done.add("dataset_config")  # read after the other keys (_dataset_config)
        if not self._dataset_config_path():
            return
        for key in ("train_data_dir", "reg_data_dir"):
            self.ignored(key, "dataset_config is set: sd-scripts reads the folders from it and ignores this")

    def _dataset_config(self) -> None:
        """The GUI's dataset_config: sd-scripts' dataset TOML, read as loratui's subsets and
        values (loratui.dataset_config); they win over the GUI's own, as in sd-scripts."""
        key = "dataset_config"
        if key not in self.data:
            return
        self.done.discard(key)
        ok, path = self.convert(key, _path_text)
        if not ok:
            return
        if path is None:
            self.ignored(key, "empty: the dataset is train_data_dir's img/<repeats>_<name> folders")
            return
        from loratui.dataset_config import import_dataset_config

        written = Path(path).expanduser()
        beside = Path(self.report.source).expanduser().parent / written if self.report.source else written
        if not written.is_absolute() and not written.exists() and beside.exists():
            path = str(beside)  # relative to where kohya_ss ran; found beside the .json instead
        try:
            imported = import_dataset_config(path)
        except UserError as err:
            self.unsupported(key, f"{err}; nothing of it was read")
            return
        for section, values in imported.sections().items():
            if isinstance(values, dict):
                for name, value in values.items():
                    self._set(f"{section}.{name}", value)
            else:
                self.sections[section] = values  # type: ignore[assignment]  # [[subsets]]
        # The subsets are the dataset: the project's img/reg folders are not scanned as well.
        self.sections.setdefault("dataset", {}).update(image_dir="", reg_dir="")
        for line in imported.carried:
            self.report.mapped.append(ImportEntry(line, None, flag=True, part_of=key))
        for line in imported.not_carried:
            self.report.unsupported.append(ImportEntry(line, None, flag=True, part_of=key))
        subsets = count(len(imported.subsets), "subset")
        if imported.not_carried:
            self.changed(key, "", None, f"{subsets}; {len(imported.not_carried)} of its settings not carried: see each")
        else:
            self.mapped(key, "", None, f"{subsets}, each setting of it listed")

    # -- additional_parameters: sd-scripts flags typed into the GUI ------------------------------

    def _additional_parameters(self) -> None:
        key = "additional_parameters"
        if key not in self.data:
            return
        self.done.discard(key)  # read here, after every other key
        ok, text = self.convert(key, _text)
        if not ok:
            return
        if not text:
            self.ignored(key, "empty")
            return
        try:
            words = shlex.split(text)
        except ValueError as err:
            self.unsupported(key, f"cannot split it into words ({err}); no flag of it was read")
            return
        groups = [self._flag(name, values) for name, values in _split_flags(words)]
        carried = sum(1 for group in groups if group in ("mapped", "changed", "ignored"))
        if carried == len(groups) and any(group != "ignored" for group in groups):
            self.mapped(key, "", None, f"{count(len(groups), 'flag')}, each listed with what became of it")
        elif carried == len(groups):
            self.ignored(key, f"{count(len(groups), 'flag')} with no effect on training, each listed")
        elif any(group in ("mapped", "changed") for group in groups):
            missed = len(groups) - carried
            self.changed(key, "", None, f"{missed} of {count(len(groups), 'flag')} not carried: see each flag")
        else:
            self.unsupported(key, f"none of its {count(len(groups), 'flag')} carried: see each flag")

    def _flag(self, name: str, values: list[str]) -> str:
        """One ``--name [values]`` of additional_parameters; returns the report group it went to."""
        shown = " ".join(shlex.quote(value) for value in values)
        if name in SECRET_KEYS and values:
            shown = _SECRET_MASK
        if not name:
            return self._flag_entry("unknown", shown, "", None, "a word without a --flag before it: not read")
        flag = f"--{name}"
        special = _SPECIAL_FLAGS.get(name)
        setting = kohya_cli_names().get(name)
        if special is not None:
            target, value = special
            if values:
                return self._flag_entry("unsupported", flag, shown, None, "an on/off flag takes no value: not read")
            if target == "training.attention" and value == "xformers" and not installed("xformers"):
                why = "xformers is not installed here, so PyTorch's sdpa attention: the same result, as fast"
                return self._flag_entry("changed", flag, shown, "sdpa", why, target)
            return self._flag_entry("mapped", flag, shown, value, "", target)
        if name == "network_args":
            groups = [self._network_arg(flag, value) for value in values] or ["ignored"]
            return next((group for group in groups if group in ("unsupported", "unknown")), groups[0])
        if name in _HARMLESS_FLAGS:
            return self._flag_entry("ignored", flag, shown, None, _HARMLESS_FLAGS[name])
        if setting is None:
            if name in _NEUTRAL:
                what = _NEUTRAL[name][1]
                return self._flag_entry("unsupported", flag, shown, None, f"not supported: {what}; it had no effect")
            why = "not an sd-scripts option loratui has: it had no effect, and check cannot see it"
            return self._flag_entry("unknown", flag, shown, None, why)
        if not setting_applies(setting.families, self.family):
            why = f"{family_name(self.family)} has no such setting: it had no effect"
            return self._flag_entry("ignored", flag, shown, None, why)
        try:
            value = _flag_value(setting, values)
        except _Unreadable as err:
            return self._flag_entry("unsupported", flag, shown, None, f"{err}: not read")
        before = self.sections.get(setting.section, {}).get(setting.key)
        reason = "" if before is None or before == value else "after the GUI's own value, so it wins as in sd-scripts"
        return self._flag_entry("mapped", flag, shown, value, reason, setting.name)

    def _network_arg(self, flag: str, word: str) -> str:
        """One ``key=value`` of --network_args, by the name sd-scripts' networks and LyCORIS read."""
        key, equals, text = word.partition("=")
        shown = shlex.quote(word)
        target = _NETWORK_ARGS.get(key.strip())
        if not equals or target is None:
            why = "not a network argument loratui has: it had no effect"
            return self._flag_entry("unsupported", flag, shown, None, why)
        setting = BY_NAME.get(target)
        if setting is None:
            return self._flag_entry("unsupported", flag, shown, None, f"this loratui has no {target} setting")
        try:
            value = _flag_value(setting, [text.strip()]) if setting.type is not bool else _bool(text.strip())
        except _Unreadable as err:
            return self._flag_entry("unsupported", flag, shown, None, f"{err}: not read")
        if target == "network.type" and value not in setting.choices:
            return self._flag_entry("unsupported", flag, shown, None, f"LyCORIS algo {value!r} is not supported")
        return self._flag_entry("mapped", flag, shown, value, "", target)

    def _flag_entry(self, group: str, flag: str, shown: str, value: object, reason: str, target: str = "") -> str:
        if target and target not in BY_NAME:
            group, reason, target = "unsupported", f"not supported yet: this loratui has no {target} setting", ""
        if target and value is not None:
            self._set(target, value)
        entry = ImportEntry(flag, shown, target, value, reason, flag=True)
        getattr(self.report, group).append(entry)
        return group

    def _not_of_this_family(self, key: str, setting: Setting) -> None:
        """A loratui setting the config's model type does not use."""
        if key in _NEUTRAL and setting.families == FLUX_ONLY:
            self._neutral(key)  # fp8_base: sd-scripts has it for every model type, loratui for FLUX.1
        elif setting.families == FLUX_ONLY:
            self.ignored(key, "only used for FLUX.1 training")
        else:
            self.ignored(key, f"{family_name(self.family)} has no such setting (sd-scripts ignores it too)")

    def _neutral(self, key: str) -> None:
        neutral, feature = _NEUTRAL[key]
        value = self.data[key]
        if _is_neutral(value, neutral):
            self.ignored(key, f"off at this value: {feature}")
        else:
            self.unsupported(key, f"not supported: {feature}; it had no effect")

    # -- special cases ---------------------------------------------------------------------------

    def _model_type(self) -> None:
        data = self.data
        lora_type = str(data.get("LoRA_type") or "Standard")
        flags = {key: bool(_safe_bool(data.get(key))) for key in ("flux1_checkbox", "sd3_checkbox", "sdxl", "v2")}
        if flags["flux1_checkbox"] or lora_type.lower().startswith("flux"):
            self.family = "flux"
        elif flags["sd3_checkbox"]:
            self.family = "sd3"
            self._blocker("SD3", "sd3_checkbox")
        elif flags["sdxl"]:
            self.family = "sdxl"
        elif flags["v2"]:
            self.family = "sd2"
        # An unsupported family is kept, so that validation names it at the model.family field.
        self._set("model.family", self.family)
        for key, name in (("flux1_checkbox", "Flux"), ("sd3_checkbox", "SD3"), ("sdxl", "SDXL")):
            if key in data:
                if flags[key] and (key, self.family) in (("sdxl", "sdxl"), ("flux1_checkbox", "flux")):
                    self.mapped(key, "model.family", self.family)
                elif flags[key] and key in ("sdxl", "flux1_checkbox"):
                    self.ignored(key, f"the model type is {self.family}")
                elif flags[key]:
                    self.unsupported(key, f"{name} training is not supported yet")
                else:
                    self.ignored(key, "off")
        if "v2" in data:
            if flags["v2"] and self.family == "sd2":
                self.mapped("v2", "model.family", "sd2")
            elif flags["v2"]:
                self.ignored("v2", f"the model type is {self.family}")
            else:
                self.ignored("v2", "off: not an SD 2.x model")
        if "pretrained_model_name_or_path" in data:
            ok, path = self.convert("pretrained_model_name_or_path", _path_text)
            if ok:
                reason = ""
                if path and _looks_like_repo_id(path):
                    reason = "a Hugging Face repo id: loratui never downloads; point model.path at a local copy"
                elif path is None:
                    reason = "empty"
                self.mapped("pretrained_model_name_or_path", "model.path", path, reason)

    def _sdxl_settings(self) -> None:
        """The GUI's SDXL checkbox for the VAE, which it passes to sd-scripts only with ``sdxl`` on."""
        if "sdxl_no_half_vae" not in self.data:
            return
        if self.family == "sdxl":
            ok, on = self.convert("sdxl_no_half_vae", _bool)
            if ok:
                self.mapped("sdxl_no_half_vae", "model.no_half_vae", on, "" if on is not None else "empty")
        else:
            self.ignored("sdxl_no_half_vae", "only used for SDXL training")

    def _text_cache(self) -> None:
        """Caching the text encoders' outputs: the GUI's SDXL and Flux checkboxes (each passed to
        sd-scripts only for its model type) and sd-scripts' own names; any to-disk key means disk."""
        data = self.data
        values = {}
        for key in (*_TEXT_CACHE_KEYS, *_TEXT_CACHE_DISK_KEYS):
            if key not in data:
                continue
            own_family = _TEXT_CACHE_FAMILY.get(key.split("_", 1)[0])
            if own_family is not None and own_family != self.family:
                self.ignored(key, f"only used for {family_name(own_family)} training")
                continue
            ok, on = self.convert(key, _bool)
            if ok:
                values[key] = bool(on)
        if not values:
            return
        if any(values.get(key) for key in _TEXT_CACHE_DISK_KEYS):
            mode = "disk"
        else:
            mode = "memory" if any(values.get(key) for key in _TEXT_CACHE_KEYS) else "off"
        reason = self._unet_only_for_caching() if mode != "off" else ""
        for key in values:
            self.mapped(key, "dataset.cache_text_encoder_outputs", mode, reason)

    def _flux_settings(self) -> None:
        """The GUI's FLUX.1 keys that are not loratui settings one to one (the others are declared
        in loratui.params and map directly)."""
        if self.family != "flux":
            return
        data = self.data
        for newer, older, target in (
            ("flux1_clip_l", "clip_l", "model.clip_l_path"),
            ("flux1_t5xxl", "t5xxl", "model.t5xxl_path"),
        ):
            self._file_setting(newer, older, target)
        self._split_mode()
        if "train_blocks" in data:
            blocks = str(data["train_blocks"]).strip().lower()
            if blocks in ("", "all"):
                self.ignored("train_blocks", "all blocks: what loratui trains")
            else:
                self.unsupported("train_blocks", "training only some blocks is not supported; all blocks are trained")
        for key in ("double_blocks_to_swap", "single_blocks_to_swap"):
            if key in data:
                if _is_neutral(data[key], (0,)):
                    self.ignored(key, "off: an older split of blocks_to_swap")
                else:
                    self.unsupported(key, "an older split of block swap: set training.blocks_to_swap instead")
        for key, feature in (
            ("flux_fused_backward_pass", "fused backward pass"),
            ("mem_eff_save_flux", "memory-efficient saving"),
        ):
            if key in data:
                if _is_neutral(data[key], (False,)):
                    self.ignored(key, f"off at this value: {feature}")
                else:
                    self.unsupported(key, f"not supported: {feature}; it had no effect")
        if "max_token_length" in data:
            self.ignored("max_token_length", "FLUX.1 uses t5xxl_max_token_length; sd-scripts ignores it too")

    def _file_setting(self, newer: str, older: str, target: str) -> None:
        """A file the GUI saves under two names (flux1_clip_l in newer GUIs, clip_l in older ones):
        the newer one wins where it is set."""
        data = self.data
        values = {}
        for key in (newer, older):
            if key in data:
                ok, value = self.convert(key, _path_text)
                if ok:
                    values[key] = value
        chosen = next((key for key in (newer, older) if values.get(key)), None)
        if chosen is None:
            chosen = older if older in values else newer
        for key in values:
            if key == chosen:
                self.mapped(key, target, values[key], "" if values[key] is not None else "empty")
            else:
                self.ignored(key, f"{chosen} is set and wins" if values[chosen] else "empty")

    def _split_mode(self) -> None:
        """sd-scripts' deprecated split_mode: without blocks_to_swap it swaps 18 blocks."""
        data = self.data
        if "split_mode" not in data:
            return
        ok, on = self.convert("split_mode", _bool)
        if not ok:
            return
        if not on:
            self.ignored("split_mode", "off")
            return
        swap_set = not _is_neutral(data.get("blocks_to_swap"), (0,))
        if swap_set:
            self.ignored("split_mode", "deprecated in sd-scripts; blocks_to_swap is set and wins")
            return
        reason = "deprecated in sd-scripts, which swaps 18 blocks for it"
        self.changed("split_mode", "training.blocks_to_swap", 18, reason)
        if "blocks_to_swap" in data:
            self.ignored("blocks_to_swap", "0 or empty: split_mode sets 18")

    def _unet_only_for_caching(self) -> str:
        """Cached text outputs need frozen text encoders. When the file freezes them by their rates
        (kohya_ss passes --network_train_unet_only then), loratui says so with train_unet_only;
        the reason for the report, or "" when nothing was changed."""
        optimizer = self.sections.get("optimizer", {})
        frozen = optimizer.get("text_encoder_lr") == 0 and optimizer.get("text_encoder_2_lr", 0) == 0
        if not frozen or _safe_bool(self.data.get("network_train_unet_only")) is True:
            return ""
        why = "kohya_ss passes --network_train_unet_only then" if self.family == "flux" else "as caching needs"
        reason = f"every text encoder LR is 0: network.train_unet_only set to true, {why}"
        if "network_train_unet_only" in self.data:
            self.mapped("network_train_unet_only", "network.train_unet_only", True, reason)
        else:
            self._set("network.train_unet_only", True)
        return reason

    def _blocker(self, name: str, key: str) -> None:
        self.report.blockers.append(
            f"{name} ({key} = {_show(self.data.get(key))}). loratui trains SD 1.x, SD 2.x, SDXL and FLUX.1 models "
            "for now: the other settings were imported; set model.path to such a model and model.family to sd1, sd2, "
            "sdxl or flux"
        )

    def _network_type(self) -> None:
        """LoRA_type -> network.type, and the keys that only some network types read."""
        data = self.data
        lora_type = str(data.get("LoRA_type") or "Standard").strip()
        network = _NETWORK_TYPES.get(lora_type)
        if network is None and lora_type.lower().startswith("flux"):
            network = "lora"
        self.network = network or "lora"
        if "LoRA_type" in data:
            if network is not None and lora_type in _NETWORK_TYPES:
                why = {"Kohya LoCon": "sd-scripts' LoRA with conv layers (conv_dim)", "Flux1": "networks.lora_flux"}
                self.mapped("LoRA_type", "network.type", network, why.get(lora_type, ""))
            else:
                self._other_network_type(lora_type)
        self._ranks(lora_type)
        for key, types in _LYCORIS_KEYS.items():
            if key in data and self.network not in types:
                self.ignored(key, f"only used by LyCORIS network types that read it, and LoRA_type is {lora_type!r}")
        if self.network not in ("locon", "loha", "lokr", "ia3"):
            return
        for key, target, converter in (
            ("LyCORIS_preset", "network.preset", _text),
            ("factor", "network.lokr_factor", _int),
            ("dora_wd", "network.dora", _bool),
            ("train_on_input", "network.train_on_input", _bool),
        ):
            if key in data and key not in self.done:
                if key == "train_on_input" and _safe_bool(data[key]):
                    continue  # _network_extras says why not
                if key == "LyCORIS_preset" and str(data[key]).strip() in NO_UNET_PRESETS:
                    self.unsupported(
                        key,
                        f"LyCORIS's {str(data[key]).strip()!r} preset selects no layer of a diffusers UNet "
                        "(its target names are other models'); loratui's default preset (full) is used",
                    )
                    continue
                ok, value = self.convert(key, converter)
                if ok:
                    self.mapped(key, target, value, "" if value is not None else "empty")
        self._tucker()

    def _other_network_type(self, lora_type: str) -> None:
        """A LoRA_type loratui does not train: check refuses it where network.type knows it."""
        value, what = _OTHER_TYPES.get(lora_type, ("", f"network type {lora_type!r}"))
        setting = BY_NAME.get("network.type")
        if value and setting is not None and value in setting.not_yet:
            self._set("network.type", value)
            self.unsupported("LoRA_type", f"{what} is not supported yet: check refuses it until you choose a type")
        else:
            plain = "a FLUX.1 LoRA" if self.family == "flux" else "a standard LoRA"
            self.unsupported("LoRA_type", f"{what} is not supported; imported as {plain}")

    def _ranks(self, lora_type: str) -> None:
        """network_dim/alpha and conv_dim/alpha as the network type reads them."""
        data = self.data
        if self.network == "ia3":
            for key in ("network_dim", "network_alpha", "conv_dim", "conv_alpha"):
                if key in data:
                    self.ignored(key, "iA3 trains scaling vectors: it has no rank or alpha")
            return
        if self.network == "lokr" and self._lokr_full_matrix():
            return
        for key, target, converter in (
            ("conv_dim", "network.conv_rank", _int),
            ("conv_alpha", "network.conv_alpha", _float),
        ):
            if key not in data:
                continue
            if lora_type == "Kohya LoCon" or self.network in ("locon", "loha", "lokr"):
                ok, value = self.convert(key, converter)
                if ok:
                    self.mapped(key, target, value, "" if value is not None else "empty")
            else:
                self.ignored(key, f"only used by LoCon and LyCORIS network types, and LoRA_type is {lora_type!r}")

    def _lokr_full_matrix(self) -> bool:
        """LoKr with a rank too large to factor (the presets' 100000): full matrices, as LyCORIS
        makes them; the rank then has no effect and the scale is 1. True when that was imported."""
        data = self.data
        try:
            rank = _int(data.get("network_dim"))
        except _Unreadable:
            return False
        if rank is None or rank < _LOKR_FULL_RANK:
            return False
        sane = int(BY_NAME["network.rank"].default)
        why = (
            f"a LoKr rank of {rank} asks LyCORIS for full matrices, which scale by 1: imported as "
            f"lokr_full_matrix = true with rank and alpha {sane}, which then have no effect"
        )
        self.changed("network_dim", "network.lokr_full_matrix", True, why)
        self._set("network.rank", sane)
        if "network_alpha" in data:
            self.changed("network_alpha", "network.alpha", float(sane), "full matrices: the scale is 1, as in LyCORIS")
        else:
            self._set("network.alpha", float(sane))
        if "conv_dim" in data:
            ok, conv = self.convert("conv_dim", _int)
            if ok and conv:
                reason = "conv layers too, as full matrices: the rank has no effect"
                self.changed("conv_dim", "network.conv_rank", sane, reason)
                if "conv_alpha" in data:
                    self.changed("conv_alpha", "network.conv_alpha", float(sane), "full matrices: the scale is 1")
                else:
                    self._set("network.conv_alpha", float(sane))
            elif ok:
                self.mapped("conv_dim", "network.conv_rank", conv, "no conv layers")
                self.ignored("conv_alpha", "conv_dim is 0")
        return True

    def _tucker(self) -> None:
        """The GUI passes use_tucker, and use_cp for LoKr; LyCORIS reads either as the CP/Tucker
        decomposition of conv layers: network.use_cp."""
        keys = [key for key in ("use_cp", "use_tucker") if key in self.data and key not in self.done]
        values = {}
        for key in keys:
            ok, on = self.convert(key, _bool)
            if ok:
                values[key] = bool(on)
        if not values:
            return
        on = any(values.values())
        for key in values:
            if values[key] or not on:
                self.mapped(key, "network.use_cp", on, "LyCORIS reads use_cp and use_tucker as one switch")
            else:
                self.ignored(key, "off, and the other of use_cp/use_tucker is on")

    def _dataset_specials(self) -> None:
        data = self.data
        if "caption_extension" in data:
            ok, ext = self.convert("caption_extension", _text)
            if ok:
                if not ext:
                    self.changed(
                        "caption_extension",
                        "dataset.caption_extension",
                        None,
                        "empty: kohya then reads .caption files; loratui's default is .txt",
                    )
                elif ext == ".none-use-foldername":
                    self.mapped(
                        "caption_extension",
                        "dataset.caption_extension",
                        ext,
                        "the GUI's 'no captions': images are captioned with their folder's name",
                    )
                else:
                    fixed = ext if ext.startswith(".") else "." + ext
                    self.mapped(
                        "caption_extension",
                        "dataset.caption_extension",
                        fixed,
                        "" if fixed == ext else "a leading dot added",
                    )
        if "max_resolution" in data:
            self._resolution(data["max_resolution"])
        if "cache_latents" in data or "cache_latents_to_disk" in data:
            ok1, memory = self.convert("cache_latents", _bool)
            ok2, disk = self.convert("cache_latents_to_disk", _bool)
            if ok1 and ok2:
                mode = "disk" if disk else ("memory" if memory else "off")
                for key in ("cache_latents", "cache_latents_to_disk"):
                    self.mapped(key, "dataset.cache_latents", mode)

    def _sample_prompts(self) -> None:
        """The GUI's sample_prompts is the prompt file's text (it writes it to sample/prompt.txt):
        one prompt per line, ``#`` lines are comments, kohya's options at the end of each."""
        if "sample_prompts" not in self.data:
            return
        ok, text = self.convert("sample_prompts", _text)
        if not ok:
            return
        lines = [line.strip() for line in (text or "").splitlines()]
        prompts = [line for line in lines if line and not line.startswith("#")]
        comments = sum(1 for line in lines if line.startswith("#"))
        reason = "empty" if not prompts else "one prompt per line"
        if comments:
            reason += f"; {count(comments, 'comment line')} left out"
        self.mapped("sample_prompts", "sample.prompts", prompts or None, reason)

    def _resolution(self, value: object) -> None:
        text = str(value).strip() if not isinstance(value, bool) else ""
        parts = [part.strip() for part in text.replace("x", ",").split(",") if part.strip()]
        try:
            sides = [int(float(part)) for part in parts]
        except ValueError:
            sides = []
        if len(sides) == 1:
            sides = sides * 2
        if len(sides) != 2 or min(sides) <= 0:
            self.unsupported("max_resolution", 'expected "width,height", e.g. "512,512"; loratui\'s default is used')
            return
        width, height = sides
        if width == height:
            self.mapped("max_resolution", "dataset.resolution", width)
            return
        side = max(64, round(math.sqrt(width * height) / 64) * 64)
        self.changed(
            "max_resolution",
            "dataset.resolution",
            side,
            f"{width}x{height} is not square; {side} is the multiple of 64 with about the same area",
        )

    def _attention(self) -> None:
        data = self.data
        chosen: str | None = None
        reason = ""
        if "xformers" in data:
            value = data["xformers"]
            if isinstance(value, str) and value.strip().lower() in ("xformers", "sdpa"):
                chosen = value.strip().lower()
            elif isinstance(value, bool) or (
                isinstance(value, str) and value.strip().lower() in ("none", "", "true", "false")
            ):
                on = value is True or (isinstance(value, str) and value.strip().lower() == "true")
                chosen = "xformers" if on else "sdpa"
                if not on:
                    reason = "no xformers: loratui uses PyTorch's sdpa attention"
            if chosen is None:
                self.unsupported("xformers", "expected xformers, sdpa or none; loratui's default (sdpa) is used")
            elif chosen == "xformers" and not installed("xformers"):
                # check would refuse xformers here; sdpa is the same attention, as memory-efficient.
                chosen = "sdpa"
                why = "xformers is not installed here, so PyTorch's sdpa attention: the same result, as fast"
                self.changed("xformers", "training.attention", chosen, why)
            else:
                self.mapped("xformers", "training.attention", chosen, reason)
        if "sdpa" in data:
            ok, sdpa = self.convert("sdpa", _bool)
            if ok:
                if sdpa and chosen is None:
                    chosen = "sdpa"
                    self.mapped("sdpa", "training.attention", "sdpa")
                else:
                    self.ignored("sdpa", "off" if not sdpa else "xformers is already set")
        if "mem_eff_attn" in data:
            ok, mem = self.convert("mem_eff_attn", _bool)
            if ok:
                if mem:
                    self.unsupported(
                        "mem_eff_attn",
                        f"kohya's own memory-efficient attention is not supported; "
                        f"training.attention = {chosen or 'sdpa'} is used (also memory-efficient)",
                    )
                else:
                    self.ignored("mem_eff_attn", "off")

    def _noise(self) -> None:
        """The GUI's noise_offset_type chooses which noise settings it passes to sd-scripts:
        Original the plain offset (with its adaptive scale and random strength), Multires the
        multi-resolution noise. The others are not passed, so they have no effect."""
        data = self.data
        if self.family == "flux":
            for key in (*_ORIGINAL_NOISE_KEYS, *_MULTIRES_NOISE_KEYS, "noise_offset_type"):
                self.ignored(key, "FLUX.1 training has no noise offset (sd-scripts ignores it too)")
            return
        noise_type = str(data.get("noise_offset_type") or "Original").strip()
        if noise_type not in ("Original", "Multires"):
            self.unsupported("noise_offset_type", f"expected Original or Multires; {noise_type} is read as Original")
            noise_type = "Original"
        reads = {"Original": _ORIGINAL_NOISE_KEYS, "Multires": _MULTIRES_NOISE_KEYS}[noise_type]
        self.mapped("noise_offset_type", "", None, f"{noise_type}: the GUI passes {', '.join(reads)} to sd-scripts")
        for key in (*_ORIGINAL_NOISE_KEYS, *_MULTIRES_NOISE_KEYS):
            if key not in data:
                continue
            if key not in reads:
                self.ignored(key, f"only used with noise_offset_type {_NOISE_TYPE_OF[key]}, and it is {noise_type}")
                continue
            target = f"training.{key}"
            setting = BY_NAME.get(target)
            if setting is None:
                if not _is_neutral(data[key], _NEUTRAL.get(key, ((0,), ""))[0]):
                    self.unsupported(key, f"not supported yet: this loratui has no {target} setting")
                else:
                    self.ignored(key, "off at this value")
                continue
            ok, value = self.convert(key, _converter_for(setting))
            if ok:
                self.mapped(key, target, value, "" if value is not None else "empty")

    def _learning_rates(self) -> None:
        """kohya_ss GUI rules: "" counts as 0; unet_lr and text_encoder_lr both 0 -> learning_rate
        for both; only unet_lr set -> the U-Net alone is trained (text encoder frozen); only
        text_encoder_lr set -> the text encoder alone (loratui cannot do that); both set -> both."""
        data = self.data
        lrs: dict[str, float | None] = {}
        for key in ("learning_rate", "unet_lr", "text_encoder_lr"):
            if key in data:
                ok, value = self.convert(key, _float)
                lrs[key] = value if ok else None
        base = lrs.get("learning_rate") or None
        unet = lrs.get("unet_lr") or None
        if "text_encoder_lr" in data:
            te = lrs.get("text_encoder_lr") or None
        else:
            te = None
        te_missing = "text_encoder_lr" not in data
        if unet is None and te is None:
            if base is not None:
                also = "" if te_missing and "unet_lr" not in data else "; unet_lr/text_encoder_lr are 0 or empty"
                self.mapped("learning_rate", "optimizer.unet_lr", base, f"also the text encoder LR{also}")
                self._set("optimizer.text_encoder_lr", base)
            else:
                self.ignored("learning_rate", "0 or empty: loratui's default LRs are used")
            for key in ("unet_lr", "text_encoder_lr"):
                self.ignored(key, "0 or empty: kohya uses learning_rate")
        elif unet is not None and te is None:
            self.mapped("unet_lr", "optimizer.unet_lr", unet)
            if te_missing:
                if base is not None:
                    self.mapped(
                        "learning_rate",
                        "optimizer.text_encoder_lr",
                        base,
                        "text_encoder_lr not set: kohya uses learning_rate",
                    )
            else:
                self.mapped(
                    "text_encoder_lr",
                    "optimizer.text_encoder_lr",
                    0.0,
                    f"0 with unet_lr set: kohya trains the {self._denoiser} only, so the text encoder is frozen",
                )
                self._set("network.train_unet_only", True)  # kohya_ss passes --network_train_unet_only
            self.ignored("learning_rate", "unet_lr is set and takes precedence")
        elif unet is None:
            why = "0 with text_encoder_lr set: kohya_ss passes --network_train_text_encoder_only"
            self.mapped("unet_lr", "network.train_text_encoder_only", True, why)
            self.ignored("learning_rate", "text_encoder_lr is set and takes precedence; the U-Net is not trained")
            self.mapped("text_encoder_lr", "optimizer.text_encoder_lr", te)
        else:
            self.mapped("unet_lr", "optimizer.unet_lr", unet)
            self.mapped("text_encoder_lr", "optimizer.text_encoder_lr", te)
            self.ignored("learning_rate", "unet_lr and text_encoder_lr are set and take precedence")
        self._train_scope()

    def _train_scope(self) -> None:
        """The GUI's network_train_unet_only / _text_encoder_only keys: newer GUIs set these flags
        from the learning rates (above) whatever the key says; older ones passed the checkbox."""
        network = self.sections.get("network", {})
        for key, name in (
            ("network_train_unet_only", "train_unet_only"),
            ("network_train_text_encoder_only", "train_text_encoder_only"),
        ):
            if key not in self.data:
                continue
            ok, on = self.convert(key, _bool)
            if not ok:
                continue
            if network.get(name) is True:
                self.ignored(key, f"the learning rates already make it true (network.{name})")
            elif on:
                self.mapped(key, f"network.{name}", True)
            else:
                self.ignored(key, "off: the learning rates decide what trains")

    def _optimizer(self) -> None:
        data = self.data
        for key in ("optimizer", "optimizer_type"):
            if key not in data:
                continue
            ok, name = self.convert(key, _text)
            if not ok:
                continue
            if not name:
                self.mapped(key, "optimizer.name", None, "empty")
                continue
            known = canonical_optimizer(name)
            if known:
                self.mapped(key, "optimizer.name", known)
            else:
                # Kept as written so that validation shows it at optimizer.name with the choices.
                self._set("optimizer.name", name)
                self.unsupported(key, f"optimizer {name!r} is not supported; choose another on the Optimizer step")
        for key, name in (("use_8bit_adam", "AdamW8bit"), ("use_lion_optimizer", "Lion")):
            if key in data:
                ok, on = self.convert(key, _bool)
                if ok and on and "optimizer.name" not in self.sections.get("optimizer", {}):
                    self.mapped(key, "optimizer.name", name, "old GUI option")
                elif ok:
                    self.ignored(key, "old GUI option; optimizer is set" if on else "off")

    def _schedule_length(self) -> None:
        data = self.data
        if "max_train_epochs" in data:
            ok, epochs = self.convert("max_train_epochs", _int)
            if ok:
                if epochs:
                    self.mapped("max_train_epochs", "training.epochs", epochs, "overrides epoch, as in kohya")
                else:
                    self.ignored("max_train_epochs", "0 or empty: epoch is used")
        if "epoch" in data and "max_train_epochs" in self.done and self.report.group_of("max_train_epochs") == "mapped":
            self.ignored("epoch", "max_train_epochs is set and wins")
        # Warmup: lr_warmup_steps (newer GUIs) wins; lr_warmup is a percentage of the total steps.
        steps_set = False
        if "lr_warmup_steps" in data:
            ok, steps = self.convert("lr_warmup_steps", _int)
            if ok and steps:
                self.mapped("lr_warmup_steps", "optimizer.warmup_steps", steps)
                steps_set = True
            elif ok:
                self.ignored("lr_warmup_steps", "0: the percentage in lr_warmup is used")
        if "lr_warmup" in data:
            ok, percent = self.convert("lr_warmup", _float)
            if not ok:
                return
            if steps_set:
                self.ignored("lr_warmup", "lr_warmup_steps is set and wins")
            elif not percent:
                self.mapped("lr_warmup", "optimizer.warmup_steps", 0, "0% of the steps")
            else:
                self._warmup_percent(percent)

    def _warmup_percent(self, percent: float) -> None:
        """The GUI's lr_warmup, a percentage of the run: steps where the run's length is known, else
        a ratio of the steps (sd-scripts reads a warmup below 1 as one)."""
        ok_total, max_steps = True, None
        try:
            max_steps = _int(self.data.get("max_train_steps"))
        except _Unreadable:
            ok_total = False
        total = max_steps if ok_total and max_steps else self.total_steps
        if total:
            steps = round(percent * total / 100)
            self.changed("lr_warmup", "optimizer.warmup_steps", steps, f"a percentage: {percent:g}% of {total} steps")
        elif 0 < percent < 100 and "optimizer.warmup_ratio" in BY_NAME:
            ratio = round(percent / 100, 6)
            why = f"a percentage: {percent:g}% of the run's steps, which depend on the dataset, kept as that ratio"
            self.changed("lr_warmup", "optimizer.warmup_ratio", ratio, why)
        else:
            self.unsupported(
                "lr_warmup",
                f"{percent:g}% of the total steps, which depend on your dataset; set optimizer.warmup_steps "
                f"to {percent:g}% of the steps the Review step shows",
            )


# sd-scripts' on/off flags whose loratui setting is not a switch: flag -> (setting, value).
_SPECIAL_FLAGS: dict[str, tuple[str, object]] = {
    "xformers": ("training.attention", "xformers"),
    "sdpa": ("training.attention", "sdpa"),
    "cache_latents": ("dataset.cache_latents", "memory"),
    "cache_latents_to_disk": ("dataset.cache_latents", "disk"),
    "cache_text_encoder_outputs": ("dataset.cache_text_encoder_outputs", "memory"),
    "cache_text_encoder_outputs_to_disk": ("dataset.cache_text_encoder_outputs", "disk"),
}


# --network_args names (sd-scripts' networks, LyCORIS) -> the loratui setting.
_NETWORK_ARGS = {
    "algo": "network.type",
    "conv_dim": "network.conv_rank",
    "conv_alpha": "network.conv_alpha",
    "preset": "network.preset",
    "factor": "network.lokr_factor",
    "full_matrix": "network.lokr_full_matrix",
    "use_cp": "network.use_cp",
    "use_tucker": "network.use_cp",
    "dora_wd": "network.dora",
    "train_on_input": "network.train_on_input",
    "dropout": "network.dropout",
    "rank_dropout": "network.rank_dropout",
    "module_dropout": "network.module_dropout",
}

# sd-scripts flags that change nothing in what is trained, and why.
_HARMLESS_FLAGS = {
    "log_prefix": "a prefix of the log folder's name: loratui names its run folders itself",
    "log_tracker_name": "a tracker's run name: loratui names its runs itself",
    "wandb_run_name": "a Weights & Biases run name: loratui does not log there",
    "console_log_simple": "how sd-scripts prints its log",
    "console_log_level": "how sd-scripts prints its log",
}


def _split_flags(words: list[str]) -> list[tuple[str, list[str]]]:
    """``--a 1 --b --c=x y`` -> [("a", ["1"]), ("b", []), ("c", ["x", "y"])]; words before the
    first flag come as ("", [word])."""
    flags: list[tuple[str, list[str]]] = []
    for word in words:
        if word.startswith("--") and len(word) > 2:
            name, equals, value = word[2:].partition("=")
            flags.append((name.replace("-", "_"), [value] if equals else []))
        elif flags:
            flags[-1][1].append(word)
        else:
            flags.append(("", [word]))
    return flags


def _flag_value(setting: Setting, values: list[str]) -> object:
    """The words after an sd-scripts flag as the setting's value (argparse's rules: a switch takes
    none, a list takes all, anything else exactly one)."""
    if setting.type is bool:
        if not values:
            return True
        if len(values) == 1:
            return _bool(values[0])
        raise _Unreadable(f"an on/off flag, given {len(values)} words")
    if setting.type is list:
        return list(values)
    if len(values) != 1:
        raise _Unreadable(f"expected one value, got {len(values)}")
    return _converter_for(setting)(values[0])


def _safe_number(value: object) -> float | None:
    try:
        return _number(value)
    except _Unreadable:
        return None


def _safe_bool(value: object) -> bool | None:
    try:
        return _bool(value)
    except _Unreadable:
        return None


def _is_neutral(value: object, neutral: tuple[object, ...]) -> bool:
    """True when value means "off": equal to a neutral value, with kohya's strings read as numbers."""
    for candidate in neutral:
        if isinstance(candidate, bool):
            if _safe_bool(value) is candidate or (_is_empty(value) and candidate is False):
                return True
        elif isinstance(candidate, (int, float)):
            try:
                number = _number(value)
            except _Unreadable:
                continue
            if number is None or number == candidate:
                return True
        elif isinstance(value, str) and value.strip() == candidate:
            return True
        elif value is None:
            return True
    return False


def _looks_like_repo_id(path: str) -> bool:
    """``runwayml/stable-diffusion-v1-5``: one slash, no file suffix, not an existing or absolute path."""
    if path.startswith(("/", ".", "~")) or "\\" in path or ":" in path:
        return False
    parts = path.split("/")
    return len(parts) == 2 and all(parts) and not Path(path).suffix and not Path(path).exists()
