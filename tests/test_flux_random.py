"""loratui:flux-random: FLUX.1 [dev]'s published shapes with random weights, for the GPU suite.

The full build (17 GB) belongs to the GPU machines; here its shapes are counted on the meta device,
and the builder runs on tiny components through the same code, which the Flux family then loads.
"""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open


def test_flux_random_has_flux1_devs_parameter_counts():
    """11,901,408,320 for FLUX.1 [dev]'s transformer (../shared/reference/sdxl-flux.md, computed from
    BFL's config), 4,762,310,656 for the T5-XXL encoder, and CLIP ViT-L's 123,060,480."""
    from engine.flux_random import flux_random_parameter_counts

    counts = flux_random_parameter_counts()
    assert counts["transformer"] == 11_901_408_320
    assert counts["text_encoder_2"] == 4_762_310_656
    assert counts["text_encoder"] == 123_060_480
    assert 80_000_000 < counts["vae"] < 90_000_000  # FLUX.1's AE: 83.8 M


def test_the_builder_stores_large_matrices_in_fp8_and_the_family_loads_them(tmp_path, monkeypatch):
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from engine import flux_random
    from engine.families.flux import _load_folder

    def tiny_components(vocab):
        return {
            "text_encoder": lambda: CLIPTextModel(
                CLIPTextConfig(
                    vocab_size=len(vocab),
                    hidden_size=32,
                    intermediate_size=64,
                    num_hidden_layers=2,
                    num_attention_heads=2,
                    max_position_embeddings=77,
                    eos_token_id=vocab["<|endoftext|>"],
                    bos_token_id=vocab["<|startoftext|>"],
                )
            ),
            "text_encoder_2": lambda: T5EncoderModel(
                T5Config(
                    vocab_size=400,
                    d_model=48,
                    d_ff=512,
                    d_kv=16,
                    num_layers=2,
                    num_heads=3,
                    feed_forward_proj="gated-gelu",
                    is_encoder_decoder=False,
                )
            ),
            "vae": lambda: AutoencoderKL(
                latent_channels=16,
                block_out_channels=(32,),
                norm_num_groups=8,
                use_quant_conv=False,
                use_post_quant_conv=False,
            ),
            "transformer": lambda: FluxTransformer2DModel(
                in_channels=64,
                num_layers=1,
                num_single_layers=1,
                attention_head_dim=64,
                num_attention_heads=4,
                joint_attention_dim=48,
                pooled_projection_dim=32,
                guidance_embeds=True,
                axes_dims_rope=(16, 24, 24),
            ),
        }

    monkeypatch.setattr(flux_random, "_components", tiny_components)
    folder = tmp_path / "flux-random"
    folder.mkdir()
    flux_random._build_into(folder)
    with safe_open(str(folder / "transformer" / "diffusion_pytorch_model.safetensors"), "pt") as weights:
        dtypes = {key: weights.get_slice(key).get_dtype() for key in weights.keys()}
    # 256 x 256 = 65536 elements and more: fp8; the norms (1s), biases (0s) and small ones: bf16
    assert dtypes["transformer_blocks.0.attn.to_q.weight"] == "F8_E4M3"
    assert dtypes["transformer_blocks.0.attn.norm_q.weight"] == "BF16"
    assert dtypes["transformer_blocks.0.attn.to_q.bias"] == "BF16"

    model = _load_folder(folder, torch.bfloat16)
    assert model.transformer.dtype == torch.bfloat16
    assert model.transformer.transformer_blocks[0].attn.norm_q.weight.eq(1).all()
    with torch.no_grad():
        out = model.transformer(
            hidden_states=torch.randn(1, 16, 64, dtype=torch.bfloat16),
            encoder_hidden_states=torch.randn(1, 4, 48, dtype=torch.bfloat16),
            pooled_projections=torch.randn(1, 32, dtype=torch.bfloat16),
            timestep=torch.tensor([0.5]),
            guidance=torch.tensor([1.0]),
            img_ids=torch.zeros(16, 3),
            txt_ids=torch.zeros(4, 3),
        ).sample
    assert torch.isfinite(out).all() and out.abs().max() > 0
    ids = model.tokenizer_2(["a red circle"], return_tensors="pt").input_ids
    assert torch.isfinite(model.text_encoder_2(ids).last_hidden_state).all()


@pytest.mark.parametrize("name", ["loratui:tiny-flux", "loratui:flux-random"])
def test_the_flux_built_ins_are_known_to_the_check(name):
    from loratui.families import BUILTIN_FAMILIES
    from loratui.params import BUILTIN_MODELS

    assert name in BUILTIN_MODELS and BUILTIN_FAMILIES[name] == "flux"
