"""The FLUX.1 training objective: a rectified flow, as sd-scripts trains Flux LoRAs.

One step, for latents x0 (the AE's scaled and shifted latents) and Gaussian noise of their shape:

1. ``sample_sigmas``: one noise level sigma in (0, 1] per image, by ``training.timestep_sampling``;
2. ``noisy_input``: the transformer's input x_sigma = (1 - sigma) x0 + sigma noise (packed by the caller);
3. ``read_prediction``: the transformer's (unpacked) output read by ``training.model_prediction_type``;
4. ``flow_target``: what that reading is compared with, noise - x0 (the flow's velocity d x_sigma / d sigma),
   by mean squared error, for every prediction type;
5. ``loss_weights``: per-image loss weights, or None (only sigma_scaled weights the loss).

**What the transformer is given.** diffusers' FluxTransformer2DModel takes ``timestep=sigma`` (the float in
[0, 1]) and multiplies it by 1000 itself before its sinusoidal embedding; BFL's model does the same inside
``timestep_embedding`` (time factor 1000). sd-scripts keeps timesteps = 1000 sigma and passes timesteps / 1000,
so passing ``sigmas`` as they come from here is the same input. Its ``guidance`` (dev only) is likewise the plain
guidance scale (``training.guidance_scale``), multiplied by 1000 inside.

**The sampling modes** (sd-scripts' ``--timestep_sampling``; u ~ N(0, 1), s = sigmoid(sigmoid_scale u)):

- ``uniform``: sigma ~ U(0, 1); ``sigmoid``: sigma = s;
- ``shift``: sigma = k s / (1 + (k - 1) s), k = ``discrete_flow_shift``;
- ``flux_shift``: the same with k = e^mu, mu linear in the packed sequence length (256 -> 0.5, 4096 -> 1.15, not
  clamped), the shift FLUX.1's own sampler uses. sd-scripts writes it as e^mu / (e^mu + 1/s - 1), which is the
  same number. At 1024x1024 (4096 patches) k = e^1.15 = 3.1582, hence sd-scripts' advice ``shift`` with 3.1582;
- ``sigma`` (sd-scripts' default): u from diffusers' ``compute_density_for_timestep_sampling`` by
  ``weighting_scheme`` (logit_normal, mode; anything else uniform), index = floor(1000 u), sigma = that entry of a
  FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=discrete_flow_shift)'s sigma table, which is
  k i / (1 + (k - 1) i) for i = 1000/1000 ... 1/1000. So ``discrete_flow_shift`` shifts this mode too. The table
  is built here as sd-scripts builds it, not taken from the model's scheduler (FLUX.1-dev's scheduler config has
  ``use_dynamic_shifting``, whose table is not shifted at all). The table runs from sigma 1 down, so a high u is a
  LOW noise level: a positive ``logit_mean`` favours clean images here, as in sd-scripts and diffusers, though the
  SD3 paper's t = sigmoid(u) favours noise with it.

**The prediction types** (sd-scripts' ``--model_prediction_type``): ``raw`` is the output itself, ``additive``
the output plus x_sigma, ``sigma_scaled`` x_sigma - sigma output. With the target noise - x0 in all three, only
``raw`` makes a velocity-predicting model (what FLUX.1 is) exact: for a perfect velocity v, x_sigma - sigma v = x0,
SD3's "denoised" reading, which sd-scripts pairs with target x0 in sd3_train_network.py but not in
flux_train_network.py. This module keeps sd-scripts' Flux pairing, since runs should match sd-scripts' and kohya
configs import as they are; its docs (docs/flux_train_network.md) recommend ``raw``. Only ``sigma_scaled``
weights the loss, by diffusers' ``compute_loss_weighting_for_sd3``: sigma_sqrt 1/sigma^2, cosmap
2 / (pi (1 - 2 sigma + 2 sigma^2)), any other scheme 1 (so with sigma_scaled the scheme both draws the noise
levels in ``sigma`` mode and weights the loss, as in sd-scripts).

**The eval loss** uses fixed noise levels instead of drawn ones: the EvalSet's fractions 0.1 ... 0.9 are the
sigmas themselves, unshifted (``eval_sigmas``).

**Checked against** kohya-ss/sd-scripts @48d368fa: library/flux_train_utils.py (``time_shift``,
``get_lin_function``, ``get_sigmas``, ``get_noisy_model_input_and_timesteps``, ``apply_model_prediction_type``),
flux_train_network.py (scheduler built with shift=discrete_flow_shift, target noise - latents, timesteps / 1000 to
the model), train_network.py (loss times weighting, then the mean per image), library/sd3_train_utils.py (its
FlowMatchEulerDiscreteScheduler copy builds the same table as diffusers'); huggingface/diffusers @58eb52c0 and the
installed release: src/diffusers/training_utils.py (the two functions used here; sd-scripts keeps its own copies
of them, the same formulas), schedulers/scheduling_flow_match_euler_discrete.py,
models/transformers/transformer_flux.py (timestep and guidance times 1000),
examples/dreambooth/train_dreambooth_lora_flux.py.

**Where sd-scripts and diffusers differ.** diffusers' Flux LoRA script has only the ``sigma`` mode, over the
model's own scheduler (for FLUX.1-dev an unshifted table), never reinterprets the output (``raw``), applies the
weighting scheme's loss weights whatever it samples by, and defaults to ``weighting_scheme`` none; sd-scripts
weights only with sigma_scaled and defaults to ``uniform``.

**Where this module differs from sd-scripts, on purpose:** noise levels are drawn on the CPU (from ``generator``
when given) and then moved, so a seed gives the same levels on every device; sigma-mode levels stay float32
(sd-scripts rounds them to the weight dtype, bf16, in ``get_sigmas``); sigma-mode indices are clamped to the
table, where sd-scripts fails when u reaches 1 (float32's sigmoid of a logit_normal draw above about 17, a mode
draw of exactly 0: IndexError) or leaves [0, 1] (a mode_scale outside SD3's [-1, 1.75]: above 1 IndexError, below 0
a negative index that wraps to the table's other end); and every level is at least 1/1000, the unshifted table's
smallest, where sd-scripts can draw 0 (uniform) or underflow to 0 (a large sigmoid_scale), which makes sigma_sqrt
weights infinite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from loratui.params import MODEL_PREDICTION_TYPES, TIMESTEP_SAMPLINGS

TRAIN_TIMESTEPS = 1000  # sd-scripts' FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, ...)
# The smallest noise level drawn: the unshifted 1000-step table's smallest entry.
SIGMA_FLOOR = 1.0 / TRAIN_TIMESTEPS
# FLUX.1's resolution-dependent shift: mu is linear in the packed sequence length through these two points
# (BFL's sampler and sd-scripts' get_lin_function defaults; diffusers' base/max_image_seq_len, base/max_shift).
BASE_SEQ_LEN, BASE_MU = 256, 0.5
MAX_SEQ_LEN, MAX_MU = 4096, 1.15


@dataclass(frozen=True)
class FlowSettings:
    """The [training] settings the Flux objective reads (loratui.params, sd-scripts' names)."""

    timestep_sampling: str = "sigma"
    sigmoid_scale: float = 1.0
    discrete_flow_shift: float = 3.0
    model_prediction_type: str = "sigma_scaled"
    weighting_scheme: str = "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    mode_scale: float = 1.29

    def __post_init__(self) -> None:
        # The config has already been checked against the same choices; this catches a caller's slip.
        if self.timestep_sampling not in TIMESTEP_SAMPLINGS:
            raise ValueError(f"timestep_sampling {self.timestep_sampling!r} is not one of {TIMESTEP_SAMPLINGS}")
        if self.model_prediction_type not in MODEL_PREDICTION_TYPES:
            raise ValueError(
                f"model_prediction_type {self.model_prediction_type!r} is not one of {MODEL_PREDICTION_TYPES}"
            )

    @classmethod
    def from_config(cls, cfg) -> FlowSettings:
        """The settings of a loratui.config.RunConfig."""
        training = cfg.training
        return cls(
            timestep_sampling=training.timestep_sampling,
            sigmoid_scale=float(training.sigmoid_scale),
            discrete_flow_shift=float(training.discrete_flow_shift),
            model_prediction_type=training.model_prediction_type,
            weighting_scheme=training.weighting_scheme,
            logit_mean=float(training.logit_mean),
            logit_std=float(training.logit_std),
            mode_scale=float(training.mode_scale),
        )


# --------------------------------------------------------------------------- noise levels


def packed_seq_len(latents: torch.Tensor) -> int:
    """The transformer's image sequence length for latents (B, C, h, w): one token per 2x2 latent patch."""
    return (latents.shape[-2] // 2) * (latents.shape[-1] // 2)


def flux_mu(image_seq_len: int) -> float:
    """FLUX.1's log-shift for an image of ``image_seq_len`` packed tokens (linear, extrapolated past 4096)."""
    slope = (MAX_MU - BASE_MU) / (MAX_SEQ_LEN - BASE_SEQ_LEN)
    return BASE_MU + slope * (image_seq_len - BASE_SEQ_LEN)


def shifted(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """Noise levels moved toward 1 by ``shift`` (1 leaves them; 0 and 1 stay put)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


@lru_cache(maxsize=8)
def schedule_sigmas(shift: float) -> torch.Tensor:
    """The sigma table of FlowMatchEulerDiscreteScheduler(1000 steps, shift), from 1 down to the smallest
    (cached and shared: index it, do not modify it)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    table = FlowMatchEulerDiscreteScheduler(num_train_timesteps=TRAIN_TIMESTEPS, shift=shift).sigmas
    return table.to(torch.float32).clone()


def sample_sigmas(
    settings: FlowSettings,
    batch: int,
    image_seq_len: int,
    device: torch.device | str,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One noise level per image, (batch,) float32 in (0, 1] on ``device``.

    ``image_seq_len`` (``packed_seq_len(latents)``) matters only to flux_shift. The draws are made on the
    generator's device (CPU without one), so a seeded CPU generator gives the same levels on every device.
    """
    draw_on = generator.device if generator is not None else torch.device("cpu")
    mode = settings.timestep_sampling
    if mode == "sigma":
        sigmas = _sigmas_from_schedule(settings, batch, draw_on, generator)
    elif mode == "uniform":
        sigmas = torch.rand(batch, device=draw_on, generator=generator)
    else:
        normal = torch.randn(batch, device=draw_on, generator=generator)
        sigmas = torch.sigmoid(settings.sigmoid_scale * normal)
        if mode == "shift":
            sigmas = shifted(sigmas, settings.discrete_flow_shift)
        elif mode == "flux_shift":
            sigmas = shifted(sigmas, math.exp(flux_mu(image_seq_len)))
    return sigmas.float().clamp(SIGMA_FLOOR, 1.0).to(device)


def _sigmas_from_schedule(
    settings: FlowSettings, batch: int, draw_on: torch.device, generator: torch.Generator | None
) -> torch.Tensor:
    """sd-scripts' "sigma" mode: table entries picked by the weighting scheme's density."""
    from diffusers.training_utils import compute_density_for_timestep_sampling

    density = compute_density_for_timestep_sampling(
        weighting_scheme=settings.weighting_scheme,
        batch_size=batch,
        logit_mean=settings.logit_mean,
        logit_std=settings.logit_std,
        mode_scale=settings.mode_scale,
        device=draw_on,
        generator=generator,
    )
    # floor(1000 u) as sd-scripts; clamped because u can reach 1 (or leave [0, 1] with a large mode_scale).
    indices = (density * TRAIN_TIMESTEPS).long().clamp(0, TRAIN_TIMESTEPS - 1)
    return schedule_sigmas(settings.discrete_flow_shift)[indices.cpu()]


def eval_sigmas(fraction: float) -> float:
    """The eval loss's fixed noise level at ``fraction`` of the way to pure noise: the fraction itself.

    It is not shifted: the eval images sit at the same levels whatever the sampling settings, so eval losses
    stay comparable between runs that sample differently (DDPM families: timestep = fraction x 1000).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"an eval noise level is in (0, 1], not {fraction}")
    return float(fraction)


# --------------------------------------------------------------------------- input, target, prediction


def _per_image(sigmas: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) noise levels shaped to broadcast over one image each of ``like`` (B, C, H, W)."""
    return sigmas.reshape(-1, *([1] * (like.ndim - 1))).to(like.device)


def noisy_input(latents: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """The point sigma of the straight path from the latents (sigma 0) to the noise (sigma 1)."""
    sigma = _per_image(sigmas, latents)
    return (1 - sigma) * latents + sigma * noise


def flow_target(latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The path's velocity, d noisy_input / d sigma: what the transformer learns to predict."""
    return noise - latents


def read_prediction(
    settings: FlowSettings, output: torch.Tensor, noisy: torch.Tensor, sigmas: torch.Tensor
) -> torch.Tensor:
    """The transformer's output (unpacked to the latents' shape) as compared with ``flow_target``.

    ``noisy`` is the input the transformer was given, ``sigmas`` its (B,) noise levels.
    """
    kind = settings.model_prediction_type
    if kind == "additive":
        return output + noisy
    if kind == "sigma_scaled":
        return noisy - _per_image(sigmas, output) * output
    return output


def loss_weights(settings: FlowSettings, sigmas: torch.Tensor) -> torch.Tensor | None:
    """Per-image loss weights, (B,) float32, for sigma_scaled only; None otherwise (unweighted).

    A weight is constant over its image, so weighting each image's mean squared error is the same as
    sd-scripts' weighting of every element before the mean.
    """
    if settings.model_prediction_type != "sigma_scaled":
        return None
    from diffusers.training_utils import compute_loss_weighting_for_sd3

    return compute_loss_weighting_for_sd3(settings.weighting_scheme, sigmas.float()).float()
