"""Write a diffusers SD 1.x or SDXL folder as one original-layout ("LDM"/CompVis, sgm) ``.safetensors`` file.

This is the inverse of diffusers' single-file conversion (``convert_ldm_unet_checkpoint``,
``convert_ldm_vae_checkpoint``, ``convert_ldm_clip_checkpoint`` and ``convert_open_clip_checkpoint``
in ``diffusers/loaders/single_file_utils.py``), written from the key grammar of the original files.
It exists only so tests can make a single-file checkpoint from the tiny built-in models without
downloading a real one. It is no general converter: SD 1.x (a CLIP text encoder, not SD 2.x's
OpenCLIP) and SDXL base (CLIP ViT-L and OpenCLIP ViT-bigG), one layers_per_block for all blocks, no EMA.

Each UNet and VAE is renamed module by module: a table maps every diffusers module path to its LDM
path (in SD 1.5, ``down_blocks.0.resnets.1`` is ``input_blocks.2.0``), and a key takes the name of
its longest mapped prefix. The tables are computed from the part's ``config.json``, not fixed to
SD's sizes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

# Children of a UNet ResnetBlock2D, diffusers -> LDM ResBlock.
UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
VAE_RESNET = {"conv_shortcut": "nin_shortcut"}  # the other children keep their names
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def write_ldm_checkpoint(diffusers_dir: Path, out: Path) -> None:
    """Write the UNet, VAE and text encoder of ``diffusers_dir`` to ``out`` with original SD key names."""
    diffusers_dir = Path(diffusers_dir)
    checkpoint = {**_ldm_unet(diffusers_dir), **_ldm_vae(diffusers_dir)}
    # diffusers finds SD1's CLIP by "cond_stage_model.transformer.text_model.embeddings..." and strips
    # "text_model." again for transformers' flattened CLIPTextModel (>= 5.6), which saves no such prefix.
    checkpoint.update(_hf_clip(diffusers_dir / "text_encoder", "cond_stage_model.transformer."))
    save_file({key: tensor.contiguous() for key, tensor in checkpoint.items()}, str(out))


def write_sdxl_checkpoint(diffusers_dir: Path, out: Path, leave_out: tuple[str, ...] = ()) -> None:
    """Write a diffusers SDXL folder to ``out`` in the layout of ``sd_xl_base_1.0.safetensors``
    (Stability's sgm code): the UNet under ``model.diffusion_model.`` with LDM names (its
    ``text_time`` embedding is ``label_emb.0``), the VAE under ``first_stage_model.``, text encoder 1
    (CLIP ViT-L) under ``conditioner.embedders.0.transformer.`` in Hugging Face names, and text
    encoder 2 (OpenCLIP ViT-bigG) under ``conditioner.embedders.1.model.`` in OpenCLIP names.

    ``leave_out``: parts not to write ("text_encoder", "text_encoder_2", "vae"), for a checkpoint
    that lacks one."""
    diffusers_dir = Path(diffusers_dir)
    checkpoint = _ldm_unet(diffusers_dir)
    if "vae" not in leave_out:
        checkpoint.update(_ldm_vae(diffusers_dir))
    if "text_encoder" not in leave_out:
        checkpoint.update(_hf_clip(diffusers_dir / "text_encoder", "conditioner.embedders.0.transformer."))
    if "text_encoder_2" not in leave_out:
        checkpoint.update(_open_clip(diffusers_dir / "text_encoder_2", "conditioner.embedders.1.model."))
    save_file({key: tensor.contiguous() for key, tensor in checkpoint.items()}, str(out))


def _ldm_unet(diffusers_dir: Path) -> dict[str, torch.Tensor]:
    unet = load_file(diffusers_dir / "unet" / "diffusion_pytorch_model.safetensors")
    names = _unet_names(_config(diffusers_dir / "unet"))
    return {"model.diffusion_model." + _rename(key, names): tensor for key, tensor in unet.items()}


def _ldm_vae(diffusers_dir: Path) -> dict[str, torch.Tensor]:
    vae = load_file(diffusers_dir / "vae" / "diffusion_pytorch_model.safetensors")
    names = _vae_names(_config(diffusers_dir / "vae"))
    checkpoint = {}
    for key, tensor in vae.items():
        ldm_key = _rename(key, names)
        if ".mid.attn_1." in ldm_key and ldm_key.endswith(".weight") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]  # LDM's VAE attention uses 1x1 convs, diffusers Linears
        checkpoint["first_stage_model." + ldm_key] = tensor
    return checkpoint


def _hf_clip(folder: Path, prefix: str) -> dict[str, torch.Tensor]:
    """A CLIPTextModel in its own (Hugging Face) names, always with the ``text_model.`` level that
    original checkpoints have and transformers >= 5.6 no longer saves."""
    weights = load_file(folder / "model.safetensors")
    return {prefix + (key if key.startswith("text_model.") else "text_model." + key): t for key, t in weights.items()}


# CLIPTextModel(WithProjection) -> OpenCLIP names, per encoder layer and for the rest.
OPEN_CLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}
OPEN_CLIP_TOP = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}
# OpenCLIP's temperature, log(1 / 0.07): unused by a text encoder, but in every SDXL checkpoint.
OPEN_CLIP_LOGIT_SCALE = 2.6592600345611572


def _open_clip(folder: Path, prefix: str) -> dict[str, torch.Tensor]:
    """A CLIPTextModelWithProjection in OpenCLIP's names: ``transformer.resblocks.N``, q, k and v
    fused into one ``attn.in_proj_weight`` (rows in that order), and ``text_projection`` as OpenCLIP
    multiplies by it (``x @ P``), the transpose of the Linear's weight."""
    weights = load_file(folder / "model.safetensors")
    weights = {
        key if key.startswith(("text_model.", "text_projection")) else "text_model." + key: t
        for key, t in weights.items()
    }
    out = {prefix + "text_projection": weights.pop("text_projection.weight").T.contiguous()}
    out[prefix + "logit_scale"] = torch.tensor(OPEN_CLIP_LOGIT_SCALE)
    for key, name in OPEN_CLIP_TOP.items():
        out[prefix + name] = weights.pop(key)
    layers = {int(key.split(".")[3]) for key in weights if key.startswith("text_model.encoder.layers.")}
    for layer in sorted(layers):
        old, new = f"text_model.encoder.layers.{layer}.", f"{prefix}transformer.resblocks.{layer}."
        for kind in ("weight", "bias"):
            fused = [weights.pop(f"{old}self_attn.{part}_proj.{kind}") for part in ("q", "k", "v")]
            out[f"{new}attn.in_proj_{kind}"] = torch.cat(fused)
            for hf_name, clip_name in OPEN_CLIP_LAYER.items():
                out[f"{new}{clip_name}.{kind}"] = weights.pop(f"{old}{hf_name}.{kind}")
    if weights:
        raise KeyError(f"no OpenCLIP name for {sorted(weights)[:5]}")
    return out


# What `hf download REPO --include '*.json' '*.txt'` gives of an SD 1.x repo: the configs and
# tokenizer a single-file checkpoint needs beside it, without weights. An SDXL repo adds its second
# text encoder and tokenizer.
CONFIG_FILES = [
    "model_index.json",
    "unet/config.json",
    "vae/config.json",
    "text_encoder/config.json",
    "scheduler/scheduler_config.json",
    "tokenizer/tokenizer_config.json",
]
SDXL_CONFIG_FILES = ["text_encoder_2/config.json", "tokenizer_2/tokenizer_config.json"]


def write_model_configs(source: Path, folder: Path) -> Path:
    """The configs and tokenizer(s) of the diffusers folder ``source`` in ``folder``, without weights,
    as that download gives them (transformers 5 saves only tokenizer.json, so vocab.json and
    merges.txt are written from it)."""
    sdxl = (source / "text_encoder_2").is_dir()
    for name in CONFIG_FILES + (SDXL_CONFIG_FILES if sdxl else []):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / name, folder / name)
    for tokenizer in ("tokenizer", "tokenizer_2") if sdxl else ("tokenizer",):
        write_slow_tokenizer_files(source / tokenizer, folder / tokenizer)
    return folder


def write_slow_tokenizer_files(source: Path, folder: Path) -> None:
    """vocab.json and merges.txt in ``folder`` from the tokenizer.json of ``source``."""
    bpe = json.loads((source / "tokenizer.json").read_text())["model"]
    (folder / "vocab.json").write_text(json.dumps(bpe["vocab"]))
    merges = "".join((pair if isinstance(pair, str) else " ".join(pair)) + "\n" for pair in bpe["merges"])
    (folder / "merges.txt").write_text("#version: 0.2\n" + merges)


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def _add(names: dict[str, str], diffusers: str, ldm: str, children: dict[str, str] | None = None) -> None:
    names[diffusers] = ldm
    for old, new in (children or {}).items():
        names[f"{diffusers}.{old}"] = f"{ldm}.{new}"


def _rename(key: str, names: dict[str, str]) -> str:
    """The LDM name of a diffusers key: its longest prefix found in ``names``, renamed."""
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:cut])
        if head in names:
            return ".".join([names[head], *parts[cut:]])
    raise KeyError(f"no LDM name for {key!r}")


def _unet_names(config: dict) -> dict[str, str]:
    per_block = config["layers_per_block"]
    if not isinstance(per_block, int):
        raise ValueError("only one layers_per_block for all blocks is supported")
    names: dict[str, str] = {}
    for diffusers, ldm in [
        ("time_embedding.linear_1", "time_embed.0"),
        ("time_embedding.linear_2", "time_embed.2"),
        # SDXL's text_time embedding (pooled text + size/crop ids): sgm's "label_emb" (ADM) MLP.
        ("add_embedding.linear_1", "label_emb.0.0"),
        ("add_embedding.linear_2", "label_emb.0.2"),
        ("conv_in", "input_blocks.0.0"),
        ("conv_norm_out", "out.0"),
        ("conv_out", "out.2"),
    ]:
        _add(names, diffusers, ldm)
    _add(names, "mid_block.resnets.0", "middle_block.0", UNET_RESNET)
    _add(names, "mid_block.attentions.0", "middle_block.1")
    _add(names, "mid_block.resnets.1", "middle_block.2", UNET_RESNET)
    # input_blocks.0 is conv_in; then each down block has per_block (resnet, attention) layers and,
    # but for the last, one downsampler. Each up block has per_block + 1 layers, the upsampler
    # riding along in its last one: after the attention if there is one, else after the resnet.
    for block, up_type in enumerate(config["up_block_types"]):
        first_in, first_out = 1 + block * (per_block + 1), block * (per_block + 1)
        for layer in range(per_block):
            _add(names, f"down_blocks.{block}.resnets.{layer}", f"input_blocks.{first_in + layer}.0", UNET_RESNET)
            _add(names, f"down_blocks.{block}.attentions.{layer}", f"input_blocks.{first_in + layer}.1")
        _add(names, f"down_blocks.{block}.downsamplers.0.conv", f"input_blocks.{first_in + per_block}.0.op")
        for layer in range(per_block + 1):
            _add(names, f"up_blocks.{block}.resnets.{layer}", f"output_blocks.{first_out + layer}.0", UNET_RESNET)
            _add(names, f"up_blocks.{block}.attentions.{layer}", f"output_blocks.{first_out + layer}.1")
        upsampler = 2 if "CrossAttn" in up_type else 1
        _add(names, f"up_blocks.{block}.upsamplers.0.conv", f"output_blocks.{first_out + per_block}.{upsampler}.conv")
    return names


def _vae_names(config: dict) -> dict[str, str]:
    names: dict[str, str] = {}
    for part in (
        "quant_conv",
        "post_quant_conv",
        "encoder.conv_in",
        "encoder.conv_out",
        "decoder.conv_in",
        "decoder.conv_out",
    ):
        _add(names, part, part)
    blocks, per_block = len(config["down_block_types"]), config["layers_per_block"]
    for side in ("encoder", "decoder"):
        _add(names, f"{side}.conv_norm_out", f"{side}.norm_out")
        _add(names, f"{side}.mid_block.resnets.0", f"{side}.mid.block_1", VAE_RESNET)
        _add(names, f"{side}.mid_block.resnets.1", f"{side}.mid.block_2", VAE_RESNET)
        _add(names, f"{side}.mid_block.attentions.0", f"{side}.mid.attn_1", VAE_ATTENTION)
    for block in range(blocks):
        for layer in range(per_block):
            _add(
                names, f"encoder.down_blocks.{block}.resnets.{layer}", f"encoder.down.{block}.block.{layer}", VAE_RESNET
            )
        _add(names, f"encoder.down_blocks.{block}.downsamplers.0.conv", f"encoder.down.{block}.downsample.conv")
        # The decoder's up blocks run in the opposite order: diffusers' up_blocks.0 is LDM's up.{last}.
        up = blocks - 1 - block
        for layer in range(per_block + 1):
            _add(names, f"decoder.up_blocks.{block}.resnets.{layer}", f"decoder.up.{up}.block.{layer}", VAE_RESNET)
        _add(names, f"decoder.up_blocks.{block}.upsamplers.0.conv", f"decoder.up.{up}.upsample.conv")
    return names
