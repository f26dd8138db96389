"""Import a kohya_ss GUI config (the JSON its "Save" button writes and users share) as a run config.

A kohya_ss GUI config is one flat JSON object with up to ~250 keys: the LoRA settings loratui
has, settings of features loratui does not have, settings of other trainers (SDXL, SD3, Flux,
DreamBooth) and pure GUI state. :func:`import_kohya` turns it into the sections
:func:`loratui.config.config_from_dict` takes, and an :class:`ImportReport` that puts **every** key
of the file into exactly one group, with its value:

- ``mapped``: the key became a loratui setting (shown with the field and the converted value);
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
``optimizer.warmup_steps`` when the total is known.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from loratui.config import RunConfig, config_from_dict
from loratui.errors import UserError
from loratui.families import family_name, setting_applies
from loratui.optimizer_args import canonical_optimizer
from loratui.params import BY_NAME, FLUX_ONLY, SETTINGS, Setting
from loratui.quantities import count

SECRET_KEYS = frozenset({"huggingface_token", "wandb_api_key"})
_SECRET_MASK = "(hidden)"


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

    def line(self) -> str:
        text = f"{self.key} = {_show(self.value)}"
        if self.target:
            shown = "loratui's default" if self.converted is None else _show(self.converted)
            text += f" -> {self.target} = {shown}"
        if self.reason:
            text += f" ({self.reason})"
        return text


@dataclass
class ImportReport:
    """Where every key of an imported kohya_ss config went."""

    source: str = ""
    blockers: list[str] = field(default_factory=list)  # model types loratui cannot train yet
    mapped: list[ImportEntry] = field(default_factory=list)
    unsupported: list[ImportEntry] = field(default_factory=list)
    unknown: list[ImportEntry] = field(default_factory=list)
    ignored: list[ImportEntry] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        """Every key accounted for, in report order (each key of the file exactly once)."""
        return [e.key for group in (self.mapped, self.unsupported, self.unknown, self.ignored) for e in group]

    def entry(self, key: str) -> ImportEntry | None:
        for group in (self.mapped, self.unsupported, self.unknown, self.ignored):
            for entry in group:
                if entry.key == key:
                    return entry
        return None

    def group_of(self, key: str) -> str | None:
        for name in ("mapped", "unsupported", "unknown", "ignored"):
            if any(entry.key == key for entry in getattr(self, name)):
                return name
        return None

    def summary(self) -> str:
        name = f"{Path(self.source).name}: " if self.source else ""
        return (
            f"{name}{len(self.mapped)} settings imported, {len(self.unsupported)} not supported, "
            f"{len(self.unknown)} unknown, {len(self.ignored)} ignored (no effect)"
        )

    def lines(self) -> list[str]:
        """The whole report as plain text lines, most important first."""
        lines = [self.summary()]
        lines += [f"NOT SUPPORTED YET: {blocker}" for blocker in self.blockers]
        sections = (
            ("Not supported (these settings had no effect)", self.unsupported),
            ("Unknown keys (not read)", self.unknown),
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
    "keep_tokens": ((0,), "keeping the first caption tokens in place"),
    "shuffle_caption": ((False,), "shuffling caption tags"),
    "weighted_captions": ((False,), "weighted captions"),
    "caption_dropout_rate": ((0,), "caption dropout"),
    "caption_dropout_every_n_epochs": ((0,), "caption dropout"),
    "max_token_length": ((75,), "captions longer than 75 tokens"),
    "flip_aug": ((False,), "flip augmentation"),
    "color_aug": ((False,), "colour augmentation"),
    "random_crop": ((False,), "random crops"),
    "bucket_no_upscale": (
        (False,),
        "leaving small images as they are (loratui upscales them to their bucket; the Dataset step lists them)",
    ),
    "dataset_config": (("",), "a dataset TOML; loratui reads the img/<repeats>_<name> folders"),
    "prior_loss_weight": ((1,), "a regularisation loss weight other than 1"),
    # loss and noise
    "masked_loss": ((False,), "masked loss"),
    "loss_type": (("l2",), "loss types other than l2"),
    "debiased_estimation_loss": ((False,), "debiased estimation loss"),
    "scale_v_pred_loss_like_noise_pred": ((False,), "scaling the v-prediction loss"),
    "v_pred_like_loss": ((0,), "v-prediction-like loss"),
    "adaptive_noise_scale": ((0,), "adaptive noise scale"),
    "noise_offset_random_strength": ((False,), "random noise offset strength"),
    "ip_noise_gamma": ((0,), "input perturbation noise"),
    "ip_noise_gamma_random_strength": ((False,), "random input perturbation strength"),
    "min_timestep": ((0,), "a restricted timestep range"),
    "max_timestep": ((1000,), "a restricted timestep range"),
    # network variants
    "network_dropout": ((0,), "network dropout"),
    "rank_dropout": ((0,), "rank dropout"),
    "module_dropout": ((0,), "module dropout"),
    "scale_weight_norms": ((0,), "max-norm regularisation"),
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
    "dora_wd": ((False,), "DoRA"),
    "bypass_mode": ((False,), "LyCORIS bypass mode"),
    "train_norm": ((False,), "training norm layers (LyCORIS)"),
    "use_cp": ((False,), "LyCORIS CP decomposition"),
    "use_tucker": ((False,), "LyCORIS Tucker decomposition"),
    "use_scalar": ((False,), "LyCORIS scalar"),
    "rank_dropout_scale": ((False,), "LyCORIS rank dropout scale"),
    "constrain": ((0,), "LyCORIS constrain"),
    "rescaled": ((False,), "LyCORIS rescaling"),
    "decompose_both": ((False,), "LyCORIS LoKr decompose_both"),
    "factor": ((-1,), "LyCORIS LoKr factor"),
    "unit": ((1,), "DyLoRA units"),
    # optimizer and schedule extras
    "lr_scheduler_args": (("",), "extra scheduler arguments"),
    "lr_scheduler_type": (("",), "a custom scheduler class"),
    "stop_text_encoder_training": ((0,), "stopping text encoder training early"),
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
    "save_every_n_steps": ((0,), "saving every n steps; loratui saves per epoch"),
    "save_last_n_steps": ((0,), "keeping only the last n step checkpoints"),
    "save_last_n_steps_state": ((0,), "keeping only the last n step states"),
    "save_last_n_epochs": ((0,), "keeping only the last n epochs"),
    "save_last_n_epochs_state": ((0,), "keeping only the last n epoch states"),
    "save_state_on_train_end": (
        (False,),
        "saving the state only at the end; output.save_state saves it with every checkpoint",
    ),
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
    "additional_parameters": (("",), "extra sd-scripts command-line arguments"),
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
    "LyCORIS_preset": "only used by LyCORIS network types",
    "train_on_input": "only used by LyCORIS/iA3",
    "huber_c": "only used with loss_type huber/smooth_l1",
    "huber_schedule": "only used with loss_type huber/smooth_l1",
    "huber_scale": "only used with loss_type huber/smooth_l1",
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

# Network types loratui trains: plain LoRA, and LoCon conv layers the kohya way.
_LORA_TYPES = ("Standard", "Kohya LoCon")
_FLUX_LORA_TYPE = "Flux1"  # the GUI's name for sd-scripts' networks.lora_flux

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

    @property
    def _denoiser(self) -> str:
        """What the report calls the model trained on unet_lr."""
        return "transformer" if self.family == "flux" else "U-Net"

    # -- bookkeeping ---------------------------------------------------------------------------

    def _value(self, key: str) -> object:
        value = self.data.get(key)
        if key in SECRET_KEYS and not _is_empty(value):
            return _SECRET_MASK
        return value

    def _set(self, target: str, value: object) -> None:
        section, name = target.split(".")
        self.sections.setdefault(section, {})[name] = value
        if target == "optimizer.text_encoder_lr":
            # kohya has one text encoder rate: SDXL trains both encoders at it.
            self.sections[section]["text_encoder_2_lr"] = value

    def mapped(self, key: str, target: str, converted: object, reason: str = "") -> None:
        if converted is not None:
            self._set(target, converted)
        if target == "optimizer.text_encoder_lr" and converted is not None and self.family == "sdxl":
            also = "also optimizer.text_encoder_2_lr: kohya trains both SDXL text encoders at one rate"
            reason = f"{reason}; {also}" if reason else also
        self._add(self.report.mapped, ImportEntry(key, self._value(key), target, converted, reason))

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
        for key in self.data:
            if key in self.done:
                continue
            if key in _DIRECT:
                target, converter = _DIRECT[key]
                if not setting_applies(BY_NAME[target].families, self.family):
                    self._not_of_this_family(key, BY_NAME[target])
                    continue
                ok, value = self.convert(key, converter)
                if ok:
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
        return KohyaImport(self.sections, self.report)

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
        self.mapped("split_mode", "training.blocks_to_swap", 18, reason)
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
        data = self.data
        lora_type = str(data.get("LoRA_type") or "Standard")
        if "LoRA_type" in data:
            if lora_type in _LORA_TYPES:
                self.ignored(
                    "LoRA_type",
                    "loratui trains this network type"
                    + (" (LoCon: conv_dim/conv_alpha)" if lora_type == "Kohya LoCon" else ""),
                )
            elif lora_type == _FLUX_LORA_TYPE:
                self.ignored("LoRA_type", "loratui trains this network type: a FLUX.1 LoRA (networks.lora_flux)")
            elif lora_type.lower().startswith("flux"):
                self.unsupported("LoRA_type", f"network type {lora_type!r} is not supported; imported as a FLUX.1 LoRA")
            else:
                self.unsupported(
                    "LoRA_type", f"network type {lora_type!r} is not supported; imported as a standard LoRA"
                )
        for key, target, converter in (
            ("conv_dim", "network.conv_rank", _int),
            ("conv_alpha", "network.conv_alpha", _float),
        ):
            if key not in data:
                continue
            if lora_type == "Kohya LoCon":
                ok, value = self.convert(key, converter)
                if ok:
                    self.mapped(key, target, value)
            else:
                self.ignored(key, f"only used by LoCon network types, and LoRA_type is {lora_type!r}")

    def _dataset_specials(self) -> None:
        data = self.data
        if "caption_extension" in data:
            ok, ext = self.convert("caption_extension", _text)
            if ok:
                if not ext:
                    self.mapped(
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
        self.mapped(
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
        data = self.data
        if self.family == "flux":
            for key in ("noise_offset_type", "noise_offset", "multires_noise_iterations", "multires_noise_discount"):
                self.ignored(key, "FLUX.1 training has no noise offset (sd-scripts ignores it too)")
            return
        noise_type = str(data.get("noise_offset_type") or "Original")
        if "noise_offset_type" in data:
            if noise_type == "Original":
                self.ignored("noise_offset_type", "the plain noise offset, as loratui's training.noise_offset")
            else:
                self.unsupported(
                    "noise_offset_type", f"{noise_type} noise is not supported; loratui only has the plain noise offset"
                )
        if "noise_offset" in data:
            if noise_type == "Original":
                ok, value = self.convert("noise_offset", _float)
                if ok:
                    self.mapped("noise_offset", "training.noise_offset", value, "" if value is not None else "empty")
            else:
                self.ignored("noise_offset", f"only used with noise_offset_type Original, and it is {noise_type}")
        for key in ("multires_noise_iterations", "multires_noise_discount"):
            if key not in data:
                continue
            if noise_type != "Multires":
                self.ignored(key, f"only used with noise_offset_type Multires, and it is {noise_type}")
            elif key == "multires_noise_iterations" and not _is_neutral(data[key], (0,)):
                self.unsupported(key, "multi-resolution noise is not supported; training.noise_offset stays 0")
            else:
                self.ignored(
                    key, "multi-resolution noise is not supported" if key.endswith("discount") else "off at this value"
                )

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
            self.ignored("learning_rate", "unet_lr is set and takes precedence")
        elif unet is None:
            self.unsupported(
                "unet_lr",
                "training only the text encoder (unet_lr 0) is not supported; "
                f"the {self._denoiser} LR is learning_rate, or loratui's default",
            )
            if base is not None:
                self.mapped("learning_rate", "optimizer.unet_lr", base)
            self.mapped("text_encoder_lr", "optimizer.text_encoder_lr", te)
        else:
            self.mapped("unet_lr", "optimizer.unet_lr", unet)
            self.mapped("text_encoder_lr", "optimizer.text_encoder_lr", te)
            self.ignored("learning_rate", "unet_lr and text_encoder_lr are set and take precedence")

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
                ok_total, max_steps = True, None
                try:
                    max_steps = _int(data.get("max_train_steps"))
                except _Unreadable:
                    ok_total = False
                total = max_steps if ok_total and max_steps else self.total_steps
                if total:
                    steps = round(percent * total / 100)
                    self.mapped("lr_warmup", "optimizer.warmup_steps", steps, f"{percent:g}% of {total} steps")
                else:
                    self.unsupported(
                        "lr_warmup",
                        f"{percent:g}% of the total steps, which depend on your dataset; set optimizer.warmup_steps "
                        f"to {percent:g}% of the steps the Review step shows",
                    )


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
