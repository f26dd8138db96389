"""Sample images during a run: when they are rendered, where they go, what each event says.

A mixin of :class:`engine.train.Trainer`, like its saving (engine/saving.py) and its commands
(engine/commands.py). The run's prompts (``[sample]``, loratui/sample_prompts.py) are rendered
between two steps (engine/sampling.py) at the start (``sample.at_start``), every
``sample.every_n_steps`` steps, after every ``sample.every_n_epochs`` epochs and when a ``sample``
command asks. Rendering draws no random number training would have drawn (engine.sampling's
``preserved_rng``), so a run with samples has exactly the losses of the same run without them; its
time is left out of the step timings and of ``elapsed_s``, as a save's is.

A render that fails never fails the run: it is a ``warning`` with code ``sample_failed`` (the
error's first line), and training goes on.

The files are ``<output_dir>/sample/<name>_<when>_<index>_<seed>.png``, kohya's names without its
time stamp: ``<when>`` is ``e000003`` after epoch 3 and ``000120`` at step 120 otherwise (start,
every N steps, sample now), ``<index>`` the prompt's number (two digits), so that an image rendered
again at the same point (a resumed run) replaces the same file instead of piling up beside it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from engine.model_loading import first_line
from loratui.sample_prompts import SamplePrompt, run_prompts

if TYPE_CHECKING:
    import torch

    from engine.events import EventWriter
    from engine.families.base import Family
    from engine.model_loading import BaseModel
    from engine.sampling import Renderer
    from engine.state import Progress
    from engine.train import StopFlag
    from loratui.config import RunConfig

log = logging.getLogger("engine.samples")

SAMPLE_FOLDER = "sample"
TRIGGERS = ("start", "steps", "epoch", "request")


def sample_file_name(run_name: str, prompt: SamplePrompt, step: int, epoch: int, trigger: str) -> str:
    """kohya's sample file name, without its time stamp (see the module's docstring)."""
    when = f"e{epoch:06d}" if trigger == "epoch" else f"{step:06d}"
    return f"{run_name}_{when}_{prompt.index:02d}_{prompt.seed}.png"


class Sampling:
    """The trainer's sample images."""

    # Set by the trainer.
    cfg: RunConfig
    events: EventWriter
    progress: Progress
    family: Family
    model: BaseModel
    device: torch.device
    weight_dtype: torch.dtype
    vae_dtype: torch.dtype
    stop: StopFlag

    if TYPE_CHECKING:  # supplied by the trainer and its saving (engine/saving.py)

        def _status(self, phase: str, message: str, current: int | None = None, total: int | None = None) -> None: ...
        def _output_folder(self) -> Path: ...

    def _prepare_sampling(self) -> None:
        """The run's prompts, read once (the check has judged them already), and no renderer until the
        first image is asked for."""
        self.sample_prompts = run_prompts(self.cfg)
        self._renderer: Renderer | None = None
        self._sampling_refused: str | None = None  # why this configuration cannot render, once known

    def _sample_on_schedule(self, trigger: str) -> bool:
        """Render the prompts if ``trigger`` is due now by the ``[sample]`` settings; True when it took time
        (to be left out of the step timings)."""
        settings, progress = self.cfg.sample, self.progress
        due = {
            "start": settings.at_start,
            "steps": bool(settings.every_n_steps) and progress.step % settings.every_n_steps == 0,
            "epoch": bool(settings.every_n_epochs) and progress.epoch % settings.every_n_epochs == 0,
        }[trigger]
        if not (due and self.sample_prompts):
            return False
        self._render_samples(trigger)
        return True

    def _sample_now(self) -> tuple[bool, str]:
        """A ``sample`` command: the prompts now; the answer once the images are written (or failed)."""
        if not self.sample_prompts:
            return False, "this run has no sample prompts: set sample.prompts or sample.prompt_file and start it again"
        paths, failures = self._render_samples("request")
        step = self.progress.step
        if not paths:
            reason = failures[0] if failures else "nothing was rendered"
            return False, f"no sample rendered at step {step}: {reason}"
        failed = f" ({len(failures)} failed: see the warnings)" if failures else ""
        noun = "sample" if len(paths) == 1 else "samples"
        return True, f"{len(paths)} {noun} at step {step} in {paths[0].parent}{failed}"

    def _render_samples(self, trigger: str) -> tuple[list[Path], list[str]]:
        """Every prompt once: a ``sample`` event for each image written, a ``sample_failed`` warning for
        each that was not. Returns the paths written and the failures' messages."""
        paths: list[Path] = []
        failures: list[str] = []
        renderer = self._sample_renderer()
        if renderer is None:
            return paths, [self._sampling_refused or "sampling is not available"]
        total = len(self.sample_prompts)
        for number, prompt in enumerate(self.sample_prompts, start=1):
            if self.stop.reason:  # a SIGTERM or stop waits for no more images
                break
            self._status_sampling(number, total)
            try:
                paths.append(self._render_one(renderer, prompt, trigger))
            except Exception as exc:  # the run goes on whatever a render raised
                failures.append(self._sample_failed(prompt, exc))
        self._status_sampling(None, total)
        return paths, failures

    def _sample_renderer(self) -> Renderer | None:
        from engine.sampling import SamplingUnavailable, make_renderer

        if self._renderer is None and self._sampling_refused is None:
            try:
                self._renderer = make_renderer(self.family, self.model, self.device, self.weight_dtype, self.vae_dtype)
            except SamplingUnavailable as exc:
                self._sampling_refused = str(exc)
                self.events.emit("warning", code="sample_failed", message=str(exc), hint=_REFUSED_HINT)
        return self._renderer

    def _render_one(self, renderer: Renderer, prompt: SamplePrompt, trigger: str) -> Path:
        from engine.sampling import save_sample_png

        progress = self.progress
        started = time.perf_counter()
        image = renderer.render(prompt)
        name = sample_file_name(self.cfg.output.name, prompt, progress.step, progress.epoch, trigger)
        path = save_sample_png(image, self._output_folder() / SAMPLE_FOLDER / name, self._sample_facts(prompt))
        self.events.emit(
            "sample",
            step=progress.step,
            epoch=progress.epoch,
            path=str(path.absolute()),
            index=prompt.index,
            prompt=prompt.prompt,
            negative_prompt=prompt.negative_prompt,
            seed=prompt.seed,
            width=image.width,
            height=image.height,
            steps=prompt.steps,
            cfg_scale=prompt.cfg_scale,
            guidance=prompt.guidance,
            sampler=prompt.sampler,
            trigger=trigger,
            seconds=time.perf_counter() - started,
        )
        return path

    def _sample_facts(self, prompt: SamplePrompt) -> dict[str, object]:
        """The PNG's text chunks: what a user comparing images needs to tell them apart and render one again."""
        progress = self.progress
        return {
            "prompt": prompt.prompt,
            "negative_prompt": prompt.negative_prompt,
            "seed": prompt.seed,
            "steps": prompt.steps,
            "cfg_scale": prompt.cfg_scale,
            **({"guidance": prompt.guidance} if prompt.guidance is not None else {}),
            "sampler": prompt.sampler,
            "size": f"{prompt.width}x{prompt.height}",
            "step": progress.step,
            "epoch": progress.epoch,
            "lora": f"{self.cfg.output.name} at step {progress.step}",
            "model": self.model.name,
            "software": "loratui",
        }

    def _sample_failed(self, prompt: SamplePrompt, exc: Exception) -> str:
        import torch

        if self.device.type == "cuda":
            torch.cuda.empty_cache()  # an out-of-memory render leaves its blocks cached: training needs them
        log.warning("sample %d failed", prompt.index, exc_info=exc)
        message = (
            f"sample {prompt.index} ({prompt.prompt[:60]!r}) failed at step {self.progress.step}: {first_line(exc)}"
        )
        self.events.emit("warning", code="sample_failed", message=message, hint=_FAILED_HINT)
        return first_line(exc)

    def _status_sampling(self, number: int | None, total: int) -> None:
        if number is None:  # back to what the run was doing: a sample asked for during a pause stays paused
            paused = getattr(self, "_paused_at", None) is not None
            phase = "paused" if paused else "training"
            self._status(phase, f"paused after step {self.progress.step}" if paused else phase)
        else:
            self._status("sampling", f"rendering sample {number}/{total}", number, total)


_FAILED_HINT = (
    "training goes on without this image; check the prompt's size (a multiple of 8, 16 for FLUX.1) and "
    "sampler, or lower its size if the GPU ran out of memory"
)
_REFUSED_HINT = "training goes on without samples (empty sample.prompts and sample.prompt_file to sample no more)"
