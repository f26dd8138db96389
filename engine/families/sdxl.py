"""SDXL: two CLIP text encoders, a UNet conditioned on both and on each image's size and crop.

Trained as kohya's sd-scripts trains it (sdxl_train_network.py, library/strategy_sdxl.py), so a
file trained here means what an sd-scripts file means wherever it is loaded:

- text encoder 1 (CLIP ViT-L) gives its penultimate hidden states (layer 11 of 12, without the
  final layer norm), text encoder 2 (OpenCLIP ViT-bigG) its penultimate ones too; the UNet
  attends to both side by side (768 + 1280 = 2048 channels);
- the pooled text vector is text encoder 2's last state (after its final layer norm) at the
  first end token, through its projection; sd-scripts finds that token itself rather than
  taking transformers' arg-max of the ids, and so does this;
- the six size/crop time ids of each image: its original size, sd-scripts' crop offsets
  (:func:`loratui.buckets.sdxl_crop_top_left`) and its bucket, each as (height, width);
- clip skip does not apply (sd-scripts ignores it for SDXL with a warning).

The LoRA goes where sd-scripts puts it: every Linear and 1x1 conv in the UNet's transformers
(and, with a conv rank, its resnets and samplers), and in both text encoders' attention and MLP
layers, under ``lora_unet``, ``lora_te1`` and ``lora_te2``; the UNet's modules are named in the
file by their sgm names (engine/sdxl_names.py), as sd-scripts, which trains an sgm UNet, names them.
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
from engine.families.sd import UNET
from engine.kohya_format import TEXT_ENCODER_1_PREFIX, TEXT_ENCODER_2_PREFIX
from engine.lora import TEXT_ENCODER_BLOCKS
from engine.model_loading import BaseModel, load_base_model
from engine.sdxl_names import unet_module_to_sgm
from loratui import families
from loratui.buckets import sdxl_crop_top_left
from loratui.config import RunConfig
from loratui.dataset import ImageEntry

if TYPE_CHECKING:
    from diffusers import StableDiffusionXLPipeline

    from loratui.sample_prompts import SamplePrompt

TEXT_ENCODER_1 = PartSpec(
    families.TEXT_ENCODER_1,
    attribute="text_encoder",
    kohya_prefix=TEXT_ENCODER_1_PREFIX,
    blocks=TEXT_ENCODER_BLOCKS,
    group="text_encoder",
)
TEXT_ENCODER_2 = PartSpec(
    families.TEXT_ENCODER_2,
    attribute="text_encoder_2",
    kohya_prefix=TEXT_ENCODER_2_PREFIX,
    blocks=TEXT_ENCODER_BLOCKS,
    group="text_encoder_2",
)

# The rows each text encoder gives (engine/families/base.py's TextRows): names unique across the two.
HIDDEN_1 = "hidden_states_1"  # text encoder 1's penultimate states
HIDDEN_2 = "hidden_states_2"  # text encoder 2's penultimate states
POOLED = "text_embeds"  # text encoder 2's projected pooled vector


def time_ids(entry: ImageEntry) -> tuple[int, int, int, int, int, int]:
    """The six size/crop conditioning numbers of one image, in SDXL's order: original (height, width),
    crop (top, left), target (height, width). Original: the image as scanned (after its EXIF
    rotation); target: its bucket; crop: sd-scripts' centring offsets."""
    bucket_width, bucket_height = entry.bucket
    top, left = sdxl_crop_top_left(entry.width, entry.height, entry.bucket)
    return entry.height, entry.width, top, left, bucket_height, bucket_width


def _pooled(encoder: torch.nn.Module, last: torch.Tensor, ids: torch.Tensor, end_token: int) -> torch.Tensor:
    """The last states at each caption's first end token, through the projection: sd-scripts'
    ``pool_workaround``. transformers' own pooled output takes, for a config with the legacy
    eos_token_id 2 (SDXL's text_encoder_2 has it), the position of the highest id, which is the
    end token only while no token was added to the vocabulary above it."""
    first_end = (ids == end_token).int().argmax(dim=1)  # 0 when a caption has none, as in sd-scripts
    pooled = last[torch.arange(last.shape[0], device=last.device), first_end.to(last.device)]
    projection = encoder.text_projection
    return projection(pooled.to(projection.weight.dtype)).to(last.dtype)


class StableDiffusionXL(UNetFamily):
    """SDXL base 1.0 and its fine-tunes (Pony, Illustrious, NoobAI, Juggernaut...)."""

    name = "sdxl"
    parts = (UNET, TEXT_ENCODER_1, TEXT_ENCODER_2)
    max_token_length = 75  # set by load(): dataset.max_token_length, the tokens read of a caption
    _model: BaseModel | None = None  # set by load(): the samples' prompts are encoded with it

    def load(self, cfg: RunConfig) -> BaseModel:
        settings = cfg.model
        self.max_token_length = cfg.dataset.max_token_length
        resolved, tokenizer = model_folder(cfg)
        self._model = load_base_model(settings.path, resolved, self.name, settings.v_prediction, tokenizer)
        return self._model

    def encode_text(
        self,
        part: PartSpec,
        model: BaseModel,
        captions: list[str],
        clip_skip: int,  # not for SDXL: sd-scripts ignores it
        device: torch.device,
        unwrap: Callable,
    ) -> TextRows:
        # 150 or 225 tokens: 75-token chunks encoded one by one and joined, as sd-scripts does
        batch, length = len(captions), self.max_token_length
        if part == TEXT_ENCODER_1:
            ids = data_mod.tokenize(model.tokenizer, captions, length).to(device)
            # hidden_states[0] is the embeddings: [-2] is the output of layer 11 of 12, sd-scripts' [11].
            hidden = model.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
            return {HIDDEN_1: data_mod.join_chunks(hidden, batch)}
        tokenizer = model.tokenizer_2
        ids = data_mod.tokenize(tokenizer, captions, length).to(device)
        output = model.text_encoder_2(ids, output_hidden_states=True)
        pooled = _pooled(unwrap(model.text_encoder_2), output.last_hidden_state, ids, tokenizer.eos_token_id)
        chunks = ids.shape[0] // batch
        # the pooled vector of each caption's first chunk, as sd-scripts takes it
        return {HIDDEN_2: data_mod.join_chunks(output.hidden_states[-2], batch), POOLED: pooled[::chunks]}

    def conditioning(self, text: TextRows, batch: list[ImageEntry], dtype: torch.dtype) -> dict[str, object]:
        hidden_1 = text[HIDDEN_1]
        states = torch.cat([hidden_1.to(dtype), text[HIDDEN_2].to(dtype)], dim=2)
        # float32 whatever the precision: the UNet embeds each number sinusoidally in float32,
        # and fp16 holds integers above 2048 only to the nearest even number.
        sizes = torch.tensor([time_ids(entry) for entry in batch], dtype=torch.float32, device=hidden_1.device)
        return {
            "encoder_hidden_states": states,
            "added_cond_kwargs": {"text_embeds": text[POOLED].to(dtype), "time_ids": sizes},
        }

    def sample_pipeline(self, model: BaseModel, scheduler: object) -> StableDiffusionXLPipeline:
        # The pipeline's pooled text is transformers' (the highest token id's state), which is the first
        # end token's, as trained (_pooled), while no token was added to the vocabulary above it.
        from diffusers import StableDiffusionXLPipeline

        return StableDiffusionXLPipeline(
            vae=model.vae,
            text_encoder=own_module(model.text_encoder),
            text_encoder_2=own_module(model.text_encoder_2),
            tokenizer=model.tokenizer,
            tokenizer_2=model.tokenizer_2,
            unet=own_module(model.unet),
            scheduler=scheduler,
            add_watermarker=False,  # the invisible watermark is for published images, not training previews
        )

    def sample_arguments(self, prompt: SamplePrompt) -> dict[str, object]:
        arguments = super().sample_arguments(prompt)
        if self.max_token_length <= 75 or self._model is None:
            return arguments
        # The prompts read as the captions are trained, 150 or 225 tokens in chunks (the pipeline's own
        # encoding reads 77), as sd-scripts' sampling does. No negative prompt: the pipeline's zeros, as without.
        arguments = {"guidance_scale": prompt.cfg_scale}
        arguments["prompt_embeds"], arguments["pooled_prompt_embeds"] = self._prompt_embeds(self._model, prompt.prompt)
        if prompt.negative_prompt:
            negative = self._prompt_embeds(self._model, prompt.negative_prompt)
            arguments["negative_prompt_embeds"], arguments["negative_pooled_prompt_embeds"] = negative
        return arguments

    def _prompt_embeds(self, model: BaseModel, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(model.text_encoder.parameters()).device
        rows = {}
        for part in (TEXT_ENCODER_1, TEXT_ENCODER_2):
            rows.update(self.encode_text(part, model, [text], 1, device, own_module))
        return torch.cat([rows[HIDDEN_1], rows[HIDDEN_2]], dim=2), rows[POOLED]

    def kohya_module_name(self, part: PartSpec, module_path: str) -> str:
        # sd-scripts trains sgm's UNet and transformers' text encoders: their module paths are the names.
        return unet_module_to_sgm(module_path) if part.denoiser else module_path

    def metadata(self, cfg: RunConfig) -> dict[str, object]:
        return {
            "ss_v2": False,
            "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
            "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
        }
