"""LyCORIS networks (LoCon, LoHa, LoKr, iA3, with DoRA) trained through the lycoris-lora library.

sd-scripts trains them with ``--network_module lycoris.kohya --network_args algo=... preset=...``:
``lycoris.kohya.create_network`` gets the network args as strings and decides, from the preset, which
modules get a layer and of which kind. loratui calls that same function with the same args, one part
at a time (the UNet, a text encoder), so the modules chosen are LyCORIS's own; the layers it makes are
kept in a :class:`LycorisLayers` child of the part, so that they move, train and save with it.

Each layer's tensors go into the file under the module's kohya key as LyCORIS saves them
(``<key>.lokr_w1``, ``<key>.hada_w1_a``, ``<key>.lora_down.weight``, ``<key>.weight`` and
``<key>.on_input`` for iA3, ``<key>.dora_scale``, ``<key>.alpha``), which ComfyUI, A1111/Forge and
LyCORIS's own loader read.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from loratui.config import NetworkSettings

CONTAINER = "lycoris_layers"  # the attribute of a part holding its LyCORIS layers

# LyCORIS 4.1 names diffusers' TimestepEmbedding class in its full presets and also the time embedding's two
# Linear layers by name: on an SD or SDXL UNet both select time_embedding.linear_1/2, and its wrapper stops
# on the duplicate. Selecting them by the class alone trains the same modules (and SDXL's add_embedding).
_TIME_EMBEDDING_CLASS = "TimestepEmbedding"
_TIME_EMBEDDING_NAMES = ("time_embedding.linear_1", "time_embedding.linear_2")

log = logging.getLogger("engine.train")


def _text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def network_args(net: NetworkSettings) -> dict[str, str]:
    """The network args of a LyCORIS type, as the kohya_ss GUI passes them to sd-scripts (strings) and
    sd-scripts records them in ``ss_network_args``. A conv rank of 0 is left out: LyCORIS then trains
    the convolutions at the network rank and alpha, as its own default."""
    args = {"preset": net.preset}
    if net.conv_rank:
        args.update(conv_dim=str(net.conv_rank), conv_alpha=_text(net.conv_alpha))
    if net.type == "ia3":
        args["train_on_input"] = str(net.train_on_input)
        if net.module_dropout:  # the one dropout iA3 applies (the kohya_ss GUI passes none)
            args["module_dropout"] = _text(net.module_dropout)
    else:
        args.update(
            use_tucker=str(net.use_cp),
            rank_dropout=_text(net.rank_dropout),
            module_dropout=_text(net.module_dropout),
            dora_wd=str(net.dora),
        )
        if net.dropout:
            # LyCORIS's LoCon applies the network dropout only when it adds B(A(x)) to the layer's output
            # (bypass mode), as kohya's LoRA does; rebuilding the weight (its default) skips it.
            args["bypass_mode"] = "True"
        if net.type == "lokr":
            args["factor"] = str(net.lokr_factor)
            if net.lokr_full_matrix:
                args["full_matrix"] = "True"
    args["algo"] = net.type
    return args


@contextlib.contextmanager
def _quiet_lycoris() -> Iterator[None]:
    """LyCORIS logs each module table at INFO on its own stdout handler: into the engine's log instead,
    warnings only."""
    lycoris_log = logging.getLogger("LyCORIS")
    handlers, level, propagate = list(lycoris_log.handlers), lycoris_log.level, lycoris_log.propagate
    for handler in handlers:
        lycoris_log.removeHandler(handler)
    lycoris_log.setLevel(logging.WARNING)
    lycoris_log.propagate = True
    try:
        yield
    finally:
        lycoris_log.propagate = propagate
        lycoris_log.setLevel(level)
        for handler in handlers:
            lycoris_log.addHandler(handler)


@contextlib.contextmanager
def _presets_without_duplicates() -> Iterator[None]:
    import lycoris.kohya as lycoris_kohya

    original = lycoris_kohya.PRESET
    fixed = copy.deepcopy(original)
    for preset in fixed.values():
        modules, names = preset.get("unet_target_module", []), preset.get("unet_target_name", [])
        if _TIME_EMBEDDING_CLASS in modules:
            preset["unet_target_name"] = [n for n in names if n not in _TIME_EMBEDDING_NAMES]
    lycoris_kohya.PRESET = fixed
    try:
        yield
    finally:
        lycoris_kohya.PRESET = original


class LycorisLayers(nn.Module):
    """The LyCORIS layers of one part, by the module path each one changes."""

    def __init__(self, layers: dict[str, nn.Module]) -> None:
        super().__init__()
        self.paths = {path: layer.lora_name for path, layer in layers.items()}  # module path -> key below
        self.layers = nn.ModuleDict({layer.lora_name: layer for layer in layers.values()})

    def by_path(self) -> Iterator[tuple[str, nn.Module]]:
        for path, key in self.paths.items():
            yield path, self.layers[key]


def make_layers(module: nn.Module, denoiser: bool, net: NetworkSettings) -> dict[str, nn.Module]:
    """LyCORIS's layers for ``module`` (a UNet when ``denoiser``, else a text encoder), by module path,
    not yet applied: ``lycoris.kohya.create_network`` with the type's network args decides them."""
    from lycoris import kohya

    empty = nn.Module()  # the part not asked for: nothing in it matches a preset
    unet, text_encoder = (module, None) if denoiser else (empty, module)
    args = network_args(net)
    if net.dropout:
        args["dropout"] = _text(net.dropout)  # sd-scripts' network_dropout (LyCORIS reads it as dropout)
    with _quiet_lycoris(), _presets_without_duplicates():
        network = kohya.create_network(
            1.0, net.rank, net.alpha, None, text_encoder, unet, warn_on_unmatched=False, **args
        )
    paths = {id(child): name for name, child in module.named_modules()}
    return {paths[id(layer.org_module[0])]: layer for layer in network.loras}


def attach_lycoris(module: nn.Module, layers: dict[str, nn.Module]) -> None:
    """Put ``layers`` into ``module``'s forward (frozen base, trainable layers) and keep them as its child."""
    if not layers:
        raise ValueError("no LyCORIS layers for this model: the preset selects none of its modules")
    module.requires_grad_(False)
    for layer in layers.values():
        layer.apply_to()
    module.add_module(CONTAINER, LycorisLayers(layers))
    getattr(module, CONTAINER).requires_grad_(True)


@contextlib.contextmanager
def dropouts_off(modules: list[nn.Module]) -> Iterator[None]:
    """The LyCORIS layers of ``modules`` in eval mode for a while (a loss measured without their dropouts);
    a part without them is left as it is."""
    containers = [c for c in (container_of(m) for m in modules) if c is not None]
    modes = [container.training for container in containers]
    try:
        for container in containers:
            container.eval()
        yield
    finally:
        for container, mode in zip(containers, modes, strict=True):
            container.train(mode)


def container_of(model: nn.Module) -> LycorisLayers | None:
    return getattr(model, CONTAINER, None)


def lycoris_state_dict(container: LycorisLayers) -> dict[str, torch.Tensor]:
    """``<module path>.<tensor>`` -> the tensor as LyCORIS saves it (its scalar folded in)."""
    out: dict[str, torch.Tensor] = {}
    for path, layer in container.by_path():
        for name, tensor in layer.state_dict().items():
            out[f"{path}.{name}"] = tensor.detach()
    return out


def load_lycoris_state_dict(container: LycorisLayers, weights: dict[str, torch.Tensor]) -> str | None:
    """Load :func:`lycoris_state_dict`'s weights back; why not (nothing loaded), or None when done."""
    own = lycoris_state_dict(container)
    unexpected, missing = sorted(set(weights) - set(own)), sorted(set(own) - set(weights))
    if unexpected or missing:
        example = f", e.g. {unexpected[0]}" if unexpected else ""
        return f"its layers are not this network's ({len(missing)} missing, {len(unexpected)} unknown{example})"
    for name in sorted(own):
        if weights[name].shape != own[name].shape:
            return f"{name} is {list(weights[name].shape)} in the state, {list(own[name].shape)} in this network"
    for path, layer in container.by_path():
        prefix = f"{path}."
        layer.load_state_dict({k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)})
    return None


@torch.no_grad()
def apply_lycoris_max_norm(container: LycorisLayers, max_norm: float, device: torch.device) -> tuple[int, list[float]]:
    """Each layer's own max-norm step (LyCORIS's apply_max_norm, as its kohya network runs it): how many
    layers were scaled down, and every layer's norm after the step."""
    scaled, norms = 0, []
    for _, layer in container.by_path():
        was_scaled, norm = layer.apply_max_norm(max_norm, device)
        if was_scaled is None:  # iA3 has no norm to bound
            continue
        scaled += int(bool(was_scaled))
        norms.append(float(norm))
    return scaled, norms
