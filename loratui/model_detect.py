"""Which model a single-file checkpoint holds, told from the names of its tensors (no torch).

A ``.safetensors`` checkpoint says what it is only through its key names, which the original
training code of each family chose (the header is read with ``loratui.model_files``; no weight is
loaded). The grammar, as diffusers' single-file loader (``loaders/single_file_utils.py``,
``CHECKPOINT_KEY_NAMES``) and sd-scripts (``library/model_util.py``, ``library/sdxl_model_util.py``)
read it:

- SD 1.x (CompVis): the UNet under ``model.diffusion_model.``, the VAE under
  ``first_stage_model.``, CLIP ViT-L in Hugging Face names under ``cond_stage_model.transformer.``;
- SD 2.x: the same, but its text encoder is OpenCLIP ViT-H in OpenCLIP names under
  ``cond_stage_model.model.`` (``transformer.resblocks.N...``);
- SDXL base (Stability's sgm code): the UNet has an extra embedding ``label_emb`` (the pooled text
  and the six size/crop ids); text encoder 1 (CLIP ViT-L) under ``conditioner.embedders.0.transformer.``
  and text encoder 2 (OpenCLIP ViT-bigG) under ``conditioner.embedders.1.model.``;
- the SDXL refiner: a single text encoder, bigG, as embedder 0 (``conditioner.embedders.0.model.``);
- FLUX.1 (Black Forest Labs): a transformer of ``double_blocks.N`` and ``single_blocks.N``, bare or
  under ``model.diffusion_model.`` (diffusers' own layout: ``single_transformer_blocks.N``).

Prefixes, not single keys: diffusers looks for one key of a known depth (``resblocks.9``), which a
pruned or a tiny test model does not have; a prefix holds for every depth.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from loratui import model_files

SD1, SD2, SDXL, SDXL_REFINER, FLUX = "sd1", "sd2", "sdxl", "sdxl-refiner", "flux"

UNET = "model.diffusion_model."
VAE = "first_stage_model."
SDXL_ADM = UNET + "label_emb."  # SDXL's text_time embedding; SD 1.x/2.x UNets have none
SD1_TEXT_ENCODER = "cond_stage_model.transformer."
SD2_TEXT_ENCODER = "cond_stage_model.model."
SDXL_TEXT_ENCODER_1 = "conditioner.embedders.0.transformer."
SDXL_TEXT_ENCODER_2 = "conditioner.embedders.1.model."
REFINER_TEXT_ENCODER = "conditioner.embedders.0.model."
SDXL_EMBEDDERS = "conditioner.embedders."
FLUX_BLOCKS = ("double_blocks.", "single_blocks.", UNET + "double_blocks.", "single_transformer_blocks.")
# FLUX.1 dev's guidance embedding (BFL names, bare or prefixed; diffusers' names); schnell has none.
FLUX_GUIDANCE = ("guidance_in.", UNET + "guidance_in.", "time_text_embed.guidance_embedder.")

# The parts of an SDXL checkpoint, by the prefix of their keys, as messages name them.
SDXL_PARTS = {
    UNET: f"the UNet ({UNET}*)",
    VAE: f"the VAE ({VAE}*)",
    SDXL_TEXT_ENCODER_1: f"text encoder 1, CLIP ViT-L ({SDXL_TEXT_ENCODER_1}*)",
    SDXL_TEXT_ENCODER_2: f"text encoder 2, OpenCLIP ViT-bigG ({SDXL_TEXT_ENCODER_2}*)",
}


@dataclass(frozen=True)
class CheckpointKind:
    """What a checkpoint file holds.

    family: ``sd1``, ``sd2``, ``sdxl``, ``sdxl-refiner``, ``flux``, or None when the keys match no
    model loratui knows (a VAE, an embedding, a LoRA, or an SD UNet of unknown width).
    missing: for SDXL, the parts a complete checkpoint has and this one lacks, as messages name them.
    has_unet: whether an SD-style UNet (``model.diffusion_model.``) is there at all.
    variant: for FLUX.1, ``dev`` (guidance-distilled: it has a guidance embedding) or ``schnell``
    (none), as sd-scripts tells them apart (library/flux_utils.py ``analyze_checkpoint_state``).
    """

    family: str | None
    missing: tuple[str, ...] = ()
    has_unet: bool = False
    variant: str | None = None


def checkpoint_kind(path: Path) -> CheckpointKind:
    """The kind of the ``.safetensors`` checkpoint at ``path``, from its header.

    Raises ModelFileError (a damaged header) or OSError, as ``model_files.safetensors_header``."""
    return detect(model_files.safetensors_header(path).shapes)


def detect(shapes: Mapping[str, tuple[int, ...]]) -> CheckpointKind:
    """The kind of a checkpoint whose tensors have these names (and shapes)."""
    prefixes = _prefixes(shapes)
    has_unet = UNET in prefixes
    if any(prefix in prefixes for prefix in FLUX_BLOCKS):
        variant = "dev" if any(prefix in prefixes for prefix in FLUX_GUIDANCE) else "schnell"
        return CheckpointKind(FLUX, has_unet=has_unet, variant=variant)
    if SDXL_EMBEDDERS in prefixes or SDXL_ADM in prefixes:
        is_refiner = (
            REFINER_TEXT_ENCODER in prefixes
            and SDXL_TEXT_ENCODER_1 not in prefixes
            and SDXL_TEXT_ENCODER_2 not in prefixes
        )
        if is_refiner:
            return CheckpointKind(SDXL_REFINER, has_unet=has_unet)
        missing = tuple(label for prefix, label in SDXL_PARTS.items() if prefix not in prefixes)
        return CheckpointKind(SDXL, missing, has_unet)
    if SD2_TEXT_ENCODER in prefixes:
        return CheckpointKind(SD2, has_unet=has_unet)
    if SD1_TEXT_ENCODER in prefixes:
        return CheckpointKind(SD1, has_unet=has_unet)
    return CheckpointKind(_sd_family_by_width(shapes) if has_unet else None, has_unet=has_unet)


def _prefixes(names: Mapping[str, object]) -> set[str]:
    """Every prefix of up to four dotted parts of every name, each ending in a dot."""
    found: set[str] = set()
    for name in names:
        parts = name.split(".")
        for length in range(1, min(len(parts), 5)):
            found.add(".".join(parts[:length]) + ".")
    return found


def _sd_family_by_width(shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """SD 1.x or 2.x for a UNet without its text encoder: the width of the text it attends to."""
    for name in sorted(shapes):
        if name.startswith(UNET) and name.endswith("attn2.to_k.weight") and len(shapes[name]) == 2:
            return model_files.SD_TEXT_WIDTHS.get(shapes[name][1])  # the width attn2.to_k takes in
    return None
