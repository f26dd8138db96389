"""FLUX.1 transformer module names and the kohya Flux LoRA file: diffusers' modules (the model loratui trains)
fused into BFL's (the modules a Flux LoRA file names).

sd-scripts trains Flux on Black Forest Labs' own model (library/flux_models.py), putting a LoRA on every Linear
of its ``DoubleStreamBlock``s and ``SingleStreamBlock``s; its files name them ``lora_unet_`` + the BFL path with
dots as underscores (``lora_unet_double_blocks_0_img_attn_qkv``), which ComfyUI and Forge match against their own
BFL model and diffusers converts back (``_convert_kohya_flux_lora_to_diffusers``). diffusers'
``FluxTransformer2DModel`` splits what BFL fuses: one BFL ``img_attn.qkv`` is diffusers' ``attn.to_q``,
``attn.to_k`` and ``attn.to_v`` stacked by output rows; a single block's ``linear1`` is ``to_q``, ``to_k``, ``to_v``
and ``proj_mlp``. Every other BFL module is one diffusers module under another name.

Separate LoRAs that read the same input fuse into one LoRA on the stacked layer exactly: with members
``(A_i: r_i x in, B_i: out_i x r_i, scale s_i = alpha_i / r_i)``, the fused LoRA has down = the A's stacked
(R = sum r_i rows), up = the B's block-diagonal (sum out_i x R), and every loader's delta
``alpha / R * up @ down`` is, row block by row block, ``s_i * B_i @ A_i``: the members' own deltas. The fused
alpha is ``s * R`` for one scale ``s``; when the members were trained at different scales, each up block is
multiplied by ``s_i / s`` (``s`` the largest, so no block grows). A file written so holds rank R at the fused
modules, the network rank elsewhere (sd-scripts' ``split_qkv`` files have the same layout, but keep the trained
alpha, so every loader applies them at 1/3 or 1/4 of their strength).
"""

from __future__ import annotations

import torch

from engine.lora import LoraTarget

# The blocks whose every Linear a kohya Flux LoRA trains (diffusers' classes for BFL's DoubleStreamBlock and
# SingleStreamBlock), for engine.lora.find_targets.
FLUX_BLOCKS = ("FluxTransformerBlock", "FluxSingleTransformerBlock")

DOUBLE_BLOCKS = "transformer_blocks"  # diffusers' list of double-stream blocks; BFL: double_blocks
SINGLE_BLOCKS = "single_transformer_blocks"  # BFL: single_blocks

# BFL module in a block -> the diffusers modules it fuses, in the order of its output rows.
_DOUBLE_BLOCK_MODULES = {
    "img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "img_attn.proj": ("attn.to_out.0",),
    "img_mlp.0": ("ff.net.0.proj",),
    "img_mlp.2": ("ff.net.2",),
    "img_mod.lin": ("norm1.linear",),  # shift, scale, gate x 2: the same row order on both sides
    "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "txt_attn.proj": ("attn.to_add_out",),
    "txt_mlp.0": ("ff_context.net.0.proj",),
    "txt_mlp.2": ("ff_context.net.2",),
    "txt_mod.lin": ("norm1_context.linear",),
}
_SINGLE_BLOCK_MODULES = {
    "linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),  # rows: 3 x hidden, then the MLP's
    "linear2": ("proj_out",),  # reads the attention output and the MLP activation, concatenated in that order
    "modulation.lin": ("norm.linear",),
}
_BLOCKS = {
    DOUBLE_BLOCKS: ("double_blocks", _DOUBLE_BLOCK_MODULES),
    SINGLE_BLOCKS: ("single_blocks", _SINGLE_BLOCK_MODULES),
}
_BFL_BLOCKS = {bfl: (diffusers, modules) for diffusers, (bfl, modules) in _BLOCKS.items()}


def _split_block_path(path: str, blocks: dict) -> tuple[str, int, str] | None:
    """(block list, block index, path inside the block), or None when ``path`` is not inside a listed block."""
    parts = path.split(".")
    if len(parts) < 3 or parts[0] not in blocks or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1]), ".".join(parts[2:])


def bfl_module(path: str) -> tuple[str, int]:
    """(the BFL module a diffusers Flux transformer module belongs to, its position among the fused members).

    ``transformer_blocks.3.attn.to_k`` -> (``double_blocks.3.img_attn.qkv``, 1). ValueError for a path that
    names no module of the blocks a kohya Flux LoRA trains."""
    found = _split_block_path(path, _BLOCKS)
    if found is not None:
        block_list, index, inner = found
        bfl_list, modules = _BLOCKS[block_list]
        for bfl, members in modules.items():
            if inner in members:
                return f"{bfl_list}.{index}.{bfl}", members.index(inner)
    raise ValueError(f"{path!r} names no Linear of a Flux double or single block")


def diffusers_members(bfl_path: str) -> tuple[str, ...]:
    """The diffusers modules a BFL module fuses, in its row order (``single_blocks.0.linear2`` ->
    ``("single_transformer_blocks.0.proj_out",)``). ValueError for a path outside the trained modules."""
    found = _split_block_path(bfl_path, _BFL_BLOCKS)
    if found is not None:
        bfl_list, index, inner = found
        block_list, modules = _BFL_BLOCKS[bfl_list]
        if inner in modules:
            return tuple(f"{block_list}.{index}.{member}" for member in modules[inner])
    raise ValueError(f"{bfl_path!r} names no Linear of a BFL Flux double or single block")


def to_kohya_flux_tensors(
    weights: dict[str, torch.Tensor],
    targets: list[LoraTarget],
    dtype: torch.dtype,
    prefix: str = "lora_unet",
) -> dict[str, torch.Tensor]:
    """The kohya tensors of a LoRA trained on diffusers' Flux transformer: for each BFL module,
    ``<key>.lora_down.weight``, ``<key>.lora_up.weight`` and ``<key>.alpha``, fused as the module docstring says.

    ``weights``: ``<module>.lora_down.weight`` (r x in) / ``<module>.lora_up.weight`` (out x r) per target, as
    engine.lora.lora_state_dict gives them. ValueError when a fused module has only some of its members
    trained, or when the members' inputs differ in width (they would not read the same input)."""
    groups: dict[str, dict[int, LoraTarget]] = {}
    for target in targets:
        bfl, position = bfl_module(target.name)
        groups.setdefault(bfl, {})[position] = target
    out: dict[str, torch.Tensor] = {}
    for bfl, members in sorted(groups.items()):
        names = diffusers_members(bfl)
        if len(members) != len(names):
            missing = [name for position, name in enumerate(names) if position not in members]
            raise ValueError(f"{bfl} fuses {', '.join(names)}; no LoRA on {', '.join(missing)}")
        ordered = [members[position] for position in range(len(names))]
        down, up, alpha = fuse_lora(
            [weights[f"{t.name}.lora_down.weight"] for t in ordered],
            [weights[f"{t.name}.lora_up.weight"] for t in ordered],
            [t.alpha for t in ordered],
            bfl,
        )
        key = f"{prefix}_{bfl.replace('.', '_')}"
        out[f"{key}.lora_down.weight"] = down.to(dtype).contiguous()
        out[f"{key}.lora_up.weight"] = up.to(dtype).contiguous()
        out[f"{key}.alpha"] = torch.tensor(alpha, dtype=dtype)
    return out


def fuse_lora(
    downs: list[torch.Tensor], ups: list[torch.Tensor], alphas: list[float], name: str = "the fused module"
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(down, up, alpha) of one LoRA on the row-stacked layer whose delta is the members' deltas stacked.

    Each member: down (r_i x in), up (out_i x r_i), alpha_i; its delta is alpha_i / r_i * up @ down."""
    inputs = {down.shape[1] for down in downs}
    if len(inputs) != 1:
        # Stacking by rows only fuses layers that read one input; widths that differ cannot be that.
        raise ValueError(f"{name}: its members read inputs of different widths {sorted(inputs)}; they cannot fuse")
    ranks = [down.shape[0] for down in downs]
    for up, rank in zip(ups, ranks, strict=True):
        if up.shape[1] != rank:
            raise ValueError(f"{name}: an up weight of rank {up.shape[1]} with a down weight of rank {rank}")
    scales = [alpha / rank for alpha, rank in zip(alphas, ranks, strict=True)]
    scale = max(scales)  # fused alpha / fused rank; members trained at a smaller scale get smaller up blocks
    if scale <= 0:
        raise ValueError(f"{name}: alpha {max(alphas)} trains nothing; an alpha must be above 0")
    down = torch.cat([d.detach().float().cpu() for d in downs], dim=0)
    up = torch.block_diag(*(u.detach().float().cpu() * (s / scale) for u, s in zip(ups, scales, strict=True)))
    return down, up, scale * sum(ranks)
