"""Where LoRA goes in an SD 1.x/2.x model, and how it is attached (with peft).

The modules are chosen as kohya's sd-scripts chooses them, so a file trained here has the same
keys, shapes and meaning as one trained there:
- UNet: every Linear and 1x1 Conv2d inside the cross-attention transformer blocks
  (``Transformer2DModel``: proj_in/out, attention q/k/v/out, feed-forward).
- UNet with a conv rank (LoCon): also the layers of ResnetBlock2D, Downsample2D and Upsample2D,
  3x3 convolutions at the conv rank and their Linear/1x1 layers at the network rank.
- Text encoder: every Linear in the CLIP encoder layers (q/k/v/out projections and the MLP).

A LyCORIS type (network.type locon, loha, lokr, ia3) is trained by the lycoris-lora library instead
(engine/lycoris_network.py: its wrapper picks the modules); the functions below that read or load a
part's weights serve both kinds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from engine.lycoris_network import (
    CONTAINER,
    apply_lycoris_max_norm,
    container_of,
    load_lycoris_state_dict,
    lycoris_state_dict,
    make_layers,
)

if TYPE_CHECKING:
    from loratui.config import NetworkSettings

UNET_ATTENTION_BLOCKS = ("Transformer2DModel",)
UNET_CONV_BLOCKS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
TEXT_ENCODER_BLOCKS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPMLP")


@dataclass(frozen=True)
class LoraTarget:
    """One module that gets a LoRA, with the rank and alpha it is trained with."""

    name: str  # dotted path inside its model, e.g. "down_blocks.0.attentions.0.proj_in"
    rank: int
    alpha: float
    # The largest rank that still adds to the layer: min(inputs, outputs), a convolution's inputs
    # counted over its kernel (loratui.preflight's rank rule refuses ranks above every target's).
    width: int = 0
    conv: bool = False  # trained at the conv rank (a LoCon convolution larger than 1x1)


def _is_1x1_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (1, 1)


def find_targets(
    model: nn.Module,
    block_types: tuple[str, ...],
    rank: int,
    alpha: float,
    conv_block_types: tuple[str, ...] = (),
    conv_rank: int = 0,
    conv_alpha: float = 1.0,
) -> list[LoraTarget]:
    """Walk ``model`` and list the layers a kohya LoRA of this shape trains."""
    targets: dict[str, LoraTarget] = {}
    for block_name, block in model.named_modules():
        kind = type(block).__name__
        in_attention = kind in block_types
        in_conv_block = conv_rank > 0 and kind in conv_block_types
        if not (in_attention or in_conv_block):
            continue
        for child_name, child in block.named_modules():
            if not child_name:
                continue
            full = f"{block_name}.{child_name}" if block_name else child_name
            if isinstance(child, nn.Linear) or _is_1x1_conv(child):
                targets[full] = LoraTarget(full, rank, alpha, layer_width(child))
            elif in_conv_block and isinstance(child, nn.Conv2d):
                targets[full] = LoraTarget(full, conv_rank, conv_alpha, layer_width(child), conv=True)
    return sorted(targets.values(), key=lambda t: t.name)


def layer_width(module: nn.Module) -> int:
    """How many independent directions a change of this layer's weight can have."""
    if isinstance(module, nn.Linear):
        return min(module.in_features, module.out_features)
    inputs = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
    return min(inputs, module.out_channels)


def widest_targets(targets: list[LoraTarget]) -> tuple[int, int]:
    """(the widest layer trained at the network rank, the widest trained at the conv rank), as
    loratui.preflight.rank_problems takes them."""
    return (
        max((t.width for t in targets if not t.conv), default=0),
        max((t.width for t in targets if t.conv), default=0),
    )


def attach_lora(model: nn.Module, targets: list[LoraTarget], adapter_name: str = "default") -> None:
    """Add peft LoRA layers for ``targets`` to ``model`` (frozen base, trainable A/B).

    peft scales each update by alpha / rank, as kohya, A1111 and ComfyUI do, so the alpha kept
    in the file means the same thing everywhere.
    """
    from peft import LoraConfig, inject_adapter_in_model

    if not targets:
        raise ValueError("no LoRA targets found in the model")
    default = targets[0]
    config = LoraConfig(
        r=default.rank,
        lora_alpha=default.alpha,
        init_lora_weights=True,  # A random (kaiming), B zero: training starts at the base model
        target_modules=[t.name for t in targets],
        # Exact-name patterns for the modules whose rank or alpha differ from the first one.
        rank_pattern={_exact(t.name): t.rank for t in targets if t.rank != default.rank},
        alpha_pattern={_exact(t.name): t.alpha for t in targets if t.alpha != default.alpha},
    )
    model.requires_grad_(False)
    inject_adapter_in_model(config, model, adapter_name=adapter_name)
    for name, param in model.named_parameters():
        if ".lora_A." in name or ".lora_B." in name:
            param.requires_grad_(True)


def lycoris_targets(
    module: nn.Module, denoiser: bool, net: NetworkSettings
) -> tuple[list[LoraTarget], dict[str, nn.Module]]:
    """The modules LyCORIS's wrapper picks in ``module`` for the network settings' type and preset, with
    the layers it made for them (by module path; attached by :func:`attach_lycoris`)."""
    layers = make_layers(module, denoiser, net)
    targets = []
    for path, layer in layers.items():
        original = layer.org_module[0]
        conv = isinstance(original, nn.Conv2d) and tuple(original.kernel_size) != (1, 1)
        rank, alpha = (
            (net.conv_rank or net.rank, net.conv_alpha if net.conv_rank else net.alpha)
            if conv
            else (
                net.rank,
                net.alpha,
            )
        )
        width = layer_width(original) if isinstance(original, (nn.Linear, nn.Conv2d)) else 0
        targets.append(LoraTarget(path, rank, alpha, width, conv))
    return sorted(targets, key=lambda t: t.name), layers


def _exact(name: str) -> str:
    # peft matches these keys as regexes against the end of a module path; anchor the full path.
    return "^" + name.replace(".", r"\.") + "$"


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trained weights of the part's network: peft's LoRA, or its LyCORIS layers."""
    return [
        p
        for n, p in model.named_parameters()
        if p.requires_grad and (".lora_A." in n or ".lora_B." in n or f"{CONTAINER}." in n)
    ]


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA weights as ``{module_path: {"down": A, "up": B}}``-style flat dict:
    ``<module>.lora_down.weight`` / ``<module>.lora_up.weight`` keyed by the model's module path
    (a LyCORIS part: ``<module>.<tensor>`` as LyCORIS saves each, ``<module>.hada_w1_a``...)."""
    container = container_of(model)
    if container is not None:
        return lycoris_state_dict(container)
    out: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        for peft_part, kohya_part in ((".lora_A.default.", ".lora_down."), (".lora_B.default.", ".lora_up.")):
            if peft_part in name:
                module, rest = name.split(peft_part, 1)
                out[f"{module}{kohya_part}{rest}"] = tensor
    return out


def apply_max_norm(model: nn.Module, max_norm: float, device: torch.device) -> tuple[int, list[float]]:
    """kohya's scale_weight_norms, after an optimizer step: each layer whose update (alpha / rank x up @
    down) has a norm above ``max_norm`` is scaled back to it. How many were scaled, and every layer's
    norm after the step. A LyCORIS part: each layer's own max-norm step (LyCORIS's, as its kohya network
    runs it)."""
    container = container_of(model)
    if container is not None:
        return apply_lycoris_max_norm(container, max_norm, device)
    scaled, norms = 0, []
    with torch.no_grad():
        for module in model.modules():
            down_layers = getattr(module, "lora_A", None)
            if not isinstance(down_layers, nn.ModuleDict) or "default" not in down_layers:
                continue
            down, up = down_layers["default"].weight, module.lora_B["default"].weight
            norm = (update_of(up, down) * module.scaling["default"]).norm()
            # sd-scripts' rule: a norm below half the bound is taken as half of it (ratio 1: unchanged)
            ratio = float(norm.clamp(min=max_norm / 2).clamp(max=max_norm) / norm.clamp(min=max_norm / 2))
            if ratio != 1:
                scaled += 1
                up.mul_(ratio**0.5)
                down.mul_(ratio**0.5)
            norms.append(float(norm) * ratio)
    return scaled, norms


def update_of(up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """The change ``up @ down`` makes to a layer's weight, in the weight's shape (a conv's kernel too)."""
    if down.dim() == 2:
        return up @ down
    return (up.flatten(1) @ down.flatten(1)).reshape(up.shape[0], *down.shape[1:])


class LoraMismatch(ValueError):
    """LoRA weights that do not fit the model's LoRA layers: other modules, or other shapes."""


def load_lora_state_dict(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`lora_state_dict`, used when resuming a run; LoraMismatch (nothing
    loaded) when the weights are not those of this model's LoRA layers."""
    container = container_of(model)
    if container is not None:
        refusal = load_lycoris_state_dict(container, weights)
        if refusal:
            raise LoraMismatch(refusal)
        return
    mapped = {}
    for key, tensor in weights.items():
        for kohya_part, peft_part in ((".lora_down.", ".lora_A.default."), (".lora_up.", ".lora_B.default.")):
            if kohya_part in key:
                module, rest = key.split(kohya_part, 1)
                mapped[f"{module}{peft_part}{rest}"] = tensor
    _check_fit(model, mapped, unmapped=len(weights) - len(mapped))
    model.load_state_dict(mapped, strict=False)


def _check_fit(model: nn.Module, mapped: dict[str, torch.Tensor], unmapped: int) -> None:
    own = {n: t for n, t in model.state_dict().items() if ".lora_A." in n or ".lora_B." in n}
    unexpected, missing = sorted(set(mapped) - set(own)), sorted(set(own) - set(mapped))
    if unmapped or unexpected or missing:
        raise LoraMismatch(
            f"its LoRA layers are not this network's ({len(missing)} missing, "
            f"{len(unexpected) + unmapped} unknown{', e.g. ' + _kohya_name(unexpected[0]) if unexpected else ''})"
        )
    for name in sorted(own):
        if mapped[name].shape != own[name].shape:
            raise LoraMismatch(
                f"{_kohya_name(name)} is {list(mapped[name].shape)} in the state, "
                f"{list(own[name].shape)} in this network"
            )


def _kohya_name(peft_name: str) -> str:
    return peft_name.replace(".lora_A.default.", ".lora_down.").replace(".lora_B.default.", ".lora_up.")
