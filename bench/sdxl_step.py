"""SDXL engine seconds per step against a bare diffusers-style SDXL loop. Run: ``python bench/sdxl_step.py``.

The SDXL counterpart of ``bench/engine_step.py`` (read its docstring first: same clock, same
alternation, same medians, same 1.05 goal). What differs is the model and the recipe:

- Model: the built-in tiny SDXL-shaped model (``engine/tiny_sdxl.py``): two text encoders, the
  ``text_time`` addition embedding fed by the pooled text vector and the 6 size/crop time ids.
- Recipe: the usual SDXL LoRA one, U-Net only (``network.train_unet_only``), text encoder outputs
  computed once before training and the encoders moved off the device
  (``dataset.cache_text_encoder_outputs = "memory"``), latents cached in memory.
- Same step on both sides: latents sampled from cached VAE posteriors, noise, random timesteps,
  ``add_noise``, the cached text rows (TE1 penultimate ++ TE2 penultimate, TE2 pooled), the time
  ids of each image, UNet forward with ``added_cond_kwargs``, MSE, backward, clipping at 1.0,
  AdamW, cosine LR step, ``zero_grad``, ``loss.item()``.
- Same LoRA: the engine's ``find_targets`` + ``attach_lora`` on the UNet's transformer blocks,
  rank 8 / alpha 4; the trainable parameter counts are asserted equal.

The bare loop's time ids are those of a square 128 px crop (every sample image is square); the
engine computes them from each image's size and bucket. Their values do not change the work.

Options: ``--steps``, ``--warmup``, ``--rounds``, ``--threads``, ``--quick`` (as engine_step.py).
Results: docs/benchmarks.md. Exit status is always 0: this is a measurement, not a test.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/engine_step.py, however this is started
import engine_step  # noqa: E402
from engine_step import (  # noqa: E402
    ALPHA,
    BATCH_SIZE,
    MAX_GRAD_NORM,
    RANK,
    RESOLUTION,
    SAMPLE_IMAGES,
    SCHEDULER,
    SEED,
    UNET_LR,
    engine_config,
    measure,
    print_environment,
    repeats_of,
    report,
    sample_images,
)

from engine.lora import UNET_ATTENTION_BLOCKS, attach_lora, find_targets, lora_parameters  # noqa: E402


def sdxl_config(total_steps: int) -> dict:
    """engine_step.py's run, on the tiny SDXL with the SDXL recipe."""
    config = engine_config(total_steps)
    config["model"] = {"path": "loratui:tiny-sdxl", "family": "sdxl"}
    config["dataset"]["cache_text_encoder_outputs"] = "memory"
    config["network"]["train_unet_only"] = True
    config["optimizer"].update({"text_encoder_lr": 0.0, "text_encoder_2_lr": 0.0})
    return config


def run_engine(total_steps: int, warmup: int) -> tuple[list[float], int]:
    return engine_step.run_engine(total_steps, warmup, sdxl_config(total_steps))


def load_sdxl():
    """The tiny SDXL's parts, loaded the way diffusers' SDXL LoRA example loads a model."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from engine.tiny_sdxl import ensure_tiny_sdxl

    folder = ensure_tiny_sdxl()
    return (
        CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"),
        CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer_2"),
        CLIPTextModel.from_pretrained(folder, subfolder="text_encoder"),
        CLIPTextModelWithProjection.from_pretrained(folder, subfolder="text_encoder_2"),
        AutoencoderKL.from_pretrained(folder, subfolder="vae"),
        UNet2DConditionModel.from_pretrained(folder, subfolder="unet"),
        DDPMScheduler.from_pretrained(folder, subfolder="scheduler"),
    )


@torch.no_grad()
def encode_prompts(tokenizers, encoders, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """diffusers' SDXL example's encode_prompt: both penultimate states side by side, TE2's pooled."""
    states, pooled = [], None
    for tokenizer, encoder in zip(tokenizers, encoders, strict=True):
        ids = tokenizer(
            captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(encoder.device)
        output = encoder(ids, output_hidden_states=True)
        states.append(output.hidden_states[-2])
        pooled = output[0]  # the last encoder's: CLIPTextModelWithProjection's text_embeds
    return torch.cat(states, dim=-1), pooled


def run_baseline(total_steps: int, warmup: int) -> tuple[list[float], int]:
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
    from diffusers.optimization import get_scheduler

    from engine.train import pick_device  # the device the engine would train on: the same here

    device = pick_device()
    torch.manual_seed(SEED)
    tokenizer, tokenizer_2, text_encoder, text_encoder_2, vae, unet, noise_scheduler = load_sdxl()
    for model in (vae, text_encoder, text_encoder_2, unet):
        model.requires_grad_(False).to(device)
    attach_lora(unet, find_targets(unet, UNET_ATTENTION_BLOCKS, RANK, ALPHA))
    unet.train()
    params = lora_parameters(unet)
    optimizer = torch.optim.AdamW([{"params": params, "lr": UNET_LR}])
    lr_scheduler = get_scheduler(SCHEDULER, optimizer=optimizer, num_warmup_steps=0, num_training_steps=total_steps)

    images = sample_images(SAMPLE_IMAGES, RESOLUTION)
    with torch.no_grad():
        pixels = torch.stack([image for image, _ in images])
        posteriors = torch.cat([vae.encode(c.to(device)).latent_dist.parameters for c in pixels.split(BATCH_SIZE)])
    captions = [caption for _, caption in images]
    states, pooled = encode_prompts((tokenizer, tokenizer_2), (text_encoder, text_encoder_2), captions)
    square = [RESOLUTION, RESOLUTION, 0, 0, RESOLUTION, RESOLUTION]
    time_ids = torch.tensor([square] * len(images), dtype=torch.float32, device=device)
    repeats = repeats_of(next(p for p in SAMPLE_IMAGES.iterdir() if p.is_dir()).name)
    items_per_epoch = len(images) * repeats

    seconds: list[float] = []
    order: list[int] = []
    last_tick = time.perf_counter()
    for _ in range(total_steps):
        if len(order) < BATCH_SIZE:
            order = (torch.randperm(items_per_epoch) % len(images)).tolist()
        batch, order = order[:BATCH_SIZE], order[BATCH_SIZE:]
        latents = DiagonalGaussianDistribution(posteriors[batch]).sample() * vae.config.scaling_factor
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (BATCH_SIZE,), device=device).long()
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        added = {"text_embeds": pooled[batch], "time_ids": time_ids[batch]}
        prediction = unet(noisy, timesteps, states[batch], added_cond_kwargs=added).sample
        loss = F.mse_loss(prediction.float(), noise.float(), reduction="mean")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        now = time.perf_counter()
        seconds.append(now - last_tick)
        last_tick = now
    return seconds[warmup:], sum(p.numel() for p in params)


def main(argv: list[str] | None = None) -> int:
    args = engine_step.step_arguments(__doc__.splitlines()[0], argv)
    print_environment()
    print(
        f"tiny SDXL-shaped model, {RESOLUTION} px, batch {BATCH_SIZE}, LoRA rank {RANK} on the UNet only, "
        f"text outputs cached, fp32; {args.rounds} rounds x {args.total} steps, the first {args.warmup} dropped"
    )
    runs = {"engine": run_engine, "baseline": run_baseline}
    report(*measure(args.rounds, args.total, args.warmup, runs))
    return 0


if __name__ == "__main__":
    engine_step.run_measurement(main)
