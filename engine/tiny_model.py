"""The built-in test model: a tiny SD 1.x-shaped pipeline, built in code, never downloaded.

Tests, the benchmark and the sample project train on it, offline, on a CPU, in seconds. It has
the same parts and module names as Stable Diffusion 1.5 (UNet2DConditionModel with cross-attention
transformer blocks, AutoencoderKL with an 8x downsampling, CLIPTextModel, a CLIP BPE tokenizer),
so LoRA key names, file format and loading paths are exactly those of a real SD1.5 run; only the
widths and depths are small and the weights random (seeded, so every build is identical).

It is written once as an ordinary diffusers folder under the cache dir and then loaded through
the same code path as any user's local model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from loratui.paths import cache_dir

BUILTIN_NAME = "loratui:tiny-sd"
# Bump when the architecture or the weights change, so old caches are not reused.
_BUILD_VERSION = "1"
_SEED = 20241122


def tiny_model_dir() -> Path:
    return cache_dir() / f"tiny-sd-v{_BUILD_VERSION}"


def ensure_tiny_model() -> Path:
    """Build the tiny model folder if it is not there yet and return its path."""
    return build_once(tiny_model_dir(), _build_into)


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Run ``build(folder)`` unless ``target`` holds a built model; return ``target``.

    The build happens beside the target and is renamed into place, so a crash or a concurrent
    build never leaves a half-written model under the final name. It runs under its own RNG
    state: building draws random weights, and the caller's seeded RNG must not notice."""
    if (target / "model_index.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        with torch.random.fork_rng(devices=[]):
            build(staging)
        try:
            os.replace(staging, target)
        except OSError:
            if not (target / "model_index.json").is_file():  # lost a race: the other build won
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def write_model_index(folder: Path) -> None:
    """The model_index.json of an SD 1.x pipeline folder (what diffusers' from_pretrained reads)."""
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.30.0",
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))


def byte_level_vocab() -> tuple[dict[str, int], list[str]]:
    """A CLIP-style BPE vocabulary with no merges: every byte is a token, with and without the
    end-of-word marker. Any text tokenizes (character by character), and nothing is downloaded."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    # The GPT-2/CLIP byte-to-unicode table: printable bytes map to themselves, the rest to
    # code points above 255, so every byte has a visible stand-in character.
    chars, extra = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}, []


def tiny_vae(**family: object):
    """The built-in models' VAE: four tiny blocks, so an 8x downsampling as in SD, SDXL and Flux;
    ``family`` gives what differs (latent channels, scaling, shift, quant convs)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 32, 32, 32),
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=128,
        **family,
    )


def _build_into(folder: Path) -> None:
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab, merges = byte_level_vocab()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    tokenizer.save_pretrained(folder / "tokenizer")

    torch.manual_seed(_SEED)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
            projection_dim=32,
        )
    )
    text_encoder.save_pretrained(folder / "text_encoder")

    tiny_vae(latent_channels=4, scaling_factor=0.18215).save_pretrained(folder / "vae")

    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
        # SD 1.x uses 1x1 convolutions for proj_in/proj_out, which LoRA must handle as convs.
        use_linear_projection=False,
    )
    unet.save_pretrained(folder / "unet")

    DDPMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        prediction_type="epsilon",
        clip_sample=False,
        steps_offset=1,
    ).save_pretrained(folder / "scheduler")
    write_model_index(folder)
