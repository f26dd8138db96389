"""The DDPM training objective shared by the UNet families (SD 1.x/2.x, SDXL).

Noise (engine/noise.py: offset, multires, input perturbation) is added at random timesteps of the
model's own noise schedule, drawn in [training.min_timestep, training.max_timestep); the denoiser
learns the noise (epsilon models) or the velocity (v-prediction models), by training.loss_type
(engine/losses.py), each sample's loss then weighted by the SNR-based options in sd-scripts' order:
min-SNR, v-prediction scaled like noise prediction, the v-prediction-like loss added, debiased
estimation. (Flux trains a rectified flow instead: engine/families/flux.py.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine import losses
from engine.noise import NoiseSettings, perturbed, training_noise


def random_timesteps(latents: torch.Tensor, first: int, end: int) -> torch.Tensor:
    """One timestep per image in [first, end) (sd-scripts' get_timesteps; the check keeps first < end)."""
    return torch.randint(first, end, (latents.shape[0],), device=latents.device).long()


def noisy_and_target(
    scheduler,
    latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    input_noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The denoiser's input, and what it should predict from it: the input made with ``input_noise``
    when given (input perturbation), the target always with ``noise``."""
    noisy = scheduler.add_noise(latents, noise if input_noise is None else input_noise, timesteps)
    if scheduler.config.prediction_type == "v_prediction":
        return noisy, scheduler.get_velocity(latents, noise, timesteps)
    return noisy, noise


def with_zero_terminal_snr(scheduler):
    """The schedule with its betas rescaled so that the last timestep is pure noise (signal-to-noise
    ratio zero: "Common Diffusion Noise Schedules and Sample Steps are Flawed"), as sd-scripts'
    --zero_terminal_snr does; meant for v-prediction models trained that way. A scheduler whose
    config already rescales is kept as it is."""
    from diffusers import DDPMScheduler

    if scheduler.config.get("rescale_betas_zero_snr"):
        return scheduler
    return DDPMScheduler.from_config(scheduler.config, rescale_betas_zero_snr=True)


def min_snr_weights(scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weights: easy (low-noise) timesteps count less."""
    from diffusers.training_utils import compute_snr

    snr = compute_snr(scheduler, timesteps)
    if scheduler.config.prediction_type == "v_prediction":
        return (torch.clamp(snr, max=gamma) / (snr + 1)).float()
    # min(snr, gamma) / snr is 1 for every snr below gamma; at a zero terminal SNR it is 0 / 0,
    # whose limit, 1, is taken instead of a NaN that would end the run.
    weights = torch.clamp(snr, max=gamma) / snr
    return torch.where(snr > 0, weights, torch.ones_like(weights)).float()


@dataclass(frozen=True)
class DenoisingSettings:
    """The [training] settings of the UNet families' objective (loratui.params, sd-scripts' names)."""

    noise: NoiseSettings = NoiseSettings()
    loss: losses.LossSettings = losses.LossSettings()
    min_timestep: int = 0
    max_timestep: int = 1000
    min_snr_gamma: float = 0.0
    scale_v_pred_loss_like_noise_pred: bool = False
    v_pred_like_loss: float = 0.0
    debiased_estimation_loss: bool = False

    @classmethod
    def from_config(cls, cfg) -> DenoisingSettings:
        """The settings of a loratui.config.RunConfig."""
        training = cfg.training
        return cls(
            noise=NoiseSettings.from_config(cfg),
            loss=losses.LossSettings.from_config(cfg),
            min_timestep=int(training.min_timestep),
            max_timestep=int(training.max_timestep),
            min_snr_gamma=float(training.min_snr_gamma),
            scale_v_pred_loss_like_noise_pred=bool(training.scale_v_pred_loss_like_noise_pred),
            v_pred_like_loss=float(training.v_pred_like_loss),
            debiased_estimation_loss=bool(training.debiased_estimation_loss),
        )


class DenoisingObjective:
    """The UNet families' objective (engine/families/base.py's Objective): DDPM noise at integer
    timesteps of the model's own schedule, an epsilon or velocity target, the loss by
    ``settings.loss`` with the SNR-based weights the settings switch on."""

    def __init__(self, scheduler, settings: DenoisingSettings) -> None:
        self.scheduler = scheduler
        self.settings = settings
        self.v_prediction = scheduler.config.prediction_type == "v_prediction"

    def noise(self, latents: torch.Tensor) -> torch.Tensor:
        return training_noise(latents, self.settings.noise)

    def input_noise(self, noise: torch.Tensor) -> torch.Tensor:
        """The noise the denoiser's input is made with (input perturbation); the target keeps ``noise``."""
        return perturbed(noise, self.settings.noise)

    def draw_timesteps(self, latents: torch.Tensor) -> torch.Tensor:
        return random_timesteps(latents, self.settings.min_timestep, self.settings.max_timestep)

    def eval_timesteps(self, fraction: float, device: torch.device) -> torch.Tensor:
        return torch.tensor([round(fraction * self.scheduler.config.num_train_timesteps)], device=device)

    def noisy_and_target(
        self,
        latents: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        input_noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return noisy_and_target(self.scheduler, latents, noise, timesteps, input_noise)

    def loss(
        self, prediction: torch.Tensor, target: torch.Tensor, noisy: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        loss_settings = self.settings.loss
        threshold = self._huber_threshold(timesteps) if loss_settings.needs_threshold else None
        elementwise = losses.elementwise_loss(prediction.float(), target.float(), loss_settings.loss_type, threshold)
        return self._weighted(elementwise.mean(dim=tuple(range(1, elementwise.ndim))), timesteps)

    def _huber_threshold(self, timesteps: torch.Tensor) -> torch.Tensor:
        steps = self.scheduler.config.num_train_timesteps
        return losses.huber_threshold(self.settings.loss, timesteps, steps, self.scheduler.alphas_cumprod)

    def _weighted(self, loss: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Each sample's loss times the SNR-based weights, in sd-scripts' order (post_process_loss)."""
        settings = self.settings
        if settings.min_snr_gamma > 0:
            loss = loss * min_snr_weights(self.scheduler, timesteps, settings.min_snr_gamma)
        snr_weighted = settings.scale_v_pred_loss_like_noise_pred or settings.v_pred_like_loss
        if not (snr_weighted or settings.debiased_estimation_loss):
            return loss
        snr = losses.capped_snr(self.scheduler.alphas_cumprod, timesteps)
        if settings.scale_v_pred_loss_like_noise_pred:
            loss = loss * losses.noise_pred_like_scale(snr)
        if settings.v_pred_like_loss:
            loss = losses.with_v_pred_like_loss(loss, snr, settings.v_pred_like_loss)
        if settings.debiased_estimation_loss:
            loss = loss * losses.debiased_weights(snr, self.v_prediction)
        return loss
