"""The ``ss_*`` training metadata written into every LoRA file (the names sd-scripts uses).

Each setting's own key is declared with the setting (:mod:`loratui.params`); this module adds
what only the run knows: its times, the dataset scan, the schedule, the optimizer it built.

A1111/Forge read ``ss_base_model_version``, ``ss_output_name`` and ``sshs_model_hash`` to list and
filter LoRAs and show the rest (tag cloud from ``ss_tag_frequency``, dataset folders, buckets);
LoRA browsers and civitai show the training parameters. Every value is a string.

The SAI model spec keys (``modelspec.*``) follow sd-scripts (library/sai_model_spec.py): an SDXL file
declares spec 1.0.1 with its prediction type, as sd-scripts writes it; SD 1.x/2.x files keep the
1.0.0 keys loratui has always written for them.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

from engine.lycoris_network import network_args as lycoris_network_args
from loratui.config import RunConfig
from loratui.dataset import DatasetReport
from loratui.errors import UserError
from loratui.optimizer_args import adafactor_relative_step, canonical_optimizer, parse_optimizer_args
from loratui.params import LYCORIS_NETWORK_MODULE, LYCORIS_TYPES, SETTINGS
from loratui.schedule import Schedule

# The families whose files declare the SAI model spec 1.0.1 (sd-scripts' library/sai_model_spec.py), and
# those of them with a modelspec.prediction_type (a flow model has none).
MODELSPEC_1_0_1_FAMILIES = ("sdxl", "flux")
PREDICTION_TYPE_FAMILIES = ("sdxl",)


@dataclass(frozen=True)
class RunFacts:
    """What the metadata needs that the config does not hold."""

    session_id: str
    started_at: float
    model_name: str
    optimizer_repr: str  # e.g. "bitsandbytes.optim.adamw.AdamW8bit(weight_decay=0.01)"
    train_text_encoder: bool
    # The model family's own values (engine/families): ss_v2, modelspec.architecture, modelspec.implementation,
    # and any other ss_* key it writes (Flux: ss_model_type).
    family_metadata: dict[str, object]


def new_session_id() -> str:
    return uuid.uuid4().hex


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def build_metadata(
    cfg: RunConfig, dataset: DatasetReport, schedule: Schedule, facts: RunFacts, step: int, epoch: int
) -> dict[str, str]:
    """Every metadata key: the settings' own (declared in loratui.params), then what the run,
    the dataset scan and the schedule know."""
    return {
        key: _text(value)
        for key, value in {
            **declared_metadata(cfg),
            **_run_metadata(cfg, dataset, schedule, facts, step, epoch),
        }.items()
        if value is not None
    }


def declared_metadata(cfg: RunConfig) -> dict[str, object]:
    """The ss_* keys of the settings, as their declarations say (None: not written)."""
    values: dict[str, object] = {}
    for setting in SETTINGS:
        if not setting.metadata_keys or (setting.when is not None and not setting.when.holds(cfg)):
            continue
        if cfg.model.family not in setting.families:  # e.g. clip skip, which SDXL ignores: not recorded
            continue
        value = cfg.get(setting.name)
        if setting.metadata_value is not None:
            value = setting.metadata_value(value)
        values.update(dict.fromkeys(setting.metadata_keys, value))
    return values


def _run_metadata(
    cfg: RunConfig, dataset: DatasetReport, schedule: Schedule, facts: RunFacts, step: int, epoch: int
) -> dict[str, object]:
    net = cfg.network
    family = facts.family_metadata
    resolution = cfg.dataset.resolution
    if net.type in LYCORIS_TYPES:  # sd-scripts records the network args it passed to lycoris.kohya
        network_module, network_args = LYCORIS_NETWORK_MODULE, lycoris_network_args(net)
    else:
        network_module = "networks.lora"
        network_args = {"conv_dim": str(net.conv_rank), "conv_alpha": str(net.conv_alpha)} if net.conv_rank else {}
    return {
        "ss_session_id": facts.session_id,
        "ss_training_started_at": int(facts.started_at),
        "ss_training_finished_at": int(time.time()),
        "ss_network_module": network_module,
        "ss_network_args": _json(network_args) if network_args else None,
        "ss_v2": family["ss_v2"],
        "ss_sd_model_name": facts.model_name,
        "ss_optimizer": facts.optimizer_repr,
        "ss_max_train_steps": schedule.total_steps,
        "ss_num_epochs": schedule.epochs,
        "ss_num_batches_per_epoch": dataset.steps_per_epoch(cfg.training.batch_size),
        "ss_steps": step,
        "ss_epoch": epoch,
        "ss_num_train_images": _train_items(dataset),
        "ss_num_reg_images": dataset.num_reg_images,
        "ss_resolution": f"({resolution}, {resolution})",
        "ss_dataset_dirs": _json(dataset.dataset_dirs()),
        "ss_reg_dataset_dirs": _json(dataset.reg_dataset_dirs()),
        "ss_tag_frequency": _json(dataset.tag_frequency()),
        "ss_bucket_info": _json(dataset.bucket_info()),
        "ss_training_text_encoder": facts.train_text_encoder,
        **_schedule_metadata(cfg),
        **{key: value for key, value in family.items() if key.startswith("ss_")},
        # The SAI model spec keys that newer loaders and model browsers read.
        **_modelspec(cfg, facts),
    }


def _schedule_metadata(cfg: RunConfig) -> dict[str, object]:
    """As sd-scripts records them: a warmup given as a ratio is written as the ratio, and Adafactor with
    relative_step (its default) runs the schedule "adafactor:<initial lr>" whatever lr_scheduler said."""
    opt, values = cfg.optimizer, {}
    if opt.warmup_ratio:
        values["ss_lr_warmup_steps"] = opt.warmup_ratio
    try:
        relative_step = adafactor_relative_step(parse_optimizer_args(opt.args))
    except UserError:
        relative_step = False  # the check refuses such args before a file is written
    if canonical_optimizer(opt.name) == "Adafactor" and relative_step:
        values["ss_lr_scheduler"] = f"adafactor:{opt.unet_lr}"
    return values


def _modelspec(cfg: RunConfig, facts: RunFacts) -> dict[str, object]:
    family = facts.family_metadata
    resolution = cfg.dataset.resolution
    spec_1_0_1 = cfg.model.family in MODELSPEC_1_0_1_FAMILIES
    return {
        "modelspec.sai_model_spec": "1.0.1" if spec_1_0_1 else "1.0.0",
        "modelspec.architecture": family["modelspec.architecture"],
        "modelspec.implementation": family["modelspec.implementation"],
        "modelspec.title": cfg.output.name,
        "modelspec.resolution": f"{resolution}x{resolution}",
        "modelspec.date": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(facts.started_at)),
        "modelspec.prediction_type": (
            ("v" if cfg.model.v_prediction else "epsilon") if cfg.model.family in PREDICTION_TYPE_FAMILIES else None
        ),
    }


def _train_items(dataset: DatasetReport) -> int:
    # kohya's ss_num_train_images counts images x repeats: the items one epoch trains.
    return sum(len(c.images) * c.repeats for c in dataset.concepts)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        return _number(value) if value.is_integer() and abs(value) >= 1 else repr(value)
    return str(value)
