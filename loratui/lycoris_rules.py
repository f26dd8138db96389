"""The check's rules on the network type (LyCORIS's LoCon, LoHa, LoKr, iA3, DoRA), the dropouts and the
max norm: the combinations that cannot train, or would train something other than asked. Registered with
loratui.rules' ``rule`` on import.

What LyCORIS itself accepts is not refused: it picks LoKr's factors (a factor that does not divide a
layer's dimension is replaced by the nearest one that does), and it decomposes convolutions with DoRA.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loratui import families, preflight
from loratui.errors import Problem, error, note, warning
from loratui.params import LYCORIS_TYPES, UNET_FAMILIES
from loratui.rules import rule

if TYPE_CHECKING:
    from loratui.config import RunConfig

LYCORIS_PACKAGE = "lycoris"  # import name of the lycoris-lora distribution
DROPOUTS = ("dropout", "rank_dropout", "module_dropout")
# The dropouts LyCORIS's layers of a type apply (LoHa and LoKr print that they have no plain dropout; iA3's
# forward skips whole layers only); LoCon takes all three.
TYPE_DROPOUTS = {"loha": DROPOUTS[1:], "lokr": DROPOUTS[1:], "ia3": ("module_dropout",)}
# LyCORIS presets that select no layer of a text encoder.
UNET_PRESETS = ("unet-only", "unet-transformer-only", "unet-convblock-only")
# LyCORIS presets that select no layer of the UNet loratui trains (diffusers'), measured on loratui:tiny-sd.
NO_UNET_PRESETS = ("attn-only", "ia3")


def _lycoris(cfg: RunConfig) -> bool:
    return cfg.network.type in LYCORIS_TYPES


@rule("network.type")
def _lycoris_installed(cfg: RunConfig) -> list[Problem]:
    if not _lycoris(cfg) or preflight.installed(LYCORIS_PACKAGE):
        return []
    message = (
        f"network type {cfg.network.type} is trained by the LyCORIS library (lycoris-lora), which is not installed"
    )
    return [error("network.type", message, "install it (pip install 'lycoris-lora>=4.1'), or set type = \"lora\"")]


@rule("network.type", "model.family")
def _lycoris_families(cfg: RunConfig) -> list[Problem]:
    if not _lycoris(cfg) or cfg.model.family in UNET_FAMILIES:
        return []
    message = f'LyCORIS types train SD 1.x/2.x and SDXL; FLUX.1 trains type "lora" only (not {cfg.network.type})'
    return [error("network.type", message, 'set type = "lora"')]


@rule("network.type", "network.dropout", "network.rank_dropout", "network.module_dropout")
def _dropouts(cfg: RunConfig) -> list[Problem]:
    net, problems = cfg.network, []
    for key in DROPOUTS:
        value = getattr(net, key)
        if value >= 1:
            message = f"{key} {value:g} drops every activation, rank or layer: nothing would train"
            problems.append(error(f"network.{key}", message, "use 0 (off) or 0.1"))
        elif value and not _lycoris(cfg):
            message = f'{key} is trained through LyCORIS here; type "lora" (peft) has no {key}'
            fix = f'set type = "locon" (the same lora_down/lora_up file keys), or {key} = 0'
            problems.append(error(f"network.{key}", message, fix))
        elif value and key not in TYPE_DROPOUTS.get(net.type, DROPOUTS):
            takes = " and ".join(TYPE_DROPOUTS[net.type])
            message = f"LyCORIS's {net.type} layers have no {key} (they take {takes}): it does nothing, as in kohya"
            problems.append(warning(f"network.{key}", message, f'set {key} = 0, or use type = "locon"'))
    return problems


@rule("network.type", "network.dropout")
def _locon_dropout_unlike_kohya(cfg: RunConfig) -> list[Problem]:
    if not (cfg.network.type == "locon" and cfg.network.dropout and not cfg.network.dora):
        return []
    # sd-scripts hands --network_dropout to lycoris.kohya as neuron_dropout, a name LyCORIS does not read.
    message = "applied to LyCORIS's LoCon layers here; sd-scripts' LyCORIS runs drop nothing with network_dropout"
    return [note("network.dropout", message)]


@rule("network.type", "network.dora", "network.dropout")
def _dora_without_dropout(cfg: RunConfig) -> list[Problem]:
    net = cfg.network
    if not (_lycoris(cfg) and net.dora and net.dropout):
        return []
    message = "LyCORIS's DoRA ignores the network dropout (it applies rank_dropout and module_dropout)"
    return [warning("network.dropout", message, "set dropout = 0, or turn dora off")]


@rule("network.type", "network.dora")
def _dora_on_ia3(cfg: RunConfig) -> list[Problem]:
    if not (cfg.network.dora and cfg.network.type == "ia3"):
        return []
    message = "iA3 scales channels and has no weight decomposition: LyCORIS ignores DoRA with it"
    return [warning("network.dora", message, 'turn dora off, or use type = "locon", "loha" or "lokr"')]


@rule("network.type", "network.train_on_input")
def _ia3_on_input(cfg: RunConfig) -> list[Problem]:
    if not (cfg.network.type == "ia3" and cfg.network.train_on_input):
        return []
    # lycoris.kohya.create_network does not pass train_on_input on to its layers (the kohya_ss GUI sends it),
    # and LyCORIS's own loader reads every iA3 layer as trained on outputs.
    message = "LyCORIS's kohya wrapper ignores train_on_input: iA3 trains each layer's outputs, as in kohya"
    return [warning("network.train_on_input", message, "turn train_on_input off")]


@rule("network.type", "network.preset")
def _preset_trains_the_unet(cfg: RunConfig) -> list[Problem]:
    net = cfg.network
    if not (_lycoris(cfg) and net.preset in NO_UNET_PRESETS):
        return []
    message = f"LyCORIS's preset {net.preset} selects no layer of a diffusers UNet (its target names are other models')"
    return [error("network.preset", message, 'use preset = "attn-mlp" (attention and MLP layers) or "full"')]


@rule("network.type", "network.preset")
def _preset_trains_text_encoder(cfg: RunConfig) -> list[Problem]:
    net = cfg.network
    trained = families.trained_text_encoders(cfg)
    if not (_lycoris(cfg) and net.preset in UNET_PRESETS and trained):
        return []
    message = f"LyCORIS's preset {net.preset} trains no layer of the {trained[0].label}, whose learning rate is set"
    return [error("network.preset", message, 'set network.train_unet_only = true, or use preset = "full"')]


@rule("network.type", "model.fp8_base", "model.nf4_base")
def _lycoris_low_precision(cfg: RunConfig) -> list[Problem]:
    low = [key for key in ("fp8_base", "nf4_base") if getattr(cfg.model, key)]
    if not (_lycoris(cfg) and low):
        return []
    message = f"LyCORIS layers are not verified on {low[0]} base weights here"
    return [error(f"model.{low[0]}", message, f'turn {low[0]} off, or set network.type = "lora"')]


@rule("network.type", "network.scale_weight_norms")
def _max_norm_on_ia3(cfg: RunConfig) -> list[Problem]:
    if not (cfg.network.type == "ia3" and cfg.network.scale_weight_norms):
        return []
    message = "iA3 layers have no update norm to bound: scale_weight_norms does nothing with them"
    return [warning("network.scale_weight_norms", message, "set it to 0")]
