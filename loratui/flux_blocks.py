"""How many blocks a FLUX.1 transformer has, read without loading it, and how many of them block
swap keeps in CPU memory for a training.blocks_to_swap (dev or schnell: loratui.flux_files).

The counts come from a diffusers folder's ``transformer/config.json`` (``num_layers``,
``num_single_layers``), from the header of a BFL transformer file (``double_blocks.N.*``,
``single_blocks.N.*``), or, for a built-in model, from :data:`BUILTIN_FLUX_SHAPES` (the engine
builds those folders; tests/test_flux_check.py holds the constant equal to what it builds).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from loratui import model_files
from loratui.model_files import ModelFileError


@dataclass(frozen=True)
class FluxShape:
    double_blocks: int
    single_blocks: int


# FLUX.1 dev and schnell alike: 19 double and 38 single blocks (BFL's flux/model.py configs).
FLUX1 = FluxShape(19, 38)
BUILTIN_FLUX_SHAPES = {"loratui:tiny-flux": FluxShape(1, 1)}


def split_blocks(blocks_to_swap: int, double_blocks: int, single_blocks: int) -> tuple[int, int]:
    """(double, single) blocks that ``blocks_to_swap`` keeps in CPU memory, the engine's block swap
    included (engine/block_swap.py ``swap_split`` calls this): sd-scripts' split, N // 2 double and
    2 x (N - N // 2) single blocks (a single block is about half a double one), capped at the blocks
    the model has."""
    double = blocks_to_swap // 2
    single = 2 * (blocks_to_swap - double)
    return min(double, double_blocks), min(single, single_blocks)


def swapped_blocks(blocks_to_swap: int, shape: FluxShape) -> tuple[int, int]:
    return split_blocks(blocks_to_swap, shape.double_blocks, shape.single_blocks)


def blocks_to_swap_for_all(shape: FluxShape) -> int:
    """The smallest blocks_to_swap that keeps every block of the model in CPU memory: more moves
    nothing more. FLUX.1: 38, above the 35 of sd-scripts, which keeps two blocks of each kind on the
    GPU (the most training.blocks_to_swap takes); the tiny model: 2."""
    blocks = 0
    while swapped_blocks(blocks, shape) != (shape.double_blocks, shape.single_blocks):
        blocks += 1
    return blocks


def flux_shape(model_path: str, location: Path | None) -> FluxShape | None:
    """The shape of the model at ``model_path`` (``location``: where it is on disk, None for a
    built-in one); None when it cannot be read (other rules say what is wrong with the model)."""
    if location is None:
        return BUILTIN_FLUX_SHAPES.get(model_path)
    try:
        if location.is_dir():
            return _folder_shape(location / "transformer" / "config.json")
        if location.is_file() and location.suffix.lower() == ".safetensors":
            return _header_shape(model_files.safetensors_header(location).shapes)
    except (ModelFileError, OSError):
        return None
    return None


def _folder_shape(config_path: Path) -> FluxShape | None:
    if not config_path.is_file():
        return None
    config = model_files.json_object(config_path)
    double, single = config.get("num_layers"), config.get("num_single_layers")
    if not isinstance(double, int) or not isinstance(single, int):
        return None
    return FluxShape(double, single)


# A BFL transformer file's block tensors, with or without the "model.diffusion_model." prefix of a
# ComfyUI-style whole checkpoint.
_BLOCK = re.compile(r"^(?:model\.diffusion_model\.)?(double_blocks|single_blocks)\.(\d+)\.")


def _header_shape(names: dict[str, object]) -> FluxShape | None:
    indices: dict[str, set[int]] = {"double_blocks": set(), "single_blocks": set()}
    for name in names:
        match = _BLOCK.match(name)
        if match:
            indices[match.group(1)].add(int(match.group(2)))
    if not indices["double_blocks"]:
        return None  # not a BFL transformer file
    return FluxShape(len(indices["double_blocks"]), len(indices["single_blocks"]))
