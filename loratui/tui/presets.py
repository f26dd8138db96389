"""Starting points for the wizard: a few settings each, the rest keeps what is already set.

The numbers come from the kohya guides the users learnt from: network rank 128 for faces and 64
for anime and styles, alpha at half the rank, batch 1 so that small GPUs fit, 10 epochs saved
one by one to pick the best, AdamW8bit as the stable optimizer, cosine with 3 restarts. The SDXL
ones from the SDXL guide (1024 px crops, 25 repeats with as many reg images, 8 epochs: 2600 steps
for 13 images at batch 2) and kohya_ss's SDXL presets (Adafactor at 1e-3, the U-Net alone with the
text outputs cached, the VAE in float32, buckets in steps of 32 up to 2048). Paths are never part
of a preset, except the built-in test models'.

The FLUX.1 ones: the seed guide's recipe (13 images of 1024 px at 1 repeat, no regularisation
images, rank 8, fp8 base weights, 200 epochs: 2600 steps; it fits a 16 GB card), with the learning
rate and optimizer of sd-scripts' FLUX.1 example (AdamW8bit at 1e-4, constant), and the memory
settings of sd-scripts' VRAM table for FLUX.1 (docs/flux_train_network.md, all with fp8 base
weights): 24 GB batch 2; 16 GB batch 1 with block swap (the table gives no count: 8, half the
12 GB one); 12 GB 16 blocks swapped with AdamW8bit. Every FLUX.1 preset trains the transformer
alone with the text outputs cached, and uses sd-scripts' advice for the flow: shift sampling at
3.1582, raw prediction, guidance 1.0.

Every preset sets its family, and the settings that differ between families (the text encoder
caching, U-Net only), so that a preset applied after another of another family leaves nothing of
the first behind.
"""

from __future__ import annotations

import copy
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
    "flux": {
        "model": {"clip_skip": 1},
        "network": {"train_unet_only": True, "conv_rank": 0},
        "dataset": {"cache_text_encoder_outputs": "disk"},
        "training": {
            "timestep_sampling": "shift",
            "discrete_flow_shift": 3.1582,
            "model_prediction_type": "raw",
            "guidance_scale": 1.0,
        },
    },
}

# What every FLUX.1 memory preset sets (sd-scripts' VRAM table assumes fp8 base weights): the
# presets for 24/16/12 GB add their batch size, block swap and optimizer.
_FLUX_LOW_MEMORY = {
    "model": {"family": "flux", "fp8_base": True, "nf4_base": False},
    "dataset": {"cache_latents": "disk"},
    "training": {"gradient_checkpointing": True, "cpu_offload_checkpointing": False, "mixed_precision": "bf16"},
}


def _flux_memory(batch_size: int, blocks_to_swap: int, optimizer: dict[str, object]) -> dict[str, dict[str, object]]:
    values = {section: dict(settings) for section, settings in _FLUX_LOW_MEMORY.items()}
    values["training"].update(batch_size=batch_size, blocks_to_swap=blocks_to_swap)
    values["optimizer"] = optimizer
    return values


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
        "flux-person",
        "FLUX.1 face / person (the seed guide's recipe)",
        "1024 px, 1 repeat (img/1_ohwx woman), no reg images, rank 8, fp8 base, 200 epochs, AdamW8bit at 1e-4: "
        "fits 16 GB",
        {
            "model": {"family": "flux", "fp8_base": True, "nf4_base": False, "t5xxl_max_token_length": 0},
            "dataset": {"resolution": 1024, "enable_buckets": False, "cache_latents": "disk"},
            "network": {"rank": 8, "alpha": 8.0},
            "training": {
                "batch_size": 1,
                "epochs": 200,
                "max_train_steps": 0,
                "mixed_precision": "bf16",
                "gradient_checkpointing": True,
                "cpu_offload_checkpointing": False,
                "blocks_to_swap": 0,
            },
            "optimizer": {
                "name": "AdamW8bit",
                "args": [],
                "unet_lr": 1e-4,
                "text_encoder_lr": 0.0,
                "scheduler": "constant",
                "warmup_steps": 0,
            },
            "output": {"save_every_n_epochs": 10, "save_precision": "bf16"},
        },
    ),
    Preset(
        "flux-24gb",
        "FLUX.1 on 24 GB",
        "fp8 base, batch 2, no block swap, gradient checkpointing, text outputs and latents cached on disk",
        _flux_memory(2, 0, {"name": "AdamW8bit", "args": []}),
    ),
    Preset(
        "flux-16gb",
        "FLUX.1 on 16 GB",
        "fp8 base, batch 1, 8 blocks swapped to the CPU, gradient checkpointing, text outputs and latents cached",
        _flux_memory(1, 8, {"name": "AdamW8bit", "args": []}),
    ),
    Preset(
        "flux-12gb",
        "FLUX.1 on 12 GB",
        "fp8 base, batch 1, 16 blocks swapped to the CPU, AdamW8bit, gradient checkpointing, caches on disk",
        _flux_memory(1, 16, {"name": "AdamW8bit", "args": []}),
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
    Preset(
        "tiny-flux-test",
        "Built-in tiny FLUX.1 model (a test run)",
        "loratui:tiny-flux at 128 px, rank 8, batch 4, 2 epochs, the transformer alone, AdamW, on any machine",
        {
            "model": {
                "path": "loratui:tiny-flux",
                "family": "flux",
                "flux_variant": "auto",
                "ae_path": "",
                "clip_l_path": "",
                "t5xxl_path": "",
                "fp8_base": False,
                "nf4_base": False,
                "tokenizer": "",
            },
            "dataset": {
                "resolution": 128,
                "enable_buckets": True,
                "min_bucket_reso": 64,
                "max_bucket_reso": 256,
                "bucket_reso_steps": 64,
                "cache_latents": "memory",
                "cache_text_encoder_outputs": "memory",
            },
            "network": {"rank": 8, "alpha": 4.0},
            "training": {
                "batch_size": 4,
                "epochs": 2,
                "max_train_steps": 0,
                "mixed_precision": "no",
                "blocks_to_swap": 0,
                "cpu_offload_checkpointing": False,
            },
            "optimizer": {
                "name": "AdamW",
                "args": [],
                "unet_lr": 1e-3,
                "text_encoder_lr": 0.0,
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
    chosen = config_from_dict(data, cfg.base_dir)
    chosen.subsets = copy.deepcopy(cfg.subsets)  # the [[subsets]] tables are not sections: kept as they are
    return chosen
