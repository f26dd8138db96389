"""Starting points for the wizard: a few settings each, the rest keeps what is already set.

The numbers come from the kohya guides the users learnt from: network rank 128 for faces and 64
for anime and styles, alpha at half the rank, batch 1 so that small GPUs fit, 10 epochs saved
one by one to pick the best, AdamW8bit as the stable optimizer, cosine with 3 restarts. Paths are
never part of a preset, except the built-in test model's.
"""

from __future__ import annotations

from dataclasses import dataclass

from loratui.config import RunConfig, config_from_dict, config_to_dict


@dataclass(frozen=True)
class Preset:
    key: str
    title: str
    description: str  # one line, shown when the preset is applied
    values: dict[str, dict[str, object]]  # config sections, only the keys the preset sets


PRESETS: tuple[Preset, ...] = (
    Preset(
        "sd15-face",
        "SD1.5 face / person",
        "rank 128, alpha 64, 512 px square crops, batch 1, 10 epochs, AdamW8bit, cosine with 3 restarts",
        {
            "model": {"family": "sd1", "v_prediction": False, "clip_skip": 1},
            "dataset": {"resolution": 512, "enable_buckets": False, "cache_latents": "memory"},
            "network": {"rank": 128, "alpha": 64.0, "conv_rank": 0},
            "training": {"batch_size": 1, "epochs": 10, "max_train_steps": 0, "mixed_precision": "fp16"},
            "optimizer": {
                "name": "AdamW8bit",
                "args": [],
                "unet_lr": 1e-4,
                "text_encoder_lr": 5e-5,
                "scheduler": "cosine_with_restarts",
                "scheduler_cycles": 3,
                "warmup_steps": 0,
            },
            "output": {"save_every_n_epochs": 1, "save_precision": "fp16"},
        },
    ),
    Preset(
        "sd15-style",
        "SD1.5 style / anime",
        "rank 64, alpha 32, clip skip 2, buckets on, batch 1, 10 epochs, AdamW8bit, cosine with 3 restarts",
        {
            "model": {"family": "sd1", "v_prediction": False, "clip_skip": 2},
            "dataset": {
                "resolution": 512,
                "enable_buckets": True,
                "min_bucket_reso": 256,
                "max_bucket_reso": 1024,
                "bucket_reso_steps": 64,
                "cache_latents": "memory",
            },
            "network": {"rank": 64, "alpha": 32.0, "conv_rank": 0},
            "training": {"batch_size": 1, "epochs": 10, "max_train_steps": 0, "mixed_precision": "fp16"},
            "optimizer": {
                "name": "AdamW8bit",
                "args": [],
                "unet_lr": 1e-4,
                "text_encoder_lr": 5e-5,
                "scheduler": "cosine_with_restarts",
                "scheduler_cycles": 3,
                "warmup_steps": 0,
            },
            "output": {"save_every_n_epochs": 1, "save_precision": "fp16"},
        },
    ),
    Preset(
        "sd15-low-vram",
        "SD1.5 low VRAM (Adafactor)",
        "Adafactor with relative_step, LR 1, gradient checkpointing, batch 1, rank 32, alpha 16",
        {
            "model": {"family": "sd1"},
            "dataset": {"resolution": 512, "cache_latents": "disk"},
            "network": {"rank": 32, "alpha": 16.0},
            "training": {"batch_size": 1, "gradient_checkpointing": True, "mixed_precision": "fp16"},
            "optimizer": {
                "name": "Adafactor",
                "args": ["relative_step=True", "scale_parameter=True", "warmup_init=True"],
                "unet_lr": 1.0,
                "text_encoder_lr": 1.0,
                "scheduler": "constant",
                "warmup_steps": 0,
            },
        },
    ),
    Preset(
        "sd15-dadapt",
        "SD1.5 adaptive LR (DAdaptAdam)",
        "DAdaptAdam with decouple=True weight_decay=0.01 betas=0.9,0.999 and LR 1 (needs 6 GB VRAM or more)",
        {
            "model": {"family": "sd1"},
            "optimizer": {
                "name": "DAdaptAdam",
                "args": ["decouple=True", "weight_decay=0.01", "betas=0.9,0.999"],
                "unet_lr": 1.0,
                "text_encoder_lr": 1.0,
                "scheduler": "constant",
                "warmup_steps": 0,
            },
        },
    ),
    Preset(
        "tiny-test",
        "Built-in tiny model (a one-minute test run)",
        "loratui:tiny-sd at 128 px, rank 8, batch 4, 2 epochs, AdamW: checks the whole setup on any machine",
        {
            "model": {
                "path": "loratui:tiny-sd",
                "family": "sd1",
                "v_prediction": False,
                "tokenizer": "",
                "clip_skip": 1,
            },
            "dataset": {
                "resolution": 128,
                "enable_buckets": True,
                "min_bucket_reso": 64,
                "max_bucket_reso": 256,
                "bucket_reso_steps": 64,
                "cache_latents": "memory",
            },
            "network": {"rank": 8, "alpha": 4.0, "conv_rank": 0},
            "training": {"batch_size": 4, "epochs": 2, "max_train_steps": 0, "mixed_precision": "no"},
            "optimizer": {
                "name": "AdamW",
                "args": [],
                "unet_lr": 1e-3,
                "text_encoder_lr": 5e-4,
                "scheduler": "cosine",
                "warmup_steps": 5,
            },
            "output": {"save_every_n_epochs": 1},
        },
    ),
)

PRESETS_BY_KEY = {preset.key: preset for preset in PRESETS}


def apply_preset(cfg: RunConfig, preset: Preset) -> RunConfig:
    """A copy of cfg with the preset's settings; everything the preset does not name is kept."""
    data = config_to_dict(cfg)
    for section, values in preset.values.items():
        data[section].update(values)
    return config_from_dict(data, cfg.base_dir)
