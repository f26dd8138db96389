"""The training run: load, prepare, loop, save. Read it top to bottom.

One step: take a batch of latents (cached or freshly encoded), add noise at random noise levels,
let the denoiser (with LoRA) predict its target, and minimise the mean squared error: the UNet
families predict the noise (or the velocity, for v-prediction models), optionally weighted by
min-SNR (engine/diffusion.py); Flux's transformer the flow (engine/families/flux.py). The LoRA
on a text encoder trains too when its learning rate is above zero and network.train_unet_only is
off; a frozen encoder's outputs are computed once per caption (engine/text_cache.py).

Everything that depends on the model family (its parts, their kohya prefixes, text encoding, the
denoiser's conditioning, its metadata) comes from ``self.family`` (engine/families).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
import uuid
from pathlib import Path

import torch

from engine import data as data_mod
from engine import low_precision
from engine.block_swap import checkpoint_offload, place_with_block_swap
from engine.commands import CommandHandling
from engine.control import ControlChannel
from engine.evaluation import EvalSet
from engine.events import EventWriter
from engine.families import family_for
from engine.families.base import Part, PartSpec, TextRows
from engine.lora import (
    LoraMismatch,
    apply_max_norm,
    attach_lora,
    find_targets,
    lora_parameters,
    lycoris_targets,
    widest_targets,
)
from engine.lycoris_network import attach_lycoris, dropouts_off
from engine.metadata import RunFacts, new_session_id
from engine.model_loading import BaseModel, weight_dtype
from engine.optim import current_lrs, make_optimizer, make_scheduler
from engine.sample_runs import Sampling
from engine.sampling import preserved_rng
from engine.saving import Saving, load_state_weights
from engine.spill_watch import SpillWatch
from engine.state import Progress, load_training_state, read_lora_weights, read_progress
from engine.text_cache import TextEncoding, encoder_identity, tokenizer_identity
from loratui import captions, families, preflight
from loratui.check import CheckResult, check_run
from loratui.config import RunConfig, config_to_dict
from loratui.dataset import ImageEntry
from loratui.errors import UserError
from loratui.optimizer_args import canonical_optimizer, parse_optimizer_args, parse_scheduler_args, warmup_steps_for
from loratui.outputs import clean_interrupted_saves, epoch_stem, final_stem, state_folder, step_stem
from loratui.params import LYCORIS_TYPES
from loratui.save_plan import saves_step_file

log = logging.getLogger("engine.train")

MEMORY_EVERY_STEPS = 20


class StopFlag:
    """Set by a signal handler or a ``stop`` command; checked after every step. The first reason
    stays (a full events disk, then a SIGTERM, is still a stop for the disk); ``requests`` counts
    every request, so that a run paused by a failed save can take each one as "save again"."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.requests = 0

    def request(self, reason: str) -> None:
        self.reason = self.reason or reason
        self.requests += 1


def pick_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _torch_machine() -> preflight.Machine:
    """The CUDA GPU torch trains on, in the terms of the check's machine rules."""
    if not torch.cuda.is_available():
        return preflight.Machine(None, no_gpu="PyTorch sees no CUDA GPU on this machine")
    return preflight.Machine(torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return {"mps": "Apple GPU (MPS)", "cpu": "CPU"}.get(device.type, device.type)


class Trainer(CommandHandling, Saving, Sampling):
    def __init__(
        self,
        cfg: RunConfig,
        events: EventWriter,
        stop: StopFlag,
        run_id: str | None = None,
        control: ControlChannel | None = None,
        overwrite: bool = False,
    ) -> None:
        self.cfg = cfg
        self.family = family_for(cfg.model.family)
        self.overwrite = overwrite  # may replace files an earlier run saved (loratui.outputs)
        self.events = events
        self.stop = stop
        self.control = control or ControlChannel(None)
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.job_id = run_id  # the launcher's job id (a resume takes the run id from the state, not this)
        self.outcome: str | None = None  # "finished" or "stopped" once the run has ended
        self._paused_at: float | None = None  # monotonic time of the pause, while paused
        self._paused_by_save = False  # the engine paused itself because a save failed
        self._output_dir: Path | None = None  # set by a `save` command's output_dir: where saves go from then on

    # ----------------------------------------------------------------- set-up
    def run(self) -> None:
        for line in clean_interrupted_saves(self.cfg):  # before the check: it may put a state back
            log.info("left by an interrupted save: %s", line)
        check = self._check()
        self.dataset, self.schedule = check.dataset, check.schedule
        self._prepare_accelerator()
        self._status("loading_model", f"loading {self.cfg.model.path}")
        self.model = self._load_model()
        self.objective = self.family.objective(self.cfg, self.model)
        # Seed again after loading: building or loading a model may draw random numbers (the
        # built-in one does, the first time), and the same seed must give the same LoRA anyway.
        from accelerate.utils import set_seed

        set_seed(self.cfg.training.seed)
        self._add_lora()
        # The frozen text encoders' outputs and the latents are cached while the denoiser is still in
        # CPU memory, and the encoders leave the accelerator before it arrives: the peak is the larger
        # of the two, not their sum (FLUX.1's T5-XXL alone is 9.5 GB in bf16).
        self._prepare_text_and_latents()
        self._place_denoiser()
        self._make_optimizer()
        self.progress = self._fresh_or_resumed_progress()
        self._prepare_sampling()
        self._train()

    def _check(self) -> CheckResult:
        check = check_run(self.cfg, overwrite=self.overwrite)
        for problem in check.problems:
            if problem.severity == "warning":
                self.events.emit(
                    "warning", code="check", message=f"{problem.where}: {problem.message}", hint=problem.fix
                )
        if check.errors:
            first = check.errors[0]
            more = f" (and {len(check.errors) - 1} more problems: run `loratui check`)" if len(check.errors) > 1 else ""
            kind = (
                "model"
                if first.where.startswith("model.")
                else ("dataset" if first.where.startswith("dataset") or "/" in first.where else "config")
            )
            raise UserError(first.message + more, first.where, first.fix, kind)
        assert check.dataset is not None and check.schedule is not None
        return check

    def _prepare_accelerator(self) -> None:
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        device = pick_device()
        precision = self.cfg.training.mixed_precision
        # The check judged the GPU NVML reports; this judges the one torch will use, by the same rule.
        for problem in preflight.precision_problems(precision, _torch_machine()):
            if problem.severity == "error":
                raise preflight.user_error(problem)
        # Gradient accumulation is done by hand (see _train) so that an epoch's last, partial
        # group of batches still makes an update, as the step count shown to the user assumes.
        self.accelerator = Accelerator(mixed_precision=precision, cpu=device.type == "cpu")
        self.device = self.accelerator.device
        self.weight_dtype = weight_dtype(precision)
        set_seed(self.cfg.training.seed)

    def _load_model(self) -> BaseModel:
        model = self.family.load(self.cfg)
        # The base weights are frozen and held in the training precision (half the memory);
        # the LoRA weights added next stay in float32 so small updates are not rounded away.
        # The VAE stays in float32 unless model.no_half_vae is off: SDXL's overflows in fp16.
        self.vae_dtype = torch.float32 if self.cfg.model.no_half_vae else self.weight_dtype
        model.vae.requires_grad_(False).to(self.device, dtype=self.vae_dtype).eval()
        for spec in self.family.parts:
            module = getattr(model, spec.attribute).requires_grad_(False)
            # In the training dtype and in fp8/NF4 while still in CPU memory, so that the accelerator never
            # holds a full-precision copy; float8 weights loaded as such (fp8_base) stay float8.
            low_precision.cast_keeping_fp8(module, self.weight_dtype)
            self._store_in_low_precision(spec, module)
            if not spec.denoiser:  # the denoiser waits until the text encoders are done with (_place_denoiser)
                module.to(self.device)
        if self.cfg.training.attention == "xformers":
            denoiser = next(getattr(model, spec.attribute) for spec in self.family.parts if spec.denoiser)
            try:
                denoiser.enable_xformers_memory_efficient_attention()
            except Exception as exc:
                raise UserError(
                    f"xformers is not usable here: {str(exc).splitlines()[0]}",
                    "training.attention",
                    "set it to sdpa (PyTorch's built-in attention, as fast on recent PyTorch)",
                    "config",
                ) from exc
        return model

    def _add_lora(self) -> None:
        self.parts = [self._part(spec) for spec in self.family.parts]
        # A text encoder trains: its embeddings are computed at every step, not cached (ss_training_text_encoder).
        self.train_text_encoder = any(p.trained for p in self.parts if not p.spec.denoiser)
        # The check bounds the ranks by the model's configs; these are the layers themselves,
        # measured before a byte of LoRA is allocated (a model whose configs it could not read).
        net = self.cfg.network
        for part in self.parts:
            if part.trained and net.type in LYCORIS_TYPES and not part.layers:
                raise UserError(
                    f"LyCORIS's preset {net.preset!r} selects no layer of the {part.spec.label} of {self.cfg.model.path}",
                    "network.preset",
                    'use preset = "full", or leave this part frozen (its learning rate 0)',
                    "config",
                )
        widest = widest_targets([t for p in self.parts for t in p.targets])
        for problem in preflight.rank_problems(net.rank, net.conv_rank, widest, self.cfg.model.path):
            if preflight.rank_bounds_network(net.type):
                raise preflight.user_error(problem)
        for part in self.parts:
            if part.trained and part.layers:
                attach_lycoris(part.module, part.layers)
            elif part.trained:
                attach_lora(part.module, part.targets)
        for param in self._lora_parameters():
            param.data = param.data.float()
        for part in self.parts:
            if part.trained and self.cfg.training.gradient_checkpointing:
                self.family.enable_gradient_checkpointing(part.spec, part.module)
            part.module.train(part.trained)

    def _store_in_low_precision(self, spec: PartSpec, module: torch.nn.Module) -> None:
        """model.fp8_base: every frozen Linear in float8, as kohya's --fp8_base (the text encoders too);
        model.nf4_base: the denoiser's in 4-bit NF4, quantized on the accelerator (engine/low_precision.py)."""
        model_settings = self.cfg.model
        if model_settings.fp8_base:
            low_precision.store_in_fp8(module, self.weight_dtype)
        if model_settings.nf4_base and spec.denoiser:
            reason = low_precision.nf4_available(self.device)
            if reason is not None:
                raise UserError(
                    f"NF4 base weights cannot run here: {reason}",
                    "model.nf4_base",
                    "turn it off and use fp8_base, or train on a CUDA GPU with bitsandbytes installed",
                    "config",
                )
            low_precision.store_in_nf4(module, self.weight_dtype, self.device)

    def _place_denoiser(self) -> None:
        """The denoiser (with its LoRA) onto the accelerator, once the text encoders are cached; with
        training.blocks_to_swap, all but that many of its blocks (engine/block_swap.py)."""
        denoiser = next(part for part in self.parts if part.spec.denoiser)
        self.block_swap = None
        swap = self.cfg.training.blocks_to_swap
        if swap:
            self.block_swap = place_with_block_swap(denoiser.module, self.device, swap)
            split = self.block_swap.split
            log.info("block swap: %d double and %d single blocks kept in CPU memory", split.double, split.single)
        else:
            denoiser.module.to(self.device)

    def _part(self, spec: PartSpec) -> Part:
        """A part of the model as this run trains it: the denoiser unless network.train_text_encoder_only
        (then frozen, the gradient still flowing through it to the text encoders), a text encoder at a rate
        above zero unless network.train_unet_only says the UNet trains alone (loratui.families.trains)."""
        net = self.cfg.network
        lr = float(self.cfg.get(spec.lr_setting)) if spec.lr_setting else 0.0  # Flux's T5 has none: it never trains
        part = Part(spec, getattr(self.model, spec.attribute), lr, trained=families.trains(self.cfg, spec.part))
        if part.trained and net.type in LYCORIS_TYPES:  # LyCORIS's wrapper picks the modules (check: not FLUX.1)
            part.targets, part.layers = lycoris_targets(part.module, spec.denoiser, net)
        elif part.trained:
            conv = (spec.conv_blocks, net.conv_rank, net.conv_alpha)
            part.targets = find_targets(part.module, spec.blocks, net.rank, net.alpha, *conv)
        return part

    def _apply_max_norm(self, max_norm: float) -> None:
        """network.scale_weight_norms after an update, as sd-scripts does: the layers scaled are logged."""
        scaled, norms = 0, []
        for part in self.parts:
            if part.trained:
                module = self.accelerator.unwrap_model(part.module)
                part_scaled, part_norms = apply_max_norm(module, max_norm, self.device)
                scaled, norms = scaled + part_scaled, norms + part_norms
        if scaled:
            log.info(
                "max norm: %d of %d layers scaled to %g (mean norm %.4g, largest %.4g)",
                scaled,
                len(norms),
                max_norm,
                sum(norms) / len(norms),
                max(norms),
            )

    @property
    def _denoiser(self) -> torch.nn.Module:
        """The UNet, as accelerate prepared it."""
        return next(p.module for p in self.parts if p.spec.denoiser)

    def _lora_parameters(self) -> list[torch.nn.Parameter]:
        return [param for part in self.parts for param in lora_parameters(part.module)]

    def _make_optimizer(self) -> None:
        opt = self.cfg.optimizer
        groups = [
            {"params": lora_parameters(p.module), "lr": p.lr, "name": p.spec.group} for p in self.parts if p.trained
        ]
        kwargs = parse_optimizer_args(opt.args)
        self.optimizer = make_optimizer(opt.name, groups, kwargs)
        self.lr_scheduler = make_scheduler(
            self.optimizer,
            opt.scheduler,
            warmup_steps_for(opt.warmup_steps, opt.warmup_ratio, self.schedule.total_steps),
            self.schedule.total_steps,
            opt.scheduler_cycles,
            opt.scheduler_power,
            scheduler_type=opt.scheduler_type.strip(),
            scheduler_args=parse_scheduler_args(opt.scheduler_args),
            initial_lr=opt.unet_lr,  # what Adafactor's own schedule reports before its first step (sd-scripts)
        )
        self.optimizer_repr = f"{type(self.optimizer).__module__}.{type(self.optimizer).__name__}" + (
            f"({','.join(f'{k}={v}' for k, v in kwargs.items())})" if kwargs else ""
        )
        # A denoiser with swapped blocks is placed already: accelerate must not move them all to the device.
        placement = [not (p.spec.denoiser and self.block_swap) for p in self.parts] + [True]
        *modules, self.optimizer = self.accelerator.prepare(
            *(p.module for p in self.parts), self.optimizer, device_placement=placement
        )
        for part, module in zip(self.parts, modules, strict=True):
            part.module = module
            setattr(self.model, part.spec.attribute, module)

    def _network_signature(self) -> dict:
        net = self.cfg.network
        return {
            "rank": net.rank,
            "alpha": net.alpha,
            "conv_rank": net.conv_rank,
            "conv_alpha": net.conv_alpha,
            "type": net.type,  # a LyCORIS type's layers are other tensors than a LoRA's
            # per part, trained or not: SD "unet_modules" and "te_modules", SDXL "unet_modules", "te1_modules"
            # and "te2_modules" (loratui.resume_state reads them)
            **{f"{p.spec.name}_modules": len(p.targets) for p in self.parts},
        }

    def _fresh_or_resumed_progress(self) -> Progress:
        source = self.cfg.training.resume_from
        if not source:
            self.resumed_from = None
            return Progress(run_id=self.run_id, network=self._network_signature(), optimizer=self._optimizer_name())
        # The check has read the folder whole (loratui.resume_state); what follows needs torch:
        # the weights against the model, the optimizer's state against the optimizer.
        folder = self.cfg.resolve(source)
        progress = read_progress(folder)
        self._check_resumable(folder, progress)
        self._load_lora_weights(folder)
        load_training_state(folder, self.optimizer, self.lr_scheduler, self.accelerator.scaler)
        progress.optimizer = self._optimizer_name()
        self.run_id = progress.run_id
        self.resumed_from = str(folder)
        log.info("resuming %s at step %d, epoch %d", folder, progress.step, progress.epoch + 1)
        return progress

    def _load_lora_weights(self, folder: Path) -> None:
        try:
            load_state_weights(self.parts, self.accelerator.unwrap_model, read_lora_weights(folder))
        except LoraMismatch as exc:
            raise UserError(
                f"{folder / 'lora.safetensors'} does not fit this network: {exc}",
                "training.resume_from",
                "resume with the base model and network settings the state was saved with",
                "config",
            ) from None

    def _optimizer_name(self) -> str:
        return canonical_optimizer(self.cfg.optimizer.name) or self.cfg.optimizer.name

    def _check_resumable(self, folder: Path, progress: Progress) -> None:
        """The state's network and optimizer must be this run's (the module counts depend on the
        base model: only the engine knows them)."""
        for problem in preflight.network_problems(self.cfg, folder, progress.network):
            raise preflight.user_error(problem)
        saved, own = progress.network, self._network_signature()
        counts = [f"{p.spec.name}_modules" for p in self.parts]
        if [saved.get(c) for c in counts] != [own[c] for c in counts]:
            labels = _and([f"{saved.get(c)} {p.spec.label}" for c, p in zip(counts, self.parts, strict=True)])
            raise UserError(
                f"{folder} was trained on a model with {labels} LoRA layers; "
                f"{self.cfg.model.path} has {_and([str(own[c]) for c in counts])}",
                "training.resume_from",
                "resume with the base model the state was saved with",
                "config",
            )
        if progress.optimizer and progress.optimizer != self._optimizer_name():
            raise UserError(
                f"{folder} was saved by the {progress.optimizer} optimizer; this config trains with "
                f"{self._optimizer_name()}, which cannot continue its state",
                "training.resume_from",
                f'set optimizer.name = "{progress.optimizer}" to resume it, or start a fresh run',
                "config",
            )

    def _unwrapped(self, which: str) -> torch.nn.Module:
        """The model's own module of the part named ``which`` ("unet", "te"; SDXL "te1", "te2")."""
        part = next(p for p in self.parts if p.spec.name == which)
        return self.accelerator.unwrap_model(part.module)

    # ------------------------------------------------------- text and latents
    def _prepare_text_and_latents(self) -> None:
        trained = self._entries_in_plan()
        # The held-out images' latents and captions are cached with the training ones: the validation loss reads them.
        self.all_entries = trained + list(self.dataset.held_out)
        mode = self.cfg.dataset.cache_latents
        self.latents: data_mod.LatentCache | None = None
        if mode != "off":
            folder = self.cfg.resolve(self.cfg.output.output_dir) / ".latent-cache" if mode == "disk" else None
            # A VAE in half precision encodes a little differently: its latents are not float32 ones.
            half = "" if self.vae_dtype == torch.float32 else f":{self.vae_dtype}"
            self.latents = data_mod.LatentCache(mode, folder, vae_id=f"{self.model.name}:{self.model.source}{half}")
            self.latents.fill(
                self.all_entries,
                self._encode_pixels,
                max(1, self.cfg.training.batch_size),
                lambda done, total: self._status("caching_latents", f"caching latents {done}/{total}", done, total),
            )
        self._prepare_text()
        self._eval_set = EvalSet(trained, self._posterior, self._scaled, self.objective.eval_timesteps)
        held_out = list(self.dataset.held_out)
        self._validation_set = (
            EvalSet.validation(held_out, self._posterior, self._scaled, self.objective.eval_timesteps)
            if held_out
            else None
        )

    def _text_identity(self, spec: PartSpec, settings: str) -> str:
        """What a text encoder's cached rows on disk depend on besides the caption: the encoder's
        files, ``settings`` and its tokenizer (``text_encoder_2`` is read with ``tokenizer_2``)."""
        tokenizer = getattr(self.model, spec.attribute.replace("text_encoder", "tokenizer"))
        source, name = self.model.source, self.model.name
        return encoder_identity(source, name, spec.attribute, f"{settings}|{tokenizer_identity(tokenizer)}")

    def _prepare_text(self) -> None:
        """Where each text encoder's outputs come from (engine/text_cache.py); with
        dataset.cache_text_encoder_outputs, every caption encoded now and the frozen encoders
        moved off the device."""
        mode = self.cfg.dataset.cache_text_encoder_outputs
        repeat = all(captions.cacheable(entry.options) for entry in self.all_entries)  # the check refuses a cache else
        self.text = TextEncoding(mode, self.cfg.resolve(self.cfg.output.output_dir) / ".text-cache", repeat)
        # what else changes the rows
        settings = (
            f"{self.weight_dtype}|clip_skip={self.cfg.model.clip_skip}|tokens={self.cfg.dataset.max_token_length}"
        )
        for part in self.parts:
            if not part.spec.denoiser:
                encode = functools.partial(self._encode_text, part.spec)
                identity = self._text_identity(part.spec, settings) if mode == "disk" else ""
                self.text.add(part.spec.name, encode, part.trained, identity)
        if mode == "off" or not self.text.caches:
            return

        def progress(done: int, total: int) -> None:
            self._status("caching_text", f"caching text encoder outputs {done}/{total}", done, total)

        texts = [text for entry in self.all_entries for text in captions.cached_captions(entry.caption, entry.options)]
        self.text.fill(texts, max(1, self.cfg.training.batch_size), progress)
        for part in self.parts:
            if part.spec.name in self.text.caches:
                part.module.to("cpu")  # never called again: its outputs are all cached
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _entries_in_plan(self) -> list[ImageEntry]:
        batches = self.dataset.epoch_batches(self.cfg.training.batch_size, self.cfg.training.seed, 0)
        return sorted({e.path: e for b in batches for e in b}.values(), key=lambda e: str(e.path))

    @torch.no_grad()
    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """The VAE posterior's (mean, logvar) channels for a batch of images, in float32."""
        return self.model.vae.encode(pixels.to(self.device, self.vae_dtype)).latent_dist.parameters.float()

    def _posterior(self, batch: list[ImageEntry], draws: list | None = None) -> torch.Tensor:
        """The VAE posterior's parameters for ``batch``: cached, or encoded now; flipped and cropped by
        ``draws`` (a training step's, :meth:`_step_draws`; None for the eval and validation losses)."""
        if self.latents:
            return self.latents.get(batch, draws)
        return self._encode_pixels(data_mod.stack_pixels(batch, draws))

    def _latents_for(
        self, batch: list[ImageEntry], generator: torch.Generator | None = None, draws: list | None = None
    ) -> torch.Tensor:
        return self._scaled(data_mod.sample_latents(self._posterior(batch, draws).to(self.device), generator))

    def _step_draws(self, batch: list[ImageEntry]) -> list:
        """The flip and crop draws of the batch the loop is at, by (seed, epoch, batch, position) as
        :meth:`_step_captions` draws: a resumed run flips and crops what an uninterrupted one would."""
        seed, epoch, index = self.cfg.training.seed, self.progress.epoch + 1, self.progress.batches_in_epoch
        return data_mod.batch_draws(seed, epoch, index, len(batch))

    def _scaled(self, sample: torch.Tensor) -> torch.Tensor:
        """A VAE sample as the denoiser sees it: shifted (Flux's AE) and scaled."""
        config = self.model.vae.config
        return (sample - (getattr(config, "shift_factor", None) or 0.0)) * config.scaling_factor

    def _encode_text(self, part: PartSpec, captions: list[str]) -> TextRows:
        """The rows of one text encoder for ``captions``, under the run's autocast whether they are
        computed in a step or cached before it, so that both are the same numbers."""
        clip_skip, unwrap = self.cfg.model.clip_skip, self.accelerator.unwrap_model
        with self.accelerator.autocast():
            return self.family.encode_text(part, self.model, captions, clip_skip, self.device, unwrap)

    # --------------------------------------------------------------- the loss
    def _loss(
        self,
        latents: torch.Tensor,
        batch: list[ImageEntry],
        timesteps: torch.Tensor,
        noise: torch.Tensor,
        texts: list[str] | None = None,
        input_noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``texts``: the batch's captions as trained at this step (:meth:`_step_captions`); None for
        the eval and validation losses, which read each caption without its random changes.
        ``input_noise``: the noise the denoiser's input is made with, when not ``noise`` (input
        perturbation: the objective's input_noise; the eval and validation losses have none)."""
        objective = self.objective
        noisy, target = objective.noisy_and_target(latents, noise, timesteps, input_noise)
        if texts is None:
            texts = [captions.fixed_caption(e.caption, e.options) for e in batch]
        with self.accelerator.autocast():
            text = self.text.rows(texts, self.device)
            conditioning = self.family.conditioning(text, batch, self.weight_dtype)
            training = self.cfg.training
            with checkpoint_offload(training.cpu_offload_checkpointing and training.gradient_checkpointing):
                prediction = self.family.predict(self._denoiser, noisy.to(self.weight_dtype), timesteps, conditioning)
        return (objective.loss(prediction, target, noisy, timesteps) * self._loss_weights(batch)).mean()

    def _loss_weights(self, batch: list[ImageEntry]) -> torch.Tensor:
        """Each image's loss weight: training.prior_loss_weight for a regularisation image, else 1 (sd-scripts)."""
        prior = self.cfg.training.prior_loss_weight
        return torch.tensor([prior if entry.is_reg else 1.0 for entry in batch], device=self.device)

    def _training_loss(self, batch: list[ImageEntry]) -> torch.Tensor:
        latents = self._latents_for(batch, draws=self._step_draws(batch))
        noise = self.objective.noise(latents)
        timesteps = self.objective.draw_timesteps(latents)
        input_noise = self.objective.input_noise(noise)
        return self._loss(latents, batch, timesteps, noise, self._step_captions(batch), input_noise)

    def _step_captions(self, batch: list[ImageEntry]) -> list[str]:
        """The captions of the batch the loop is at: shuffled, dropped... by each image's options,
        drawn by (seed, epoch, batch, position) so that a resumed run draws what an uninterrupted one
        would. While a batch trains, progress.epoch is its epoch (from 0) and progress.batches_in_epoch
        its index in the epoch (the loop counts it once the batch is done)."""
        seed, epoch, index = self.cfg.training.seed, self.progress.epoch + 1, self.progress.batches_in_epoch
        return [
            captions.step_caption(entry.caption, entry.options, seed, epoch, index, position)
            for position, entry in enumerate(batch)
        ]

    def _own_modules(self) -> list[torch.nn.Module]:
        return [self.accelerator.unwrap_model(part.module) for part in self.parts]

    def _eval_loss(self) -> float:
        with dropouts_off(self._own_modules()):  # LyCORIS's dropouts: measured without
            return self._eval_set.loss(self._loss, self.device)

    def _validate(self, epochs_done: int) -> None:
        """A ``validation`` event: the loss on the held-out images (nothing without any). Measuring
        draws no random number, and the random states put back afterwards (as around a sample) make
        sure: a run with validation trains exactly as one without it."""
        if self._validation_set is None:
            return
        with preserved_rng(self.device), dropouts_off(self._own_modules()):
            loss = self._validation_set.loss(self._loss, self.device)
        images = self._validation_set.images
        self.events.emit("validation", step=self.progress.step, epoch=epochs_done, loss=loss, images=images)

    # --------------------------------------------------------------- the loop
    def _train(self) -> None:
        progress = self.progress
        self.facts = RunFacts(
            new_session_id(),
            time.time(),
            self.model.name,
            self.optimizer_repr,
            self.train_text_encoder,
            self.family.metadata(self.cfg),
        )
        self._emit_started()
        self._emit_memory()
        if progress.step == 0:
            self.events.emit("eval", step=0, epoch=0, loss=self._eval_loss())
            self._validate(0)
        self._sample_on_schedule("start")  # before the first step of this session (fresh or resumed)
        self._status("training", "training")
        spill_watch = SpillWatch(self.events, self.device)
        try:
            self._loop(spill_watch)
        finally:
            spill_watch.close()

    def _loop(self, spill_watch: SpillWatch) -> None:
        cfg, progress, schedule = self.cfg, self.progress, self.schedule
        accumulation = cfg.training.gradient_accumulation_steps
        batch_size = cfg.training.batch_size
        params = self._lora_parameters()
        last_tick = time.perf_counter()

        for epoch in range(progress.epoch, schedule.epochs):
            batches = self.dataset.epoch_batches(batch_size, cfg.training.seed, epoch)
            # Resuming mid-epoch: the epoch's running mean continues from the steps already done.
            done_in_epoch = math.ceil(progress.batches_in_epoch / accumulation)
            epoch_losses = progress.loss_history[len(progress.loss_history) - done_in_epoch :] if done_in_epoch else []
            pending_loss, pending_samples, pending_batches = 0.0, 0, 0
            for index in range(progress.batches_in_epoch, len(batches)):
                batch = batches[index]
                loss = self._training_loss(batch)
                self.accelerator.backward(loss / accumulation)
                pending_loss += loss.item()
                pending_samples += len(batch)
                pending_batches += 1
                progress.batches_in_epoch = index + 1
                last_of_epoch = index + 1 == len(batches)
                if pending_batches < accumulation and not last_of_epoch:
                    continue
                # ---- one optimizer update
                if cfg.training.max_grad_norm > 0:
                    self.accelerator.clip_grad_norm_(params, cfg.training.max_grad_norm)
                self.optimizer.step()
                lrs = current_lrs(self.optimizer, self.lr_scheduler)
                self.lr_scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                if cfg.network.scale_weight_norms > 0:
                    self._apply_max_norm(cfg.network.scale_weight_norms)

                step_loss = pending_loss / pending_batches
                if not math.isfinite(step_loss):
                    raise UserError(
                        f"the loss became {step_loss} at step {progress.step + 1}",
                        "optimizer.unet_lr",
                        "lower the learning rate; with fp16 try bf16; resume from the last good state",
                        "runtime",
                    )
                now = time.perf_counter()
                seconds = now - last_tick
                last_tick = now
                progress.step += 1
                progress.elapsed_s += seconds
                progress.loss_history.append(round(step_loss, 6))
                epoch_losses.append(step_loss)
                self.events.emit(
                    "step",
                    step=progress.step,
                    epoch=epoch + 1,
                    loss=step_loss,
                    loss_avg=sum(epoch_losses) / len(epoch_losses),
                    lr=lrs,
                    s_per_step=seconds,
                    samples_per_s=pending_samples / seconds if seconds > 0 else 0.0,
                    elapsed_s=progress.elapsed_s,
                )
                pending_loss, pending_samples, pending_batches = 0.0, 0, 0
                spill_watch.after_step(progress.step, seconds)
                if progress.step % MEMORY_EVERY_STEPS == 0:
                    self._emit_memory()
                if self._sample_on_schedule("steps"):
                    last_tick = time.perf_counter()  # rendering samples is not part of any step's time
                if saves_step_file(cfg.output, progress.step, schedule.total_steps):  # output.save_every_n_steps
                    self._save_periodic(step_stem(cfg.output.name, progress.step), "step")
                    last_tick = time.perf_counter()  # a save is not part of any step's time
                if progress.step >= schedule.total_steps:
                    break
                every = cfg.training.validate_every_n_steps
                if every and progress.step % every == 0 and not last_of_epoch:  # an epoch's end validates anyway
                    self._validate(epoch)
                    last_tick = time.perf_counter()  # measuring is not part of any step's time
                if self._between_steps(epoch + 1):
                    last_tick = time.perf_counter()  # a save or a pause is not part of any step's time
                if self.stop.reason:
                    self._stop(epoch)
                    return
            # ---- end of an epoch (or of the run, when max_train_steps ends it early)
            progress.epoch, progress.batches_in_epoch = epoch + 1, 0
            self.events.emit(
                "epoch_end",
                epoch=epoch + 1,
                step=progress.step,
                loss_avg=sum(epoch_losses) / max(1, len(epoch_losses)),
                elapsed_s=progress.elapsed_s,
            )
            self.events.emit("eval", step=progress.step, epoch=epoch + 1, loss=self._eval_loss())
            self._validate(epoch + 1)
            done = progress.step >= schedule.total_steps or epoch + 1 == schedule.epochs
            every = cfg.output.save_every_n_epochs
            if not done and every and (epoch + 1) % every == 0:
                self._save_periodic(epoch_stem(cfg.output.name, epoch + 1), "epoch")
            self._sample_on_schedule("epoch")  # after the epoch's file: the samples show what it holds
            if self.stop.reason and not done:
                self._stop(epoch + 1)
                return
            if done:
                break
            last_tick = time.perf_counter()

        with_state = cfg.output.save_state or cfg.output.save_state_on_train_end
        path = self._save(final_stem(cfg.output.name), "final", with_state=with_state)
        self.outcome = "finished"
        self.events.emit(
            "finished", step=progress.step, epoch=progress.epoch, path=str(path), elapsed_s=progress.elapsed_s
        )

    def _stop(self, epoch: int) -> None:
        stem = step_stem(self.cfg.output.name, self.progress.step)
        path = self._save(stem, "stop", with_state=True)
        self.outcome = "stopped"
        self.events.emit(
            "stopped",
            step=self.progress.step,
            epoch=epoch + (1 if self.progress.batches_in_epoch else 0),
            path=str(path),
            state=str(path.with_name(state_folder(stem))),
            reason=self.stop.reason or "request",
            elapsed_s=self.progress.elapsed_s,
        )

    # ------------------------------------------------------------------ events
    def _status(self, phase: str, message: str, current: int | None = None, total: int | None = None) -> None:
        fields = {"current": current, "total": total} if total is not None else {}
        self.events.emit("status", phase=phase, message=message, **fields)

    def _emit_started(self) -> None:
        dataset = self.dataset
        summary = {
            "images": dataset.num_images,
            "reg_images": dataset.num_reg_images,
            "items_per_epoch": dataset.num_items_per_epoch,
            "concepts": [
                {"folder": c.folder.name, "repeats": c.repeats, "images": len(c.images)} for c in dataset.concepts
            ],
            "buckets": {f"{w}x{h}": n for (w, h), n in sorted(_bucket_totals(dataset).items())},
        }
        config = config_to_dict(self.cfg)
        self.events.emit(
            "run_started",
            run_id=self.run_id,
            config=config,
            config_dir=str(self.cfg.base_dir),
            dataset=summary,
            total_steps=self.schedule.total_steps,
            total_epochs=self.schedule.epochs,
            steps_per_epoch=self.schedule.steps_per_epoch,
            start_step=self.progress.step,
            start_epoch=self.progress.epoch,
            device=self.device.type,
            device_name=device_name(self.device),
            mixed_precision=self.cfg.training.mixed_precision,
            pid=os.getpid(),
            resumed_from=self.resumed_from,
            elapsed_s=self.progress.elapsed_s,
            loss_history=list(self.progress.loss_history),
        )

    def _emit_memory(self) -> None:
        if self.device.type == "cuda":
            index = self.device.index or 0
            self.events.emit(
                "memory",
                device="cuda",
                allocated=torch.cuda.memory_allocated(index),
                reserved=torch.cuda.memory_reserved(index),
                peak_allocated=torch.cuda.max_memory_allocated(index),
                total=torch.cuda.get_device_properties(index).total_memory,
            )
        else:
            self.events.emit(
                "memory", device=self.device.type, allocated=None, reserved=None, peak_allocated=None, total=None
            )


def _and(words: list[str]) -> str:
    """``["a", "b", "c"]`` -> ``"a, b and c"``."""
    return ", ".join(words[:-1]) + " and " + words[-1] if len(words) > 1 else "".join(words)


def _bucket_totals(dataset) -> dict[tuple[int, int], int]:
    totals: dict[tuple[int, int], int] = {}
    for concept in dataset.concepts:
        for bucket, count in concept.bucket_counts.items():
            totals[bucket] = totals.get(bucket, 0) + count
    return totals
