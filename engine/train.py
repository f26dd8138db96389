"""The training run: load, prepare, loop, save. Read it top to bottom.

One step: take a batch of latents (cached or freshly encoded), add noise at random timesteps,
let the UNet (with LoRA) predict the noise (or the velocity, for v-prediction models), and
minimise the mean squared error, optionally weighted by min-SNR. The LoRA on the text encoder
trains too when its learning rate is above zero.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from pathlib import Path

import torch
import torch.nn.functional as F

from engine import data as data_mod
from engine.control import ControlChannel
from engine.events import EventWriter
from engine.kohya_format import SAVE_DTYPES, TEXT_ENCODER_PREFIX, UNET_PREFIX, save_lora_file, to_kohya_tensors
from engine.lora import (
    TEXT_ENCODER_BLOCKS,
    UNET_ATTENTION_BLOCKS,
    UNET_CONV_BLOCKS,
    LoraMismatch,
    LoraTarget,
    attach_lora,
    find_targets,
    load_lora_state_dict,
    lora_parameters,
    lora_state_dict,
    widest_targets,
)
from engine.metadata import RunFacts, build_metadata, new_session_id
from engine.model_loading import BaseModel, load_base_model
from engine.optim import current_lrs, make_optimizer, make_scheduler
from engine.save_failure import SaveFailed, save_failed
from engine.spill_watch import SpillWatch
from engine.state import Progress, load_training_state, read_lora_weights, read_progress, save_state
from loratui import preflight
from loratui.check import CheckResult, check_run
from loratui.config import RunConfig, config_to_dict
from loratui.dataset import ImageEntry
from loratui.errors import UserError
from loratui.optimizer_args import canonical_optimizer, parse_optimizer_args
from loratui.outputs import (
    clean_interrupted_saves,
    epoch_stem,
    existing_outputs,
    final_stem,
    lora_file,
    state_folder,
    step_stem,
)
from loratui.shell import loratui_command

log = logging.getLogger("engine.train")

MEMORY_EVERY_STEPS = 20
EVAL_IMAGES = 4
EVAL_TIMESTEPS = (100, 300, 500, 700, 900)
BLIND_RETRY_S = 60.0  # a run paused by a failed save while no event can be written tries again this often


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


class Trainer:
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
        # Seed again after loading: building or loading a model may draw random numbers (the
        # built-in one does, the first time), and the same seed must give the same LoRA anyway.
        from accelerate.utils import set_seed

        set_seed(self.cfg.training.seed)
        self._add_lora()
        self._make_optimizer()
        self.progress = self._fresh_or_resumed_progress()
        self._prepare_text_and_latents()
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
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
        set_seed(self.cfg.training.seed)

    def _load_model(self) -> BaseModel:
        settings = self.cfg.model
        tokenizer = self.cfg.resolve(settings.tokenizer) if settings.tokenizer else None
        resolved = self.cfg.resolve(settings.path) if not settings.is_builtin else Path(settings.path)
        model = load_base_model(settings.path, resolved, settings.family, settings.v_prediction, tokenizer)
        layers = model.text_encoder.config.num_hidden_layers
        for problem in preflight.clip_skip_problems(settings.clip_skip, layers, settings.path):
            raise preflight.user_error(problem)
        # The base weights are frozen and held in the training precision (half the memory);
        # the LoRA weights added next stay in float32 so small updates are not rounded away.
        model.vae.requires_grad_(False).to(self.device, dtype=torch.float32).eval()
        model.text_encoder.requires_grad_(False).to(self.device, dtype=self.weight_dtype)
        model.unet.requires_grad_(False).to(self.device, dtype=self.weight_dtype)
        if self.cfg.training.attention == "xformers":
            try:
                model.unet.enable_xformers_memory_efficient_attention()
            except Exception as exc:
                raise UserError(
                    f"xformers is not usable here: {str(exc).splitlines()[0]}",
                    "training.attention",
                    "set it to sdpa (PyTorch's built-in attention, as fast on recent PyTorch)",
                    "config",
                ) from exc
        return model

    def _add_lora(self) -> None:
        net = self.cfg.network
        self.train_text_encoder = self.cfg.optimizer.text_encoder_lr > 0
        unet, te = self.model.unet, self.model.text_encoder
        self.unet_targets = find_targets(
            unet, UNET_ATTENTION_BLOCKS, net.rank, net.alpha, UNET_CONV_BLOCKS, net.conv_rank, net.conv_alpha
        )
        self.te_targets: list[LoraTarget] = []
        if self.train_text_encoder:
            self.te_targets = find_targets(te, TEXT_ENCODER_BLOCKS, net.rank, net.alpha)
        # The check bounds the ranks by the model's configs; these are the layers themselves,
        # measured before a byte of LoRA is allocated (a model whose configs it could not read).
        widest = widest_targets(self.unet_targets + self.te_targets)
        for problem in preflight.rank_problems(net.rank, net.conv_rank, widest, self.cfg.model.path):
            raise preflight.user_error(problem)
        attach_lora(unet, self.unet_targets)
        if self.train_text_encoder:
            attach_lora(te, self.te_targets)
        for param in lora_parameters(unet) + lora_parameters(te):
            param.data = param.data.float()
        if self.cfg.training.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
            if self.train_text_encoder:
                te.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        unet.train()
        te.train(self.train_text_encoder)

    def _make_optimizer(self) -> None:
        opt = self.cfg.optimizer
        groups = [{"params": lora_parameters(self.model.unet), "lr": opt.unet_lr, "name": "unet"}]
        if self.train_text_encoder:
            groups.append(
                {"params": lora_parameters(self.model.text_encoder), "lr": opt.text_encoder_lr, "name": "text_encoder"}
            )
        kwargs = parse_optimizer_args(opt.args)
        self.optimizer = make_optimizer(opt.name, groups, kwargs)
        self.lr_scheduler = make_scheduler(
            self.optimizer,
            opt.scheduler,
            opt.warmup_steps,
            self.schedule.total_steps,
            opt.scheduler_cycles,
            opt.scheduler_power,
        )
        self.optimizer_repr = f"{type(self.optimizer).__module__}.{type(self.optimizer).__name__}" + (
            f"({','.join(f'{k}={v}' for k, v in kwargs.items())})" if kwargs else ""
        )
        self.model.unet, self.model.text_encoder, self.optimizer = self.accelerator.prepare(
            self.model.unet, self.model.text_encoder, self.optimizer
        )

    def _network_signature(self) -> dict:
        net = self.cfg.network
        return {
            "rank": net.rank,
            "alpha": net.alpha,
            "conv_rank": net.conv_rank,
            "conv_alpha": net.conv_alpha,
            "unet_modules": len(self.unet_targets),
            "te_modules": len(self.te_targets),
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
        weights = read_lora_weights(folder)
        parts = ("unet", "te") if self.train_text_encoder else ("unet",)
        for which in parts:
            prefix = f"{which}."
            try:
                load_lora_state_dict(
                    self._unwrapped(which), {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
                )
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
        if (saved["unet_modules"], saved["te_modules"]) != (own["unet_modules"], own["te_modules"]):
            raise UserError(
                f"{folder} was trained on a model with {saved['unet_modules']} UNet and {saved['te_modules']} "
                f"text encoder LoRA layers; {self.cfg.model.path} has {own['unet_modules']} and {own['te_modules']}",
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
        model = self.model.unet if which == "unet" else self.model.text_encoder
        return self.accelerator.unwrap_model(model)

    # ------------------------------------------------------- text and latents
    def _prepare_text_and_latents(self) -> None:
        self.all_entries = self._entries_in_plan()
        self._text_cache: dict[str, torch.Tensor] = {}
        mode = self.cfg.dataset.cache_latents
        self.latents: data_mod.LatentCache | None = None
        if mode != "off":
            folder = self.cfg.resolve(self.cfg.output.output_dir) / ".latent-cache" if mode == "disk" else None
            self.latents = data_mod.LatentCache(mode, folder, vae_id=f"{self.model.name}:{self.model.source}")
            self.latents.fill(
                self.all_entries,
                self._encode_pixels,
                max(1, self.cfg.training.batch_size),
                lambda done, total: self._status("caching_latents", f"caching latents {done}/{total}", done, total),
            )
        self._eval_set = self._make_eval_set()

    def _entries_in_plan(self) -> list[ImageEntry]:
        batches = self.dataset.epoch_batches(self.cfg.training.batch_size, self.cfg.training.seed, 0)
        return sorted({e.path: e for b in batches for e in b}.values(), key=lambda e: str(e.path))

    @torch.no_grad()
    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """The VAE posterior's (mean, logvar) channels for a batch of images."""
        return self.model.vae.encode(pixels.to(self.device, torch.float32)).latent_dist.parameters

    def _latents_for(self, batch: list[ImageEntry], generator: torch.Generator | None = None) -> torch.Tensor:
        params = self.latents.get(batch) if self.latents else self._encode_pixels(data_mod.stack_pixels(batch))
        sample = data_mod.sample_latents(params.to(self.device), generator)
        return sample * self.model.vae.config.scaling_factor

    def _text_embeddings(self, captions: list[str]) -> torch.Tensor:
        if self.train_text_encoder:
            return self._run_text_encoder(captions)
        # A frozen text encoder gives the same output for a caption every time: compute it once.
        missing = [c for c in dict.fromkeys(captions) if c not in self._text_cache]
        if missing:
            with torch.no_grad():
                for caption, row in zip(missing, self._run_text_encoder(missing), strict=True):
                    self._text_cache[caption] = row.to("cpu")
        return torch.stack([self._text_cache[c] for c in captions]).to(self.device)

    def _run_text_encoder(self, captions: list[str]) -> torch.Tensor:
        ids = data_mod.tokenize(self.model.tokenizer, captions).to(self.device)
        skip = self.cfg.model.clip_skip
        encoder = self.model.text_encoder
        if skip <= 1:
            return encoder(ids)[0]
        # clip skip N: the output of the N-th layer from the end, through the final layer norm,
        # as A1111 and sd-scripts compute it.
        hidden = encoder(ids, output_hidden_states=True).hidden_states[-skip]
        text_model = self.accelerator.unwrap_model(encoder)
        final_norm = getattr(text_model, "text_model", text_model).final_layer_norm
        return final_norm(hidden)

    # --------------------------------------------------------------- the loss
    def _loss(
        self, latents: torch.Tensor, captions: list[str], timesteps: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        scheduler = self.model.noise_scheduler
        noisy = scheduler.add_noise(latents, noise, timesteps)
        if scheduler.config.prediction_type == "v_prediction":
            target = scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        with self.accelerator.autocast():
            hidden = self._text_embeddings(captions)
            prediction = self.model.unet(noisy.to(self.weight_dtype), timesteps, hidden.to(self.weight_dtype)).sample
        loss = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        gamma = self.cfg.training.min_snr_gamma
        if gamma > 0:
            loss = loss * self._min_snr_weights(timesteps, gamma)
        return loss.mean()

    def _min_snr_weights(self, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
        from diffusers.training_utils import compute_snr

        snr = compute_snr(self.model.noise_scheduler, timesteps)
        weights = torch.clamp(snr, max=gamma) / snr
        if self.model.noise_scheduler.config.prediction_type == "v_prediction":
            weights = torch.clamp(snr, max=gamma) / (snr + 1)
        return weights.float()

    def _training_loss(self, batch: list[ImageEntry]) -> torch.Tensor:
        latents = self._latents_for(batch)
        noise = torch.randn_like(latents)
        if self.cfg.training.noise_offset:
            # Offset noise: a per-channel constant lets the model learn very dark/bright images.
            noise += self.cfg.training.noise_offset * torch.randn(
                latents.shape[0], latents.shape[1], 1, 1, device=latents.device
            )
        steps = self.model.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, steps, (latents.shape[0],), device=latents.device).long()
        return self._loss(latents, [e.caption for e in batch], timesteps, noise)

    def _make_eval_set(self) -> list[tuple[ImageEntry, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """A few training images at fixed timesteps with fixed noise: its loss is comparable
        between measurements, unlike the training loss, whose noise and timesteps are random."""
        generator = torch.Generator().manual_seed(1234)
        entries = [e for e in self.all_entries if not e.is_reg][:EVAL_IMAGES]
        items = []
        for index, entry in enumerate(entries):
            params = self.latents.get([entry]) if self.latents else self._encode_pixels(data_mod.stack_pixels([entry]))
            latents = data_mod.sample_latents(params.float().cpu(), generator) * self.model.vae.config.scaling_factor
            noise = torch.randn(latents.shape, generator=generator)
            timestep = torch.tensor([EVAL_TIMESTEPS[index % len(EVAL_TIMESTEPS)]])
            items.append((entry, latents, noise, timestep))
        return items

    @torch.no_grad()
    def _eval_loss(self) -> float:
        losses = [
            self._loss(latents.to(self.device), [entry.caption], timestep.to(self.device), noise.to(self.device)).item()
            for entry, latents, noise, timestep in self._eval_set
        ]
        return sum(losses) / max(1, len(losses))

    # --------------------------------------------------------------- the loop
    def _train(self) -> None:
        progress = self.progress
        self.facts = RunFacts(
            new_session_id(), time.time(), self.model.name, self.optimizer_repr, self.train_text_encoder
        )
        self._emit_started()
        self._emit_memory()
        if progress.step == 0:
            self.events.emit("eval", step=0, epoch=0, loss=self._eval_loss())
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
        params = lora_parameters(self.model.unet) + lora_parameters(self.model.text_encoder)
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
                if progress.step >= schedule.total_steps:
                    break
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
            done = progress.step >= schedule.total_steps or epoch + 1 == schedule.epochs
            every = cfg.output.save_every_n_epochs
            if not done and every and (epoch + 1) % every == 0:
                self._save(epoch_stem(cfg.output.name, epoch + 1), "epoch", with_state=cfg.output.save_state)
            if self.stop.reason and not done:
                self._stop(epoch + 1)
                return
            if done:
                break
            last_tick = time.perf_counter()

        path = self._save(final_stem(cfg.output.name), "final", with_state=cfg.output.save_state)
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

    # ---------------------------------------------------------------- control
    def _between_steps(self, epoch: int) -> bool:
        """Act on the commands that arrived during the step; block here while paused.
        Returns True when that took time worth leaving out of the step timings."""
        commands = self.control.poll()
        for command in commands:
            self._on_command(command, epoch)
        if self._paused_at is None:
            return bool(commands)
        while self._paused_at is not None and not self.stop.reason:
            for command in self.control.wait(0.5):
                self._on_command(command, epoch)
        if self._paused_at is not None:  # a SIGTERM during the pause: resume, then stop
            self._end_pause()
        return True

    def _on_command(self, command: dict, epoch: int) -> None:
        name = command["cmd"]

        def answer(ok: bool, message: str) -> None:
            self._answer(command, ok, message)

        step = self.progress.step
        if name == "stop":
            self.stop.request("request")
            answer(True, f"stopping after step {step}: saving a LoRA file and a resumable state")
        elif name == "save":
            refusal = self._use_output_dir(command.get("output_dir"))
            if refusal:
                answer(False, refusal)
                return
            # answered by _save once the files are on disk (or once it failed)
            path = self._save(step_stem(self.cfg.output.name, step), "manual", with_state=True, asked_by=command)
            self._status("paused" if self._paused_at is not None else "training", f"saved {path.name}")
        elif name == "pause":
            if self._paused_at is not None:
                answer(False, f"already paused at step {step}")
                return
            self._paused_at = time.monotonic()
            answer(True, f"paused after step {step}")
            self.events.emit("paused", step=step, epoch=epoch, reason="request")
            self._status("paused", f"paused after step {step}")
        elif name == "resume":
            if self._paused_at is None:
                answer(False, "not paused")
                return
            answer(True, f"resuming at step {step + 1}")
            self._end_pause()
        elif name == "sample":
            ok, message = self._sample_now()
            answer(ok, message)

    def _answer(self, command: dict, ok: bool, message: str) -> None:
        self.events.emit("control", command=command["cmd"], id=command["id"], ok=ok, message=message)

    def _end_pause(self) -> None:
        paused_s = time.monotonic() - (self._paused_at or time.monotonic())
        self._paused_at = None
        self._paused_by_save = False
        self.events.emit("resumed", step=self.progress.step, paused_s=paused_s)
        self._status("training", "training")

    def _sample_now(self) -> tuple[bool, str]:
        """The hook for "sample now"; sample rendering is a later feature, so refuse plainly."""
        return False, "sampling is not available in this version of loratui"

    # ------------------------------------------------------------------ saving
    def _save(self, stem: str, kind: str, with_state: bool, asked_by: dict | None = None) -> Path:
        """Save ``<stem>.safetensors`` and, ``with_state``, ``<stem>-state`` (names: loratui.outputs).

        A save the disk refuses (full, read-only, gone, a name it will not take) never ends the
        run and never costs the trained weights: the run pauses with them in memory and saves
        again when asked (``resume``; ``save``, with another ``output_dir`` if need be; ``stop``;
        a SIGTERM). ``asked_by``: a command whose answer waits for the outcome."""
        asker = asked_by
        while True:
            try:
                path = self._write_files(stem, kind, with_state)
                break
            except SaveFailed as failure:
                if asker is not None:
                    self._answer(asker, False, f"{failure.message}; paused until a save succeeds")
                asker = self._pause_until_retry(failure)
        if asker is not None:
            state = " and its resumable state" if with_state else ""
            self._answer(asker, True, f"saved {path}{state} at step {self.progress.step}")
        if self._paused_at is not None and (self._paused_by_save or (asker is not None and asker["cmd"] == "resume")):
            self._end_pause()  # the pause the failure caused (or the one `resume` was sent to end) is over
        elif kind == "epoch":
            self._status("training", "training")
        return path

    def _write_files(self, stem: str, kind: str, with_state: bool) -> Path:
        """One attempt at the save; :class:`SaveFailed` naming the file the disk refused."""
        self._status("saving", f"saving {stem}")
        out_dir = self._output_folder()
        path = out_dir / lora_file(stem)
        unet, te = self._unwrapped("unet"), self._unwrapped("te")
        dtype = SAVE_DTYPES[self.cfg.output.save_precision]
        tensors = to_kohya_tensors(lora_state_dict(unet), self.unet_targets, UNET_PREFIX, dtype)
        if self.train_text_encoder:
            tensors.update(to_kohya_tensors(lora_state_dict(te), self.te_targets, TEXT_ENCODER_PREFIX, dtype))
        metadata = build_metadata(
            self.cfg, self.dataset, self.schedule, self.facts, self.progress.step, self.progress.epoch
        )
        try:
            size = save_lora_file(path, tensors, metadata)
        except OSError as exc:
            raise save_failed(path, exc) from exc
        self.events.emit(
            "checkpoint", path=str(path), bytes=size, epoch=self.progress.epoch, step=self.progress.step, kind=kind
        )
        if with_state:
            state_dir = out_dir / state_folder(stem)
            weights = {f"unet.{k}": v for k, v in lora_state_dict(unet).items()}
            weights.update({f"te.{k}": v for k, v in lora_state_dict(te).items()})
            try:
                size = save_state(
                    state_dir, self.progress, weights, self.optimizer, self.lr_scheduler, self.accelerator.scaler
                )
            except OSError as exc:  # the state folder saved before under this name is left as it was
                raise save_failed(state_dir, exc) from exc
            self.events.emit(
                "checkpoint",
                path=str(state_dir),
                bytes=size,
                epoch=self.progress.epoch,
                step=self.progress.step,
                kind="state",
            )
        return path

    def _output_folder(self) -> Path:
        return self._output_dir or self.cfg.resolve(self.cfg.output.output_dir)

    def _use_output_dir(self, value: str | None) -> str | None:
        """Save in ``value`` from now on (a ``save`` command's output_dir); why not, or None when done."""
        if value is None:
            return None
        folder = Path(value)
        if not folder.is_absolute():
            return f"output_dir must be an absolute path, not {value!r}"
        name = self.cfg.output.name
        if folder != self._output_folder() and not self.overwrite and existing_outputs(folder, name):
            return f"{folder} holds files of an earlier run named {name!r}; choose another folder"
        self._output_dir = folder
        log.info("saving in %s from now on", folder)
        return None

    def _pause_until_retry(self, failure: SaveFailed) -> dict | None:
        """Say what failed and how to go on, pause, and wait for the word to save again: the
        command that gave it (answered with the outcome of the next attempt), or None for a signal."""
        log.error("%s; paused until a save succeeds", failure.message)
        self.events.emit(
            "warning",
            code="save_failed",
            message=f"{failure.message}; the trained weights are kept in memory",
            hint=f"{failure.fix}; then {self._retry_hint()}",
        )
        if self._paused_at is None:
            self._paused_at, self._paused_by_save = time.monotonic(), True
            epoch = max(1, self.progress.epoch + (1 if self.progress.batches_in_epoch else 0))
            self.events.emit("paused", step=self.progress.step, epoch=epoch, reason=failure.reason)
        self._status("paused", f"paused: {failure.message}")
        requests, since = self.stop.requests, time.monotonic()
        while True:
            for command in self.control.wait(0.5):
                if self._asks_to_save_again(command, failure):
                    return command
            if self.stop.requests != requests:
                return None  # a signal: save again (then stop, as it asks)
            if self.events.broken is not None and time.monotonic() - since > BLIND_RETRY_S:
                return None  # nobody can see this pause (the events cannot be written): try now and then

    def _asks_to_save_again(self, command: dict, failure: SaveFailed) -> bool:
        name = command["cmd"]
        if name == "save":
            refusal = self._use_output_dir(command.get("output_dir"))
            if refusal:
                self._answer(command, False, refusal)
            return refusal is None
        if name == "stop":
            self.stop.request("request")  # it stops once the save is done
        if name in ("resume", "stop"):
            return True
        if name == "pause":
            self._answer(command, False, f"already paused: {failure.message}; `resume` saves again")
        else:
            self._answer(command, *self._sample_now())
        return False

    def _retry_hint(self) -> str:
        if not self.control.available:
            return f"send SIGTERM to the engine (pid {os.getpid()}) to save again and stop"
        job = (self.job_id,) if self.job_id else ()
        resume = loratui_command("resume", *job)
        elsewhere = loratui_command("save", *job, "--output-dir", "FOLDER")
        return f"`{resume}` saves again, or `{elsewhere}` saves in another folder"

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


def _bucket_totals(dataset) -> dict[tuple[int, int], int]:
    totals: dict[tuple[int, int], int] = {}
    for concept in dataset.concepts:
        for bucket, count in concept.bucket_counts.items():
            totals[bucket] = totals.get(bucket, 0) + count
    return totals
