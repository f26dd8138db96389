"""Starting points for the wizard: a few settings each, the rest keeps what is already set.

The numbers come from the kohya guides the users learnt from: network rank 128 for faces and 64
for anime and styles, alpha at half the rank, batch 1 so that small GPUs fit, 10 epochs saved
one by one to pick the best, AdamW8bit as the stable optimizer, cosine with 3 restarts. The SDXL
ones from the SDXL guide (1024 px crops, 25 repeats with as many reg images, 8 epochs: 2600 steps
for 13 images at batch 2) and kohya_ss's SDXL presets (Adafactor at 1e-3, the U-Net alone with the
text outputs cached, the VAE in float32, buckets in steps of 32 up to 2048). Paths are never part
of a preset, except the built-in test models'.

Every preset sets its family, and the settings that differ between families (the text encoder
caching, U-Net only), so that a preset applied after another of another family leaves nothing of
the first behind.
"""

from __future__ import annotations

from dataclasses import dataclass

from loratui.config import RunConfig, config_from_dict, config_to_dict

# kohya_ss's SDXL Adafactor: a fixed learning rate (no relative step), so the LR fields count.
SDXL_ADAFACTOR_ARGS = ("scale_parameter=False", "relative_step=False", "warmup_init=False")


@dataclass(frozen=True)
class Preset:
    key: str
    title: str
    description: str  # one line, shown when the preset is applied
    values: dict[str, dict[str, object]]  # config sections, only the keys the preset sets

    @property
    def family(self) -> str:
        return str(self.values["model"]["family"])


# What every preset of a family sets besides its own numbers: the settings that differ between
# families. SD 1.x trains its text encoder; SDXL as kohya's guides train it: the U-Net alone, the
# text outputs computed once, the VAE in float32, no clip skip.
FAMILY_BASE: dict[str, dict[str, dict[str, object]]] = {
    "sd1": {"network": {"train_unet_only": False}, "dataset": {"cache_text_encoder_outputs": "off"}},
    "sdxl": {
        "model": {"v_prediction": False, "clip_skip": 1, "no_half_vae": True},
        "network": {"train_unet_only": True},
        "dataset": {"cache_text_encoder_outputs": "memory"},
    },
}


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
        "sdxl-person",
        "SDXL face / person",
        "1024 px square crops, 25 repeats (img/25_ohwx woman) with reg/1_woman, batch 2, 8 epochs, rank 64, "
        "U-Net only, AdamW8bit",
        {
            "model": {"family": "sdxl"},
            "dataset": {"resolution": 1024, "enable_buckets": False, "cache_latents": "memory"},
            "network": {"rank": 64, "alpha": 32.0, "conv_rank": 0},
            "training": {
                "batch_size": 2,
                "epochs": 8,
                "max_train_steps": 0,
                "mixed_precision": "bf16",
                "gradient_checkpointing": True,
            },
            "optimizer": {
                "name": "AdamW8bit",
                "args": [],
                "unet_lr": 1e-4,
                "text_encoder_lr": 5e-5,
                "text_encoder_2_lr": 5e-5,
                "scheduler": "cosine_with_restarts",
                "scheduler_cycles": 3,
                "warmup_steps": 0,
            },
            "output": {"save_every_n_epochs": 1, "save_precision": "fp16"},
        },
    ),
    Preset(
        "sdxl-adafactor",
        "SDXL kohya recipe (Adafactor, U-Net only)",
        "Adafactor at 1e-3 without relative_step, rank 64, buckets in steps of 32 up to 2048, text outputs and "
        "latents cached, gradient checkpointing, batch 1",
        {
            "model": {"family": "sdxl"},
            "dataset": {
                "resolution": 1024,
                "enable_buckets": True,
                "min_bucket_reso": 256,
                "max_bucket_reso": 2048,
                "bucket_reso_steps": 32,
                "cache_latents": "disk",
            },
            "network": {"rank": 64, "alpha": 64.0, "conv_rank": 0},
            "training": {"batch_size": 1, "mixed_precision": "bf16", "gradient_checkpointing": True},
            "optimizer": {
                "name": "Adafactor",
                "args": list(SDXL_ADAFACTOR_ARGS),
                "unet_lr": 1e-3,
                "text_encoder_lr": 1e-4,
                "text_encoder_2_lr": 1e-4,
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
    Preset(
        "tiny-sdxl-test",
        "Built-in tiny SDXL model (a one-minute test run)",
        "loratui:tiny-sdxl at 128 px, buckets in steps of 32, rank 8, batch 4, 2 epochs, U-Net only, AdamW",
        {
            "model": {"path": "loratui:tiny-sdxl", "family": "sdxl", "tokenizer": ""},
            "dataset": {
                "resolution": 128,
                "enable_buckets": True,
                "min_bucket_reso": 64,
                "max_bucket_reso": 256,
                "bucket_reso_steps": 32,
                "cache_latents": "memory",
            },
            "network": {"rank": 8, "alpha": 4.0, "conv_rank": 0},
            "training": {"batch_size": 4, "epochs": 2, "max_train_steps": 0, "mixed_precision": "no"},
            "optimizer": {
                "name": "AdamW",
                "args": [],
                "unet_lr": 1e-3,
                "text_encoder_lr": 5e-4,
                "text_encoder_2_lr": 5e-4,
                "scheduler": "cosine",
                "warmup_steps": 5,
            },
            "output": {"save_every_n_epochs": 1},
        },
    ),
)

PRESETS_BY_KEY = {preset.key: preset for preset in PRESETS}


def apply_preset(cfg: RunConfig, preset: Preset) -> RunConfig:
    """A copy of cfg with the preset's settings and its family's (FAMILY_BASE); everything else
    is kept."""
    data = config_to_dict(cfg)
    for values in (FAMILY_BASE[preset.family], preset.values):
        for section, settings in values.items():
            data[section].update(settings)
    return config_from_dict(data, cfg.base_dir)
