"""Synthetic but valid event streams, shaped like the engine's, for the follower and summary tests."""

from __future__ import annotations

import random
from pathlib import Path

from loratui.core.protocol import encode, make_event


class EventLog:
    """Builds a run's events with controlled timestamps: ``t`` advances only as the test says."""

    def __init__(self, t0: float = 1_795_000_000.0, seed: int = 0) -> None:
        self.t = t0
        self.lines: list[str] = []
        self.random = random.Random(seed)

    def add(self, event_type: str, **fields) -> dict:
        event = make_event(event_type, **fields)
        event["t"] = round(self.t, 3)
        self.lines.append(encode(event) + "\n")
        return event

    def started(
        self,
        total_steps: int,
        steps_per_epoch: int,
        start_step: int = 0,
        elapsed_s: float = 0.0,
        loss_history: list[float] | None = None,
    ) -> None:
        self.add("status", phase="loading_model", message="loading")
        self.add(
            "run_started",
            run_id="r1",
            config={"network": {"rank": 8}},
            config_dir="/p",
            dataset={"images": 8},
            total_steps=total_steps,
            total_epochs=-(-total_steps // steps_per_epoch),
            steps_per_epoch=steps_per_epoch,
            start_step=start_step,
            start_epoch=start_step // steps_per_epoch,
            device="cuda",
            device_name="H100",
            mixed_precision="bf16",
            pid=4242,
            resumed_from="/p/state" if start_step else None,
            elapsed_s=elapsed_s,
            loss_history=loss_history or [],
        )
        self.add("status", phase="training", message="training")
        self.elapsed = elapsed_s
        self.steps_per_epoch = steps_per_epoch

    def steps(
        self, first: int, last: int, seconds: float = 0.5, memory_every: int = 20, epoch_every: int | None = None
    ) -> None:
        for step in range(first, last + 1):
            self.t += seconds
            self.elapsed += seconds
            epoch = (step - 1) // self.steps_per_epoch + 1
            self.add(
                "step",
                step=step,
                epoch=epoch,
                loss=round(1 / (1 + step / 50) + self.random.random() / 10, 6),
                loss_avg=0.5,
                lr={"unet": 1e-4, "text_encoder": 5e-5},
                s_per_step=seconds,
                samples_per_s=4 / seconds,
                elapsed_s=self.elapsed,
            )
            if memory_every and step % memory_every == 0:
                self.add(
                    "memory", device="cuda", allocated=step, reserved=2 * step, peak_allocated=3 * step, total=80 << 30
                )
            if step % self.steps_per_epoch == 0:
                self.add("epoch_end", epoch=epoch, step=step, loss_avg=0.3, elapsed_s=self.elapsed)
                self.add("eval", step=step, epoch=epoch, loss=0.25)
                self.t += 3.0  # saving takes wall time, not training time
                self.add(
                    "checkpoint",
                    path=f"/p/model/x-{epoch:06d}.safetensors",
                    bytes=1000,
                    epoch=epoch,
                    step=step,
                    kind="epoch",
                )

    def write(self, path: Path, partial_tail: str = "") -> Path:
        path.write_text("".join(self.lines) + partial_tail)
        return path
