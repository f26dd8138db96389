"""The noise a UNet family's training step adds, as sd-scripts draws it (library/train_util.py
``get_noise_noisy_latents_and_timesteps``, library/custom_train_functions.py ``apply_noise_offset`` and
``pyramid_noise_like``):

1. Gaussian noise of the latents' shape;
2. with training.noise_offset, a per-image, per-channel constant on top (offset noise), its strength
   drawn in [0, offset) each step with noise_offset_random_strength, and raised by adaptive_noise_scale
   times the channel's absolute mean latent;
3. with training.multires_noise_iterations, coarser and coarser noise layers added (pyramid noise), the
   sum scaled back to unit standard deviation. sd-scripts applies both 2 and 3 when both are set (its
   rule that they exclude each other is commented out), in this order; so does this module.

Input perturbation (training.ip_noise_gamma) is extra noise in the denoiser's input only: the target
is still made from the noise of 1-3 (``perturbed``).

Every random number comes from torch (sd-scripts draws pyramid noise's per-layer scale factor from
Python's ``random``): one generator, saved and restored with a run's state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class NoiseSettings:
    """The [training] settings of the noise (loratui.params, sd-scripts' names); 0 is off."""

    offset: float = 0.0
    offset_random_strength: bool = False
    adaptive_scale: float = 0.0
    multires_iterations: int = 0
    multires_discount: float = 0.3
    ip_gamma: float = 0.0
    ip_random_strength: bool = False

    @classmethod
    def from_config(cls, cfg) -> NoiseSettings:
        """The settings of a loratui.config.RunConfig."""
        training = cfg.training
        return cls(
            offset=float(training.noise_offset),
            offset_random_strength=bool(training.noise_offset_random_strength),
            adaptive_scale=float(training.adaptive_noise_scale),
            multires_iterations=int(training.multires_noise_iterations),
            multires_discount=float(training.multires_noise_discount),
            ip_gamma=float(training.ip_noise_gamma),
            ip_random_strength=bool(training.ip_noise_gamma_random_strength),
        )


def training_noise(latents: torch.Tensor, settings: NoiseSettings) -> torch.Tensor:
    """The noise of one training step for ``latents`` (B, C, H, W): steps 1-3 above."""
    noise = torch.randn_like(latents)
    if settings.offset:
        strength = _strength(settings.offset, settings.offset_random_strength, latents.device)
        noise = with_offset(latents, noise, strength, settings.adaptive_scale)
    if settings.multires_iterations:
        noise = pyramid_noise(noise, settings.multires_iterations, settings.multires_discount)
    return noise


def with_offset(
    latents: torch.Tensor, noise: torch.Tensor, strength: float | torch.Tensor, adaptive_scale: float
) -> torch.Tensor:
    """Offset noise: a Gaussian constant per image and channel, times ``strength``; with an
    ``adaptive_scale``, the strength of each channel is raised by that times the channel's absolute
    mean latent (clamped at 0: the scale may be negative)."""
    if adaptive_scale:
        channel_mean = latents.mean(dim=(2, 3), keepdim=True).abs()
        strength = torch.clamp(strength + adaptive_scale * channel_mean, min=0.0)
    constant = torch.randn(latents.shape[0], latents.shape[1], 1, 1, device=latents.device)
    return noise + strength * constant


def pyramid_noise(noise: torch.Tensor, iterations: int, discount: float) -> torch.Tensor:
    """Multi-resolution noise: ``iterations`` layers of Gaussian noise, layer i drawn at 1/r^i of the
    size (r uniform in [2, 4) each layer, at least 1x1), upsampled bilinearly and weighted by
    ``discount``^i, added to ``noise``; stops after the first 1-pixel-wide layer. The sum is divided by
    its standard deviation over the whole batch, as sd-scripts does."""
    batch, channels, height, width = noise.shape
    total = noise
    for level in range(iterations):
        ratio = float(torch.rand(()) * 2 + 2) ** level
        small_h, small_w = max(1, int(height / ratio)), max(1, int(width / ratio))
        layer = torch.randn(batch, channels, small_h, small_w, device=noise.device, dtype=noise.dtype)
        upsampled = F.interpolate(layer, size=(height, width), mode="bilinear", align_corners=False)
        total = total + upsampled * discount**level
        if small_h == 1 or small_w == 1:
            break
    return total / total.std()


def perturbed(noise: torch.Tensor, settings: NoiseSettings) -> torch.Tensor:
    """The noise the denoiser's input is made with: with input perturbation (ip_noise_gamma), ``noise``
    plus gamma times fresh Gaussian noise (gamma drawn in [0, ip_noise_gamma) with its random strength);
    else ``noise`` itself."""
    if not settings.ip_gamma:
        return noise
    strength = _strength(settings.ip_gamma, settings.ip_random_strength, noise.device)
    return noise + strength * torch.randn_like(noise)


def _strength(value: float, random_strength: bool, device: torch.device) -> float | torch.Tensor:
    """``value``, or one draw in [0, value) for the whole batch (sd-scripts' random strength)."""
    return torch.rand(1, device=device) * value if random_strength else value
