"""Rendering sample images with the model being trained, its LoRA attached and active.

Family-agnostic: a family builds its diffusers pipeline around the loaded parts on the family seam
(``Family.sample_pipeline``, ``sample_arguments`` and ``decode_sample`` in engine/families), without
copying a weight; this module picks the scheduler a sampler name means, runs the pipeline and writes
the PNG. Used by the trainer between steps (engine/sample_runs.py) and by the grid.

A render must leave training exactly as it found it:
- no random number is drawn from a global generator: the image's noise comes from a generator seeded
  with the prompt's seed, and torch's (CPU and CUDA), Python's and numpy's global states are put back
  afterwards anyway (a scheduler or a library may draw from them);
- every part is put in eval mode for the render (no dropout; transformers' gradient checkpointing is
  off in eval mode, diffusers' is off under no_grad) and back in the mode it was in afterwards;
- text encoders that left the accelerator once their outputs were cached come back for the render and
  leave again after it (see :meth:`Renderer._encoders_on_device` for what that costs).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from loratui.atomic import write_bytes_atomic

if TYPE_CHECKING:
    from PIL import Image

    from engine.families.base import Family
    from engine.model_loading import BaseModel
    from loratui.sample_prompts import SamplePrompt

# sd-scripts' --sample_sampler names (loratui.params.SAMPLERS) -> diffusers' scheduler class and the
# arguments sd-scripts gives it (library/train_util.py get_my_scheduler); k_* are aliases.
# flow_euler: FLUX.1's own flow-matching Euler, whatever sample.sampler says.
SCHEDULERS: dict[str, tuple[str, dict]] = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "k_lms": ("LMSDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "k_euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "k_euler_a": ("EulerAncestralDiscreteScheduler", {}),
    # diffusers refuses its default final_sigmas_type "zero" with the first-order solver
    "dpmsolver": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"}),
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpmsingle": ("DPMSolverSinglestepScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm_2": ("KDPM2DiscreteScheduler", {}),
    "k_dpm_2": ("KDPM2DiscreteScheduler", {}),
    "dpm_2_a": ("KDPM2AncestralDiscreteScheduler", {}),
    "k_dpm_2_a": ("KDPM2AncestralDiscreteScheduler", {}),
    "flow_euler": ("FlowMatchEulerDiscreteScheduler", {}),
}


class SamplingUnavailable(Exception):
    """This run's model cannot render samples in its configuration: one line saying why."""


def make_scheduler(sampler: str, training_scheduler):
    """A fresh scheduler for ``sampler`` made from the model's own scheduler config (its betas,
    prediction type, zero terminal SNR or flow shift), never the training scheduler object itself:
    ``set_timesteps`` changes a scheduler's state."""
    import diffusers

    if sampler not in SCHEDULERS:
        known = ", ".join(sorted(SCHEDULERS))
        raise ValueError(f"unknown sampler {sampler!r} (known: {known})")
    class_name, arguments = SCHEDULERS[sampler]
    try:
        scheduler_class = getattr(diffusers, class_name)
        return scheduler_class.from_config(training_scheduler.config, **arguments)
    except ImportError as exc:  # lms needs scipy, which loratui does not install
        missing = " ".join(str(exc).split()).split(" requires ")[-1].split(" but ")[0]
        raise ValueError(f"the {sampler} sampler requires {missing}; choose another sample.sampler") from exc


@contextlib.contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    """Everything inside may draw random numbers: torch's CPU and CUDA states, Python's and numpy's
    are as they were afterwards, so that training draws the same numbers as without it."""
    import numpy as np

    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):  # torch's CPU state and the CUDA device's
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


@dataclass
class Renderer:
    """Renders sample prompts with the model's parts as they are now (the LoRA at its scale)."""

    family: Family
    model: BaseModel
    device: torch.device
    weight_dtype: torch.dtype
    vae_dtype: torch.dtype

    def render(self, prompt: SamplePrompt) -> Image.Image:
        """One image of ``prompt``: its seed, size, steps, CFG and sampler; under no_grad and the
        training's autocast (the base weights may be half precision or fp8 while the LoRA is float32),
        the latents decoded outside it in the VAE's own dtype (model.no_half_vae)."""
        with preserved_rng(self.device), torch.no_grad(), self._eval_mode(), self._encoders_on_device():
            scheduler = make_scheduler(prompt.sampler, self.model.noise_scheduler)
            pipeline = self.family.sample_pipeline(self.model, scheduler)
            pipeline.set_progress_bar_config(disable=True)
            generator = torch.Generator(device="cpu").manual_seed(prompt.seed)  # the same image on any device
            with torch.autocast(self.device.type, dtype=self.weight_dtype, enabled=self._autocast):
                output = pipeline(
                    width=prompt.width,
                    height=prompt.height,
                    num_inference_steps=prompt.steps,
                    generator=generator,
                    output_type="latent",
                    **self.family.sample_arguments(prompt),
                )
            latents = output.images.to(self.device, self.vae_dtype)
            image = self.family.decode_sample(pipeline, latents, prompt)
            return pipeline.image_processor.postprocess(image.float(), output_type="pil")[0]

    @property
    def _autocast(self) -> bool:
        return self.weight_dtype != torch.float32

    def _modules(self) -> list[torch.nn.Module]:
        return [getattr(self.model, spec.attribute) for spec in self.family.parts]

    @contextlib.contextmanager
    def _eval_mode(self) -> Iterator[None]:
        modules = self._modules()
        modes = [module.training for module in modules]
        try:
            for module in modules:
                module.eval()
            yield
        finally:
            for module, mode in zip(modules, modes, strict=True):
                module.train(mode)

    @contextlib.contextmanager
    def _encoders_on_device(self) -> Iterator[None]:
        """Text encoders the trainer moved to CPU memory once their outputs were cached come to the
        accelerator for the render and go back after it. That costs a copy of their weights each
        way per render (FLUX.1's T5-XXL: 9.5 GB in bf16, a few seconds over PCIe) and their size in
        accelerator memory while the image renders; rendering them on the CPU instead would take far
        longer, and keeping them on the accelerator would cost that memory during every step."""
        moved = []
        try:
            for spec in self.family.parts:
                module = getattr(self.model, spec.attribute)
                if spec.denoiser or _on_device(module, self.device):
                    continue
                module.to(self.device)
                moved.append(module)
            yield
        finally:
            for module in moved:
                module.to("cpu")
            if moved and self.device.type == "cuda":
                torch.cuda.empty_cache()


def _on_device(module: torch.nn.Module, device: torch.device) -> bool:
    """Whether ``module``'s weights are on ``device`` ("cuda" and "cuda:0" being the same device here:
    a trained text encoder on the accelerator must never be sent to CPU memory after a render)."""
    parameter = next(module.parameters(), None)
    if parameter is None:
        return True
    held = parameter.device
    return held.type == device.type and (held.index or 0) == (device.index or 0)


def make_renderer(
    family: Family, model: BaseModel, device: torch.device, weight_dtype: torch.dtype, vae_dtype: torch.dtype
) -> Renderer:
    """A renderer over the loaded (and LoRA-carrying) model; SamplingUnavailable with one line when
    this configuration cannot render (the family has no pipeline, NF4 weights off a CUDA GPU)."""
    if not hasattr(family, "sample_pipeline"):
        raise SamplingUnavailable(f"sampling is not available for {family.name} models")
    return Renderer(family, model, torch.device(device), weight_dtype, vae_dtype)


# ------------------------------------------------------------------ PNG files
def save_sample_png(image: Image.Image, path: Path, facts: dict) -> Path:
    """Write ``image`` to ``path`` atomically as a PNG whose text chunks hold ``facts`` (each value
    as text: what the image is of, how and with what it was rendered; ``PIL.Image.open(path).text``
    reads them back). Returns the path."""
    import io

    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in facts.items():
        # iTXt (UTF-8) for text a Latin-1 tEXt chunk cannot hold, compressed when long (prompts can be)
        text = "" if value is None else str(value)
        if text.isascii() and len(text) < 1024:
            info.add_text(key, text)
        else:
            info.add_itxt(key, text, zip=len(text) >= 1024)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, buffer.getvalue())
    return path
