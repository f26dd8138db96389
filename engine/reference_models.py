"""A full-size Stable Diffusion 1.5 with random weights, built in code, never downloaded.

``loratui:sd15-random`` has exactly the shapes of SD 1.5: the published component configs are
written out below (``UNet2DConditionModel`` of runwayml/stable-diffusion-v1-5's ``unet/config.json``,
``AutoencoderKL`` of its ``vae/config.json``, the CLIP ViT-L/14 text tower of
openai/clip-vit-large-patch14, and the training schedule of its ``scheduler/scheduler_config.json``).
Only the weights are random (seeded, so every build is identical). It exists for the GPU test
suite and the GPU benchmark: what they measure (memory, speed, FLOPs, fp16/bf16 numerics of the
real layer sizes) depends on the shapes, not on what the weights learned. Its images are noise.

The tokenizer is the byte-level one of the tiny model (``engine.tiny_model``): every byte is a
token, so any caption tokenizes, and nothing is downloaded. The text encoder keeps CLIP-L's
vocabulary size (49408); the ids above the 514 byte-level tokens are simply never used.

It is written once as an ordinary diffusers folder under the cache dir (about 2.1 GB: the weights
are stored in fp16, which the engine casts to the training precision when it loads them) and
then loaded through the same code path as any user's local model.

``loratui:sdxl-random`` is the same for SDXL base 1.0 (stabilityai/stable-diffusion-xl-base-1.0's
``unet``, ``vae``, ``text_encoder`` (CLIP ViT-L) and ``text_encoder_2`` (OpenCLIP ViT-bigG with
its projection) configs, and its DDPM training schedule): about 6.9 GB in fp16, built on first
use. :func:`sdxl_random_parameter_counts` counts its parameters from the configs alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from engine.tiny_model import build_once, write_model_index
from engine.tiny_sdxl import write_sdxl_model_index
from loratui.checkpoint_configs import shipped_configs
from loratui.paths import cache_dir

SD15_RANDOM_NAME = "loratui:sd15-random"
# Bump when a config or the weights change, so old caches are not reused.
_BUILD_VERSION = "1"
_SEED = 20221020  # the day SD 1.5 was published; any fixed number would do

# runwayml/stable-diffusion-v1-5, unet/config.json (diffusers 0.6 era keys; the rest are defaults).
SD15_UNET_CONFIG: dict = {
    "sample_size": 64,  # latents of 512 px images
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,  # SD 1.x's config calls the head *count* attention_head_dim: 8 heads
    "use_linear_projection": False,  # 1x1 conv proj_in/proj_out, as in SD 1.x
    "upcast_attention": False,
}

# runwayml/stable-diffusion-v1-5, vae/config.json.
SD15_VAE_CONFIG: dict = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}

# openai/clip-vit-large-patch14's text tower (SD 1.5's text_encoder/config.json). The token ids
# (bos, eos, pad) come from the byte-level tokenizer at build time.
SD15_TEXT_ENCODER_CONFIG: dict = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 768,
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "initializer_range": 0.02,
    "initializer_factor": 1.0,
}

# The training schedule of SD 1.5: its scheduler_config.json holds a PNDMScheduler (for sampling)
# with these betas; training uses DDPM over the same schedule, as every trainer does.
SD15_SCHEDULER_CONFIG: dict = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "steps_offset": 1,
}


def sd15_random_dir() -> Path:
    return cache_dir() / f"sd15-random-v{_BUILD_VERSION}"


def ensure_sd15_random() -> Path:
    """Build the random SD 1.5 folder if it is not there yet (a minute, ~2.1 GB) and return its path."""
    return build_once(sd15_random_dir(), _build_sd15_into)


def sd15_unet(dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """An SD 1.5-shaped UNet with freshly initialised weights, not saved anywhere.

    ``device="meta"`` gives one with no storage at all: enough to count FLOPs by shape."""
    from diffusers import UNet2DConditionModel

    with torch.device(device):
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
    return unet if dtype == torch.float32 else unet.to(dtype)


def _build_sd15_into(folder: Path) -> None:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from engine.tiny_model import byte_level_vocab

    vocab, merges = byte_level_vocab()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    tokenizer.save_pretrained(folder / "tokenizer")

    # One component at a time, each freed before the next: the UNet alone is 3.4 GB in float32.
    # Each draws from its own seed, so a change to one never changes the others' weights.
    torch.manual_seed(_SEED)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            **SD15_TEXT_ENCODER_CONFIG,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        )
    )
    text_encoder.to(torch.float16).save_pretrained(folder / "text_encoder")
    del text_encoder

    torch.manual_seed(_SEED + 1)
    vae = AutoencoderKL(**SD15_VAE_CONFIG)
    vae.to(torch.float16).save_pretrained(folder / "vae")
    del vae

    torch.manual_seed(_SEED + 2)
    unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
    unet.to(torch.float16).save_pretrained(folder / "unet")
    del unet

    DDPMScheduler(**SD15_SCHEDULER_CONFIG).save_pretrained(folder / "scheduler")

    write_model_index(folder)


# ---------------------------------------------------------------------------------------------
# SDXL base 1.0 with random weights

SDXL_RANDOM_NAME = "loratui:sdxl-random"
_SDXL_BUILD_VERSION = "1"
_SDXL_SEED = 20230726  # the day SDXL 1.0 was published

# stabilityai/stable-diffusion-xl-base-1.0's component configs, as loratui ships them for single-file
# checkpoints (loratui/model_configs/sdxl_base, loratui.checkpoint_configs): one copy of the published
# numbers. What the files say about the hub (classes, versions) and the real vocabulary's token ids
# is left out; the random model's byte-level tokenizer brings its own ids.
_NOT_ARGUMENTS = frozenset(
    ("_class_name", "_diffusers_version", "architectures", "model_type", "torch_dtype", "transformers_version")
)
_VOCABULARY_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")


def _shipped_config(component: str, file: str = "config.json") -> dict:
    config = json.loads((shipped_configs() / component / file).read_text())
    return {key: value for key, value in config.items() if key not in _NOT_ARGUMENTS | set(_VOCABULARY_IDS)}


SDXL_UNET_CONFIG: dict = _shipped_config("unet")  # cross-attention 2048 = 768 (TE1) + 1280 (TE2)
SDXL_VAE_CONFIG: dict = _shipped_config("vae")  # SD's VAE layout, SDXL's scaling factor 0.13025
SDXL_TEXT_ENCODER_CONFIG: dict = _shipped_config("text_encoder")  # CLIP ViT-L/14's text tower
SDXL_TEXT_ENCODER_2_CONFIG: dict = _shipped_config("text_encoder_2")  # OpenCLIP ViT-bigG/14's, projected
# Its scheduler config (an EulerDiscreteScheduler for sampling) as far as training reads it: the
# betas, trained by DDPM.
SDXL_SCHEDULER_CONFIG: dict = {
    key: value
    for key, value in _shipped_config("scheduler", "scheduler_config.json").items()
    if key
    in (
        "beta_start",
        "beta_end",
        "beta_schedule",
        "num_train_timesteps",
        "prediction_type",
        "steps_offset",
        "timestep_spacing",
        "clip_sample",
    )
}


def sdxl_random_dir() -> Path:
    return cache_dir() / f"sdxl-random-v{_SDXL_BUILD_VERSION}"


def ensure_sdxl_random() -> Path:
    """Build the random SDXL folder if it is not there yet (minutes, ~6.9 GB) and return its path."""
    return build_once(sdxl_random_dir(), _build_sdxl_into)


def sdxl_random_parameter_counts() -> dict[str, int]:
    """The parameters of ``loratui:sdxl-random``'s UNet and text encoders, from its configs alone:
    each is built on the meta device (shapes, no storage), so this takes no memory to speak of."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with torch.device("meta"):
        parts = {
            "unet": UNet2DConditionModel(**SDXL_UNET_CONFIG),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**SDXL_TEXT_ENCODER_CONFIG)),
            "text_encoder_2": CLIPTextModelWithProjection(CLIPTextConfig(**SDXL_TEXT_ENCODER_2_CONFIG)),
        }
    return {name: sum(p.numel() for p in module.parameters()) for name, module in parts.items()}


def _build_sdxl_into(folder: Path) -> None:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from engine.tiny_model import byte_level_vocab

    vocab, merges = byte_level_vocab()
    CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77).save_pretrained(folder / "tokenizer")
    # SDXL's second tokenizer pads with "!" (id 0 in the real vocabulary) rather than the end token.
    CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77, pad_token="!").save_pretrained(
        folder / "tokenizer_2"
    )
    ids = {"bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"]}

    # One component at a time, each freed before the next (the UNet alone is 10 GB in float32),
    # each from its own seed so that a change to one never changes the others' weights.
    text_1 = CLIPTextConfig(**SDXL_TEXT_ENCODER_CONFIG, **ids, pad_token_id=vocab["<|endoftext|>"])
    text_2 = CLIPTextConfig(**SDXL_TEXT_ENCODER_2_CONFIG, **ids, pad_token_id=vocab["!"])
    components = (
        ("text_encoder", lambda: CLIPTextModel(text_1)),
        ("text_encoder_2", lambda: CLIPTextModelWithProjection(text_2)),
        ("vae", lambda: AutoencoderKL(**SDXL_VAE_CONFIG)),
        ("unet", lambda: UNet2DConditionModel(**SDXL_UNET_CONFIG)),
    )
    for offset, (name, build) in enumerate(components):
        torch.manual_seed(_SDXL_SEED + offset)
        component = build()
        component.to(torch.float16).save_pretrained(folder / name)
        del component

    DDPMScheduler(**SDXL_SCHEDULER_CONFIG).save_pretrained(folder / "scheduler")
    write_sdxl_model_index(folder)
