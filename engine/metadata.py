"""The ``ss_*`` training metadata written into every LoRA file (the names sd-scripts uses).

A1111/Forge read ``ss_base_model_version``, ``ss_output_name`` and ``sshs_model_hash`` to list and
filter LoRAs and show the rest (tag cloud from ``ss_tag_frequency``, dataset folders, buckets);
LoRA browsers and civitai show the training parameters. Every value is a string.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

from loratui.config import RunConfig, Schedule
from loratui.dataset import DatasetReport

BASE_MODEL_VERSION = {"sd1": "sd_v1", "sd2": "sd_v2"}
ARCHITECTURE = {"sd1": "stable-diffusion-v1/lora", "sd2": "stable-diffusion-v2-512/lora"}


@dataclass(frozen=True)
class RunFacts:
    """What the metadata needs that the config does not hold."""

    session_id: str
    started_at: float
    model_name: str
    optimizer_repr: str  # e.g. "bitsandbytes.optim.adamw.AdamW8bit(weight_decay=0.01)"
    train_text_encoder: bool


def new_session_id() -> str:
    return uuid.uuid4().hex


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def build_metadata(cfg: RunConfig, dataset: DatasetReport, schedule: Schedule, facts: RunFacts,
                   step: int, epoch: int) -> dict[str, str]:
    net, train, opt, out = cfg.network, cfg.training, cfg.optimizer, cfg.output
    family = cfg.model.family
    resolution = f"({cfg.dataset.resolution}, {cfg.dataset.resolution})"
    network_args = {"conv_dim": str(net.conv_rank), "conv_alpha": str(net.conv_alpha)} if net.conv_rank else {}
    values: dict[str, object] = {
        "ss_session_id": facts.session_id,
        "ss_training_started_at": int(facts.started_at),
        "ss_training_finished_at": int(time.time()),
        "ss_output_name": out.name,
        "ss_training_comment": out.comment,
        "ss_network_module": "networks.lora",
        "ss_network_dim": net.rank,
        "ss_network_alpha": _number(net.alpha),
        "ss_network_dropout": "None",
        "ss_network_args": _json(network_args) if network_args else None,
        "ss_base_model_version": BASE_MODEL_VERSION[family],
        "ss_v2": family == "sd2",
        "ss_sd_model_name": facts.model_name,
        "ss_learning_rate": opt.unet_lr,
        "ss_unet_lr": opt.unet_lr,
        "ss_text_encoder_lr": opt.text_encoder_lr,
        "ss_optimizer": facts.optimizer_repr,
        "ss_lr_scheduler": opt.scheduler,
        "ss_lr_warmup_steps": opt.warmup_steps,
        "ss_max_train_steps": schedule.total_steps,
        "ss_num_epochs": schedule.epochs,
        "ss_num_batches_per_epoch": dataset.steps_per_epoch(train.batch_size),
        "ss_steps": step,
        "ss_epoch": epoch,
        "ss_mixed_precision": train.mixed_precision,
        "ss_gradient_checkpointing": train.gradient_checkpointing,
        "ss_gradient_accumulation_steps": train.gradient_accumulation_steps,
        "ss_clip_skip": cfg.model.clip_skip,
        "ss_seed": train.seed,
        "ss_noise_offset": train.noise_offset if train.noise_offset else None,
        "ss_min_snr_gamma": train.min_snr_gamma if train.min_snr_gamma else None,
        "ss_max_grad_norm": train.max_grad_norm,
        "ss_num_train_images": _train_items(dataset),
        "ss_num_reg_images": dataset.num_reg_images,
        "ss_resolution": resolution,
        "ss_enable_bucket": cfg.dataset.enable_buckets,
        "ss_min_bucket_reso": cfg.dataset.min_bucket_reso if cfg.dataset.enable_buckets else None,
        "ss_max_bucket_reso": cfg.dataset.max_bucket_reso if cfg.dataset.enable_buckets else None,
        "ss_batch_size_per_device": train.batch_size,
        "ss_caption_extension": cfg.dataset.caption_extension,
        "ss_cache_latents": cfg.dataset.cache_latents != "off",
        "ss_v_parameterization": cfg.model.v_prediction,
        "ss_dataset_dirs": _json(dataset.dataset_dirs()),
        "ss_reg_dataset_dirs": _json(dataset.reg_dataset_dirs()),
        "ss_tag_frequency": _json(dataset.tag_frequency()),
        "ss_bucket_info": _json(dataset.bucket_info()),
        "ss_training_text_encoder": facts.train_text_encoder,
        # The SAI model spec keys that newer loaders and model browsers read.
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": ARCHITECTURE[family],
        "modelspec.implementation": "diffusers",
        "modelspec.title": out.name,
        "modelspec.resolution": f"{cfg.dataset.resolution}x{cfg.dataset.resolution}",
        "modelspec.date": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(facts.started_at)),
    }
    return {key: _text(value) for key, value in values.items() if value is not None}


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
