"""The built-in Flux.1-shaped model ``loratui:tiny-flux``: built in code the same way every time,
loaded offline by diffusers' FluxPipeline, and shaped (inputs, module names) like FLUX.1 [dev]."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch

from engine.tiny_flux import (
    CLIP_WIDTH,
    HEAD_DIM,
    HEADS,
    T5_WIDTH,
    TINY_FLUX_NAME,
    _build_into,
    ensure_tiny_flux,
    tiny_flux_dir,
)
from engine.tiny_model import build_once


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to reach a hub fails the test instead of quietly downloading."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def pipe():
    from diffusers import FluxPipeline

    return FluxPipeline.from_pretrained(ensure_tiny_flux(), local_files_only=True)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_two_builds_write_the_same_bytes(tmp_path, no_network):
    first = folder_bytes(build_once(tmp_path / "first", _build_into))
    second = folder_bytes(build_once(tmp_path / "second", _build_into))
    assert first == second
    assert {name.split("/")[0] for name in first} == {
        "model_index.json",
        "scheduler",
        "text_encoder",
        "text_encoder_2",
        "tokenizer",
        "tokenizer_2",
        "transformer",
        "vae",
    }


def test_the_folder_is_built_once_under_the_cache_dir(no_network):
    folder = ensure_tiny_flux()
    assert folder == tiny_flux_dir() and TINY_FLUX_NAME == "loratui:tiny-flux"
    stamp = (folder / "model_index.json").stat().st_mtime_ns
    assert ensure_tiny_flux() == folder
    assert (folder / "model_index.json").stat().st_mtime_ns == stamp  # reused, not rebuilt


def test_flux_pipeline_loads_offline_and_generates(no_network):
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(ensure_tiny_flux(), local_files_only=True)
    image = pipe(
        "a photo of a cat",
        height=64,
        width=64,
        num_inference_steps=2,
        guidance_scale=3.5,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).images
    assert image.shape == (1, 3, 64, 64)
    assert torch.isfinite(image).all()
    assert image.std() > 0  # an image, not a constant


def test_the_parts_have_flux_dev_settings(pipe):
    assert type(pipe.tokenizer_2).__name__ in ("T5TokenizerFast", "T5Tokenizer")  # transformers 5 merged them
    assert type(pipe.text_encoder_2).__name__ == "T5EncoderModel"
    assert pipe.text_encoder_2.config.feed_forward_proj == "gated-gelu"
    assert pipe.vae.config.latent_channels == 16
    assert (pipe.vae.config.scaling_factor, pipe.vae.config.shift_factor) == (0.3611, 0.1159)
    assert pipe.vae_scale_factor == 8
    transformer = pipe.transformer.config
    assert (transformer.in_channels, transformer.patch_size, transformer.guidance_embeds) == (64, 1, True)
    assert transformer.joint_attention_dim == pipe.text_encoder_2.config.d_model == T5_WIDTH
    assert transformer.pooled_projection_dim == pipe.text_encoder.config.hidden_size == CLIP_WIDTH
    assert sum(transformer.axes_dims_rope) == transformer.attention_head_dim
    scheduler = pipe.scheduler.config
    assert (scheduler.shift, scheduler.use_dynamic_shifting, scheduler.base_shift, scheduler.max_shift) == (
        3.0,
        True,
        0.5,
        1.15,
    )
    assert (scheduler.base_image_seq_len, scheduler.max_image_seq_len) == (256, 4096)


def test_the_transformer_takes_packed_latents_and_both_texts(pipe):
    batch, height, width, text_length = 2, 64, 48, 7
    latents = torch.randn(batch, 16, height // 8, width // 8)
    # Flux packs 2x2 latent patches: (B, 16, H/8, W/8) -> (B, (H/16)(W/16), 64).
    packed = pipe._pack_latents(latents, batch, 16, height // 8, width // 8)
    tokens = (height // 16) * (width // 16)
    assert packed.shape == (batch, tokens, 64)
    img_ids = torch.zeros(height // 16, width // 16, 3)
    img_ids[..., 1] = torch.arange(height // 16)[:, None]  # row
    img_ids[..., 2] = torch.arange(width // 16)[None, :]  # column
    inputs = dict(
        hidden_states=packed,
        timestep=torch.full((batch,), 0.5),  # t in [0, 1], as the pipeline passes it
        pooled_projections=torch.randn(batch, CLIP_WIDTH),
        encoder_hidden_states=torch.randn(batch, text_length, T5_WIDTH),
        txt_ids=torch.zeros(text_length, 3),
        img_ids=img_ids.reshape(-1, 3),
    )
    with torch.no_grad():
        plain = pipe.transformer(**inputs, guidance=torch.full((batch,), 1.0)).sample
        guided = pipe.transformer(**inputs, guidance=torch.full((batch,), 3.5)).sample
    assert plain.shape == (batch, tokens, 64)
    assert torch.isfinite(plain).all()
    assert not torch.allclose(plain, guided)  # the guidance embedding is an input, as in dev


@pytest.mark.parametrize(
    "text",
    ["a photo of a cat", "Dürer's café, Łódź, señor, 1 + 2 = 3!", "tab\tand newline\nare spaces"],
)
def test_the_t5_tokenizer_reads_text_back_offline(pipe, no_network, text):
    from transformers import T5TokenizerFast

    tokenizer = T5TokenizerFast.from_pretrained(ensure_tiny_flux() / "tokenizer_2", local_files_only=True)
    ids = tokenizer(text).input_ids
    assert ids[-1] == tokenizer.eos_token_id == 1
    assert tokenizer.unk_token_id not in ids
    # T5 splits on whitespace: the text comes back with single spaces.
    assert tokenizer.decode(ids, skip_special_tokens=True) == " ".join(text.split())
    assert ids == pipe.tokenizer_2(text).input_ids


def test_the_t5_tokenizer_has_t5_special_tokens_and_pads_to_512(pipe):
    tokenizer = pipe.tokenizer_2
    assert (tokenizer.pad_token, tokenizer.eos_token, tokenizer.unk_token) == ("<pad>", "</s>", "<unk>")
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert len(tokenizer) == pipe.text_encoder_2.config.vocab_size
    padded = tokenizer("a cat", padding="max_length", max_length=512, truncation=True).input_ids
    assert len(padded) == 512 and padded[-1] == 0
    # A script outside the vocabulary is unknown, as CJK is to T5 v1.1, not an error.
    assert tokenizer("猫").input_ids == [tokenizer.convert_tokens_to_ids("▁"), 2, 1]


def test_the_transformer_has_the_module_names_the_bfl_mapping_reads(pipe):
    linears = {name for name, module in pipe.transformer.named_modules() if isinstance(module, torch.nn.Linear)}
    double = "transformer_blocks.0."
    single = "single_transformer_blocks.0."
    expected = {
        "x_embedder",  # img_in
        "context_embedder",  # txt_in
        "time_text_embed.timestep_embedder.linear_1",  # time_in
        "time_text_embed.timestep_embedder.linear_2",
        "time_text_embed.guidance_embedder.linear_1",  # guidance_in (dev only)
        "time_text_embed.guidance_embedder.linear_2",
        "time_text_embed.text_embedder.linear_1",  # vector_in
        "time_text_embed.text_embedder.linear_2",
        "norm_out.linear",  # final_layer.adaLN_modulation.1
        "proj_out",  # final_layer.linear
        *(double + suffix for suffix in ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0")),  # img_attn
        *(double + suffix for suffix in ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out")),
        *(double + suffix for suffix in ("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2")),
        double + "norm1.linear",  # img_mod.lin
        double + "norm1_context.linear",  # txt_mod.lin
        *(single + suffix for suffix in ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")),  # linear1
        single + "proj_out",  # linear2
        single + "norm.linear",  # modulation.lin
    }
    assert expected <= linears
    # One block of each kind, as widths: Flux's shapes with a tiny hidden size.
    assert not any(name.startswith(("transformer_blocks.1.", "single_transformer_blocks.1.")) for name in linears)
    width = HEADS * HEAD_DIM
    modules = dict(pipe.transformer.named_modules())
    assert modules[single + "proj_mlp"].weight.shape == (4 * width, width)  # mlp_ratio 4
    assert modules[single + "proj_out"].weight.shape == (width, 5 * width)  # attention + mlp in, as linear2
    assert modules[double + "norm1.linear"].weight.shape == (6 * width, width)
