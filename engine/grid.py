"""``python -m engine.grid SPEC.json``: render a checkpoint x weight grid, JSON-lines events on stdout.

The spec (loratui/grid_spec.py, written by ``loratui grid``) names the base model (the run's config),
the LoRA files (rows) and the weights (columns), one prompt and seed. The base model is loaded once
through its family; each file is then loaded onto it and rendered at each weight with the sampling
Renderer (engine/sampling.py), and the cells become one labelled PNG (loratui/grid_image.py).

Loading a kohya file at a weight: diffusers' ``load_lora_weights`` on the family's sampling pipeline
(the model's own modules, nothing copied) maps the kohya names back to the modules of every family
(SDXL's sgm names, FLUX.1's fused q/k/v; the tests of each family's file hold that it reproduces the
trained model; FLUX.1's only at FLUX.1's own layer widths, so not the tiny Flux), and injects peft LoRA layers scaled alpha / rank as in the file. ``set_adapters``
then sets peft's scale to weight x alpha / rank: the image at weight w is the base model plus exactly
w times the trained update (weight 0 is the base model's image, weight 1 the LoRA as trained).

Events: ``status`` (phase ``loading_model``, then ``rendering`` with current/total per cell), and
``finished`` with the PNG's path (``step``: cells rendered, ``epoch``: rows), or ``stopped`` /
``failed`` as for training. SIGTERM, SIGINT and a ``stop`` command end it between two cells.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path

from loratui.core.exit_codes import ExitCode
from loratui.errors import UserError
from loratui.quantities import count

ADAPTER = "grid"
log = logging.getLogger("engine.grid")


class GridStopped(Exception):
    """A stop was asked for (a signal or a ``stop`` command) between two cells."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class GridRender:
    """Renders one grid spec, cell by cell, telling its progress as events."""

    def __init__(self, spec, events, control=None, stop_reason=lambda: None) -> None:
        self.spec = spec
        self.events = events
        self.control = control
        self.stop_reason = stop_reason  # a signal's stop, when one came
        self.done = 0
        self.started = time.monotonic()

    # ------------------------------------------------------------------ the run
    def run(self) -> str:
        """Render and save the grid; the PNG's path. GridStopped when asked to stop."""
        from loratui.grid_image import compose_grid, grid_metadata, save_grid_png

        spec = self.spec
        renderer, pipeline = self._load()
        shape = f"{count(len(spec.rows), 'checkpoint')} x {count(len(spec.weights), 'weight')}"
        self._status("rendering", shape, 0)
        cells = [self._render_row(row, renderer, pipeline) for row in spec.rows]
        labels = self.labels()
        self._status("saving", f"writing {Path(spec.output).name}")
        image, layout = compose_grid(cells, labels)
        save_grid_png(image, Path(spec.output), grid_metadata(labels, self.facts(layout)))
        return spec.output

    def _load(self):
        import torch

        from engine.families import family_for
        from engine.model_loading import weight_dtype
        from engine.sampling import SamplingUnavailable, make_renderer
        from engine.train import pick_device
        from loratui.config import config_from_dict

        self._status("loading_model", "loading the base model")
        cfg = config_from_dict(self.spec.config, Path(self.spec.config_dir))
        family = family_for(cfg.model.family)
        model = family.load(cfg)
        device = pick_device()
        # The run's half precision on a GPU; float32 on a CPU (which has no fast half-precision kernels).
        dtype = weight_dtype(cfg.training.mixed_precision) if device.type == "cuda" else torch.float32
        vae_dtype = torch.float32 if cfg.model.no_half_vae else dtype
        model.vae.requires_grad_(False).to(device, dtype=vae_dtype).eval()
        for spec in family.parts:
            getattr(model, spec.attribute).requires_grad_(False).to(device, dtype=dtype).eval()
        try:
            renderer = make_renderer(family, model, device, dtype, vae_dtype)
        except SamplingUnavailable as exc:
            raise UserError(str(exc), "model.family", "render the grid with another tool for now", "model") from exc
        # The pipeline over the same modules, for its LoRA loader: what it injects, the renderer renders with.
        pipeline = family.sample_pipeline(model, model.noise_scheduler)
        return renderer, pipeline

    def _render_row(self, row, renderer, pipeline) -> list:
        self._check_stop()
        try:
            pipeline.load_lora_weights(row.path, adapter_name=ADAPTER)
        except (ValueError, KeyError, RuntimeError, AssertionError) as exc:
            if isinstance(exc, AssertionError) and self.spec.family == "flux":
                raise self._not_flux1_wide(pipeline) from exc  # diffusers' kohya converter: FLUX.1's widths only
            first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise UserError(
                f"this LoRA file does not load onto the base model: {first}",
                row.path,
                "give LoRA files trained on this model (--model / --config)",
                "model",
            ) from exc
        try:
            images = []
            for weight in self.spec.weights:
                self._check_stop()
                pipeline.set_adapters([ADAPTER], adapter_weights=[weight])
                images.append(renderer.render(self.spec.prompt))
                self.done += 1
                self._status("rendering", f"{row.label} at weight {weight:g}", self.done)
            return images
        finally:
            pipeline.delete_adapters(ADAPTER)

    def _not_flux1_wide(self, pipeline) -> UserError:
        """diffusers' kohya FLUX.1 LoRA loader cuts a single block's fused linear1 at FLUX.1's own widths
        (3072 x 3 + 12288, hard-coded), so it loads no file of a narrower model such as loratui:tiny-flux."""
        config = pipeline.transformer.config
        width = config.num_attention_heads * config.attention_head_dim
        return UserError(
            f"diffusers' FLUX.1 LoRA loader only takes FLUX.1's real layer widths (3072); this model is {width}"
            " wide, so it cannot be gridded (the built-in tiny Flux never can)",
            str(self.spec.config.get("model", {}).get("path", "model.path")),
            "grid LoRA files trained on FLUX.1 dev or schnell",
            "model",
        )

    # ------------------------------------------------------------------ stopping
    def _check_stop(self) -> None:
        reason = self.stop_reason()
        if reason:
            raise GridStopped(reason)
        for command in self.control.poll() if self.control is not None else []:
            if command["cmd"] == "stop":
                self._answer(command, True, "stopping the grid; no image is written")
                raise GridStopped("request")
            self._answer(command, False, f"a grid job takes only stop, not {command['cmd']}")

    def _answer(self, command: dict, ok: bool, message: str) -> None:
        self.events.emit("control", command=command["cmd"], id=command["id"], ok=ok, message=message)

    # ------------------------------------------------------------------ what it says
    def _status(self, phase: str, message: str, current: int | None = None) -> None:
        progress = {"current": current, "total": self.spec.cells} if current is not None else {}
        self.events.emit("status", phase=phase, message=message, **progress)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def labels(self):
        from loratui.grid_image import GridLabels

        spec, prompt = self.spec, self.spec.prompt
        losses = spec.validation_losses or []
        notes = [f"val {loss:.4f}" if loss is not None else "" for loss in losses] or None
        subtitle = f"seed {prompt.seed}, {prompt.steps} steps, CFG {prompt.cfg_scale:g}, {prompt.sampler}"
        if prompt.guidance is not None:
            subtitle += f", guidance {prompt.guidance:g}"
        if prompt.negative_prompt:
            subtitle += f"; negative: {prompt.negative_prompt}"
        return GridLabels(
            rows=[row.label for row in spec.rows],
            columns=list(spec.weights),
            title=prompt.prompt,
            subtitle=subtitle,
            notes=notes,
            best_row=spec.best_row,
        )

    def facts(self, layout) -> dict:
        from dataclasses import asdict

        return {
            "source": self.spec.source,
            "family": self.spec.family,
            "files": [row.path for row in self.spec.rows],
            "prompt": asdict(self.spec.prompt),
            "layout": asdict(layout),
        }


def load_spec(path: Path):
    from loratui.grid_spec import GridSpec

    try:
        return GridSpec.from_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(
            f"cannot read the grid spec: {exc.strerror or exc}", str(path), "run loratui grid again"
        ) from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(f"not a grid spec: {exc}", str(path), "run loratui grid again") from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.grid", description="render a checkpoint x weight grid")
    parser.add_argument("spec", help="the grid spec (JSON, written by loratui grid)")
    parser.add_argument("--run-id", help="the job's id (unused: for the command line's symmetry with the engine)")
    parser.add_argument("--control", metavar="FIFO", help="read control commands (stop) from this FIFO")
    parser.add_argument("--end-file", metavar="FILE", help="keep the final event here too")
    args = parser.parse_args(argv)

    from engine.__main__ import quiet_libraries, report_failure
    from engine.events import claim_stdout

    events = claim_stdout(Path(args.end_file) if args.end_file else None)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_libraries()
    stop: list[str] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append("signal"))
    signal.signal(signal.SIGINT, lambda *_: stop.append("signal"))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closed terminal never stops a job
    render = None
    try:
        from engine.control import ControlChannel

        spec = load_spec(Path(args.spec))
        control = ControlChannel(Path(args.control) if args.control else None)
        render = GridRender(spec, events, control, lambda: stop[0] if stop else None)
        path = render.run()
        events.emit("finished", step=render.done, epoch=len(spec.rows), path=path, elapsed_s=render.elapsed_s)
        return ExitCode.OK
    except GridStopped as exc:
        done, elapsed = (render.done, render.elapsed_s) if render else (0, 0.0)
        events.emit("stopped", step=done, epoch=0, path=None, state=None, reason=exc.reason, elapsed_s=elapsed)
        return ExitCode.STOPPED
    except Exception as exc:
        return report_failure(events, exc, render.done if render else 0)


if __name__ == "__main__":
    sys.exit(main())
