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
- the training objective (:class:`Objective`: the noise levels drawn, the noisy input, the target and
  the per-sample loss) and the denoiser's call: the UNet families share DDPM's (engine/diffusion.py),
  Flux trains a rectified flow on packed latents (engine/families/flux.py);
- the tensors of a kohya file (SDXL's UNet under its sgm names; Flux's transformer fused into BFL's
  modules), and the names it writes into the file's metadata (``ss_v2``, ``modelspec.architecture``, ...).
- sample images: its diffusers pipeline built around the loaded modules (the LoRA in them), the
  pipeline call's arguments for a prompt, and the VAE decode of the latents it renders
  (engine/sampling.py picks the scheduler and runs it).

A family object is made per run (engine.families.family_for), so it may keep what ``load`` learnt.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

from loratui.families import LoraPart

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from engine.lora import LoraTarget
    from engine.model_loading import BaseModel
    from loratui.config import RunConfig
    from loratui.dataset import ImageEntry
    from loratui.sample_prompts import SamplePrompt

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
        """The UNet (Flux: the transformer): trained unless network.train_text_encoder_only; a text
        encoder only at a rate above zero, and never with network.train_unet_only (loratui.families.trains)."""
        return self.part.denoiser


@dataclass
class Part:
    """A part of the loaded model, as this run trains it."""

    spec: PartSpec
    module: torch.nn.Module  # the model's module (wrapped by accelerate once prepared)
    lr: float
    trained: bool
    targets: list[LoraTarget] = field(default_factory=list)  # empty when not trained
    # A LyCORIS type's layers by module path (engine/lycoris_network.py), made with the targets, put in by _add_lora.
    layers: dict[str, torch.nn.Module] = field(default_factory=dict)


class Objective(Protocol):
    """What the denoiser learns: the noise levels drawn for a batch (DDPM: integer timesteps; a
    rectified flow: sigmas in (0, 1]), the input they make and the target, and the loss of each sample."""

    def noise(self, latents: torch.Tensor) -> torch.Tensor: ...

    def input_noise(self, noise: torch.Tensor) -> torch.Tensor:
        """The noise the denoiser's input is made with: ``noise`` plus input perturbation
        (training.ip_noise_gamma), or ``noise`` itself; the target is always made with ``noise``."""

    def draw_timesteps(self, latents: torch.Tensor) -> torch.Tensor: ...

    def eval_timesteps(self, fraction: float, device: torch.device) -> torch.Tensor:
        """One sample's fixed noise level at ``fraction`` of the way to pure noise (the eval loss)."""

    def noisy_and_target(
        self,
        latents: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        input_noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The denoiser's input (made with ``input_noise`` when given) and its target (with ``noise``)."""

    def loss(
        self, prediction: torch.Tensor, target: torch.Tensor, noisy: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """The loss of each sample, (B,), float32."""


class Family(Protocol):
    """What the training loop needs from a model family (engine/families/sd.py, sdxl.py and flux.py)."""

    name: str  # model.family: "sd1", "sd2", "sdxl", "flux"
    parts: tuple[PartSpec, ...]  # every part that can carry a LoRA (or encodes text), the denoiser first

    def load(self, cfg: RunConfig) -> BaseModel:
        """The base model from local files; UserError naming the setting when it does not fit."""

    def configure(self, cfg: RunConfig, denoiser: torch.nn.Module) -> None:
        """Learn what the loaded denoiser tells (Flux: dev or schnell); ``load`` calls it, and so does the
        memory estimate (engine/memory_estimate.py) on a denoiser built from the configs alone."""

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

    def objective(self, cfg: RunConfig, model: BaseModel) -> Objective: ...

    def predict(
        self, denoiser: torch.nn.Module, noisy: torch.Tensor, timesteps: torch.Tensor, conditioning: dict[str, object]
    ) -> torch.Tensor:
        """The denoiser's output for ``noisy`` latents, in their (B, C, H, W) layout."""

    def enable_gradient_checkpointing(self, part: PartSpec, module: torch.nn.Module) -> None: ...

    def kohya_module_name(self, part: PartSpec, module_path: str) -> str:
        """The name a module of ``part`` has in a kohya LoRA file (SD: its path as it is; SDXL's UNet: its
        sgm name), before the prefix is added and dots become underscores (engine/kohya_format.py)."""

    def kohya_tensors(
        self, part: PartSpec, weights: dict[str, torch.Tensor], targets: list[LoraTarget], dtype: torch.dtype
    ) -> dict[str, torch.Tensor]:
        """The kohya file's tensors of one trained part, from ``<module>.lora_down.weight``-style
        ``weights`` (engine.lora.lora_state_dict; a LyCORIS part's ``<module>.hada_w1_a``... alike)."""

    def metadata(self, cfg: RunConfig) -> dict[str, object]:
        """The family's own metadata values, by key (engine/metadata.py writes them in its order)."""

    # -- sample images (engine/sampling.py renders them; these say how for this family)
    def sample_pipeline(self, model: BaseModel, scheduler: object) -> DiffusionPipeline:
        """The family's diffusers pipeline over the model's own loaded modules (the LoRA in them, nothing
        copied), with ``scheduler``; no safety checker, no watermark."""

    def sample_arguments(self, prompt: SamplePrompt) -> dict[str, object]:
        """The pipeline call's arguments for ``prompt`` besides its size, steps, generator and output type
        (the prompt and negative prompt, the CFG scale; FLUX.1 dev: its embedded guidance)."""

    def decode_sample(self, pipeline: DiffusionPipeline, latents: torch.Tensor, prompt: SamplePrompt) -> torch.Tensor:
        """The image batch (values in -1..1) of the pipeline's ``output_type="latent"`` output, decoded by
        the VAE in its own dtype."""


def own_module(module: torch.nn.Module) -> torch.nn.Module:
    """A part as the model has it, without a wrapper accelerate may have put around it (the forward's
    autocast and float32 outputs stay: the model is shared with training)."""
    from accelerate.utils import extract_model_from_parallel

    return extract_model_from_parallel(module)


class UNetFamily:
    """What the UNet families (SD 1.x/2.x and SDXL) share: nothing to learn from the loaded weights,
    DDPM's objective (engine/diffusion.py), the UNet's call, diffusers' and transformers' gradient
    checkpointing, and a kohya file naming each trained module once (``kohya_module_name``)."""

    def configure(self, cfg: RunConfig, denoiser: torch.nn.Module) -> None:
        pass

    def objective(self, cfg: RunConfig, model: BaseModel) -> Objective:
        from engine.diffusion import DenoisingObjective, DenoisingSettings, with_zero_terminal_snr

        if cfg.training.zero_terminal_snr:  # the model's own schedule, rescaled: its last timestep pure noise
            model.noise_scheduler = with_zero_terminal_snr(model.noise_scheduler)
        return DenoisingObjective(model.noise_scheduler, DenoisingSettings.from_config(cfg))

    def predict(
        self, denoiser: torch.nn.Module, noisy: torch.Tensor, timesteps: torch.Tensor, conditioning: dict[str, object]
    ) -> torch.Tensor:
        return denoiser(noisy, timesteps, **conditioning).sample  # a diffusers UNet takes the latents as they are

    def enable_gradient_checkpointing(self, part: PartSpec, module: torch.nn.Module) -> None:
        enable_gradient_checkpointing(part, module)

    def kohya_tensors(
        self, part: PartSpec, weights: dict[str, torch.Tensor], targets: list[LoraTarget], dtype: torch.dtype
    ) -> dict[str, torch.Tensor]:
        return kohya_tensors_by_name(self, part, weights, targets, dtype)  # type: ignore[arg-type]

    def sample_arguments(self, prompt: SamplePrompt) -> dict[str, object]:
        return {
            "prompt": prompt.prompt,
            "negative_prompt": prompt.negative_prompt or None,
            "guidance_scale": prompt.cfg_scale,
        }

    def decode_sample(self, pipeline: DiffusionPipeline, latents: torch.Tensor, prompt: SamplePrompt) -> torch.Tensor:
        vae = pipeline.vae
        return vae.decode(latents / vae.config.scaling_factor).sample


def enable_gradient_checkpointing(part: PartSpec, module: torch.nn.Module) -> None:
    """Gradient checkpointing on a part of a UNet family: diffusers' switch on the denoiser,
    transformers' (non-reentrant) on a CLIP text encoder."""
    if part.denoiser:
        module.enable_gradient_checkpointing()
    else:
        module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def kohya_tensors_by_name(
    family: Family, part: PartSpec, weights: dict[str, torch.Tensor], targets: list[LoraTarget], dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """A part whose every module is one module of the file, under the family's name for it."""
    from engine.kohya_format import to_kohya_tensors

    kohya_name = functools.partial(family.kohya_module_name, part)
    return to_kohya_tensors(weights, targets, part.kohya_prefix, dtype, kohya_name)


def model_folder(cfg: RunConfig) -> tuple[Path, Path | None]:
    """Where ``model.path`` and ``model.tokenizer`` point (a built-in name stays as it is)."""
    settings = cfg.model
    tokenizer = cfg.resolve(settings.tokenizer) if settings.tokenizer else None
    resolved = cfg.resolve(settings.path) if not settings.is_builtin else Path(settings.path)
    return resolved, tokenizer
