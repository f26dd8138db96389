"""SDXL UNet module names: diffusers' (the model loratui trains) and sgm's (the names an SDXL LoRA file holds).

sd-scripts trains SDXL on its own copy of Stability's sgm UNet (library/sdxl_original_unet.py), so the UNet
keys of every SDXL LoRA it writes name sgm modules: ``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q``
where diffusers says ``down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q``. loratui trains
diffusers' UNet2DConditionModel and renames on writing, so its files have the keys an sd-scripts file has;
ComfyUI and Forge match them against their own sgm model, diffusers maps them back
(``_maybe_map_sgm_blocks_to_diffusers``).

The layout is SDXL base 1.0's, shared by its fine-tunes: three levels of two resnet layers each, cross-attention
at the second and third level, a downsampler after every level but the last. In sgm, ``input_blocks`` counts
conv_in, then each level's layers and its downsampler; ``output_blocks`` counts each up level's three layers,
the upsampler riding in the last one after its resnet and attention. Inside a transformer (``Transformer2DModel``)
and its attention and feed-forward layers the names are the same on both sides.
"""

from __future__ import annotations

LEVELS = 3
LAYERS_PER_LEVEL = 2  # resnet layers per down level; an up level has one more
ATTENTION_LEVELS = (1, 2)  # the down levels (counted from the top) whose layers carry a transformer

# Children of a resnet block, diffusers -> sgm (sgm's ResBlock keeps them in small Sequentials).
_RESNET_CHILDREN = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
# The modules outside the blocks.
_OUTSIDE_BLOCKS = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",  # the pooled text + size/crop embedding
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def _layer_tables() -> tuple[dict[str, str], dict[str, str]]:
    """(every weighted module outside the transformers, every transformer), diffusers path -> sgm path."""
    modules = dict(_OUTSIDE_BLOCKS)
    transformers: dict[str, str] = {}

    def resnet(diffusers: str, sgm: str) -> None:
        modules.update({f"{diffusers}.{child}": f"{sgm}.{name}" for child, name in _RESNET_CHILDREN.items()})

    per_up_level = LAYERS_PER_LEVEL + 1
    for level in range(LEVELS):
        first = 1 + level * per_up_level  # input_blocks.0 is conv_in
        for layer in range(LAYERS_PER_LEVEL):
            resnet(f"down_blocks.{level}.resnets.{layer}", f"input_blocks.{first + layer}.0")
            if level in ATTENTION_LEVELS:
                transformers[f"down_blocks.{level}.attentions.{layer}"] = f"input_blocks.{first + layer}.1"
        if level < LEVELS - 1:
            modules[f"down_blocks.{level}.downsamplers.0.conv"] = f"input_blocks.{first + LAYERS_PER_LEVEL}.0.op"

    for block in range(LEVELS):  # up block 0 is the deepest level
        has_attention = LEVELS - 1 - block in ATTENTION_LEVELS
        first = block * per_up_level
        for layer in range(per_up_level):
            resnet(f"up_blocks.{block}.resnets.{layer}", f"output_blocks.{first + layer}.0")
            if has_attention:
                transformers[f"up_blocks.{block}.attentions.{layer}"] = f"output_blocks.{first + layer}.1"
        if block < LEVELS - 1:
            # sgm appends the upsampler to the block's last layer: after its attention when it has one.
            position = 2 if has_attention else 1
            last = first + per_up_level - 1
            modules[f"up_blocks.{block}.upsamplers.0.conv"] = f"output_blocks.{last}.{position}.conv"

    resnet("mid_block.resnets.0", "middle_block.0")
    transformers["mid_block.attentions.0"] = "middle_block.1"
    resnet("mid_block.resnets.1", "middle_block.2")
    return modules, transformers


_MODULES, _TRANSFORMERS = _layer_tables()
_SGM_MODULES = {sgm: diffusers for diffusers, sgm in _MODULES.items()}
_SGM_TRANSFORMERS = {sgm: diffusers for diffusers, sgm in _TRANSFORMERS.items()}


def unet_module_to_sgm(path: str) -> str:
    """The sgm name of a diffusers SDXL UNet module (``mid_block.attentions.0.proj_in`` -> ``middle_block.1.proj_in``).

    ValueError for a path that names no weighted module of SDXL's layout."""
    return _rename(path, _MODULES, _TRANSFORMERS, "SDXL UNet (diffusers names)")


def sgm_to_unet_module(path: str) -> str:
    """The inverse of :func:`unet_module_to_sgm`: a diffusers module path from an sgm one."""
    return _rename(path, _SGM_MODULES, _SGM_TRANSFORMERS, "SDXL UNet (sgm names)")


def _rename(path: str, modules: dict[str, str], transformers: dict[str, str], what: str) -> str:
    if path in modules:
        return modules[path]
    parts = path.split(".")
    for depth in range(len(parts), 0, -1):  # a transformer's children keep their names
        block = ".".join(parts[:depth])
        if block in transformers:
            return ".".join([transformers[block], *parts[depth:]])
    raise ValueError(f"{path!r} names no weighted module of the {what}")
