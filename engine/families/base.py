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
- text encoding, one text encoder at a time: the captions' embeddings as named per-caption rows,
  so that the caption cache (engine/text_cache.py) keeps the rows of each frozen encoder whatever
  a family returns, even while another of its encoders trains;
- the denoiser's conditioning: the keyword arguments of its call besides the noisy latents and the
  timesteps, made from every encoder's rows (SD: ``encoder_hidden_states``; SDXL: the two encoders'
  states side by side, and ``added_cond_kwargs`` with the pooled text and the 6 size/crop time ids);
- the name of each module in a kohya file (SDXL's UNet: the sgm names), and the names it writes
  into the file's metadata (``ss_v2``, ``modelspec.architecture``, ...).

Noise, target and loss weighting are shared by the DDPM families (engine/diffusion.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

from loratui.families import LoraPart

if TYPE_CHECKING:
    from engine.lora import LoraTarget
    from engine.model_loading import BaseModel
    from loratui.config import RunConfig
    from loratui.dataset import ImageEntry

# The captions' embeddings by name, one row per caption: SD {"encoder_hidden_states": (B, 77, C)}.
# The names are unique across a family's text encoders: the rows of all of them make one TextRows.
TextRows = dict[str, torch.Tensor]


@dataclass(frozen=True)
class PartSpec:
    """One part of a family's model that can carry a LoRA: the torch-free declaration the check
    shares (``loratui.families.LoraPart``: its name, label, learning-rate setting) and where its
    layers are."""

    part: LoraPart
    attribute: str  # the model's attribute holding it: "unet", "text_encoder", "text_encoder_2"
    kohya_prefix: str  # its keys in the LoRA file: "lora_unet", "lora_te"; SDXL "lora_te1", "lora_te2"
    blocks: tuple[str, ...]  # every Linear and 1x1 conv inside these blocks gets a LoRA
    group: str  # its optimizer group, the key of its rate in the ``step`` events: "unet", "text_encoder"
    conv_blocks: tuple[str, ...] = ()  # and, with a conv rank, the convolutions inside these (LoCon)

    @property
    def name(self) -> str:
        """The key of its weights in a state folder ("unet.<module>...") and of its module count."""
        return self.part.name

    @property
    def label(self) -> str:
        return self.part.label

    @property
    def lr_setting(self) -> str:
        return self.part.lr_setting

    @property
    def denoiser(self) -> bool:
        """The UNet (a DiT later): always trained; a text encoder only at a rate above zero, and
        never with network.train_unet_only (loratui.families.trains)."""
        return self.part.denoiser


@dataclass
class Part:
    """A part of the loaded model, as this run trains it."""

    spec: PartSpec
    module: torch.nn.Module  # the model's module (wrapped by accelerate once prepared)
    lr: float
    trained: bool
    targets: list[LoraTarget] = field(default_factory=list)  # empty when not trained


class Family(Protocol):
    """What the training loop needs from a model family (engine/families/sd.py and sdxl.py implement it)."""

    name: str  # model.family: "sd1", "sd2", "sdxl"
    parts: tuple[PartSpec, ...]  # every part that can carry a LoRA, the denoiser first

    def load(self, cfg: RunConfig) -> BaseModel:
        """The base model from local files; UserError naming the setting when it does not fit."""

    def encode_text(
        self,
        part: PartSpec,
        model: BaseModel,
        captions: list[str],
        clip_skip: int,
        device: torch.device,
        unwrap: Callable,
    ) -> TextRows:
        """The captions' embeddings by the text encoder ``part`` (``unwrap`` gives a module
        accelerate wrapped back as itself)."""

    def conditioning(self, text: TextRows, batch: list[ImageEntry], dtype: torch.dtype) -> dict[str, object]:
        """The denoiser call's keyword arguments besides the noisy latents and the timesteps, from
        the rows of every text encoder, its tensors in ``dtype`` (SDXL: ``added_cond_kwargs`` with
        the pooled text and the time ids of ``batch``'s images)."""

    def enable_gradient_checkpointing(self, part: PartSpec, module: torch.nn.Module) -> None: ...

    def kohya_module_name(self, part: PartSpec, module_path: str) -> str:
        """The name a module of ``part`` has in a kohya LoRA file (SD: its path as it is; SDXL's UNet: its
        sgm name), before the prefix is added and dots become underscores (engine/kohya_format.py)."""

    def metadata(self, cfg: RunConfig) -> dict[str, object]:
        """The family's own metadata values, by key (engine/metadata.py writes them in its order)."""


def enable_gradient_checkpointing(part: PartSpec, module: torch.nn.Module) -> None:
    """Gradient checkpointing on a part of a UNet family: diffusers' switch on the denoiser,
    transformers' (non-reentrant) on a CLIP text encoder."""
    if part.denoiser:
        module.enable_gradient_checkpointing()
    else:
        module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def model_folder(cfg: RunConfig) -> tuple[Path, Path | None]:
    """Where ``model.path`` and ``model.tokenizer`` point (a built-in name stays as it is)."""
    settings = cfg.model
    tokenizer = cfg.resolve(settings.tokenizer) if settings.tokenizer else None
    resolved = cfg.resolve(settings.path) if not settings.is_builtin else Path(settings.path)
    return resolved, tokenizer
