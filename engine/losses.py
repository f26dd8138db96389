"""The loss of a prediction, element by element, and the per-sample weights that depend on the noise
level, as sd-scripts computes them (library/train_util.py ``conditional_loss`` and
``get_huber_threshold_if_needed``; library/custom_train_functions.py ``apply_debiased_estimation``,
``add_v_prediction_like_loss``, ``scale_v_prediction_loss_like_noise_prediction``).

For an error d = prediction - target and a threshold c (one per sample):

- l2: d^2; l1: |d|;
- huber: 2c (sqrt(d^2 + c^2) - c), about d^2 below c and 2c |d| above it;
- smooth_l1: 2 (sqrt(d^2 + c^2) - c), about d^2 / c below c and 2 |d| above it.

The threshold follows training.huber_schedule over the timestep t of T (1000) steps: ``constant`` c x scale;
``exponential`` c^(t/T) x scale (c at pure noise, 1 x scale at none); ``snr`` (1 - c) / (1 + sigma_t)^2 + c,
sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) (huber_scale not applied, as in sd-scripts). A rectified flow
(FLUX.1) has no alpha_bar: its t is 1000 sigma, and the check refuses ``snr`` there as sd-scripts does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# The SNR of timestep 0 is infinite (or huge); sd-scripts caps it here for the SNR-based weights.
SNR_CAP = 1000.0


@dataclass(frozen=True)
class LossSettings:
    """The [training] loss settings (loratui.params, sd-scripts' names)."""

    loss_type: str = "l2"
    huber_schedule: str = "snr"
    huber_c: float = 0.1
    huber_scale: float = 1.0

    @classmethod
    def from_config(cls, cfg) -> LossSettings:
        training = cfg.training
        return cls(training.loss_type, training.huber_schedule, float(training.huber_c), float(training.huber_scale))

    @property
    def needs_threshold(self) -> bool:
        return self.loss_type in ("huber", "smooth_l1")


def elementwise_loss(
    prediction: torch.Tensor, target: torch.Tensor, loss_type: str, threshold: torch.Tensor | None = None
) -> torch.Tensor:
    """The loss of each element (no reduction); ``threshold`` (B,) for huber and smooth_l1."""
    if loss_type == "l2":
        return F.mse_loss(prediction, target, reduction="none")
    if loss_type == "l1":
        return F.l1_loss(prediction, target, reduction="none")
    if loss_type not in ("huber", "smooth_l1") or threshold is None:
        raise ValueError(f"loss_type {loss_type!r} with threshold {threshold!r}")
    c = threshold.view(-1, *([1] * (prediction.ndim - 1)))
    soft = torch.sqrt((prediction - target) ** 2 + c**2) - c
    return 2 * c * soft if loss_type == "huber" else 2 * soft


def huber_threshold(
    settings: LossSettings, timesteps: torch.Tensor, train_timesteps: int, alphas_cumprod: torch.Tensor | None = None
) -> torch.Tensor:
    """Each sample's threshold c at its timestep (0 ... ``train_timesteps``), by the schedule."""
    c, scale = settings.huber_c, settings.huber_scale
    timesteps = timesteps.float()
    if settings.huber_schedule == "constant":
        return torch.full_like(timesteps, c * scale)
    if settings.huber_schedule == "exponential":
        alpha = -math.log(c) / train_timesteps
        return torch.exp(-alpha * timesteps) * scale
    if settings.huber_schedule == "snr" and alphas_cumprod is not None:
        alpha_bar = alphas_cumprod.to(timesteps.device)[timesteps.long()]
        sigmas = ((1.0 - alpha_bar) / alpha_bar) ** 0.5
        return (1 - c) / (1 + sigmas) ** 2 + c
    raise ValueError(f"huber_schedule {settings.huber_schedule!r} needs a DDPM noise schedule")


def all_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The signal-to-noise ratio alpha_bar / (1 - alpha_bar) of every timestep (sd-scripts' ``all_snr``)."""
    return alphas_cumprod / (1.0 - alphas_cumprod)


def capped_snr(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    return torch.clamp(all_snr(alphas_cumprod.float()).to(timesteps.device)[timesteps.long()], max=SNR_CAP)


def debiased_weights(snr: torch.Tensor, v_prediction: bool) -> torch.Tensor:
    """Debiased estimation: 1/sqrt(SNR) for a noise-predicting model, 1/(SNR + 1) for v-prediction."""
    return 1 / (snr + 1) if v_prediction else 1 / torch.sqrt(snr)


def noise_pred_like_scale(snr: torch.Tensor) -> torch.Tensor:
    """SNR / (SNR + 1): a v-prediction loss times this weighs timesteps as an epsilon loss does."""
    return snr / (snr + 1)


def with_v_pred_like_loss(loss: torch.Tensor, snr: torch.Tensor, amount: float) -> torch.Tensor:
    """An epsilon model's loss plus ``amount`` times its v-prediction-like counterpart (loss / scale)."""
    return loss + loss / noise_pred_like_scale(snr) * amount
