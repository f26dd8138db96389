"""The seam between the training loop and a model family: what a family supplies.

The loop (engine/train.py) knows latents, noise, an optimizer and parts that carry a LoRA; it does
not know how many text encoders a model has, what they are called in a kohya file or what the
denoiser is given besides the noisy latents. A family says that, once, in its own module
(engine/families/sd.py for SD 1.x/2.x). It is composed of plain parts rather than subclassed per
training method:

- its trainable parts (:class:`PartSpec`): the model attribute holding each, the kohya prefix its
  keys get (``lora_unet``, ``lora_te``; SDXL: ``lora_te1``/``lora_te2``), the blocks whose layers
  get a LoRA, and the setting with its learning rate (a part trains when that rate is above zero);
- loading the model (and refusing settings only the loaded model can judge, such as clip skip);
- text encoding: the captions' embeddings as named per-caption rows, so that the caption cache
  (:class:`CaptionCache`) keeps them for frozen encoders whatever a family returns;
- the denoiser's conditioning: the keyword arguments of its call besides the noisy latents and the
  timesteps (SD: ``encoder_hidden_states``; SDXL adds pooled text embeds and the 6 time ids);
- the names it writes into the file's metadata (``ss_v2``, ``modelspec.architecture``, ...).

Noise, target and loss weighting are shared by the DDPM families (engine/diffusion.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    from engine.lora import LoraTarget
    from engine.model_loading import BaseModel
    from loratui.config import RunConfig
    from loratui.dataset import ImageEntry

# The captions' embeddings by name, one row per caption: SD {"encoder_hidden_states": (B, 77, C)}.
TextRows = dict[str, torch.Tensor]


@dataclass(frozen=True)
class PartSpec:
    """One part of a family's model that can carry a LoRA."""

    name: str  # the key of its weights in a state folder ("unet.<module>...") and its module count's
    label: str  # in messages: "UNet", "text encoder"
    attribute: str  # the model's attribute holding it: "unet", "text_encoder"
    kohya_prefix: str  # its keys in the LoRA file: "lora_unet", "lora_te"
    blocks: tuple[str, ...]  # every Linear and 1x1 conv inside these blocks gets a LoRA
    lr_setting: str  # the setting with its learning rate: "optimizer.unet_lr"
    group: str  # its optimizer group, the key of its rate in the ``step`` events: "unet", "text_encoder"
    conv_blocks: tuple[str, ...] = ()  # and, with a conv rank, the convolutions inside these (LoCon)
    denoiser: bool = False  # the UNet (a DiT later): always trained, the others only at a rate above zero


@dataclass
class Part:
    """A part of the loaded model, as this run trains it."""

    spec: PartSpec
    module: torch.nn.Module  # the model's module (wrapped by accelerate once prepared)
    lr: float
    trained: bool
    targets: list[LoraTarget] = field(default_factory=list)  # empty when not trained


class Family(Protocol):
    """What the training loop needs from a model family (engine/families/sd.py implements it)."""

    name: str  # model.family: "sd1", "sd2"
    parts: tuple[PartSpec, ...]  # every part that can carry a LoRA, the denoiser first

    def load(self, cfg: RunConfig) -> BaseModel:
        """The base model from local files; UserError naming the setting when it does not fit."""

    def encode_text(
        self, model: BaseModel, captions: list[str], clip_skip: int, device: torch.device, unwrap: Callable
    ) -> TextRows:
        """The captions' embeddings (``unwrap`` gives a module accelerate wrapped back as itself)."""

    def conditioning(self, text: TextRows, batch: list[ImageEntry], dtype: torch.dtype) -> dict[str, object]:
        """The denoiser call's keyword arguments besides the noisy latents and the timesteps, its
        tensors in ``dtype`` (SDXL will add ``added_cond_kwargs``: pooled text, time ids from ``batch``)."""

    def enable_gradient_checkpointing(self, part: PartSpec, module: torch.nn.Module) -> None: ...

    def metadata(self, cfg: RunConfig) -> dict[str, object]:
        """The family's own metadata values, by key (engine/metadata.py writes them in its order)."""


class CaptionCache:
    """The text embeddings of each caption, for text encoders that do not train: a frozen encoder
    gives the same output for a caption every time, so it runs once per caption. Kept on the CPU."""

    def __init__(self, encode: Callable[[list[str]], TextRows]) -> None:
        self._encode = encode
        self._rows: dict[str, dict[str, torch.Tensor]] = {}

    def get(self, captions: list[str], device: torch.device) -> TextRows:
        missing = [c for c in dict.fromkeys(captions) if c not in self._rows]
        if missing:
            with torch.no_grad():
                encoded = self._encode(missing)
            for index, caption in enumerate(missing):
                self._rows[caption] = {name: rows[index].to("cpu") for name, rows in encoded.items()}
        names = self._rows[captions[0]].keys()
        return {name: torch.stack([self._rows[c][name] for c in captions]).to(device) for name in names}


def model_folder(cfg: RunConfig) -> tuple[Path, Path | None]:
    """Where ``model.path`` and ``model.tokenizer`` point (a built-in name stays as it is)."""
    settings = cfg.model
    tokenizer = cfg.resolve(settings.tokenizer) if settings.tokenizer else None
    resolved = cfg.resolve(settings.path) if not settings.is_builtin else Path(settings.path)
    return resolved, tokenizer
