"""The eval loss: a few training images at fixed noise levels with fixed noise.

Its loss is comparable between measurements, unlike the training loss, whose noise and timesteps
are drawn anew at every step; the dashboard plots it once per epoch (``eval`` events).
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

# The training loss of one batch: (latents, its entries, timesteps, noise) -> mean loss.
LossFn = Callable[[torch.Tensor, list[ImageEntry], torch.Tensor, torch.Tensor], torch.Tensor]
# A fraction of EVAL_FRACTIONS -> the objective's noise level for one sample (base.Objective.eval_timesteps).
TimestepsFn = Callable[[float, torch.device], torch.Tensor]


class EvalSet:
    """The first few non-regularisation images of the run, each with its latents, noise and noise
    level drawn once from a fixed seed (on the CPU, so they are the same on every device)."""

    def __init__(
        self,
        entries: list[ImageEntry],
        posterior: Callable[[list[ImageEntry]], torch.Tensor],
        to_latents: Callable[[torch.Tensor], torch.Tensor],
        timesteps: TimestepsFn,
    ) -> None:
        generator = torch.Generator().manual_seed(EVAL_SEED)
        chosen = [e for e in entries if not e.is_reg][:EVAL_IMAGES]
        self.items: list[tuple[ImageEntry, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for index, entry in enumerate(chosen):
            params = posterior([entry])
            latents = to_latents(data_mod.sample_latents(params.float().cpu(), generator))
            noise = torch.randn(latents.shape, generator=generator)
            timestep = timesteps(EVAL_FRACTIONS[index % len(EVAL_FRACTIONS)], torch.device("cpu"))
            self.items.append((entry, latents, noise, timestep))

    @torch.no_grad()
    def loss(self, loss_fn: LossFn, device: torch.device) -> float:
        losses = [
            loss_fn(latents.to(device), [entry], timestep.to(device), noise.to(device)).item()
            for entry, latents, noise, timestep in self.items
        ]
        return sum(losses) / max(1, len(losses))
