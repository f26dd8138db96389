"""The check's rules on the training objective's settings (the noise, the timesteps, the loss) and on
which parts train (network.train_text_encoder_only): the combinations sd-scripts refuses, and those that
would make a run's loss infinite or train nothing. Registered with loratui.rules' ``rule`` on import."""

from __future__ import annotations

from typing import TYPE_CHECKING

from loratui import families
from loratui.errors import Problem, error, warning
from loratui.params import UNET_FAMILIES
from loratui.rules import rule

if TYPE_CHECKING:
    from loratui.config import RunConfig


def _unet_family(cfg: RunConfig) -> bool:
    return cfg.model.family in UNET_FAMILIES


@rule("training.min_timestep", "training.max_timestep", "model.family")
def _timestep_range(cfg: RunConfig) -> list[Problem]:
    first, end = cfg.training.min_timestep, cfg.training.max_timestep
    if not _unet_family(cfg) or first < end:
        return []
    message = f"min_timestep {first} is not below max_timestep {end}: no timestep is left to train"
    fix = "set min_timestep below max_timestep (0 and 1000 train the whole range)"
    return [error("training.min_timestep", message, fix)]


@rule("training.adaptive_noise_scale", "training.noise_offset", "model.family")
def _adaptive_noise_needs_offset(cfg: RunConfig) -> list[Problem]:
    training = cfg.training
    if not _unet_family(cfg) or not training.adaptive_noise_scale or training.noise_offset:
        return []
    message = "adaptive_noise_scale raises the noise offset, but noise_offset is 0 (sd-scripts refuses this too)"
    fix = "set noise_offset above 0 (e.g. 0.05), or adaptive_noise_scale = 0"
    return [error("training.adaptive_noise_scale", message, fix)]


@rule("training.noise_offset_random_strength", "training.noise_offset", "model.family")
def _random_offset_without_offset(cfg: RunConfig) -> list[Problem]:
    training = cfg.training
    if not _unet_family(cfg) or not training.noise_offset_random_strength or training.noise_offset:
        return []
    message = "noise_offset_random_strength has no effect: noise_offset is 0"
    return [warning("training.noise_offset_random_strength", message, "set noise_offset above 0, or turn it off")]


@rule("training.ip_noise_gamma_random_strength", "training.ip_noise_gamma")
def _random_perturbation_without_gamma(cfg: RunConfig) -> list[Problem]:
    training = cfg.training
    if not training.ip_noise_gamma_random_strength or training.ip_noise_gamma:
        return []
    message = "ip_noise_gamma_random_strength has no effect: ip_noise_gamma is 0"
    fix = "set ip_noise_gamma (about 0.1), or turn it off"
    return [warning("training.ip_noise_gamma_random_strength", message, fix)]


@rule("training.loss_type", "training.huber_schedule", "model.family")
def _huber_snr_schedule_on_flux(cfg: RunConfig) -> list[Problem]:
    training = cfg.training
    if cfg.model.family != "flux" or training.loss_type not in ("huber", "smooth_l1"):
        return []
    if training.huber_schedule != "snr":
        return []
    message = "huber_schedule snr needs a DDPM noise schedule; FLUX.1's rectified flow has none (nor in sd-scripts)"
    fix = 'set huber_schedule = "exponential" or "constant"'
    return [error("training.huber_schedule", message, fix)]


@rule("training.scale_v_pred_loss_like_noise_pred", "model.v_prediction", "model.family")
def _scale_v_pred_needs_v_prediction(cfg: RunConfig) -> list[Problem]:
    if not _unet_family(cfg) or not cfg.training.scale_v_pred_loss_like_noise_pred or cfg.model.v_prediction:
        return []
    message = "scale_v_pred_loss_like_noise_pred scales a v-prediction loss, but model.v_prediction is off"
    fix = "turn it off, or set model.v_prediction = true for a v-prediction model"
    return [error("training.scale_v_pred_loss_like_noise_pred", message, fix)]


@rule("training.v_pred_like_loss", "model.v_prediction", "model.family")
def _v_pred_like_loss_on_v_prediction(cfg: RunConfig) -> list[Problem]:
    if not _unet_family(cfg) or not cfg.training.v_pred_like_loss or not cfg.model.v_prediction:
        return []
    message = "v_pred_like_loss adds a v-prediction-like loss to a noise-predicting model; this model is v-prediction"
    return [error("training.v_pred_like_loss", message, "set v_pred_like_loss = 0")]


@rule(
    "training.debiased_estimation_loss",
    "training.v_pred_like_loss",
    "training.zero_terminal_snr",
    "model.v_prediction",
    "model.family",
)
def _snr_weights_at_zero_terminal_snr(cfg: RunConfig) -> list[Problem]:
    """At a zero terminal SNR the last timestep's 1/sqrt(SNR) (debiased, epsilon) and 1/scale
    (v_pred_like_loss) are unbounded: infinite in sd-scripts (its SNR is exactly 0 there), thousands
    of times the others' here (diffusers keeps alpha_bar at 2^-24)."""
    training = cfg.training
    if not _unet_family(cfg) or not training.zero_terminal_snr or cfg.model.v_prediction:
        return []
    switched = (
        ("debiased_estimation_loss", training.debiased_estimation_loss),
        ("v_pred_like_loss", training.v_pred_like_loss),
    )
    names = [name for name, on in switched if on]
    if not names:
        return []
    message = (
        f"{' and '.join(names)} with zero_terminal_snr on a noise-predicting model weights the last timestep "
        "(signal-to-noise ratio 0) without bound"
    )
    fix = f"turn off {' or '.join(names)} or zero_terminal_snr (or set model.v_prediction for a v-prediction model)"
    return [error(f"training.{names[0]}", message, fix)]


@rule(
    "network.train_text_encoder_only",
    "network.train_unet_only",
    "optimizer.text_encoder_lr",
    "optimizer.text_encoder_2_lr",
    "model.family",
)
def _text_encoder_only(cfg: RunConfig) -> list[Problem]:
    """sd-scripts trains the text encoder(s) alone with --network_train_text_encoder_only: at least one
    must be able to train (FLUX.1's T5-XXL never does), and never together with U-Net only."""
    net = cfg.network
    if not net.train_text_encoder_only:
        return []
    denoiser = families.lora_parts(cfg.model.family)[0].label
    if net.train_unet_only:
        message = "train_text_encoder_only and train_unet_only are both true: nothing would train"
        fix = f"keep one: train_unet_only for the {denoiser} alone, train_text_encoder_only for the text encoders"
        return [error("network.train_text_encoder_only", message, fix)]
    if families.trained_text_encoders(cfg):
        return []
    encoders = families.text_encoder_parts(cfg.model.family)
    rates = " and ".join(part.lr_setting for part in encoders)
    t5 = " (T5-XXL never trains)" if cfg.model.family == "flux" else ""
    verb = "is" if len(encoders) == 1 else "are"
    message = f"train_text_encoder_only freezes the {denoiser}, but {rates} {verb} 0: nothing would train{t5}"
    fix = f"set {encoders[0].lr_setting} above 0 (e.g. 5e-5), or train_text_encoder_only = false"
    return [error("network.train_text_encoder_only", message, fix)]
