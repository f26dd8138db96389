"""Stable Diffusion 1.x and 2.x: one CLIP text encoder, a UNet conditioned on its hidden states.

The LoRA goes where kohya's sd-scripts puts it (engine/lora.py), under the prefixes ``lora_unet``
and ``lora_te`` (engine/kohya_format.py), so a file trained here loads wherever a kohya file does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from engine import data as data_mod
from engine.families.base import (
    PartSpec,
    TextRows,
    UNetFamily,
    model_folder,
    own_module,
)
from engine.kohya_format import TEXT_ENCODER_PREFIX, UNET_PREFIX
from engine.lora import TEXT_ENCODER_BLOCKS, UNET_ATTENTION_BLOCKS, UNET_CONV_BLOCKS
from engine.model_loading import BaseModel, load_base_model
from loratui import families, preflight
from loratui.config import RunConfig
from loratui.dataset import ImageEntry

if TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline

    from loratui.sample_prompts import SamplePrompt

UNET = PartSpec(
    families.UNET,
    attribute="unet",
    kohya_prefix=UNET_PREFIX,
    blocks=UNET_ATTENTION_BLOCKS,
    conv_blocks=UNET_CONV_BLOCKS,
    group="unet",
)
TEXT_ENCODER = PartSpec(
    families.TEXT_ENCODER,
    attribute="text_encoder",
    kohya_prefix=TEXT_ENCODER_PREFIX,
    blocks=TEXT_ENCODER_BLOCKS,
    group="text_encoder",
)

# modelspec.architecture of a LoRA for each family (the SAI model spec's names).
ARCHITECTURE = {"sd1": "stable-diffusion-v1/lora", "sd2": "stable-diffusion-v2-512/lora"}


class StableDiffusion(UNetFamily):
    """SD 1.x (``sd1``) or 2.x (``sd2``): the same parts, other layer sizes and metadata."""

    parts = (UNET, TEXT_ENCODER)

    def __init__(self, name: str) -> None:
        self.name = name
        self.clip_skip = 1  # set by load(): the samples read the text encoder's layer the training reads
        self.max_token_length = 75  # set by load(): dataset.max_token_length, the tokens read of a caption
        self._model: BaseModel | None = None  # set by load(): the samples' prompts are encoded with it

    def load(self, cfg: RunConfig) -> BaseModel:
        settings = cfg.model
        resolved, tokenizer = model_folder(cfg)
        model = load_base_model(settings.path, resolved, settings.family, settings.v_prediction, tokenizer)
        layers = model.text_encoder.config.num_hidden_layers
        for problem in preflight.clip_skip_problems(settings.clip_skip, layers, settings.path):
            raise preflight.user_error(problem)
        self.clip_skip = settings.clip_skip
        self.max_token_length = cfg.dataset.max_token_length
        self._model = model
        return model

    def encode_text(
        self,
        part: PartSpec,
        model: BaseModel,
        captions: list[str],
        clip_skip: int,
        device: torch.device,
        unwrap: Callable,
    ) -> TextRows:
        encoder = model.text_encoder  # the one text encoder, ``part``
        # 150 or 225 tokens: 75-token chunks encoded one by one and joined, as sd-scripts does
        ids = data_mod.tokenize(model.tokenizer, captions, self.max_token_length).to(device)
        if clip_skip <= 1:
            return {"encoder_hidden_states": data_mod.join_chunks(encoder(ids)[0], len(captions))}
        # clip skip N: the output of the N-th layer from the end, through the final layer norm,
        # as A1111 and sd-scripts compute it.
        hidden = encoder(ids, output_hidden_states=True).hidden_states[-clip_skip]
        text_model = unwrap(encoder)
        final_norm = getattr(text_model, "text_model", text_model).final_layer_norm
        return {"encoder_hidden_states": data_mod.join_chunks(final_norm(hidden), len(captions))}

    def conditioning(self, text: TextRows, batch: list[ImageEntry], dtype: torch.dtype) -> dict[str, object]:
        return {"encoder_hidden_states": text["encoder_hidden_states"].to(dtype)}

    def kohya_module_name(self, part: PartSpec, module_path: str) -> str:
        return module_path  # sd-scripts trains SD 1.x/2.x on diffusers' modules: their paths are the names

    def sample_pipeline(self, model: BaseModel, scheduler: object) -> StableDiffusionPipeline:
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline(
            vae=model.vae,
            text_encoder=own_module(model.text_encoder),
            tokenizer=model.tokenizer,
            unet=own_module(model.unet),
            scheduler=scheduler,
            safety_checker=None,  # a training preview: no safety checker (it would be a second model to load)
            feature_extractor=None,
            requires_safety_checker=False,
        )

    def sample_arguments(self, prompt: SamplePrompt) -> dict[str, object]:
        arguments = super().sample_arguments(prompt)
        if self.max_token_length > 75 and self._model is not None:
            return self._long_prompt_arguments(self._model, prompt)
        if self.clip_skip > 1:
            # diffusers counts the layers skipped after the last one; model.clip_skip counts the last one too
            arguments["clip_skip"] = self.clip_skip - 1
        return arguments

    def _long_prompt_arguments(self, model: BaseModel, prompt: SamplePrompt) -> dict[str, object]:
        """The prompts read as the captions are trained, 150 or 225 tokens in chunks (the pipeline's own
        encoding reads 77), as sd-scripts' sampling does; clip skip is applied by encode_text."""
        device = next(model.text_encoder.parameters()).device

        def embed(text: str) -> torch.Tensor:
            rows = self.encode_text(TEXT_ENCODER, model, [text], self.clip_skip, device, own_module)
            return rows["encoder_hidden_states"]

        return {
            "prompt_embeds": embed(prompt.prompt),
            "negative_prompt_embeds": embed(prompt.negative_prompt),  # "" is the pipeline's own unconditional text
            "guidance_scale": prompt.cfg_scale,
        }

    def metadata(self, cfg: RunConfig) -> dict[str, object]:
        return {
            "ss_v2": self.name == "sd2",
            "modelspec.architecture": ARCHITECTURE[self.name],
            "modelspec.implementation": "diffusers",
        }
