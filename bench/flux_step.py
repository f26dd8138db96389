"""Flux engine seconds per step against a bare diffusers-style Flux loop. Run: ``python bench/flux_step.py``.

The FLUX.1 counterpart of ``bench/engine_step.py`` (read its docstring first: same clock, same
alternation, same medians, same 1.05 goal) and ``bench/sdxl_step.py``. What differs is the model,
the objective and the recipe:

- Model: the built-in tiny FLUX.1-dev-shaped model (``engine/tiny_flux.py``): a transformer with one
  double- and one single-stream block and a guidance embedding, CLIP-L for the pooled vector, T5 for
  the text states, a 16-channel AE with a shift and a scale.
- Recipe: the usual Flux LoRA one (sd-scripts' advice): the transformer only
  (``network.train_unet_only``), both text encoders' outputs computed once before training
  (``dataset.cache_text_encoder_outputs = "memory"``), latents cached in memory, T5 captions cut to
  ``T5_TOKENS`` tokens on both sides (``model.t5xxl_max_token_length``; 512 for dev by default, far
  more than the sample's captions need and slow on a CPU), ``timestep_sampling = "shift"`` with
  ``discrete_flow_shift = 3.1582``, ``model_prediction_type = "raw"``, ``guidance_scale = 1.0``.
- Same step on both sides, the bare one written in the manner of diffusers'
  ``examples/dreambooth/train_dreambooth_lora_flux.py``: a latent sampled from the cached VAE
  posterior, shifted and scaled ((z - shift_factor) x scaling_factor), noise, one sigma per image
  from ``engine.flow_matching.sample_sigmas`` with the engine's settings (so both sides draw the same
  kind of noise levels: the example's own draw is the "sigma" mode), x_sigma = (1 - sigma) x0 +
  sigma noise, packed into 2x2 patches (``FluxPipeline._pack_latents``) with their image ids, the
  transformer given sigma as its timestep, the guidance, CLIP-L's pooled vector, T5's states and
  zero text ids, its output unpacked, MSE against noise - x0, backward, clipping at 1.0, AdamW, cosine
  LR step, ``zero_grad``, ``loss.item()``.
- Same LoRA: the engine's ``find_targets`` + ``attach_lora`` on every Linear of the double- and
  single-stream blocks (``engine.flux_names.FLUX_BLOCKS``), rank 8 / alpha 4; the trainable parameter
  counts are asserted equal.

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

from engine.flow_matching import FlowSettings, packed_seq_len, sample_sigmas  # noqa: E402
from engine.flux_names import FLUX_BLOCKS  # noqa: E402
from engine.lora import attach_lora, find_targets, lora_parameters  # noqa: E402

T5_TOKENS = 32  # model.t5xxl_max_token_length on both sides: the sample's captions fit
# sd-scripts' advised Flux LoRA sampling, on both sides.
FLOW = FlowSettings(timestep_sampling="shift", discrete_flow_shift=3.1582, model_prediction_type="raw")
GUIDANCE_SCALE = 1.0


def flux_config(total_steps: int) -> dict:
    """engine_step.py's run, on the tiny Flux with the Flux recipe."""
    config = engine_config(total_steps)
    config["model"] = {"path": "loratui:tiny-flux", "family": "flux", "t5xxl_max_token_length": T5_TOKENS}
    config["dataset"]["cache_text_encoder_outputs"] = "memory"
    config["network"]["train_unet_only"] = True
    config["optimizer"].update({"text_encoder_lr": 0.0})
    config["training"].update(
        {
            "timestep_sampling": FLOW.timestep_sampling,
            "discrete_flow_shift": FLOW.discrete_flow_shift,
            "model_prediction_type": FLOW.model_prediction_type,
            "guidance_scale": GUIDANCE_SCALE,
        }
    )
    return config


def run_engine(total_steps: int, warmup: int) -> tuple[list[float], int]:
    return engine_step.run_engine(total_steps, warmup, flux_config(total_steps))


def load_flux():
    """The tiny Flux's parts, loaded the way diffusers' Flux LoRA example loads a model."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

    from engine.tiny_flux import ensure_tiny_flux

    folder = ensure_tiny_flux()
    return (
        CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"),
        T5TokenizerFast.from_pretrained(folder, subfolder="tokenizer_2"),
        CLIPTextModel.from_pretrained(folder, subfolder="text_encoder"),
        T5EncoderModel.from_pretrained(folder, subfolder="text_encoder_2"),
        AutoencoderKL.from_pretrained(folder, subfolder="vae"),
        FluxTransformer2DModel.from_pretrained(folder, subfolder="transformer"),
    )


@torch.no_grad()
def encode_prompts(tokenizers, encoders, captions: list[str], device) -> tuple[torch.Tensor, torch.Tensor]:
    """diffusers' Flux example's encode_prompt: CLIP-L's pooled output, T5's last hidden states."""
    clip_tokenizer, t5_tokenizer = tokenizers
    clip, t5 = encoders
    clip_ids = clip_tokenizer(
        captions, padding="max_length", max_length=clip_tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    pooled = clip(clip_ids.to(device)).pooler_output
    t5_ids = t5_tokenizer(
        captions, padding="max_length", max_length=T5_TOKENS, truncation=True, return_tensors="pt"
    ).input_ids
    return t5(t5_ids.to(device)).last_hidden_state, pooled


def run_baseline(total_steps: int, warmup: int) -> tuple[list[float], int]:
    from diffusers import FluxPipeline
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
    from diffusers.optimization import get_scheduler

    from engine.train import pick_device  # the device the engine would train on: the same here

    device = pick_device()
    torch.manual_seed(SEED)
    clip_tokenizer, t5_tokenizer, clip, t5, vae, transformer = load_flux()
    for model in (vae, clip, t5, transformer):
        model.requires_grad_(False).to(device)
    attach_lora(transformer, find_targets(transformer, FLUX_BLOCKS, RANK, ALPHA))
    transformer.train()
    params = lora_parameters(transformer)
    optimizer = torch.optim.AdamW([{"params": params, "lr": UNET_LR}])
    lr_scheduler = get_scheduler(SCHEDULER, optimizer=optimizer, num_warmup_steps=0, num_training_steps=total_steps)

    images = sample_images(SAMPLE_IMAGES, RESOLUTION)
    with torch.no_grad():
        pixels = torch.stack([image for image, _ in images])
        posteriors = torch.cat([vae.encode(c.to(device)).latent_dist.parameters for c in pixels.split(BATCH_SIZE)])
    captions = [caption for _, caption in images]
    t5_states, pooled = encode_prompts((clip_tokenizer, t5_tokenizer), (clip, t5), captions, device)
    text_ids = torch.zeros(t5_states.shape[1], 3, device=device)
    guidance = torch.tensor([GUIDANCE_SCALE], device=device).expand(BATCH_SIZE)
    shift, scale = vae.config.shift_factor, vae.config.scaling_factor
    vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
    repeats = repeats_of(next(p for p in SAMPLE_IMAGES.iterdir() if p.is_dir()).name)
    items_per_epoch = len(images) * repeats

    seconds: list[float] = []
    order: list[int] = []
    last_tick = time.perf_counter()
    for _ in range(total_steps):
        if len(order) < BATCH_SIZE:
            order = (torch.randperm(items_per_epoch) % len(images)).tolist()
        batch, order = order[:BATCH_SIZE], order[BATCH_SIZE:]
        latents = (DiagonalGaussianDistribution(posteriors[batch]).sample() - shift) * scale
        size, channels, height, width = latents.shape
        image_ids = FluxPipeline._prepare_latent_image_ids(size, height // 2, width // 2, device, latents.dtype)
        noise = torch.randn_like(latents)
        sigmas = sample_sigmas(FLOW, size, packed_seq_len(latents), device)
        sigma = sigmas.view(-1, 1, 1, 1)
        noisy = (1.0 - sigma) * latents + sigma * noise
        packed = FluxPipeline._pack_latents(noisy, size, channels, height, width)
        output = transformer(
            hidden_states=packed,
            timestep=sigmas,  # diffusers' transformer multiplies by 1000 itself (the example passes t / 1000)
            guidance=guidance,
            pooled_projections=pooled[batch],
            encoder_hidden_states=t5_states[batch],
            txt_ids=text_ids,
            img_ids=image_ids,
            return_dict=False,
        )[0]
        prediction = FluxPipeline._unpack_latents(output, height * vae_scale, width * vae_scale, vae_scale)
        loss = F.mse_loss(prediction.float(), (noise - latents).float(), reduction="mean")
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
        f"tiny FLUX.1-dev-shaped model, {RESOLUTION} px, batch {BATCH_SIZE}, LoRA rank {RANK} on the transformer "
        f"only, text outputs cached (T5 {T5_TOKENS} tokens), shift {FLOW.discrete_flow_shift} sampling, raw "
        f"prediction, guidance {GUIDANCE_SCALE}, fp32; {args.rounds} rounds x {args.total} steps, "
        f"the first {args.warmup} dropped"
    )
    runs = {"engine": run_engine, "baseline": run_baseline}
    report(*measure(args.rounds, args.total, args.warmup, runs))
    return 0


if __name__ == "__main__":
    engine_step.run_measurement(main)
