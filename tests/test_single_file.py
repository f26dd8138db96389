"""A base model from one original-layout (LDM/CompVis) .safetensors file, loaded offline.

The file is the tiny built-in model written back in Stable Diffusion's own key names (see
``tests/ldm_checkpoint.py``), so it goes through diffusers' single-file conversion exactly as a
downloaded SD 1.5 checkpoint would. The layouts come from a folder of configs only, laid out as
the hub's SD 1.5 repo is (``*.json`` and ``*.txt``, tokenizer as vocab.json + merges.txt), found
through ``model.tokenizer``: no weight can come from anywhere but the checkpoint.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from engine.model_loading import load_base_model
from engine.tiny_model import ensure_tiny_model
from loratui.errors import UserError
from tests.conftest import small_config, train_in_process, write_config
from tests.ldm_checkpoint import write_ldm_checkpoint, write_model_configs

WEIGHTS = {
    "unet": "unet/diffusion_pytorch_model.safetensors",
    "vae": "vae/diffusion_pytorch_model.safetensors",
    "text_encoder": "text_encoder/model.safetensors",
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ldm") / "tiny-sd1.safetensors"
    write_ldm_checkpoint(ensure_tiny_model(), path)
    return path


@pytest.fixture(scope="module")
def sd_configs(tmp_path_factory) -> Path:
    """The tiny model's configs and tokenizer, without weights, as `hf download --include '*.json' '*.txt'`
    gives them for SD 1.5. transformers 5 saves only tokenizer.json, so vocab.json and merges.txt
    are written from it."""
    return write_model_configs(ensure_tiny_model(), tmp_path_factory.mktemp("sd-configs"))


def test_checkpoint_is_in_the_original_sd_layout(checkpoint):
    with safe_open(str(checkpoint), "pt") as handle:
        keys = set(handle.keys())
        vae_q = handle.get_slice("first_stage_model.encoder.mid.attn_1.q.weight").get_shape()
    assert {key.split(".")[0] for key in keys} == {"model", "first_stage_model", "cond_stage_model"}
    assert "model.diffusion_model.input_blocks.0.0.weight" in keys  # conv_in
    assert "model.diffusion_model.middle_block.1.proj_in.weight" in keys
    assert "first_stage_model.decoder.up.0.block.0.conv1.weight" in keys
    assert "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight" in keys
    assert len(vae_q) == 4  # a 1x1 conv in LDM, a Linear in diffusers
    assert len(keys) == sum(len(load_file(ensure_tiny_model() / file)) for file in WEIGHTS.values())


def test_single_file_loads_with_every_weight_exactly_as_the_diffusers_folder(checkpoint, sd_configs):
    model = load_base_model(str(checkpoint), checkpoint, "sd1", False, sd_configs / "tokenizer")
    assert model.source == checkpoint and model.name == checkpoint.name
    for part, file in WEIGHTS.items():
        expected = load_file(ensure_tiny_model() / file)
        loaded = getattr(model, part).state_dict()
        assert loaded.keys() == expected.keys(), part
        differing = [key for key, tensor in expected.items() if not torch.equal(loaded[key], tensor)]
        assert not differing, (part, differing[:5])
    assert model.noise_scheduler.config.prediction_type == "epsilon"
    assert model.noise_scheduler.config.beta_schedule == "scaled_linear"
    assert model.tokenizer("ohwx shape").input_ids[0] == model.tokenizer.bos_token_id


@pytest.mark.slow
def test_training_on_a_single_file_checkpoint(project, checkpoint, sd_configs):
    data = small_config(model={"path": str(checkpoint), "tokenizer": str(sd_configs / "tokenizer")})
    data["training"].update({"max_train_steps": 4})
    recorder, _ = train_in_process(write_config(project, data))
    steps = recorder.of("step")
    assert len(steps) == 4 and all(math.isfinite(s["loss"]) for s in steps)
    assert recorder.events[-1]["type"] == "finished"
    lora_path = project / "model" / "test_lora.safetensors"
    lora = load_file(lora_path)
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in lora
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in lora
    with safe_open(str(lora_path), "pt") as handle:
        assert handle.metadata()["ss_sd_model_name"] == checkpoint.name


def test_without_tokenizer_or_hf_cache_the_error_names_model_tokenizer(project, checkpoint, tmp_path, monkeypatch):
    import huggingface_hub.constants

    empty = tmp_path / "empty-hf-home"
    empty.mkdir()
    monkeypatch.setenv("HF_HOME", str(empty))
    monkeypatch.setenv("HF_HUB_CACHE", str(empty / "hub"))
    # huggingface_hub reads these once, on import, so the already-imported module is pointed there too.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HOME", str(empty))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(empty / "hub"))
    with pytest.raises(UserError) as info:
        train_in_process(write_config(project, small_config(model={"path": str(checkpoint)})))
    error = info.value
    assert error.kind == "model" and error.where == "model.path"
    assert "configs and CLIP tokenizer" in error.message
    assert "set model.tokenizer" in error.fix
    assert str(error).startswith("model.path: a single-file checkpoint needs") and "model.tokenizer" in str(error)


def test_a_tokenizer_folder_saved_by_transformers_5_passes_the_check(project, checkpoint):
    from loratui.check import check_run
    from loratui.config import load_config

    tokenizer = ensure_tiny_model() / "tokenizer"  # tokenizer.json and tokenizer_config.json only
    cfg = load_config(write_config(project, small_config(model={"path": str(checkpoint), "tokenizer": str(tokenizer)})))
    assert [p for p in check_run(cfg).errors if p.where == "model.tokenizer"] == []
