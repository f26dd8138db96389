"""FLUX.1 [dev] and [schnell]: a transformer trained on a rectified flow over packed latents.

Trained as kohya's sd-scripts trains it (flux_train_network.py, library/strategy_flux.py,
library/flux_train_utils.py), so a file trained here means what an sd-scripts file means:

- text: CLIP-L's pooled output (its final-norm state at the end token, no projection) is the
  transformer's ``pooled_projections``; T5-XXL's last hidden states are its
  ``encoder_hidden_states``, the captions padded to 512 tokens for dev and 256 for schnell
  (model.t5xxl_max_token_length), the padding masked in T5 and in the transformer's attention only
  with model.apply_t5_attn_mask;
- latents: the 16-channel AE's sample, shifted and scaled ((z - 0.1159) x 0.3611), cut into 2x2
  patches (B, 16, h, w) -> (B, h/2 x w/2, 64) with one position id (0, row, column) per patch, the
  text's position ids all zero;
- the objective: x_t = (1 - sigma) x0 + sigma noise, target noise - x0, sigma drawn by
  training.timestep_sampling; the transformer is given sigma as its timestep (diffusers multiplies
  by 1000 inside, as BFL's model does) and, for dev, training.guidance_scale as its guidance;
  its output read as training.model_prediction_type says (engine/flow_matching.py).

The LoRA goes on every Linear of the double- and single-stream blocks, and on CLIP-L's attention
and MLP layers when it trains (kohya: ``lora_unet``, ``lora_te1``); T5 never gets one (sd-scripts
only with train_t5xxl). The file names the transformer's modules as BFL's model does, fusing the
q/k/v LoRAs diffusers keeps apart (engine/flux_names.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from engine import data as data_mod
from engine import flow_matching
from engine.families.base import (
    PartSpec,
    TextRows,
    enable_gradient_checkpointing,
    kohya_tensors_by_name,
    model_folder,
    own_module,
)
from engine.flux_names import FLUX_BLOCKS, bfl_module, to_kohya_flux_tensors
from engine.flux_random import FLUX_RANDOM_NAME, ensure_flux_random
from engine.kohya_format import TEXT_ENCODER_1_PREFIX, UNET_PREFIX
from engine.lora import TEXT_ENCODER_BLOCKS, LoraTarget
from engine.losses import LossSettings, elementwise_loss, huber_threshold
from engine.model_loading import BaseModel, first_line, weight_dtype
from engine.noise import NoiseSettings, perturbed
from engine.tiny_flux import TINY_FLUX_NAME, ensure_tiny_flux
from loratui import families
from loratui.config import RunConfig
from loratui.dataset import ImageEntry
from loratui.errors import UserError

if TYPE_CHECKING:
    from diffusers import FluxPipeline

    from loratui.sample_prompts import SamplePrompt

TRANSFORMER = PartSpec(
    families.TRANSFORMER,
    attribute="transformer",
    kohya_prefix=UNET_PREFIX,
    blocks=FLUX_BLOCKS,
    group="unet",
)
CLIP_L = PartSpec(
    families.CLIP_L,
    attribute="text_encoder",
    kohya_prefix=TEXT_ENCODER_1_PREFIX,
    blocks=TEXT_ENCODER_BLOCKS,
    group="text_encoder",
)
T5_XXL = PartSpec(families.T5_XXL, attribute="text_encoder_2", kohya_prefix="lora_te3", blocks=(), group="t5")

# The rows each text encoder gives (engine/families/base.py's TextRows).
POOLED = "pooled_projections"  # CLIP-L's pooled output
T5_STATES = "t5_states"  # T5's last hidden states
T5_MASK = "t5_mask"  # 1 for a caption's tokens, 0 for its padding

# T5 tokens per caption when model.t5xxl_max_token_length is 0: sd-scripts' (and BFL's) defaults.
T5_TOKENS = {"dev": 512, "schnell": 256}
VAE_SCALE = 8  # the AE's downsampling: a latent is 1/8 of the image on each side

# The built-in Flux models by name: the function that builds one (once) and returns its diffusers folder.
BUILTIN_MODELS = {TINY_FLUX_NAME: ensure_tiny_flux, FLUX_RANDOM_NAME: ensure_flux_random}


def _load_folder(folder: Path, dtype: torch.dtype) -> BaseModel:
    """A diffusers FLUX.1 folder (the built-in models are), each component on its own; the transformer
    and T5 in ``dtype``."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

    weights = {"local_files_only": True, "use_safetensors": True}
    try:
        return BaseModel(
            tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True),
            text_encoder=CLIPTextModel.from_pretrained(folder / "text_encoder", **weights),
            tokenizer_2=T5TokenizerFast.from_pretrained(folder / "tokenizer_2", local_files_only=True),
            text_encoder_2=T5EncoderModel.from_pretrained(folder / "text_encoder_2", torch_dtype=dtype, **weights),
            vae=AutoencoderKL.from_pretrained(folder / "vae", **weights),
            unet=None,
            transformer=FluxTransformer2DModel.from_pretrained(folder / "transformer", torch_dtype=dtype, **weights),
            noise_scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(
                folder / "scheduler", local_files_only=True
            ),
            source=folder,
            name=folder.name,
        )
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(
            f"cannot load the model in {folder}: {first_line(exc)}",
            "model.path",
            "check that the folder is a complete FLUX.1 diffusers model (transformer/, vae/, text_encoder/, "
            "text_encoder_2/, tokenizer/, tokenizer_2/, scheduler/)",
            "model",
        ) from exc


def variant_of(transformer: torch.nn.Module) -> str:
    """dev is guidance-distilled: its transformer has a guidance embedding, schnell's has none."""
    return "dev" if transformer.config.guidance_embeds else "schnell"


class FlowObjective:
    """Flux's objective (engine/families/base.py's Objective): a rectified flow, its noise levels
    the sigmas of engine/flow_matching.py. Of the noise options, sd-scripts applies only input
    perturbation to Flux (no offset, no multires noise, no timestep range); of the loss options,
    training.loss_type with its huber schedule (at t = 1000 sigma), but no SNR-based weight."""

    def __init__(self, settings: flow_matching.FlowSettings, noise: NoiseSettings, loss: LossSettings) -> None:
        self.settings = settings
        self.noise_settings = noise
        self.loss_settings = loss

    def noise(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.randn_like(latents)  # no offset noise: sd-scripts' Flux training has none

    def input_noise(self, noise: torch.Tensor) -> torch.Tensor:
        return perturbed(noise, self.noise_settings)

    def draw_timesteps(self, latents: torch.Tensor) -> torch.Tensor:
        image_seq_len = flow_matching.packed_seq_len(latents)
        return flow_matching.sample_sigmas(self.settings, latents.shape[0], image_seq_len, latents.device)

    def eval_timesteps(self, fraction: float, device: torch.device) -> torch.Tensor:
        return torch.tensor([fraction], dtype=torch.float32, device=device)

    def noisy_and_target(
        self,
        latents: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        input_noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        noisy = flow_matching.noisy_input(latents, noise if input_noise is None else input_noise, timesteps)
        return noisy, flow_matching.flow_target(latents, noise)

    def loss(
        self, prediction: torch.Tensor, target: torch.Tensor, noisy: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        read = flow_matching.read_prediction(self.settings, prediction.float(), noisy.float(), timesteps)
        loss_settings = self.loss_settings
        threshold = None
        if loss_settings.needs_threshold:  # sd-scripts' Flux timesteps are 1000 sigma
            steps = flow_matching.TRAIN_TIMESTEPS
            threshold = huber_threshold(loss_settings, timesteps.float() * steps, steps)
        elementwise = elementwise_loss(read, target.float(), loss_settings.loss_type, threshold)
        loss = elementwise.mean(dim=(1, 2, 3))
        weights = flow_matching.loss_weights(self.settings, timesteps)
        return loss if weights is None else loss * weights.to(loss.device)


class Flux:
    """FLUX.1 dev or schnell, from a diffusers folder or the four files of sd-scripts' recipe."""

    name = "flux"
    parts = (TRANSFORMER, CLIP_L, T5_XXL)

    def __init__(self) -> None:
        # What loading tells: set by load(), read by the text encoding and the conditioning.
        self.variant = "dev"
        self.t5_tokens = T5_TOKENS["dev"]
        self.guidance: float | None = None  # dev's guidance input; None for schnell
        self.attention_mask = False

    def load(self, cfg: RunConfig) -> BaseModel:
        settings = cfg.model
        resolved, _ = model_folder(cfg)
        # Loaded in the training precision: FLUX.1's transformer is 48 GB in float32.
        dtype = weight_dtype(cfg.training.mixed_precision)
        if settings.path in BUILTIN_MODELS:
            model = _load_folder(BUILTIN_MODELS[settings.path](), dtype)
            model.name = settings.path
        elif resolved.is_dir():
            model = _load_folder(resolved, dtype)
        else:
            from engine.flux_files import load_flux_files

            # With fp8_base, an fp8 file's weights stay float8 (a 12 GB transformer is never 24 GB in RAM).
            model = load_flux_files(cfg, dtype, keep_fp8=cfg.model.fp8_base)
        variant = variant_of(model.transformer)
        if settings.flux_variant not in ("auto", variant):
            raise UserError(
                f"{model.name} is FLUX.1 {variant} (its transformer "
                f"{'has' if variant == 'dev' else 'has no'} guidance embedding), not {settings.flux_variant}",
                "model.flux_variant",
                f'set it to "auto" or "{variant}"',
                "model",
            )
        self.configure(cfg, model.transformer)
        return model

    def configure(self, cfg: RunConfig, denoiser: torch.nn.Module) -> None:
        """What the loaded transformer tells: dev or schnell, and so the T5 token count and whether it
        gets a guidance input (engine/memory_estimate.py calls this on a transformer built from configs)."""
        self.variant = variant_of(denoiser)
        self.t5_tokens = cfg.model.t5xxl_max_token_length or T5_TOKENS[self.variant]
        self.guidance = cfg.training.guidance_scale if self.variant == "dev" else None
        self.attention_mask = cfg.model.apply_t5_attn_mask

    def encode_text(
        self,
        part: PartSpec,
        model: BaseModel,
        captions: list[str],
        clip_skip: int,  # not for Flux
        device: torch.device,
        unwrap: Callable,
    ) -> TextRows:
        if part == CLIP_L:
            ids = data_mod.tokenize(model.tokenizer, captions).to(device)
            return {POOLED: model.text_encoder(ids).pooler_output}
        tokens = model.tokenizer_2(
            captions, max_length=self.t5_tokens, padding="max_length", truncation=True, return_tensors="pt"
        )
        ids, mask = tokens.input_ids.to(device), tokens.attention_mask.to(device)
        states = model.text_encoder_2(ids, attention_mask=mask if self.attention_mask else None).last_hidden_state
        return {T5_STATES: states, T5_MASK: mask}

    def conditioning(self, text: TextRows, batch: list[ImageEntry], dtype: torch.dtype) -> dict[str, object]:
        states = text[T5_STATES]
        conditioning: dict[str, object] = {
            "encoder_hidden_states": states.to(dtype),
            "pooled_projections": text[POOLED].to(dtype),
            "txt_ids": torch.zeros(states.shape[1], 3, device=states.device, dtype=dtype),
        }
        if self.guidance is not None:
            conditioning["guidance"] = torch.full((states.shape[0],), self.guidance, device=states.device)
        if self.attention_mask:
            conditioning[T5_MASK] = text[T5_MASK]
        return conditioning

    def predict(
        self, denoiser: torch.nn.Module, noisy: torch.Tensor, timesteps: torch.Tensor, conditioning: dict[str, object]
    ) -> torch.Tensor:
        from diffusers import FluxPipeline

        batch, channels, height, width = noisy.shape
        kwargs = dict(conditioning)
        packed = FluxPipeline._pack_latents(noisy, batch, channels, height, width)
        image_ids = FluxPipeline._prepare_latent_image_ids(batch, height // 2, width // 2, noisy.device, noisy.dtype)
        text_mask = kwargs.pop(T5_MASK, None)
        if text_mask is not None:
            # The joint sequence is the text's tokens, then the image's: padding tokens are never attended to.
            image_mask = torch.ones(batch, packed.shape[1], dtype=torch.bool, device=noisy.device)
            joint = torch.cat([text_mask.to(noisy.device).bool(), image_mask], dim=1)
            kwargs["joint_attention_kwargs"] = {"attention_mask": joint[:, None, None, :]}
        output = denoiser(hidden_states=packed, timestep=timesteps.to(noisy.dtype), img_ids=image_ids, **kwargs).sample
        return FluxPipeline._unpack_latents(output, height * VAE_SCALE, width * VAE_SCALE, VAE_SCALE)

    def objective(self, cfg: RunConfig, model: BaseModel) -> FlowObjective:
        flow = flow_matching.FlowSettings.from_config(cfg)
        return FlowObjective(flow, NoiseSettings.from_config(cfg), LossSettings.from_config(cfg))

    def enable_gradient_checkpointing(self, part: PartSpec, module: torch.nn.Module) -> None:
        enable_gradient_checkpointing(part, module)

    def kohya_module_name(self, part: PartSpec, module_path: str) -> str:
        # sd-scripts trains BFL's transformer: a module's name is the BFL module it is (or is part of).
        return bfl_module(module_path)[0] if part.denoiser else module_path

    def kohya_tensors(
        self, part: PartSpec, weights: dict[str, torch.Tensor], targets: list[LoraTarget], dtype: torch.dtype
    ) -> dict[str, torch.Tensor]:
        if part.denoiser:
            return to_kohya_flux_tensors(weights, targets, dtype, part.kohya_prefix)
        return kohya_tensors_by_name(self, part, weights, targets, dtype)

    def sample_pipeline(self, model: BaseModel, scheduler: object) -> FluxPipeline:
        from diffusers import FluxPipeline

        return FluxPipeline(
            scheduler=scheduler,
            vae=model.vae,
            text_encoder=own_module(model.text_encoder),
            tokenizer=model.tokenizer,
            text_encoder_2=own_module(model.text_encoder_2),
            tokenizer_2=model.tokenizer_2,
            transformer=own_module(model.transformer),
        )

    def sample_arguments(self, prompt: SamplePrompt) -> dict[str, object]:
        # The pipeline reads T5's states unmasked (model.apply_t5_attn_mask is not applied to samples).
        return {
            "prompt": prompt.prompt,
            "negative_prompt": prompt.negative_prompt or None,
            "true_cfg_scale": prompt.cfg_scale,  # real CFG (two passes) only above 1 with a negative prompt
            # dev's embedded guidance; schnell's transformer has no guidance input and ignores it
            "guidance_scale": prompt.guidance,  # a FLUX.1 prompt always has one (loratui.sample_prompts)
            "max_sequence_length": self.t5_tokens,  # T5 tokens as trained: 512 for dev, 256 for schnell
        }

    def decode_sample(self, pipeline: FluxPipeline, latents: torch.Tensor, prompt: SamplePrompt) -> torch.Tensor:
        from diffusers import FluxPipeline

        vae = pipeline.vae
        unpacked = FluxPipeline._unpack_latents(latents, prompt.height, prompt.width, pipeline.vae_scale_factor)
        return vae.decode(unpacked / vae.config.scaling_factor + vae.config.shift_factor).sample

    def metadata(self, cfg: RunConfig) -> dict[str, object]:
        return {
            "ss_v2": False,
            "ss_model_type": "flux",  # sd-scripts' --model_type: flux (or chroma)
            "modelspec.architecture": f"flux-1-{self.variant}/lora",
            "modelspec.implementation": "https://github.com/black-forest-labs/flux",
        }
