"""The model families as the terminal side knows them, without torch: the parts of each model that
can carry a LoRA, which of them a config trains, and the family of each built-in model.

The engine's twin is ``engine/families`` (one module per family, with the layers and the loading);
the names here are the ones it gives its parts: the key prefix of their weights in a state folder
(``unet.<module>...``, ``te1.<module>...``) and the ``<part>_modules`` counts of its progress.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loratui.config import RunConfig


@dataclass(frozen=True)
class LoraPart:
    """One part of a family's model that can carry a LoRA."""

    name: str  # "unet", "te" (SD), "te1"/"te2" (SDXL): the state's key prefix and its "<name>_modules" count
    label: str  # in messages: "UNet", "text encoder 1"
    lr_setting: str  # the setting holding its learning rate
    denoiser: bool = False  # the UNet (Flux: the transformer): trained unless network.train_text_encoder_only
    trainable: bool = True  # False: a text encoder loratui never puts a LoRA on (Flux's T5-XXL)

    @property
    def count_key(self) -> str:
        return f"{self.name}_modules"


# Declared once here; the engine's parts (engine/families) add the layers and the kohya prefix.
UNET = LoraPart("unet", "UNet", "optimizer.unet_lr", denoiser=True)
TEXT_ENCODER = LoraPart("te", "text encoder", "optimizer.text_encoder_lr")  # SD's only one
# SDXL's text encoder 1 is CLIP ViT-L, text encoder 2 OpenCLIP ViT-bigG (kohya: lora_te1_, lora_te2_).
TEXT_ENCODER_1 = LoraPart("te1", "text encoder 1", "optimizer.text_encoder_lr")
TEXT_ENCODER_2 = LoraPart("te2", "text encoder 2", "optimizer.text_encoder_2_lr")
# FLUX.1: the transformer trains under the UNet's name and rate (sd-scripts: lora_unet, --unet_lr), CLIP-L
# as kohya's lora_te1, and T5-XXL only encodes: sd-scripts can train a LoRA on it (train_t5xxl), loratui does not.
TRANSFORMER = LoraPart("unet", "transformer", "optimizer.unet_lr", denoiser=True)
CLIP_L = LoraPart("te1", "CLIP-L", "optimizer.text_encoder_lr")
T5_XXL = LoraPart("te3", "T5-XXL", "", trainable=False)
_SD_PARTS = (UNET, TEXT_ENCODER)
_SDXL_PARTS = (UNET, TEXT_ENCODER_1, TEXT_ENCODER_2)
_FLUX_PARTS = (TRANSFORMER, CLIP_L, T5_XXL)
FAMILY_PARTS: dict[str, tuple[LoraPart, ...]] = {
    "sd1": _SD_PARTS,
    "sd2": _SD_PARTS,
    "sdxl": _SDXL_PARTS,
    "flux": _FLUX_PARTS,
}

# What a message calls each family.
FAMILY_NAMES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "flux": "FLUX.1"}

# The family of each built-in model (params.BUILTIN_MODELS; tests/test_sdxl_check.py holds them equal).
BUILTIN_FAMILIES = {
    "loratui:tiny-sd": "sd1",
    "loratui:sd15-random": "sd1",
    "loratui:tiny-sdxl": "sdxl",
    "loratui:sdxl-random": "sdxl",
    "loratui:tiny-flux": "flux",
    "loratui:flux-random": "flux",
}


def lora_parts(family: str) -> tuple[LoraPart, ...]:
    """The parts of a family's model; an unknown family (validation refuses it) has SD's."""
    return FAMILY_PARTS.get(family, _SD_PARTS)


def text_encoder_parts(family: str) -> tuple[LoraPart, ...]:
    """The text encoders that can carry a LoRA (Flux's T5-XXL cannot)."""
    return tuple(part for part in lora_parts(family) if not part.denoiser and part.trainable)


def trains(cfg: RunConfig, part: LoraPart) -> bool:
    """The denoiser trains unless network.train_text_encoder_only; a text encoder when the U-Net is
    not trained alone (network.train_unet_only) and its rate is above zero (sd-scripts' rules)."""
    if part.denoiser:
        return not cfg.network.train_text_encoder_only
    if not part.trainable:
        return False
    return not cfg.network.train_unet_only and float(cfg.get(part.lr_setting)) > 0  # type: ignore[arg-type]


def trained_text_encoders(cfg: RunConfig) -> tuple[LoraPart, ...]:
    return tuple(part for part in text_encoder_parts(cfg.model.family) if trains(cfg, part))


def family_name(family: str) -> str:
    return FAMILY_NAMES.get(family, family)


def setting_applies(families: tuple[str, ...], family: str) -> bool:
    """Whether a setting declared for ``families`` (``Setting.families``) matters to a model of
    ``family``: SDXL ignores clip skip, SD has no second text encoder. A family loratui does not
    know (validation refuses it) leaves every setting in."""
    return family in families or family not in FAMILY_PARTS
