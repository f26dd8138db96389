"""An SDXL LoRA file, checked the way ComfyUI, Forge/A1111 and diffusers read it.

Independent of the training loop: a LoRA with random weights goes on loratui:tiny-sdxl's UNet (with a conv
rank, so resnets, downsamplers and upsamplers carry one too) and on both text encoders, and is written by
the engine's own saving path (engine/saving.py, engine/kohya_format.py, engine/metadata.py) with the SDXL
family's prefixes and names. The file must then be what sd-scripts writes for SDXL:

- diffusers' ``load_lora_weights`` (its kohya SDXL path, which maps the sgm names back) reproduces the
  LoRA'd UNet and both text encoders, alpha != rank so a wrong scale shows;
- every key is one that ComfyUI and Forge derive from the model, and A1111 from the same names: ``lora_unet_``
  + the sgm (original SDXL) weight path with dots as underscores, ``lora_te1_``/``lora_te2_`` + the CLIP-L/
  CLIP-G encoder layer paths. The sgm names are derived here from the UNet's config by walking the sgm
  layout (the grammar of ComfyUI's ``unet_to_diffusers``), and that walk is itself checked against
  diffusers' own single-file converter, so the test does not take the engine's table on trust.
"""

from __future__ import annotations

import shutil
import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from engine.sdxl_names import sgm_to_unet_module, unet_module_to_sgm
from tests.conftest import SAMPLE, small_config, write_config

RANK, ALPHA = 4, 2.0  # alpha != rank: a loader that ignores .alpha gets another output
CONV_RANK, CONV_ALPHA = 2, 3.0
PREFIXES = ("lora_unet_", "lora_te1_", "lora_te2_")
KEY_ENDINGS = ("lora_down.weight", "lora_up.weight", "alpha")

# The CLIP layers a kohya file names, as ComfyUI's LORA_CLIP_MAP lists them (model path -> key part).
CLIP_LAYERS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")
# diffusers -> sgm for a resnet's children; the modules outside the blocks (not LoRA targets).
RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
OUTSIDE = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


# --------------------------------------------------------------------------- the sgm layout, walked
def sgm_layout(config) -> dict[str, str]:
    """diffusers module prefix -> sgm module prefix, walking the sgm UNet in the order it builds its
    blocks: conv_in; per level its layers (resnet, then attention if any) and a downsampler; the middle;
    per up level its layers, the upsampler appended to the last after what that layer holds."""
    names = dict(OUTSIDE)

    def resnet(diffusers: str, sgm: str) -> None:
        names.update({f"{diffusers}.{child}": f"{sgm}.{name}" for child, name in RESNET.items()})

    per_level = config.layers_per_block
    levels = len(config.down_block_types)
    block = 1  # input_blocks.0 is conv_in
    for level, kind in enumerate(config.down_block_types):
        for layer in range(per_level):
            resnet(f"down_blocks.{level}.resnets.{layer}", f"input_blocks.{block}.0")
            if "CrossAttn" in kind:
                names[f"down_blocks.{level}.attentions.{layer}"] = f"input_blocks.{block}.1"
            block += 1
        if level < levels - 1:
            names[f"down_blocks.{level}.downsamplers.0.conv"] = f"input_blocks.{block}.0.op"
            block += 1
    resnet("mid_block.resnets.0", "middle_block.0")
    names["mid_block.attentions.0"] = "middle_block.1"
    resnet("mid_block.resnets.1", "middle_block.2")
    block = 0
    for level, kind in enumerate(config.up_block_types):
        for layer in range(per_level + 1):
            resnet(f"up_blocks.{level}.resnets.{layer}", f"output_blocks.{block}.0")
            slot = 1
            if "CrossAttn" in kind:
                names[f"up_blocks.{level}.attentions.{layer}"] = f"output_blocks.{block}.1"
                slot = 2
            if layer == per_level and level < levels - 1:
                names[f"up_blocks.{level}.upsamplers.0.conv"] = f"output_blocks.{block}.{slot}.conv"
            block += 1
    return names


def to_sgm(key: str, layout: dict[str, str]) -> str:
    parts = key.split(".")
    for cut in range(len(parts), 0, -1):
        head = ".".join(parts[:cut])
        if head in layout:
            return ".".join([layout[head], *parts[cut:]])
    raise KeyError(key)


def sgm_state_dict(unet) -> dict[str, torch.Tensor]:
    layout = sgm_layout(unet.config)
    return {to_sgm(key, layout): tensor for key, tensor in unet.state_dict().items()}


# --------------------------------------------------------------------------- the file under test
def tiny_sdxl_pipeline():
    from diffusers import StableDiffusionXLPipeline

    from engine.tiny_sdxl import ensure_tiny_sdxl

    return StableDiffusionXLPipeline.from_pretrained(ensure_tiny_sdxl(), local_files_only=True)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The tiny SDXL model with a random LoRA on its three parts, and the file the engine writes of it."""
    from engine.families import family_for
    from engine.families.base import Part
    from engine.kohya_format import SAVE_DTYPES, save_lora_file
    from engine.lora import attach_lora, find_targets, lora_parameters
    from engine.metadata import RunFacts, build_metadata, new_session_id
    from engine.saving import lora_file_tensors
    from loratui.check import check_run
    from loratui.config import load_config

    folder = tmp_path_factory.mktemp("sdxl-file")
    shutil.copytree(SAMPLE / "img", folder / "img")
    settings = small_config(
        model={"path": "loratui:tiny-sdxl", "family": "sdxl"},
        network={"rank": RANK, "alpha": ALPHA, "conv_rank": CONV_RANK, "conv_alpha": CONV_ALPHA},
        optimizer={"text_encoder_2_lr": 5e-4},
    )
    cfg = load_config(write_config(folder, settings))
    check = check_run(cfg)
    assert check.ok, [p.message for p in check.errors]

    family = family_for("sdxl")
    pipe = tiny_sdxl_pipeline()
    torch.manual_seed(0)
    parts = []
    net = cfg.network
    for spec in family.parts:
        module = getattr(pipe, spec.attribute)
        conv = (spec.conv_blocks, net.conv_rank, net.conv_alpha)
        targets = find_targets(module, spec.blocks, net.rank, net.alpha, *conv)
        attach_lora(module, targets)
        for param in lora_parameters(module):  # random up weights too: every module changes the output
            # fp16 values, so that the fp16 file holds exactly the LoRA computed here
            param.data = (torch.randn_like(param) * 0.2).half().float()
        parts.append(Part(spec, module, lr=1e-4, trained=True, targets=targets))

    optimizer = "torch.optim.adamw.AdamW"
    facts = RunFacts(new_session_id(), time.time(), cfg.model.path, optimizer, True, family.metadata(cfg))
    metadata = build_metadata(cfg, check.dataset, check.schedule, facts, step=40, epoch=2)
    path = folder / "test_lora.safetensors"
    save_lora_file(path, lora_file_tensors(family, parts, lambda module: module, SAVE_DTYPES["fp16"]), metadata)
    return path, pipe


# --------------------------------------------------------------------------- names
@pytest.mark.parametrize(
    "diffusers, sgm",
    [
        (
            "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
            "input_blocks.4.1.transformer_blocks.0.attn1.to_q",
        ),
        (
            "down_blocks.2.attentions.1.transformer_blocks.9.attn2.to_out.0",
            "input_blocks.8.1.transformer_blocks.9.attn2.to_out.0",
        ),
        ("mid_block.attentions.0.proj_in", "middle_block.1.proj_in"),
        ("up_blocks.0.attentions.2.transformer_blocks.0.ff.net.2", "output_blocks.2.1.transformer_blocks.0.ff.net.2"),
        ("up_blocks.1.attentions.0.proj_out", "output_blocks.3.1.proj_out"),
        ("down_blocks.0.resnets.1.conv1", "input_blocks.2.0.in_layers.2"),
        ("down_blocks.1.resnets.0.time_emb_proj", "input_blocks.4.0.emb_layers.1"),
        ("down_blocks.1.resnets.0.conv_shortcut", "input_blocks.4.0.skip_connection"),
        ("up_blocks.2.resnets.2.conv2", "output_blocks.8.0.out_layers.3"),
        ("mid_block.resnets.1.conv1", "middle_block.2.in_layers.2"),
        ("down_blocks.0.downsamplers.0.conv", "input_blocks.3.0.op"),
        ("down_blocks.1.downsamplers.0.conv", "input_blocks.6.0.op"),
        ("up_blocks.0.upsamplers.0.conv", "output_blocks.2.2.conv"),  # after the attention of output_blocks.2
        ("up_blocks.1.upsamplers.0.conv", "output_blocks.5.2.conv"),
    ],
)
def test_sdxl_unet_names_are_sgm_names(diffusers, sgm):
    assert unet_module_to_sgm(diffusers) == sgm
    assert sgm_to_unet_module(sgm) == diffusers


@pytest.mark.parametrize(
    "path", ["down_blocks.0.attentions.0.proj_in", "up_blocks.2.upsamplers.0.conv", "down_blocks.2.downsamplers.0.conv"]
)
def test_a_module_outside_the_sdxl_layout_has_no_sgm_name(path):
    with pytest.raises(ValueError, match="no weighted module"):
        unet_module_to_sgm(path)


def test_the_walked_layout_is_the_one_diffusers_single_file_loading_reads():
    """The test's own sgm names, applied to every weight of the tiny UNet, give a checkpoint that diffusers'
    converter of original SDXL checkpoints turns back into the same UNet: the walk is right."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    from engine.tiny_sdxl import ensure_tiny_sdxl

    unet = UNet2DConditionModel.from_pretrained(ensure_tiny_sdxl(), subfolder="unet", local_files_only=True)
    own = unet.state_dict()
    checkpoint = {f"model.diffusion_model.{key}": tensor for key, tensor in sgm_state_dict(unet).items()}
    back = convert_ldm_unet_checkpoint(checkpoint, dict(unet.config))
    assert back.keys() == own.keys()
    assert all(torch.equal(back[key], own[key]) for key in own)
    # ...and the engine's names are the walk's, for every weighted module of the UNet.
    layout = sgm_layout(unet.config)
    for key in own:
        module = key.rsplit(".", 1)[0]
        assert unet_module_to_sgm(module) == to_sgm(key, layout).rsplit(".", 1)[0], module


def test_sd_names_are_unchanged():
    from engine.families import family_for
    from engine.kohya_format import kohya_key

    sd = family_for("sd1")
    unet, text_encoder = sd.parts
    path = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    assert kohya_key(unet.kohya_prefix, sd.kohya_module_name(unet, path)) == f"lora_unet_{path.replace('.', '_')}"
    te_path = "encoder.layers.0.self_attn.q_proj"  # transformers 5's CLIPTextModel path
    assert (
        kohya_key(text_encoder.kohya_prefix, sd.kohya_module_name(text_encoder, te_path))
        == "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    )


def test_every_clip_prefix_keeps_the_text_model_level():
    from engine.kohya_format import kohya_key

    for prefix in ("lora_te", "lora_te1", "lora_te2"):
        for path in ("encoder.layers.3.mlp.fc2", "text_model.encoder.layers.3.mlp.fc2"):
            assert kohya_key(prefix, path) == f"{prefix}_text_model_encoder_layers_3_mlp_fc2"


# --------------------------------------------------------------------------- the file
def _modules(tensors: dict) -> dict[str, set[str]]:
    """Module key -> the endings its tensors have."""
    modules: dict[str, set[str]] = {}
    for key in tensors:
        module, ending = key.split(".", 1)
        modules.setdefault(module, set()).add(ending)
    return modules


def _comfy_unet_keys(unet) -> dict[str, torch.Size]:
    """ComfyUI's (and Forge's) UNet LoRA keys: ``lora_unet_`` + every sgm weight path, dots as underscores."""
    return {
        "lora_unet_" + key[: -len(".weight")].replace(".", "_"): tensor.shape
        for key, tensor in sgm_state_dict(unet).items()
        if key.endswith(".weight")
    }


def _comfy_clip_keys(prefix: str, encoder) -> dict[str, torch.Size]:
    """ComfyUI's CLIP LoRA keys: ``<prefix>_text_model_encoder_layers_<n>_<layer>`` for each encoder layer."""
    weights = {key.removeprefix("text_model."): tensor for key, tensor in encoder.state_dict().items()}
    keys = {}
    for layer in range(encoder.config.num_hidden_layers):
        for name in CLIP_LAYERS:
            key = f"{prefix}_text_model_encoder_layers_{layer}_{name.replace('.', '_')}"
            keys[key] = weights[f"encoder.layers.{layer}.{name}.weight"].shape
    return keys


@pytest.mark.slow
def test_every_key_is_one_comfyui_and_forge_derive_from_the_model(written):
    path, _ = written
    tensors = load_file(path)
    assert all(key.startswith(PREFIXES) for key in tensors)  # diffusers' kohya path needs every key so
    modules = _modules(tensors)
    assert all(endings == set(KEY_ENDINGS) for endings in modules.values())  # down, up and alpha each

    base = tiny_sdxl_pipeline()
    unet_keys = _comfy_unet_keys(base.unet)
    outside = {f"lora_unet_{name.replace('.', '_')}" for name in OUTSIDE.values()}
    known = {
        "lora_unet": unet_keys,
        "lora_te1": _comfy_clip_keys("lora_te1", base.text_encoder),
        "lora_te2": _comfy_clip_keys("lora_te2", base.text_encoder_2),
    }
    # sd-scripts' LoRA with a conv rank: every Linear and conv in the blocks (not conv_in, the embeddings,
    # conv_out, nor the norms), and every CLIP encoder layer of both text encoders.
    expected = {
        "lora_unet": {key for key, shape in unet_keys.items() if len(shape) >= 2 and key not in outside},
        "lora_te1": set(known["lora_te1"]),
        "lora_te2": set(known["lora_te2"]),
    }
    for prefix, keys in expected.items():
        assert {m for m in modules if m.startswith(prefix + "_")} == keys, prefix

    known = {**known["lora_unet"], **known["lora_te1"], **known["lora_te2"]}
    for module in modules:
        down, up = tensors[f"{module}.lora_down.weight"], tensors[f"{module}.lora_up.weight"]
        weight = known[module]
        assert up.shape[0] == weight[0] and down.shape[1:] == weight[1:], module  # (out, r) x (r, in, kernel)
        conv = len(weight) == 4 and weight[2:] != (1, 1)
        assert down.shape[0] == up.shape[1] == (CONV_RANK if conv else RANK), module
        assert tensors[f"{module}.alpha"].item() == (CONV_ALPHA if conv else ALPHA), module


@pytest.mark.slow
def test_sdxl_metadata_is_what_sd_scripts_writes(written):
    path, _ = written
    with safe_open(str(path), "pt") as handle:
        meta = handle.metadata()
    assert all(isinstance(value, str) for value in meta.values())
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"  # A1111/Forge: an SDXL LoRA
    assert meta["ss_v2"] == "False"
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2"
    assert meta["modelspec.sai_model_spec"] == "1.0.1"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert meta["modelspec.implementation"] == "https://github.com/Stability-AI/generative-models"
    assert meta["modelspec.prediction_type"] == "epsilon"
    assert meta["modelspec.resolution"] == "128x128" and meta["ss_resolution"] == "(128, 128)"
    assert meta["modelspec.title"] == "test_lora" and meta["ss_output_name"] == "test_lora"
    assert time.strptime(meta["modelspec.date"], "%Y-%m-%dT%H:%M:%S")
    assert "ss_clip_skip" not in meta  # SDXL ignores clip skip (sd-scripts too)


@pytest.mark.slow
def test_diffusers_loads_the_file_and_reproduces_the_lora(written):
    from peft.tuners.tuners_utils import BaseTunerLayer

    path, ours = written
    captions = ["ohwx shape, red circle", "a blue square"]
    ids_1 = ours.tokenizer(captions, padding="max_length", max_length=77, return_tensors="pt").input_ids
    ids_2 = ours.tokenizer_2(captions, padding="max_length", max_length=77, return_tensors="pt").input_ids
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 16, 16, generator=generator)
    timesteps = torch.tensor([150, 700])
    time_ids = torch.tensor([[128.0, 128.0, 0.0, 0.0, 128.0, 128.0], [96.0, 160.0, 16.0, 0.0, 128.0, 128.0]])

    def outputs(pipe, conditioning=None):
        with torch.no_grad():
            hidden_1 = pipe.text_encoder(ids_1).last_hidden_state
            out_2 = pipe.text_encoder_2(ids_2)
            if conditioning is None:  # the UNet of every pipeline gets the same input: ours
                conditioning = (torch.cat([hidden_1, out_2.last_hidden_state], dim=-1), out_2.text_embeds)
            states, pooled = conditioning
            added = {"text_embeds": pooled, "time_ids": time_ids}
            noise = pipe.unet(latents, timesteps, states, added_cond_kwargs=added).sample
        named = {"te1": hidden_1, "te2": out_2.last_hidden_state, "te2 pooled": out_2.text_embeds, "unet": noise}
        return named, conditioning

    trained, conditioning = outputs(ours)
    pipe = tiny_sdxl_pipeline()
    base, _ = outputs(pipe, conditioning)
    pipe.load_lora_weights(str(path))
    loaded, _ = outputs(pipe, conditioning)

    for name in trained:
        assert (trained[name] - base[name]).abs().max() > 1e-2, name  # the LoRA changes this output...
        assert (loaded[name] - trained[name]).abs().max() < 1e-3, name  # ...and the file reproduces it
    modules = _modules(load_file(path))
    for attribute, prefix in (("unet", "lora_unet_"), ("text_encoder", "lora_te1_"), ("text_encoder_2", "lora_te2_")):
        layers = sum(isinstance(m, BaseTunerLayer) for m in getattr(pipe, attribute).modules())
        assert layers == sum(m.startswith(prefix) for m in modules), attribute  # every module of the file loaded
