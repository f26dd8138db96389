"""Loading an SD 1.x/2.x or SDXL base model from local files, never from a hub.

These forms are accepted for ``model.path``:
- ``loratui:tiny-sd`` and ``loratui:tiny-sdxl``: the built-in test models (built on first use, see
  ``engine.tiny_model`` and ``engine.tiny_sdxl``);
- ``loratui:sd15-random`` and ``loratui:sdxl-random``: full-size SD 1.5 and SDXL with random
  weights, for GPU tests and benchmarks (built on first use, see ``engine.reference_models``);
- a diffusers folder (``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``;
  SDXL also ``text_encoder_2/`` and ``tokenizer_2/``);
- a single checkpoint file, ``.safetensors`` (or a ``.ckpt`` that loads without pickle).

Every failure becomes a :class:`UserError` that names the file and the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.reference_models import SD15_RANDOM_NAME, SDXL_RANDOM_NAME, ensure_sd15_random, ensure_sdxl_random
from engine.tiny_model import BUILTIN_NAME, ensure_tiny_model
from engine.tiny_sdxl import TINY_SDXL_NAME, ensure_tiny_sdxl
from loratui import preflight
from loratui.errors import UserError
from loratui.families import family_name
from loratui.params import CHECKPOINT_SUFFIXES

# What is a model and what is not is decided in one place, loratui.preflight, which
# `loratui check` runs too: the engine refuses exactly what the check refuses, before diffusers
# spends minutes on it. The loaders below then catch what only loading can tell.


@dataclass
class BaseModel:
    tokenizer: object
    text_encoder: torch.nn.Module
    vae: torch.nn.Module
    unet: torch.nn.Module | None  # None for Flux, whose denoiser is ``transformer``
    noise_scheduler: object  # DDPM-style for the UNet families; FLUX.1: FlowMatchEulerDiscreteScheduler
    source: Path  # the folder or file it came from
    name: str  # for the ss_sd_model_name metadata: the file or folder name
    # SDXL's second text encoder (OpenCLIP ViT-bigG, with its projection) and its tokenizer; None for SD.
    text_encoder_2: torch.nn.Module | None = None
    tokenizer_2: object | None = None
    # FLUX.1: text_encoder/tokenizer are CLIP-L's, text_encoder_2/tokenizer_2 T5-XXL's, and the
    # denoiser is this FluxTransformer2DModel (engine/families/flux.py).
    transformer: torch.nn.Module | None = None


def weight_dtype(mixed_precision: str) -> torch.dtype:
    """The dtype a run holds (and loads) its frozen base weights in: its mixed precision's, else float32."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision, torch.float32)


# The built-in models by name: the function that builds one (once) and returns its diffusers folder.
BUILTIN_MODELS = {
    BUILTIN_NAME: ensure_tiny_model,
    SD15_RANDOM_NAME: ensure_sd15_random,
    TINY_SDXL_NAME: ensure_tiny_sdxl,
    SDXL_RANDOM_NAME: ensure_sdxl_random,
}


def load_base_model(
    path_setting: str, resolved: Path, family: str, v_prediction: bool, tokenizer_dir: Path | None
) -> BaseModel:
    # Nothing in here may reach for a hub: a missing file must fail here, not hang on a network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if path_setting in BUILTIN_MODELS:
        model = _load_folder(BUILTIN_MODELS[path_setting](), family)
        model.name = path_setting
    elif path_setting.startswith("loratui:"):
        names = [repr(name) for name in BUILTIN_MODELS]
        raise UserError(
            f"unknown built-in model {path_setting!r}",
            "model.path",
            f"the built-in models are {', '.join(names[:-1])} and {names[-1]}",
            "model",
        )
    elif not resolved.exists():
        raise UserError(
            f"no such file or folder: {resolved}",
            "model.path",
            "point it at a diffusers folder or a .safetensors checkpoint",
            "model",
        )
    else:
        problems = preflight.model_location_problems(resolved)
        if problems:
            raise preflight.user_error(problems[0], "model")
        model = (
            _load_folder(resolved, family) if resolved.is_dir() else _load_single_file(resolved, family, tokenizer_dir)
        )
    _set_prediction_type(model, v_prediction)
    return model


def _set_prediction_type(model: BaseModel, v_prediction: bool) -> None:
    from diffusers import DDPMScheduler

    wanted = "v_prediction" if v_prediction else "epsilon"
    if model.noise_scheduler.config.prediction_type != wanted:
        model.noise_scheduler = DDPMScheduler.from_config(model.noise_scheduler.config, prediction_type=wanted)


def _load_folder(folder: Path, family: str) -> BaseModel:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    # use_safetensors=True: the libraries never fall back to a pickle (.bin) file, whose loading
    # can run code and, refused by torch's weights-only unpickler, ends in advice to unpickle it
    # anyway. loratui.preflight names such a folder before this point.
    weights = {"local_files_only": True, "use_safetensors": True}
    try:
        model = BaseModel(
            tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True),
            text_encoder=CLIPTextModel.from_pretrained(folder / "text_encoder", **weights),
            vae=AutoencoderKL.from_pretrained(folder / "vae", **weights),
            unet=UNet2DConditionModel.from_pretrained(folder / "unet", **weights),
            # DDPM's training schedule (betas, prediction type) comes from the model's own config.
            noise_scheduler=DDPMScheduler.from_pretrained(folder / "scheduler", local_files_only=True),
            source=folder,
            name=folder.name,
        )
        if family == "sdxl":
            model.tokenizer_2 = CLIPTokenizer.from_pretrained(folder / "tokenizer_2", local_files_only=True)
            model.text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder_2", **weights)
        return model
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(
            f"cannot load the model in {folder}: {first_line(exc)}",
            "model.path",
            f"check that the folder is a complete {family_name(family)} diffusers model",
            "model",
        ) from exc


def _load_single_file(path: Path, family: str, tokenizer_dir: Path | None) -> BaseModel:
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise UserError(
            f"{path.name} is not a model checkpoint (expected .safetensors or .ckpt)",
            "model.path",
            "point model.path at a .safetensors checkpoint or a diffusers folder",
            "model",
        )
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty (zero bytes)", "model.path", "download or copy the checkpoint again", "model")
    if path.suffix.lower() == ".safetensors":
        _check_safetensors(path)
        problems = preflight.checkpoint_family_problems(path, family)  # as `loratui check` says it
        if problems:
            raise preflight.user_error(problems[0], "model")
    else:
        _refuse_pickle(path)
    config_dir = _single_file_config(family, tokenizer_dir)
    try:
        pipe = _pipeline_from_single_file(path, family, config_dir)
    except Exception as exc:  # diffusers raises many kinds here; all mean "this file does not load"
        raise UserError(
            f"cannot load {path.name} as an {family_name(family)} checkpoint: {first_line(exc)}",
            "model.path",
            "check model.family (sd1, sd2 or sdxl) and that the file is a complete checkpoint",
            "model",
        ) from exc
    _refuse_missing_weights(path, pipe)
    from diffusers import DDPMScheduler

    return BaseModel(
        tokenizer=pipe.tokenizer,
        text_encoder=pipe.text_encoder,
        vae=pipe.vae,
        unet=pipe.unet,
        noise_scheduler=DDPMScheduler.from_config(pipe.scheduler.config),
        source=path,
        name=path.name,
        text_encoder_2=getattr(pipe, "text_encoder_2", None),
        tokenizer_2=getattr(pipe, "tokenizer_2", None),
    )


def _pipeline_from_single_file(path: Path, family: str, config_dir: Path):
    """diffusers' own conversion of the original key names, with the layouts of ``config_dir``."""
    if family == "sdxl":
        from diffusers import StableDiffusionXLPipeline

        # The invisible watermark marks generated images only: training makes none.
        return StableDiffusionXLPipeline.from_single_file(
            str(path), config=str(config_dir), local_files_only=True, add_watermarker=False
        )
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_single_file(
        # Training needs no safety checker and no image processor: never load them.
        str(path),
        config=str(config_dir),
        local_files_only=True,
        safety_checker=None,
        requires_safety_checker=False,
        feature_extractor=None,
    )


def _refuse_missing_weights(path: Path, pipe) -> None:
    """diffusers builds each part empty (on the meta device) and fills it from the file; a weight
    the file lacks stays empty without an error, and would fail at the first step. Say so here."""
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, part, None)
        if module is None:
            continue
        empty = [name for name, tensor in module.named_parameters() if tensor.is_meta]
        if empty:
            raise UserError(
                f"{path.name} lacks {len(empty)} of the {part}'s weights (e.g. {empty[0]})",
                "model.path",
                "the checkpoint is incomplete or of another model: use a complete checkpoint of model.family",
                "model",
            )


def _check_safetensors(path: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            if not list(handle.keys()):
                raise ValueError("it holds no tensors")
    except Exception as exc:
        raise UserError(
            f"{path.name} is not a readable safetensors file ({first_line(exc)})",
            "model.path",
            "the file is damaged or incomplete: download or copy it again",
            "model",
        ) from exc


def _refuse_pickle(path: Path) -> None:
    """A .ckpt is a pickle, and unpickling runs code. Load it only if torch's weights-only
    unpickler accepts it (plain tensors and containers)."""
    import pickle

    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise UserError(
            f"{path.name} cannot be loaded without pickle, which can run arbitrary code",
            "model.path",
            "use the .safetensors version of this model, or convert it with a tool you trust",
            "model",
        ) from exc


def _single_file_config(family: str, tokenizer_dir: Path | None) -> Path:
    """A single checkpoint holds weights only: the layouts come from a diffusers config folder.

    For SD 1.x/2.x it is ``model.tokenizer``'s model folder, or the family's repo in the local
    Hugging Face cache. For SDXL loratui ships the configs (``loratui/model_configs/sdxl_base``) and
    only the two tokenizers are looked for (the CLIP vocabularies are not ours to ship).
    ``loratui.preflight.single_file_configs`` looks, for the check and for the engine alike.
    """
    found = preflight.single_file_configs(family, tokenizer_dir)
    if isinstance(found, Path):
        return found
    raise preflight.user_error(found, "model")


def first_line(exc: BaseException) -> str:
    """An exception's first line (its type's name when it says nothing), for a one-line message."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
