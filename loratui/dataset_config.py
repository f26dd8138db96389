"""sd-scripts' dataset config (``--dataset_config``, the kohya_ss GUI's ``dataset_config``) read into
loratui's settings: ``[dataset]``/``[training]`` values and ``[[subsets]]`` tables.

sd-scripts' file::

    [general]                  # options for every dataset and subset
    shuffle_caption = true
    [[datasets]]               # dataset-wide: resolution, batch_size, buckets
    resolution = 768
    [[datasets.subsets]]       # a folder of images, its repeats, class tokens and options
    image_dir = "/data/cats"
    num_repeats = 10

Its options "ascend": a subset's own value wins over its dataset's, which wins over [general]'s,
and a value set nowhere in the file comes from the command line (here: from the run config the
import goes into, so it is left out). The importer keeps that order: [general]'s options become the
[dataset] section's, a dataset's go into each of its subsets' tables.

What loratui cannot carry is listed with the reason, never dropped silently: fine-tuning datasets
(``metadata_file``), ControlNet ones (``conditioning_data_dir``), datasets whose size settings
differ from the first one's (loratui trains one resolution and one set of buckets), and options it
has no counterpart for. Torch-free; the kohya_ss import (:mod:`loratui.kohya_import`) calls it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from loratui.errors import UserError
from loratui.subset_options import OPTION_NAMES

# [[datasets]] keys (also allowed in [general]) -> loratui's setting.
_DATASET_KEYS: dict[str, str] = {
    "resolution": "dataset.resolution",
    "batch_size": "training.batch_size",
    "enable_bucket": "dataset.enable_buckets",
    "min_bucket_reso": "dataset.min_bucket_reso",
    "max_bucket_reso": "dataset.max_bucket_reso",
    "bucket_reso_steps": "dataset.bucket_reso_steps",
    "bucket_no_upscale": "dataset.bucket_no_upscale",
    "validation_split": "dataset.validation_split",
}
# Options sd-scripts takes at any level that a loratui [[subsets]] table holds.
_SUBSET_KEYS = ("num_repeats", "class_tokens", "caption_extension", *OPTION_NAMES)
# Keys taken only in [general] (sd-scripts: argparse-only there) -> loratui's setting.
_GENERAL_ONLY = {"max_token_length": "dataset.max_token_length", "prior_loss_weight": "training.prior_loss_weight"}
# What loratui has no counterpart for, and why (sd-scripts' names).
_NOT_CARRIED: dict[str, str] = {
    "color_aug": "loratui has no colour augmentation",
    "face_crop_aug_range": "loratui has no face-centred crop",
    "secondary_separator": "loratui's caption shuffle has no secondary separator",
    "caption_separator": "loratui's captions are separated by commas",
    "enable_wildcard": "loratui has no caption wildcards",
    "token_warmup_min": "loratui has no token warmup",
    "token_warmup_step": "loratui has no token warmup",
    "custom_attributes": "loratui has no custom attributes",
    "resize_interpolation": "loratui resizes with Lanczos",
    "cache_info": "loratui remembers image sizes by itself",
    "alpha_mask": "loratui has no alpha-mask loss",
    "network_multiplier": "loratui trains one network at multiplier 1",
    "validation_seed": "loratui chooses held-out images with training.seed",
    "debug_dataset": "a debugging switch of sd-scripts",
}


@dataclass
class DatasetConfigImport:
    """What :func:`import_dataset_config` read: values for the run config, and the report."""

    values: dict[str, object] = field(default_factory=dict)  # "dataset.resolution" -> 768
    subsets: list[dict[str, object]] = field(default_factory=list)  # [[subsets]] tables as loratui writes them
    carried: list[str] = field(default_factory=list)  # "datasets[1].resolution = 768 -> dataset.resolution"
    not_carried: list[str] = field(default_factory=list)  # "datasets[1].subsets[2].color_aug: why"

    def sections(self) -> dict[str, object]:
        """The values as config_from_dict's data: {"dataset": {...}, "training": {...}, "subsets": [...]}."""
        data: dict[str, object] = {}
        for name, value in self.values.items():
            section, _, key = name.partition(".")
            data.setdefault(section, {})[key] = value  # type: ignore[index]
        if self.subsets:
            data["subsets"] = [dict(table) for table in self.subsets]
        return data

    @property
    def lines(self) -> list[str]:
        """The report: each value carried, then each one not carried with its reason."""
        return [*self.carried, *(f"not carried: {line}" for line in self.not_carried)]


def import_dataset_config(path: str | Path) -> DatasetConfigImport:
    """Read sd-scripts' dataset config TOML at ``path``; UserError naming the file when it is no such file."""
    path = Path(path).expanduser()
    data = _read(path)
    result = DatasetConfigImport()
    general = data.get("general", {})
    datasets = data.get("datasets", [])
    if (
        not isinstance(general, dict)
        or not isinstance(datasets, list)
        or not all(isinstance(d, dict) for d in datasets)
    ):
        raise UserError(
            "not an sd-scripts dataset config: [general] must be a table and [[datasets]] tables",
            str(path),
            "give the .toml file passed to sd-scripts as --dataset_config",
        )
    for key in data:
        if key not in ("general", "datasets"):
            result.not_carried.append(f"{key}: not a part of an sd-scripts dataset config ([general], [[datasets]])")
    general_options = _general(general, result)
    first_sizes: dict[str, object] | None = None
    for number, dataset in enumerate(datasets, start=1):
        where = f"datasets[{number}]"
        sizes = {key: dataset[key] for key in _DATASET_KEYS if key in dataset}
        if first_sizes is None:
            first_sizes = sizes
            for key, value in sizes.items():
                _carry_dataset_value(f"{where}.{key}", key, value, result)
        elif sizes != first_sizes:
            differing = ", ".join(f"{key} = {value!r}" for key, value in sizes.items() if first_sizes.get(key) != value)
            result.not_carried.append(
                f"{where}: its {differing or 'size settings'} differ from datasets[1]'s; loratui trains one "
                "resolution, batch size and set of buckets, so its subsets are trained with datasets[1]'s"
            )
        _dataset_subsets(where, dataset, general_options, result)
    if not result.subsets:
        result.not_carried.append(
            "no image folder could be carried: the file has no [[datasets.subsets]] with image_dir"
        )
    if any(not Path(str(table["image_dir"])).expanduser().is_absolute() for table in result.subsets):
        result.carried.append(
            "relative image_dir paths were read by sd-scripts from the folder it ran in; loratui reads them from "
            "the run config's folder: check that they still lead to the images"
        )
    return result


def _read(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as err:
        raise UserError("dataset config not found", str(path), "check the path of the dataset config .toml") from err
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read the dataset config: {err}", str(path), "give a UTF-8 .toml file") from err
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"the dataset config is not valid TOML: {err}", str(path), "correct the line named") from err


def _general(general: dict, result: DatasetConfigImport) -> dict[str, object]:
    """[general]: dataset values and options for everything; the options become [dataset]'s."""
    options: dict[str, object] = {}
    for key, value in general.items():
        where = f"general.{key}"
        if key in _DATASET_KEYS:
            _carry_dataset_value(where, key, value, result)
        elif key in _GENERAL_ONLY:
            _carry(where, _GENERAL_ONLY[key], value, result)
        elif key in OPTION_NAMES or key == "caption_extension":
            _carry(where, f"dataset.{key}", value, result)
        elif key in ("num_repeats", "class_tokens"):
            options[key] = value  # every subset's, unless it has its own
        else:
            result.not_carried.append(f"{where}: {_NOT_CARRIED.get(key, 'loratui has no such setting')}")
    return options


def _carry_dataset_value(where: str, key: str, value: object, result: DatasetConfigImport) -> None:
    if key == "resolution" and isinstance(value, list):
        if len(value) == 2 and value[0] == value[1]:
            value = value[0]
        else:
            result.not_carried.append(
                f"{where} = {value!r}: loratui trains square resolutions (buckets give other shapes); "
                "set dataset.resolution to the side of a square of the same area"
            )
            return
    _carry(where, _DATASET_KEYS[key], value, result)


def _carry(where: str, name: str, value: object, result: DatasetConfigImport) -> None:
    result.values[name] = value
    result.carried.append(f"{where} = {value!r} -> {name}")


def _dataset_subsets(
    where: str, dataset: dict, general_options: dict[str, object], result: DatasetConfigImport
) -> None:
    """One [[datasets]] table's subsets, with its own options ascended into each of them."""
    inherited = dict(general_options)
    for key, value in dataset.items():
        if key in _DATASET_KEYS or key == "subsets":
            continue
        if key in _SUBSET_KEYS:
            inherited[key] = value
        elif key in _GENERAL_ONLY:
            result.not_carried.append(f"{where}.{key}: sd-scripts takes it only in [general] or on the command line")
        else:
            result.not_carried.append(f"{where}.{key}: {_NOT_CARRIED.get(key, 'loratui has no such setting')}")
    subsets = dataset.get("subsets", [])
    if not isinstance(subsets, list) or not subsets:
        result.not_carried.append(f"{where}: it has no [[datasets.subsets]], so no images")
        return
    for number, subset in enumerate(subsets, start=1):
        if isinstance(subset, dict):
            _subset(f"{where}.subsets[{number}]", subset, inherited, result)


def _subset(where: str, subset: dict, inherited: dict[str, object], result: DatasetConfigImport) -> None:
    if "metadata_file" in subset:
        result.not_carried.append(
            f"{where}: a fine-tuning subset (metadata_file = {subset['metadata_file']!r}): loratui reads captions "
            "from files beside the images; run sd-scripts' merge_captions_to_metadata the other way, or write them"
        )
        return
    if "conditioning_data_dir" in subset:
        result.not_carried.append(f"{where}: a ControlNet subset (conditioning_data_dir): loratui trains LoRA only")
        return
    if not isinstance(subset.get("image_dir"), str):
        result.not_carried.append(f"{where}: no image_dir, so no images")
        return
    table: dict[str, object] = {"image_dir": subset["image_dir"]}
    table.update({key: value for key, value in inherited.items() if key in _SUBSET_KEYS})
    for key, value in subset.items():
        if key in ("image_dir", *_SUBSET_KEYS):
            table[key] = value
        elif key == "is_reg":
            table["is_reg"] = value
        elif key == "validation_split":
            result.not_carried.append(
                f"{where}.validation_split: loratui holds out one fraction, dataset.validation_split"
            )
        else:
            result.not_carried.append(f"{where}.{key}: {_NOT_CARRIED.get(key, 'loratui has no such setting')}")
    result.subsets.append(table)
    shown = ", ".join(f"{key} = {value!r}" for key, value in table.items())
    result.carried.append(f"{where} -> subsets[{len(result.subsets)}]: {shown}")
