"""Loading FLUX.1 from the four files of sd-scripts' recipe, offline.

``model.path`` is the transformer alone in Black Forest Labs' names (``flux1-dev.safetensors``, dev or
schnell, its keys bare or under ``model.diffusion_model.``), ``model.ae_path`` BFL's autoencoder,
``model.clip_l_path`` CLIP-L and ``model.t5xxl_path`` T5-XXL in Hugging Face names (fp16/bf16 or
float8_e4m3fn). What each file is, and every problem the check names, comes from
``loratui.flux_files`` (headers only); this module refuses the same before it reads a weight.

Each part is built empty (no memory, no random init) from a config and filled from its file:

- the transformer: the config of ``model.tokenizer``'s diffusers folder or the shipped FLUX.1 one,
  with the block counts, widths and guidance embedding read from the file's header (as sd-scripts reads
  the block counts from the keys), then BFL's fused tensors split into diffusers' modules with the
  mapping of engine/flux_names.py. diffusers' own ``FluxTransformer2DModel.from_single_file``
  converter hard-codes FLUX.1's width (3072) when it splits a single block's ``linear1``, so it
  loads no narrower file; this conversion is exact at any width, and tests/test_flux_files.py holds
  it equal to diffusers' on FLUX.1's own shapes;
- the AE: diffusers' ``AutoencoderKL.from_single_file`` with the same config folder;
- CLIP-L and T5: transformers' models from their configs (widths, depths and heads from the header),
  filled with ``load_state_dict`` (file keys the model has no use for are left, as sd-scripts does).

An fp8 file's weights are upcast to ``dtype`` unless ``keep_fp8``: holding them in float8 and computing
in the training precision is the fp8 base machinery's job (model.fp8_base), which casts them there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch

from engine import flux_names
from engine.model_loading import BaseModel, first_line, weight_dtype
from loratui import flux_files, preflight
from loratui.config import RunConfig
from loratui.errors import UserError

# BFL's modules outside the blocks -> diffusers' (library/flux_utils.py BFL_TO_DIFFUSERS_MAP, and
# diffusers' convert_flux_transformer_checkpoint_to_diffusers).
_TOP_MODULES = {
    "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
    "txt_in": "context_embedder",
    "img_in": "x_embedder",
    "final_layer.linear": "proj_out",
    "final_layer.adaLN_modulation.1": "norm_out.linear",
}
# BFL's final modulation gives (shift, scale); diffusers' AdaLayerNormContinuous reads (scale, shift).
_SWAPPED_HALVES = "final_layer.adaLN_modulation.1"
# The RMSNorms of the queries and keys inside a block: BFL's ``.scale`` is diffusers' ``.weight``.
_BLOCK_NORMS = {
    "img_attn.norm.query_norm": "attn.norm_q",
    "img_attn.norm.key_norm": "attn.norm_k",
    "txt_attn.norm.query_norm": "attn.norm_added_q",
    "txt_attn.norm.key_norm": "attn.norm_added_k",
    "norm.query_norm": "attn.norm_q",  # single blocks
    "norm.key_norm": "attn.norm_k",
}
_BLOCK_LISTS = {"double_blocks": flux_names.DOUBLE_BLOCKS, "single_blocks": flux_names.SINGLE_BLOCKS}


def load_flux_files(cfg: RunConfig, dtype: torch.dtype | None = None, keep_fp8: bool = False) -> BaseModel:
    """The FLUX.1 model of a transformer file and its three companions (see the module docstring).

    ``dtype``: what the text encoders and the transformer are loaded as (default: the training precision,
    so a 12B transformer is never held in float32 first); the AE stays float32 (the engine picks its dtype).
    ``keep_fp8``: float8_e4m3fn tensors stay float8 (for the fp8 base machinery) instead of being upcast."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for problem in flux_files.flux_problems(cfg):
        if problem.severity == "error":
            raise preflight.user_error(problem, "model")
    dtype = dtype or weight_dtype(cfg.training.mixed_precision)
    path = cfg.resolve(cfg.model.path)
    found = flux_files.flux_file(path)
    variant = str(found.variant)
    root = flux_files.tokenizer_root(cfg)
    assert isinstance(root, Path)  # flux_problems refused a missing one
    cast = _caster(dtype, keep_fp8)
    return BaseModel(
        tokenizer=_tokenizer("CLIPTokenizer", root / "tokenizer"),
        text_encoder=load_clip_l(cfg.resolve(cfg.model.clip_l_path), _json(root, variant, "text_encoder"), cast),
        tokenizer_2=_tokenizer("T5TokenizerFast", root / "tokenizer_2"),
        text_encoder_2=load_t5xxl(cfg.resolve(cfg.model.t5xxl_path), _json(root, variant, "text_encoder_2"), cast),
        vae=load_ae(cfg.resolve(cfg.model.ae_path), _config_root(root, variant, "vae")),
        unet=None,
        transformer=load_transformer(path, _json(root, variant, "transformer"), cast),
        noise_scheduler=_scheduler(variant),
        source=path,
        name=path.name,
    )


def _caster(dtype: torch.dtype, keep_fp8: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    def cast(tensor: torch.Tensor) -> torch.Tensor:
        if not tensor.is_floating_point() or (keep_fp8 and tensor.dtype == torch.float8_e4m3fn):
            return tensor
        return tensor.to(dtype)

    return cast


def _json(root: Path, variant: str, component: str) -> dict:
    return json.loads(flux_files.component_config(root, variant, component).read_text(encoding="utf-8"))


def _config_root(root: Path, variant: str, component: str) -> Path:
    """The folder whose ``<component>/config.json`` :func:`flux_files.component_config` picks."""
    return flux_files.component_config(root, variant, component).parent.parent


def _scheduler(variant: str):
    """The flow-matching scheduler of the variant (dev shifts by resolution, schnell does not)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    config = json.loads((flux_files.shipped_configs(variant) / "scheduler" / "scheduler_config.json").read_text())
    return FlowMatchEulerDiscreteScheduler.from_config(config)


def _tokenizer(kind: str, folder: Path):
    import transformers

    try:
        return getattr(transformers, kind).from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"cannot load the tokenizer in {folder}: {first_line(exc)}",
            "model.tokenizer",
            f"point model.tokenizer at a FLUX.1 folder with tokenizer/ and tokenizer_2/, or fetch them once with "
            f"network: {flux_files.tokenizer_download_command()}",
            "model",
        ) from exc


# ---------------------------------------------------------------------------------------------
# Reading a file into a model built empty.


def _read(path: Path, setting: str) -> dict[str, torch.Tensor]:
    return dict(_tensors(path, setting))


def _tensors(path: Path, setting: str) -> Iterator[tuple[str, torch.Tensor]]:
    """The file's (name, tensor) pairs, read one at a time."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                yield name, handle.get_tensor(name)
    except Exception as exc:  # safetensors raises its own error types for a damaged file
        raise UserError(
            f"{path.name} is not a readable safetensors file ({first_line(exc)})",
            setting,
            "the file is damaged or incomplete: download or copy it again",
            "model",
        ) from exc


def _empty(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """A module built without allocating or initialising its parameters (they are assigned next)."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        return build()


def _fill(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, setting: str, what: str) -> None:
    """Assign ``state`` into ``module``; every parameter must come from the file."""
    wanted = dict(module.named_parameters())
    mismatched = [
        f"{name} {tuple(state[name].shape)} (the model's is {tuple(wanted[name].shape)})"
        for name in sorted(state.keys() & wanted.keys())
        if state[name].shape != wanted[name].shape
    ]
    if mismatched:
        raise UserError(
            f"{path.name} does not fit the {what} layout it is loaded with: {mismatched[0]}",
            setting,
            f"use the {what} file of FLUX.1, or set model.tokenizer to the model's diffusers folder (its configs)",
            "model",
        )
    module.load_state_dict({name: state[name] for name in state.keys() & wanted.keys()}, strict=False, assign=True)
    empty = [name for name, tensor in module.named_parameters() if tensor.is_meta]
    if empty:
        raise UserError(
            f"{path.name} lacks {len(empty)} of the {what}'s weights (e.g. {empty[0]})",
            setting,
            f"the file is incomplete or of another model: use the complete {what} file",
            "model",
        )
    module.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# The transformer.


def transformer_config(shapes: dict[str, tuple[int, ...]], base: dict) -> dict:
    """``base`` (a FluxTransformer2DModel config) with what the BFL tensors' shapes say: block counts,
    widths, head width and the guidance embedding. KeyError names a tensor the file lacks."""
    head_dim = shapes["double_blocks.0.img_attn.norm.query_norm.scale"][0]
    hidden, in_channels = shapes["img_in.weight"]
    config = {
        **{key: value for key, value in base.items() if not key.startswith("_")},
        "in_channels": in_channels,
        "num_layers": _block_count(shapes, "double_blocks"),
        "num_single_layers": _block_count(shapes, "single_blocks"),
        "attention_head_dim": head_dim,
        "num_attention_heads": hidden // head_dim,
        "joint_attention_dim": shapes["txt_in.weight"][1],
        "pooled_projection_dim": shapes["vector_in.in_layer.weight"][1],
        "guidance_embeds": "guidance_in.in_layer.weight" in shapes,
    }
    out_channels = shapes["final_layer.linear.weight"][0] // config.get("patch_size", 1) ** 2
    if out_channels != in_channels:
        config["out_channels"] = out_channels
    return config


def _block_count(shapes: dict, block_list: str) -> int:
    indices = [int(name.split(".")[1]) for name in shapes if name.startswith(block_list + ".")]
    return max(indices) + 1 if indices else 0


def diffusers_params(bfl_name: str) -> list[str]:
    """The diffusers parameters a BFL transformer tensor holds, in its row order (several for a fused
    one: ``double_blocks.0.img_attn.qkv.weight`` -> to_q, to_k, to_v). ValueError for a name that is no
    FLUX.1 transformer tensor."""
    module, _, param = bfl_name.rpartition(".")
    if module in _TOP_MODULES:
        return [f"{_TOP_MODULES[module]}.{param}"]
    parts = module.split(".")
    if len(parts) > 2 and parts[0] in _BLOCK_LISTS and parts[1].isdigit():
        inner = ".".join(parts[2:])
        if inner in _BLOCK_NORMS and param == "scale":
            return [f"{_BLOCK_LISTS[parts[0]]}.{parts[1]}.{_BLOCK_NORMS[inner]}.weight"]
        return [f"{member}.{param}" for member in flux_names.diffusers_members(module)]
    raise ValueError(f"{bfl_name!r} is no tensor of a FLUX.1 transformer")


def bfl_to_diffusers(
    tensors: Iterable[tuple[str, torch.Tensor]], shapes: dict[str, tuple[int, ...]]
) -> dict[str, torch.Tensor]:
    """BFL transformer tensors (name, tensor) in diffusers' names, fused tensors split by rows into the
    sizes of ``shapes`` (the diffusers model's parameter shapes). ValueError for a tensor that does not fit.
    Taken one at a time, so a file streamed in never has its fused and its split copies whole at once."""
    out: dict[str, torch.Tensor] = {}
    for bfl_name, tensor in tensors:
        names = diffusers_params(bfl_name)
        if bfl_name.startswith(_SWAPPED_HALVES + "."):
            shift, scale = tensor.chunk(2, dim=0)
            tensor = torch.cat([scale, shift], dim=0)
        missing = [name for name in names if name not in shapes]
        if missing:
            raise ValueError(f"{bfl_name} has no place in the model ({missing[0]})")
        sizes = [shapes[name][0] for name in names]
        if sum(sizes) != tensor.shape[0]:
            raise ValueError(f"{bfl_name} has {tensor.shape[0]} rows where the model takes {sum(sizes)}")
        for name, piece in zip(names, tensor.split(sizes, dim=0), strict=True):
            # Each its own storage, so that the fused tensor is freed once split.
            out[name] = piece.clone() if len(names) > 1 else piece
    return out


def load_transformer(path: Path, base_config: dict, cast: Callable[[torch.Tensor], torch.Tensor]) -> torch.nn.Module:
    from diffusers import FluxTransformer2DModel

    found = flux_files.flux_file(path)
    shapes = {name[len(found.prefix) :]: shape for name, shape in _header_shapes(path).items()}
    try:
        config = transformer_config(shapes, base_config)
    except KeyError as exc:
        raise UserError(
            f"{path.name} lacks {exc.args[0]}: it is not a complete FLUX.1 transformer",
            "model.path",
            "the file is damaged or incomplete: download or copy it again",
            "model",
        ) from exc
    axes = list(config.get("axes_dims_rope", (16, 56, 56)))
    if sum(axes) != config["attention_head_dim"]:
        raise UserError(
            f"{path.name} has attention heads {config['attention_head_dim']} wide, but the RoPE axes of its "
            f"config ({axes}) add up to {sum(axes)}",
            "model.tokenizer",
            "set model.tokenizer to the model's diffusers folder, whose transformer/config.json has its axes_dims_rope",
            "model",
        )
    model = _empty(lambda: FluxTransformer2DModel.from_config(config))
    tensors = ((name[len(found.prefix) :], cast(tensor)) for name, tensor in _tensors(path, "model.path"))
    try:
        converted = bfl_to_diffusers(tensors, {name: tuple(p.shape) for name, p in model.named_parameters()})
    except ValueError as exc:
        raise UserError(
            f"{path.name} does not fit the FLUX.1 transformer layout: {exc}",
            "model.path",
            "use flux1-dev.safetensors or flux1-schnell.safetensors as Black Forest Labs publish them",
            "model",
        ) from exc
    _fill(model, converted, path, "model.path", "FLUX.1 transformer")
    return model


def _header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    from loratui.model_files import safetensors_header

    return safetensors_header(path).shapes


# ---------------------------------------------------------------------------------------------
# The AE and the text encoders.


def load_ae(path: Path, config_root: Path) -> torch.nn.Module:
    """diffusers' own conversion of BFL's AE (the LDM VAE names without a prefix)."""
    from diffusers import AutoencoderKL

    try:
        vae = AutoencoderKL.from_single_file(
            str(path), config=str(config_root), subfolder="vae", local_files_only=True, torch_dtype=torch.float32
        )
    except Exception as exc:  # diffusers raises many kinds here; all mean "this file does not load"
        raise UserError(
            f"cannot load {path.name} as the FLUX.1 AE: {first_line(exc)}",
            "model.ae_path",
            "use ae.safetensors as Black Forest Labs publish it (FLUX.1-dev or FLUX.1-schnell)",
            "model",
        ) from exc
    empty = [name for name, tensor in vae.named_parameters() if tensor.is_meta]
    if empty:
        raise UserError(
            f"{path.name} lacks {len(empty)} of the AE's weights (e.g. {empty[0]})",
            "model.ae_path",
            "the file is incomplete or of another model: use ae.safetensors",
            "model",
        )
    return vae.eval().requires_grad_(False)


def clip_config(shapes: dict[str, tuple[int, ...]], base: dict) -> dict:
    """``base`` (a CLIPTextConfig) with the widths and depth of the file (heads stay the config's).
    ``shapes``: the file's, without the ``text_model.`` prefix."""
    vocab, hidden = shapes["embeddings.token_embedding.weight"]
    return {
        **base,
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": shapes["encoder.layers.0.mlp.fc1.weight"][0],
        "num_hidden_layers": _layer_count(shapes, "encoder.layers."),
        "max_position_embeddings": shapes["embeddings.position_embedding.weight"][0],
    }


def load_clip_l(path: Path, base_config: dict, cast: Callable[[torch.Tensor], torch.Tensor]) -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel

    setting = "model.clip_l_path"
    prefix = flux_files.flux_file(path).prefix  # "text_model." in clip_l.safetensors
    config = _text_config(path, setting, "CLIP-L", lambda shapes: clip_config(_unprefixed(shapes, prefix), base_config))
    if config["hidden_size"] % config["num_attention_heads"]:
        raise _heads_error(path, setting, config["hidden_size"], config["num_attention_heads"])
    model = _empty(lambda: CLIPTextModel(CLIPTextConfig(**config)))
    # transformers 4's CLIPTextModel holds its layers under text_model., 5's without: as the model names them.
    prefixed = any(name.startswith(flux_files.CLIP_PREFIX) for name, _ in model.named_parameters())
    own_prefix = flux_files.CLIP_PREFIX if prefixed else ""
    state = {own_prefix + name: cast(t) for name, t in _unprefixed(_read(path, setting), prefix).items()}
    _fill(model, state, path, setting, "CLIP-L")
    return model


def _unprefixed(items: dict, prefix: str) -> dict:
    return {name[len(prefix) :]: value for name, value in items.items() if name.startswith(prefix)}


def t5_config(shapes: dict[str, tuple[int, ...]], base: dict) -> dict:
    """``base`` (a T5Config) with everything the file's shapes say: T5 keeps its head count in the
    relative attention bias (buckets x heads) and its gated feed-forward in ``wi_0``/``wi_1``."""
    buckets, heads = shapes["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    embedding = shapes.get("shared.weight") or shapes["encoder.embed_tokens.weight"]
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in shapes
    feed_forward = shapes["encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi") + ".weight"]
    config = {
        **base,
        "vocab_size": embedding[0],
        "d_model": embedding[1],
        "num_layers": _layer_count(shapes, "encoder.block."),
        "num_heads": heads,
        "relative_attention_num_buckets": buckets,
        "d_kv": shapes["encoder.block.0.layer.0.SelfAttention.q.weight"][0] // heads,
        "d_ff": feed_forward[0],
    }
    if gated != str(base.get("feed_forward_proj", "")).startswith("gated-"):
        config["feed_forward_proj"] = "gated-gelu" if gated else "relu"
    return config


def load_t5xxl(path: Path, base_config: dict, cast: Callable[[torch.Tensor], torch.Tensor]) -> torch.nn.Module:
    from transformers import T5Config, T5EncoderModel

    setting = "model.t5xxl_path"
    config = _text_config(path, setting, "T5-XXL", lambda shapes: t5_config(shapes, base_config))
    model = _empty(lambda: T5EncoderModel(T5Config(**config)))
    state = {name: cast(t) for name, t in _read(path, setting).items()}
    # The token embedding is one tensor under two names (shared and the encoder's): files hold either.
    embedding = state.get("shared.weight", state.get("encoder.embed_tokens.weight"))
    if embedding is not None:
        state["shared.weight"] = state["encoder.embed_tokens.weight"] = embedding
    _fill(model, state, path, setting, "T5-XXL")
    return model


def _text_config(path: Path, setting: str, what: str, derive: Callable[[dict], dict]) -> dict:
    try:
        return derive(_header_shapes(path))
    except KeyError as exc:
        raise UserError(
            f"{path.name} lacks {exc.args[0]}: it is not a complete {what} text encoder",
            setting,
            "the file is damaged or incomplete: download or copy it again",
            "model",
        ) from exc


def _layer_count(shapes: dict, prefix: str) -> int:
    indices = [int(name[len(prefix) :].split(".")[0]) for name in shapes if name.startswith(prefix)]
    return max(indices) + 1 if indices else 0


def _heads_error(path: Path, setting: str, hidden: int, heads: int) -> UserError:
    return UserError(
        f"{path.name} is {hidden} wide, which its config's {heads} attention heads do not divide",
        setting,
        "set model.tokenizer to the model's diffusers folder, whose text_encoder/config.json has its head count",
        "model",
    )
