"""The built-in SDXL-shaped test model: ``loratui:tiny-sdxl``, built in code, never downloaded.

It has the parts and module names of SDXL base 1.0 with tiny widths, so the LoRA keys, the file
format, the two-encoder text conditioning and the loading paths are those of a real SDXL run:

- a UNet2DConditionModel with SDXL's block layout: no attention at the first level, cross-attention
  transformers of several depths below it (``transformer_layers_per_block``), linear projections,
  and the ``text_time`` addition embedding that takes the pooled text vector and the 6 size/crop
  time ids;
- text encoder 1, a CLIPTextModel (CLIP ViT-L's role), and text encoder 2, a
  CLIPTextModelWithProjection (OpenCLIP ViT-bigG's role: gelu, a projection, padding with ``!``);
- the SD VAE layout with SDXL's scaling factor 0.13025, and SDXL's DDPM training schedule.

Widths and depths are small and the weights random (seeded, so every build is identical). It is
written once as a diffusers folder under the cache dir, as ``loratui:tiny-sd`` is
(engine/tiny_model.py), and loaded through the same code as any user's SDXL folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from engine.tiny_model import build_once, byte_level_vocab, tiny_vae
from loratui.paths import cache_dir

TINY_SDXL_NAME = "loratui:tiny-sdxl"
# Bump when the architecture or the weights change, so old caches are not reused.
_BUILD_VERSION = "2"
_SEED = 20230726  # the day SDXL 1.0 was published; any fixed number would do

TEXT_WIDTH_1 = 32  # text encoder 1's hidden size (CLIP ViT-L: 768)
# Text encoder 2's hidden size and projection (bigG: 1280). Wider than encoder 1, as in SDXL:
# diffusers' single-file loader tells the two encoders of a checkpoint apart by their widths, and a
# swapped pair is a shape error rather than a silent mix-up.
TEXT_WIDTH_2 = 48
TIME_EMBED_DIM = 8  # each time id's sinusoidal embedding (SDXL: 256)


def tiny_sdxl_dir() -> Path:
    return cache_dir() / f"tiny-sdxl-v{_BUILD_VERSION}"


def ensure_tiny_sdxl() -> Path:
    """Build the tiny SDXL folder if it is not there yet and return its path."""
    return build_once(tiny_sdxl_dir(), _build_into)


def write_sdxl_model_index(folder: Path) -> None:
    """The model_index.json of an SDXL pipeline folder (what diffusers' from_pretrained reads)."""
    index = {
        "_class_name": "StableDiffusionXLPipeline",
        "_diffusers_version": "0.30.0",
        "force_zeros_for_empty_prompt": True,
        "scheduler": ["diffusers", "DDPMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))


def _text_config(vocab: dict[str, int], width: int, act: str, pad: int):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act=act,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=pad,
        projection_dim=width,
    )


def _build_into(folder: Path) -> None:
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    vocab, merges = byte_level_vocab()
    CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77).save_pretrained(folder / "tokenizer")
    # SDXL's second tokenizer pads with "!" rather than with the end token.
    CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77, pad_token="!").save_pretrained(
        folder / "tokenizer_2"
    )

    torch.manual_seed(_SEED)
    end = vocab["<|endoftext|>"]
    CLIPTextModel(_text_config(vocab, TEXT_WIDTH_1, "quick_gelu", end)).save_pretrained(folder / "text_encoder")
    CLIPTextModelWithProjection(_text_config(vocab, TEXT_WIDTH_2, "gelu", vocab["!"])).save_pretrained(
        folder / "text_encoder_2"
    )

    # SDXL's scaling factor (SD 1.x: 0.18215).
    tiny_vae(latent_channels=4, scaling_factor=0.13025, force_upcast=True).save_pretrained(folder / "vae")

    UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        # SDXL's layout: no attention at the first level, then transformer stacks of growing depth.
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 64),
        layers_per_block=2,
        transformer_layers_per_block=(1, 1, 2),
        attention_head_dim=(2, 4, 4),  # the head count, as SDXL's config names it
        cross_attention_dim=TEXT_WIDTH_1 + TEXT_WIDTH_2,  # the two encoders' states side by side
        norm_num_groups=8,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=TEXT_WIDTH_2 + 6 * TIME_EMBED_DIM,  # pooled text + 6 time ids
    ).save_pretrained(folder / "unet")

    # SDXL base 1.0's scheduler/scheduler_config.json, as far as training reads it.
    DDPMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        prediction_type="epsilon",
        clip_sample=False,
        steps_offset=1,
        timestep_spacing="leading",
    ).save_pretrained(folder / "scheduler")
    write_sdxl_model_index(folder)
