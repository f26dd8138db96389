"""The DDPM training objective shared by the UNet families (SD 1.x/2.x, SDXL).

Noise is added at random timesteps by the model's own noise schedule; the denoiser learns the
noise (epsilon models) or the velocity (v-prediction models), by mean squared error, optionally
weighted per sample by min-SNR. (Flux trains a rectified flow instead: engine/families/flux.py.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def noise_like(latents: torch.Tensor, offset: float) -> torch.Tensor:
    """Gaussian noise for ``latents``; with an ``offset`` (offset noise), a per-channel constant is
    added so that the model can learn very dark or very bright images."""
    noise = torch.randn_like(latents)
    if offset:
        noise += offset * torch.randn(latents.shape[0], latents.shape[1], 1, 1, device=latents.device)
    return noise


def random_timesteps(scheduler, latents: torch.Tensor) -> torch.Tensor:
    steps = scheduler.config.num_train_timesteps
    return torch.randint(0, steps, (latents.shape[0],), device=latents.device).long()


def noisy_and_target(
    scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The denoiser's input, and what it should predict from it."""
    noisy = scheduler.add_noise(latents, noise, timesteps)
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


class DenoisingObjective:
    """The UNet families' objective (engine/families/base.py's Objective): DDPM noise at integer
    timesteps of the model's own schedule, an epsilon or velocity target, mean squared error with
    optional min-SNR weights."""

    def __init__(self, scheduler, noise_offset: float, min_snr_gamma: float) -> None:
        self.scheduler = scheduler
        self.noise_offset = noise_offset
        self.min_snr_gamma = min_snr_gamma

    def noise(self, latents: torch.Tensor) -> torch.Tensor:
        return noise_like(latents, self.noise_offset)

    def draw_timesteps(self, latents: torch.Tensor) -> torch.Tensor:
        return random_timesteps(self.scheduler, latents)

    def eval_timesteps(self, fraction: float, device: torch.device) -> torch.Tensor:
        return torch.tensor([round(fraction * self.scheduler.config.num_train_timesteps)], device=device)

    def noisy_and_target(
        self, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return noisy_and_target(self.scheduler, latents, noise, timesteps)

    def loss(
        self, prediction: torch.Tensor, target: torch.Tensor, noisy: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        loss = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        if self.min_snr_gamma > 0:
            loss = loss * min_snr_weights(self.scheduler, timesteps, self.min_snr_gamma)
        return loss
