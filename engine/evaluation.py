"""The eval loss: a few training images at fixed timesteps with fixed noise.

Its loss is comparable between measurements, unlike the training loss, whose noise and timesteps
are drawn anew at every step; the dashboard plots it once per epoch (``eval`` events).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from engine import data as data_mod
from loratui.dataset import ImageEntry

EVAL_IMAGES = 4
EVAL_TIMESTEPS = (100, 300, 500, 700, 900)
EVAL_SEED = 1234

# The training loss of one batch: (latents, its entries, timesteps, noise) -> mean loss.
LossFn = Callable[[torch.Tensor, list[ImageEntry], torch.Tensor, torch.Tensor], torch.Tensor]


class EvalSet:
    """The first few non-regularisation images of the run, each with its latents, noise and timestep
    drawn once from a fixed seed (on the CPU, so they are the same on every device)."""

    def __init__(
        self, entries: list[ImageEntry], posterior: Callable[[list[ImageEntry]], torch.Tensor], scaling_factor: float
    ) -> None:
        generator = torch.Generator().manual_seed(EVAL_SEED)
        chosen = [e for e in entries if not e.is_reg][:EVAL_IMAGES]
        self.items: list[tuple[ImageEntry, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for index, entry in enumerate(chosen):
            params = posterior([entry])
            latents = data_mod.sample_latents(params.float().cpu(), generator) * scaling_factor
            noise = torch.randn(latents.shape, generator=generator)
            timestep = torch.tensor([EVAL_TIMESTEPS[index % len(EVAL_TIMESTEPS)]])
            self.items.append((entry, latents, noise, timestep))

    @torch.no_grad()
    def loss(self, loss_fn: LossFn, device: torch.device) -> float:
        losses = [
            loss_fn(latents.to(device), [entry], timestep.to(device), noise.to(device)).item()
            for entry, latents, noise, timestep in self.items
        ]
        return sum(losses) / max(1, len(losses))
