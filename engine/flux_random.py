"""A full-size FLUX.1 [dev] with random weights, built in code, never downloaded: ``loratui:flux-random``.

It has exactly the shapes of FLUX.1 [dev] as diffusers lays it out: the component configs shipped in
``loratui/model_configs/flux_dev`` (black-forest-labs/FLUX.1-dev's transformer, AE, CLIP-L and T5-XXL
configs). Only the weights are random (seeded, so every build is identical). It exists for the GPU test
suite and the GPU benchmark, where memory and speed depend on the shapes, not on what the weights
learned; its images are noise.

It is big: 11.9 B transformer and 4.8 B T5 parameters. So that it fits on the GPU machines' 64 GB
disks and builds in a few minutes, every large weight matrix is stored as float8 (e4m3fn), as the
``flux1-dev-fp8`` and ``t5xxl_fp8_e4m3fn`` files users train from are; the norms, biases and
embeddings in bf16. The engine casts them to the training precision when it loads them (or keeps
the transformer in fp8 with ``model.fp8_base``). No component is ever held in float32: each
parameter is drawn in bf16 and stored as it is written.

The tokenizers are built in code: CLIP's the byte-level one of ``loratui:tiny-sd``, T5's the one of
``loratui:tiny-flux`` (engine/tiny_flux.py); both keep the real vocabulary sizes in the encoders'
configs, the ids above the built vocabularies are never used.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from engine.tiny_flux import t5_tokenizer, write_flux_model_index
from engine.tiny_model import build_once, byte_level_vocab
from loratui.checkpoint_configs import shipped_configs
from loratui.paths import cache_dir

FLUX_RANDOM_NAME = "loratui:flux-random"
SHIPPED_FLUX_DEV = "flux_dev"
# Bump when a config or the weights change, so old caches are not reused.
_BUILD_VERSION = "1"
_SEED = 20240801  # the day FLUX.1 was published
FP8_MIN_ELEMENTS = 1 << 16  # matrices at least this large are stored in fp8; the rest in bf16
_NOT_ARGUMENTS = {"_class_name", "_diffusers_version", "architectures", "_name_or_path"}


def flux_random_dir() -> Path:
    return cache_dir() / f"flux-random-v{_BUILD_VERSION}"


def ensure_flux_random() -> Path:
    """Build the random FLUX.1 folder if it is not there yet (minutes, ~17 GB) and return its path."""
    return build_once(flux_random_dir(), _build_into)


def shipped_config(component: str, file: str = "config.json") -> dict:
    config = json.loads((shipped_configs(SHIPPED_FLUX_DEV) / component / file).read_text())
    return {key: value for key, value in config.items() if key not in _NOT_ARGUMENTS}


def _components(vocab: dict[str, int]) -> dict[str, object]:
    """Each component's constructor, building it on whatever device is current."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    ids = {"bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"]}
    clip = {k: v for k, v in shipped_config("text_encoder").items() if k not in ids and k != "pad_token_id"}
    return {
        "text_encoder": lambda: CLIPTextModel(CLIPTextConfig(**clip, **ids, pad_token_id=vocab["<|endoftext|>"])),
        "text_encoder_2": lambda: T5EncoderModel(T5Config(**shipped_config("text_encoder_2"))),
        "vae": lambda: AutoencoderKL(**shipped_config("vae")),
        "transformer": lambda: FluxTransformer2DModel(**shipped_config("transformer")),
    }


def flux_random_parameter_counts() -> dict[str, int]:
    """The parameters of each of ``loratui:flux-random``'s components, from the configs alone (the
    meta device: shapes, no storage)."""
    vocab, _ = byte_level_vocab()
    counts = {}
    for name, build in _components(vocab).items():
        with torch.device("meta"):
            counts[name] = sum(p.numel() for p in build().parameters())
    return counts


def _is_norm_scale(name: str) -> bool:
    """A norm's scale: 1 in a trained model; random values near 0 would silence every layer after it."""
    leaf = name.rsplit(".", 2)
    return name.endswith(".weight") and any("norm" in part or part.startswith("ln") for part in leaf[:-1])


def _random_weights(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, param in module.named_parameters():
        if _is_norm_scale(name):
            value = torch.ones(param.shape, dtype=torch.bfloat16)
        elif name.endswith(".bias"):
            value = torch.zeros(param.shape, dtype=torch.bfloat16)
        else:
            value = torch.empty(param.shape, dtype=torch.bfloat16).normal_(0.0, 0.02, generator=generator)
        embedding = "embed" in name or name.startswith("shared.")  # T5's token embedding is "shared"
        if value.dim() == 2 and value.numel() >= FP8_MIN_ELEMENTS and not embedding:
            value = value.to(torch.float8_e4m3fn)
        tensors[name] = value
    return tensors


def _build_into(folder: Path) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler
    from safetensors.torch import save_file
    from transformers import CLIPTokenizer

    vocab, merges = byte_level_vocab()
    CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77).save_pretrained(folder / "tokenizer")
    t5_tokenizer().save_pretrained(folder / "tokenizer_2")
    # One component at a time, each on the meta device (shapes only) with its weights drawn tensor by
    # tensor in bf16 and written next to its config: nothing the size of the transformer in float32.
    for offset, (name, build) in enumerate(_components(vocab).items()):
        with torch.device("meta"):
            component = build()
        target = folder / name
        diffusers_model = hasattr(component, "save_config")  # the transformer and the AE; else transformers'
        if diffusers_model:
            component.save_config(target)
        else:
            component.config.save_pretrained(target)
        file = "diffusion_pytorch_model.safetensors" if diffusers_model else "model.safetensors"
        save_file(_random_weights(component, _SEED + offset), target / file, metadata={"format": "pt"})
        del component
    FlowMatchEulerDiscreteScheduler(**shipped_config("scheduler", "scheduler_config.json")).save_pretrained(
        folder / "scheduler"
    )
    write_flux_model_index(folder)
