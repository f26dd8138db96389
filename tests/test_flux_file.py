"""A Flux LoRA file, checked the way ComfyUI, Forge and diffusers read it.

A LoRA trained on diffusers' FluxTransformer2DModel (separate to_q/to_k/to_v, proj_mlp, ...) is written under
BFL's fused module names, as sd-scripts writes it (engine/flux_names.py). The file must then be what sd-scripts
writes:

- the test's own table of BFL's block layout (flux/modules/layers.py: DoubleStreamBlock, SingleStreamBlock) is
  what diffusers' converter of original Flux checkpoints reads, row for row; so the engine's names and row order
  are checked against diffusers, not taken on trust;
- every key is ``lora_unet_`` + a BFL Linear of a block with dots as underscores (the key ComfyUI and Forge derive
  from their BFL model), the fused shapes and an alpha that keeps the trained scale;
- diffusers' kohya Flux loader reproduces the LoRA'd transformer, alpha != rank so a wrong scale shows.

diffusers' kohya Flux converter splits ``linear1`` at FLUX.1's widths (3072 x 3 + 12288, hard-coded), so the
loading test uses FLUX.1's block width with one double and one single block and tiny everything else; the exact
fusion is also checked at tiny widths with other ranks and alphas per member.
"""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import load_file

from engine.flux_names import FLUX_BLOCKS, bfl_module, diffusers_members, fuse_lora, to_kohya_flux_tensors

RANK, ALPHA = 4, 2.0  # alpha != rank; alpha / rank a power of two, so the fp16 file holds the LoRA exactly
HIDDEN = 3072  # FLUX.1's block width (24 heads x 128), which diffusers' converters assume
FLUX1_SHAPES = dict(num_attention_heads=24, attention_head_dim=128, axes_dims_rope=(16, 56, 56))
TINY_SHAPES = dict(num_attention_heads=2, attention_head_dim=16, axes_dims_rope=(4, 6, 6))
# One double and one single block; tiny latent channels and text embeddings (what the blocks never see).
TINY_OUTSIDE_BLOCKS = dict(
    patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, joint_attention_dim=8, pooled_projection_dim=8
) | dict(guidance_embeds=True)


# --------------------------------------------------------------------------- BFL's layout, written out
def bfl_block_linears(hidden: int) -> dict[str, tuple[int, int]]:
    """Every Linear of BFL's DoubleStreamBlock 0 and SingleStreamBlock 0: path -> (out, in) features."""
    mlp = 4 * hidden  # mlp_ratio 4.0
    linears = {}
    for stream in ("img", "txt"):
        linears.update(
            {
                f"double_blocks.0.{stream}_mod.lin": (6 * hidden, hidden),  # shift, scale, gate for attn and mlp
                f"double_blocks.0.{stream}_attn.qkv": (3 * hidden, hidden),
                f"double_blocks.0.{stream}_attn.proj": (hidden, hidden),
                f"double_blocks.0.{stream}_mlp.0": (mlp, hidden),
                f"double_blocks.0.{stream}_mlp.2": (hidden, mlp),
            }
        )
    linears["single_blocks.0.linear1"] = (3 * hidden + mlp, hidden)  # q, k, v and the mlp's input
    linears["single_blocks.0.linear2"] = (hidden, hidden + mlp)
    linears["single_blocks.0.modulation.lin"] = (3 * hidden, hidden)
    return linears


def flux_transformer(shapes: dict, seed: int):
    """A FluxTransformer2DModel with one double and one single block, random weights drawn from ``seed``."""
    # built on the meta device, skipping diffusers' own init: the weights are drawn below from the seed alone
    model = flux_transformer_on_meta(shapes).to_empty(device="cpu")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.normal_(0.0, 0.02, generator=generator)
            if ".norm_" in name:  # the q/k RMSNorm scales: near 1, or attention would see no query nor key
                param.add_(1.0)
    return model.eval()


def attach_random_lora(model, rank=RANK, alpha=ALPHA, seed=1):
    from engine.lora import attach_lora, find_targets, lora_parameters

    targets = find_targets(model, FLUX_BLOCKS, rank, alpha)
    attach_lora(model, targets)
    generator = torch.Generator().manual_seed(seed)
    for param in lora_parameters(model):  # random up weights too: every module changes the output
        # fp16 values, so that the fp16 file holds exactly the LoRA computed here
        param.data = (torch.randn(param.shape, generator=generator) * 0.02).half().float()
    return targets


# --------------------------------------------------------------------------- names
@pytest.mark.parametrize(
    "diffusers, bfl, position",
    [
        ("transformer_blocks.0.attn.to_q", "double_blocks.0.img_attn.qkv", 0),
        ("transformer_blocks.7.attn.to_v", "double_blocks.7.img_attn.qkv", 2),
        ("transformer_blocks.18.attn.add_k_proj", "double_blocks.18.txt_attn.qkv", 1),
        ("transformer_blocks.0.attn.to_out.0", "double_blocks.0.img_attn.proj", 0),
        ("transformer_blocks.0.attn.to_add_out", "double_blocks.0.txt_attn.proj", 0),
        ("transformer_blocks.3.ff.net.0.proj", "double_blocks.3.img_mlp.0", 0),
        ("transformer_blocks.3.ff_context.net.2", "double_blocks.3.txt_mlp.2", 0),
        ("transformer_blocks.1.norm1.linear", "double_blocks.1.img_mod.lin", 0),
        ("transformer_blocks.1.norm1_context.linear", "double_blocks.1.txt_mod.lin", 0),
        ("single_transformer_blocks.37.proj_mlp", "single_blocks.37.linear1", 3),
        ("single_transformer_blocks.2.attn.to_k", "single_blocks.2.linear1", 1),
        ("single_transformer_blocks.2.proj_out", "single_blocks.2.linear2", 0),
        ("single_transformer_blocks.2.norm.linear", "single_blocks.2.modulation.lin", 0),
    ],
)
def test_flux_modules_have_their_bfl_names(diffusers, bfl, position):
    assert bfl_module(diffusers) == (bfl, position)
    assert diffusers_members(bfl)[position] == diffusers


@pytest.mark.parametrize(
    "path", ["x_embedder", "transformer_blocks.0.attn.norm_q", "single_transformer_blocks.0.attn.to_out.0", "proj_out"]
)
def test_a_module_outside_the_flux_blocks_has_no_bfl_name(path):
    with pytest.raises(ValueError, match="names no Linear"):
        bfl_module(path)


def test_the_bfl_layout_is_the_one_diffusers_single_file_loading_reads():
    """A BFL checkpoint built from the test's table, each weight row holding its own number (one input column, so
    FLUX.1's widths cost nothing), goes through diffusers' converter of original Flux checkpoints: it gives the
    transformer's own keys and shapes, and each diffusers weight is the rows of the BFL module the engine names,
    at the engine's position."""
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    linears = bfl_block_linears(HIDDEN)
    checkpoint = {}
    for number, (path, (out, _)) in enumerate(linears.items()):
        checkpoint[f"{path}.weight"] = (torch.arange(out) + 100_000 * number).float().unsqueeze(1)
        checkpoint[f"{path}.bias"] = torch.zeros(out)
    for prefix in ("double_blocks.0.img_attn.norm", "double_blocks.0.txt_attn.norm", "single_blocks.0.norm"):
        checkpoint.update({f"{prefix}.{norm}.scale": torch.zeros(128) for norm in ("query_norm", "key_norm")})
    embedders = ("time_in.in_layer", "time_in.out_layer", "vector_in.in_layer", "vector_in.out_layer")
    embedders += ("guidance_in.in_layer", "guidance_in.out_layer", "txt_in", "img_in", "final_layer.linear")
    embedders += ("final_layer.adaLN_modulation.1",)
    for path in embedders:
        checkpoint.update({f"{path}.weight": torch.zeros(2, 1), f"{path}.bias": torch.zeros(2)})
    bfl = dict(checkpoint)

    converted = convert_flux_transformer_checkpoint_to_diffusers(checkpoint)
    own = flux_transformer_on_meta(FLUX1_SHAPES).state_dict()
    assert converted.keys() == own.keys()
    in_blocks = {key: tensor for key, tensor in converted.items() if "blocks." in key and key.endswith(".weight")}
    linear_weights = {key for key in own if key.removesuffix(".weight") in block_linear_names(FLUX1_SHAPES)}
    assert linear_weights <= in_blocks.keys()
    for key in sorted(linear_weights):
        module = key.removesuffix(".weight")
        assert converted[key].shape[0] == own[key].shape[0], module
        fused, position = bfl_module(module)
        members = diffusers_members(fused)
        first_row = sum(own[f"{member}.weight"].shape[0] for member in members[:position])
        rows = bfl[f"{fused}.weight"][first_row : first_row + own[key].shape[0]]
        assert torch.equal(converted[key], rows), module
    fused_modules = {bfl_module(key.removesuffix(".weight"))[0] for key in linear_weights}
    assert fused_modules == linears.keys()  # every BFL Linear of the blocks is the fusion of trained modules


def flux_transformer_on_meta(shapes: dict):
    """The model's layout without its weights (no memory for FLUX.1's widths)."""
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        return FluxTransformer2DModel(**TINY_OUTSIDE_BLOCKS, **shapes)


def block_linear_names(shapes: dict) -> set[str]:
    """The modules kohya trains: every Linear inside a double or single block."""
    from engine.lora import find_targets

    return {target.name for target in find_targets(flux_transformer_on_meta(shapes), FLUX_BLOCKS, RANK, ALPHA)}


def test_the_targets_are_every_linear_of_the_blocks():
    names = block_linear_names(TINY_SHAPES)
    # double: q, k, v and out for each stream (8), two feed-forward Linears each (4), two modulations;
    # single: q, k, v, proj_mlp, proj_out and its modulation
    assert len(names) == 14 + 6
    assert {bfl_module(name)[0] for name in names} == set(bfl_block_linears(32))


# --------------------------------------------------------------------------- fusion
def test_fusing_keeps_every_members_delta_at_its_own_scale():
    generator = torch.Generator().manual_seed(0)
    ranks, alphas, outs = [4, 2, 8], [2.0, 3.0, 1.0], [5, 5, 7]
    downs = [torch.randn(r, 6, generator=generator) for r in ranks]
    ups = [torch.randn(o, r, generator=generator) for o, r in zip(outs, ranks, strict=True)]
    down, up, alpha = fuse_lora(downs, ups, alphas)
    assert down.shape == (14, 6) and up.shape == (17, 14)
    fused = alpha / down.shape[0] * up @ down  # how ComfyUI, Forge and sd-scripts apply a kohya LoRA
    separate = torch.cat([a / r * u @ d for a, r, u, d in zip(alphas, ranks, ups, downs, strict=True)])
    assert torch.allclose(fused, separate, atol=1e-5)
    assert alpha / down.shape[0] == 1.5  # the largest member scale (3 / 2): no up block grows


def test_members_with_different_inputs_do_not_fuse():
    with pytest.raises(ValueError, match="different widths"):
        fuse_lora([torch.ones(2, 6), torch.ones(2, 7)], [torch.ones(3, 2), torch.ones(3, 2)], [1.0, 1.0])


def test_a_fused_module_needs_all_its_members():
    from engine.lora import LoraTarget

    targets = [
        LoraTarget("transformer_blocks.0.attn.to_q", 2, 1.0),
        LoraTarget("transformer_blocks.0.attn.to_k", 2, 1.0),
    ]
    weights = {}
    for target in targets:
        weights[f"{target.name}.lora_down.weight"] = torch.ones(2, 8)
        weights[f"{target.name}.lora_up.weight"] = torch.ones(8, 2)
    with pytest.raises(ValueError, match=r"no LoRA on transformer_blocks\.0\.attn\.to_v"):
        to_kohya_flux_tensors(weights, targets, torch.float32)


def test_fused_tensors_apply_the_trained_lora_at_tiny_widths():
    """Per-module ranks and alphas that differ inside a fused module (peft's rank/alpha patterns): each BFL
    module's delta, as ComfyUI and Forge apply it, is the stacked deltas peft applies to its members."""
    from peft.tuners.lora import LoraLayer

    from engine.lora import LoraTarget, attach_lora, lora_parameters, lora_state_dict

    model = flux_transformer(TINY_SHAPES, seed=0)
    names = sorted(block_linear_names(TINY_SHAPES))
    targets = [LoraTarget(name, 2 + number % 3, 1.0 + number % 4) for number, name in enumerate(names)]
    attach_lora(model, targets)
    generator = torch.Generator().manual_seed(1)
    for param in lora_parameters(model):
        param.data = torch.randn(param.shape, generator=generator)
    tensors = to_kohya_flux_tensors(lora_state_dict(model), targets, torch.float32)
    layers = {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)}
    for bfl in bfl_block_linears(32):
        key = f"lora_unet_{bfl.replace('.', '_')}"
        down, up = tensors[f"{key}.lora_down.weight"], tensors[f"{key}.lora_up.weight"]
        fused = tensors[f"{key}.alpha"] / down.shape[0] * up @ down
        separate = torch.cat([layers[member].get_delta_weight("default") for member in diffusers_members(bfl)])
        assert torch.allclose(fused, separate, atol=1e-4, rtol=1e-4), bfl


# --------------------------------------------------------------------------- the file
@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A FLUX.1-wide transformer with a random LoRA, its outputs, and the file the engine writes of it."""
    from engine.kohya_format import SAVE_DTYPES, save_lora_file
    from engine.lora import lora_state_dict

    model = flux_transformer(FLUX1_SHAPES, seed=0)
    targets = attach_random_lora(model)
    path = tmp_path_factory.mktemp("flux-file") / "flux_lora.safetensors"
    save_lora_file(path, to_kohya_flux_tensors(lora_state_dict(model), targets, SAVE_DTYPES["fp16"]), {})
    trained = transformer_output(model)
    del model
    return path, targets, trained


def transformer_output(model) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    image_tokens, text_tokens = 16, 4
    img_ids = torch.zeros(image_tokens, 3)
    img_ids[:, 1] = torch.arange(image_tokens) // 4  # a 4 x 4 latent: row, column
    img_ids[:, 2] = torch.arange(image_tokens) % 4
    with torch.no_grad():
        return model(
            hidden_states=torch.randn(1, image_tokens, 4, generator=generator),
            encoder_hidden_states=torch.randn(1, text_tokens, 8, generator=generator),
            pooled_projections=torch.randn(1, 8, generator=generator),
            timestep=torch.tensor([0.6]),
            guidance=torch.tensor([3.5]),
            img_ids=img_ids,
            txt_ids=torch.zeros(text_tokens, 3),
        ).sample


@pytest.mark.slow
def test_every_key_is_one_comfyui_and_forge_derive_from_the_bfl_model(written):
    path, _, _ = written
    tensors = load_file(path)
    grammar = re.compile(r"lora_unet_(double|single)_blocks_\d+_\w+\.(lora_down\.weight|lora_up\.weight|alpha)")
    assert all(grammar.fullmatch(key) for key in tensors), sorted(tensors)
    # ComfyUI and Forge: "lora_unet_" + each BFL weight path without ".weight", dots as underscores.
    linears = {f"lora_unet_{path.replace('.', '_')}": shape for path, shape in bfl_block_linears(HIDDEN).items()}
    modules = {key.split(".", 1)[0] for key in tensors}
    assert modules == linears.keys()  # sd-scripts' default: every Linear of every block, nothing else
    for module, (out, inputs) in linears.items():
        down, up = tensors[f"{module}.lora_down.weight"], tensors[f"{module}.lora_up.weight"]
        members = 4 if module.endswith("linear1") else 3 if module.endswith("qkv") else 1
        assert down.shape == (RANK * members, inputs) and up.shape == (out, RANK * members), module
        assert tensors[f"{module}.alpha"].item() / down.shape[0] == ALPHA / RANK, module  # the trained scale
    assert tensors["lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight"].shape[0] == 3 * HIDDEN
    assert tensors["lora_unet_single_blocks_0_linear1.lora_up.weight"].shape[0] == 3 * HIDDEN + 4 * HIDDEN


@pytest.mark.slow
def test_diffusers_loads_the_file_and_reproduces_the_lora(written):
    from diffusers import FluxPipeline
    from peft.tuners.tuners_utils import BaseTunerLayer

    path, targets, trained = written
    model = flux_transformer(FLUX1_SHAPES, seed=0)
    base = transformer_output(model)
    state_dict = FluxPipeline.lora_state_dict(str(path))  # diffusers' kohya Flux conversion
    FluxPipeline.load_lora_into_transformer(state_dict, network_alphas=None, transformer=model)
    loaded = transformer_output(model)

    assert (trained - base).abs().max() > 1e-2  # the LoRA changes the output...
    assert (loaded - trained).abs().max() < 1e-3  # ...and the file reproduces it
    layers = sum(isinstance(module, BaseTunerLayer) for module in model.modules())
    assert layers == len(targets)  # every trained module got its LoRA back
