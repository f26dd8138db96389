"""Writing the LoRA file that ComfyUI, A1111/Forge and diffusers load as it is (kohya format).

Per trained module ``<key>`` three tensors: ``<key>.lora_down.weight`` (rank x in),
``<key>.lora_up.weight`` (out x rank) and a scalar ``<key>.alpha``. ``<key>`` is the part's prefix
(``lora_unet``, ``lora_te``; SDXL: ``lora_unet``, ``lora_te1``, ``lora_te2``), an underscore, and the
module's dotted path as the family names it in a kohya file, dots replaced by underscores: SD's
diffusers paths as they are, SDXL's UNet under its sgm names (engine/sdxl_names.py).

The alpha is the network alpha the run was trained with: loaders scale each update by
alpha / rank. (diffusers' ``convert_state_dict_to_kohya`` writes alpha = rank everywhere, which
silently changes the strength of every file trained with alpha != rank; we do not use it.)

Metadata: the ``ss_*`` keys that A1111 and the LoRA browsers read, all values strings, plus
``sshs_model_hash``: sha256 of the file's bytes after the safetensors header, as A1111 computes it.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save as safetensors_save

from engine.lora import LoraTarget
from loratui.atomic import write_bytes_atomic

UNET_PREFIX = "lora_unet"
TEXT_ENCODER_PREFIX = "lora_te"  # SD 1.x/2.x's one text encoder
TEXT_ENCODER_1_PREFIX = "lora_te1"  # SDXL's CLIP ViT-L
TEXT_ENCODER_2_PREFIX = "lora_te2"  # SDXL's OpenCLIP ViT-bigG
# The prefixes of CLIP text models, whose keys keep the ``text_model`` level.
CLIP_PREFIXES = (TEXT_ENCODER_PREFIX, TEXT_ENCODER_1_PREFIX, TEXT_ENCODER_2_PREFIX)

SAVE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "float": torch.float32}


def kohya_key(prefix: str, module_path: str) -> str:
    """``prefix`` + ``_`` + ``module_path`` (its name in a kohya file) with dots as underscores."""
    if prefix in CLIP_PREFIXES and not module_path.startswith("text_model."):
        # transformers 5 dropped the ``text_model`` level of CLIPTextModel; the file format keeps
        # the original paths (``lora_te1_text_model_encoder_layers_0_...``) that every loader expects.
        module_path = f"text_model.{module_path}"
    return f"{prefix}_{module_path.replace('.', '_')}"


def to_kohya_tensors(
    weights: dict[str, torch.Tensor],
    targets: list[LoraTarget],
    prefix: str,
    dtype: torch.dtype,
    kohya_name: Callable[[str], str],
) -> dict[str, torch.Tensor]:
    """Rename ``<module>.lora_down.weight``-style weights of one model to kohya keys, and add the
    alpha of each module. ``kohya_name``: a module's path in the model -> its name in the file.

    A LyCORIS part's weights (``<module>.hada_w1_a``, ``<module>.lokr_w1``, ``<module>.weight``...)
    are renamed the same way and carry their own alpha (iA3 has none), as LyCORIS saves them."""
    keys = {t.name: kohya_key(prefix, kohya_name(t.name)) for t in targets}
    out: dict[str, torch.Tensor] = {}
    for name, tensor in weights.items():
        module, part = _module_and_tensor(name, keys)
        out[f"{keys[module]}.{part}"] = tensor.detach().to("cpu", dtype).contiguous()
    peft_lora = all(".lora_down." in name or ".lora_up." in name for name in weights)
    if peft_lora:
        for target in targets:
            out[f"{keys[target.name]}.alpha"] = torch.tensor(float(target.alpha), dtype=dtype)
        if len(out) != 3 * len(targets):  # a name given to two modules, or a module without its two weights
            raise ValueError(f"{prefix}: {len(out)} tensors for {len(targets)} modules, not 3 per module")
    elif len({key.split(".", 1)[0] for key in out}) != len(targets):
        raise ValueError(f"{prefix}: tensors of {len(out)} names for {len(targets)} modules, not of each module")
    return out


def _module_and_tensor(name: str, modules: dict[str, str]) -> tuple[str, str]:
    """``down_blocks.0.proj_in.lora_down.weight`` -> (``down_blocks.0.proj_in``, ``lora_down.weight``):
    the longest leading part of ``name`` that is one of ``modules``."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:cut])
        if module in modules:
            return module, ".".join(parts[cut:])
    raise ValueError(f"{name}: not the weight of a trained module")


def _data_hash(serialized: bytes) -> str:
    header_len = struct.unpack("<Q", serialized[:8])[0]
    return hashlib.sha256(serialized[8 + header_len :]).hexdigest()


def file_model_hash(path: Path) -> str:
    """sha256 of a safetensors file's bytes after the header (A1111's ``sshs_model_hash``)."""
    with open(path, "rb") as handle:
        header_len = struct.unpack("<Q", handle.read(8))[0]
        handle.seek(8 + header_len)
        digest = hashlib.sha256()
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_lora_file(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> int:
    """Write ``tensors`` with ``metadata`` atomically (temp file + rename); return the size.

    The data section of a safetensors file does not depend on its metadata, so the hash taken
    from a metadata-free serialisation is the hash of the final file.
    """
    metadata = dict(metadata)
    metadata["sshs_model_hash"] = _data_hash(safetensors_save(tensors))
    payload = safetensors_save(tensors, metadata={k: str(v) for k, v in metadata.items()})
    write_atomic(path, payload)
    return len(payload)


def write_atomic(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, payload)


def json_string(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
