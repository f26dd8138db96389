"""Losses at fixed noise levels with fixed noise: the eval loss (a few training images, ``eval``
events) and the validation loss (every held-out image, never trained on: ``validation`` events).

Either is comparable between measurements, unlike the training loss, whose noise and timesteps
are drawn anew at every step. Measuring draws nothing from the training's random numbers: the
latents, noise and noise levels are drawn once, from a generator of their own, when the set is made.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from engine import data as data_mod
from loratui.dataset import ImageEntry

EVAL_IMAGES = 4
# How far toward pure noise each image is taken: timesteps 100..900 of 1000 (DDPM), sigmas 0.1..0.9 (Flux).
EVAL_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
EVAL_SEED = 1234
# The held-out set's own seed: its noise never depends on which training images the eval set took.
VALIDATION_SEED = 4321

# The training loss of one batch: (latents, its entries, timesteps, noise) -> mean loss.
LossFn = Callable[[torch.Tensor, list[ImageEntry], torch.Tensor, torch.Tensor], torch.Tensor]
# A fraction of EVAL_FRACTIONS -> the objective's noise level for one sample (base.Objective.eval_timesteps).
TimestepsFn = Callable[[float, torch.device], torch.Tensor]


class EvalSet:
    """Images with their latents, noise and noise levels drawn once from a fixed seed (on the CPU,
    so they are the same on every device).

    The eval set (the defaults): the first few non-regularisation images, one noise level each.
    The validation set (:meth:`validation`): every held-out image at every noise level, as
    sd-scripts measures its validation loss at a fixed list of timesteps.
    """

    def __init__(
        self,
        entries: list[ImageEntry],
        posterior: Callable[[list[ImageEntry]], torch.Tensor],
        to_latents: Callable[[torch.Tensor], torch.Tensor],
        timesteps: TimestepsFn,
        *,
        limit: int | None = EVAL_IMAGES,
        seed: int = EVAL_SEED,
        every_fraction: bool = False,
    ) -> None:
        generator = torch.Generator().manual_seed(seed)
        chosen = [e for e in entries if not e.is_reg][:limit]
        self.images = len(chosen)
        self.items: list[tuple[ImageEntry, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for index, entry in enumerate(chosen):
            params = posterior([entry])
            fractions = EVAL_FRACTIONS if every_fraction else (EVAL_FRACTIONS[index % len(EVAL_FRACTIONS)],)
            for fraction in fractions:
                latents = to_latents(data_mod.sample_latents(params.float().cpu(), generator))
                noise = torch.randn(latents.shape, generator=generator)
                timestep = timesteps(fraction, torch.device("cpu"))
                self.items.append((entry, latents, noise, timestep))

    @classmethod
    def validation(
        cls,
        held_out: list[ImageEntry],
        posterior: Callable[[list[ImageEntry]], torch.Tensor],
        to_latents: Callable[[torch.Tensor], torch.Tensor],
        timesteps: TimestepsFn,
    ) -> EvalSet:
        """Every held-out image, each at every one of EVAL_FRACTIONS."""
        return cls(held_out, posterior, to_latents, timesteps, limit=None, seed=VALIDATION_SEED, every_fraction=True)

    @torch.no_grad()
    def loss(self, loss_fn: LossFn, device: torch.device) -> float:
        losses = [
            loss_fn(latents.to(device), [entry], timestep.to(device), noise.to(device)).item()
            for entry, latents, noise, timestep in self.items
        ]
        return sum(losses) / max(1, len(losses))
