"""A Flux LoRA trained by the engine loads in diffusers' FluxPipeline and reproduces the trained model.

diffusers' kohya Flux converter splits a single block's fused ``linear1`` at FLUX.1's own widths (3072 x 3 +
12288, hard-coded), so the file must come from a transformer of FLUX.1's width: this builds one with
``loratui:tiny-flux``'s text encoders, AE and one double and one single block 3072 wide (24 heads x 128),
trains it for two steps through the engine, and loads the file with ``FluxPipeline.load_lora_weights``.
About 540 M parameters: a few GB of memory and under a minute on two cores.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import train_in_process, write_config
from tests.test_flux_engine import copy_sample, flux_config

pytestmark = pytest.mark.slow

FLUX1_HEADS = dict(num_attention_heads=24, attention_head_dim=128, axes_dims_rope=(16, 56, 56))


def wide_flux_folder(target: Path) -> Path:
    """loratui:tiny-flux with its transformer replaced by a FLUX.1-wide one (random, seeded)."""
    from diffusers import FluxTransformer2DModel

    from engine.tiny_flux import ensure_tiny_flux

    source = ensure_tiny_flux()
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("transformer"))
    config = dict(FluxTransformer2DModel.load_config(source / "transformer"))
    config.update(FLUX1_HEADS)
    with torch.device("meta"):
        model = FluxTransformer2DModel.from_config(config)
    model = model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.normal_(0.0, 0.02, generator=generator)
            if ".norm_" in name:  # q/k RMSNorm scales near 1, as trained ones are
                param.add_(1.0)
    model.save_pretrained(target / "transformer")
    return target


def transformer_output(model, text_width: int, pooled_width: int) -> torch.Tensor:
    from diffusers import FluxPipeline

    generator = torch.Generator().manual_seed(3)
    latents = torch.randn(1, 16, 8, 8, generator=generator)
    with torch.no_grad():
        return model(
            hidden_states=FluxPipeline._pack_latents(latents, 1, 16, 8, 8),
            encoder_hidden_states=torch.randn(1, 6, text_width, generator=generator),
            pooled_projections=torch.randn(1, pooled_width, generator=generator),
            timestep=torch.tensor([0.6]),
            guidance=torch.tensor([1.0]),
            img_ids=FluxPipeline._prepare_latent_image_ids(1, 4, 4, "cpu", torch.float32),
            txt_ids=torch.zeros(6, 3),
        ).sample


def test_flux_pipeline_load_lora_weights_reproduces_the_trained_transformer(tmp_path):
    from diffusers import FluxPipeline

    from engine.tiny_flux import CLIP_WIDTH, T5_WIDTH

    folder = wide_flux_folder(tmp_path / "wide-flux")
    data = flux_config(
        model={"path": str(folder), "t5xxl_max_token_length": 8},
        training={"max_train_steps": 2, "batch_size": 2},
        optimizer={"unet_lr": 1e-2, "text_encoder_lr": 1e-2},
        output={"save_precision": "float"},
    )
    _, trainer = train_in_process(write_config(copy_sample(tmp_path / "project"), data))
    trained = transformer_output(trainer.model.transformer, T5_WIDTH, CLIP_WIDTH)
    text_ids = trainer.model.tokenizer(["a red circle"], padding="max_length", return_tensors="pt").input_ids
    with torch.no_grad():
        trained_text = trainer.model.text_encoder(text_ids).pooler_output
    del trainer

    pipe = FluxPipeline.from_pretrained(folder, local_files_only=True)
    base = transformer_output(pipe.transformer, T5_WIDTH, CLIP_WIDTH)
    pipe.load_lora_weights(str(tmp_path / "project" / "model" / "test_lora.safetensors"))
    loaded = transformer_output(pipe.transformer, T5_WIDTH, CLIP_WIDTH)
    assert (trained - base).abs().max() > 1e-3  # two steps moved the output...
    assert (loaded - trained).abs().max() < 1e-3  # ...and the file, loaded by diffusers, gives the same
    with torch.no_grad():
        loaded_text = pipe.text_encoder(text_ids).pooler_output
    torch.testing.assert_close(loaded_text, trained_text, atol=1e-4, rtol=0)  # CLIP-L's LoRA (lora_te1) too
