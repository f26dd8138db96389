"""Shared fixtures: a throw-away copy of the sample dataset, configs for it, and the engine run
in-process (the CLI tests run it as a real child process)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_project"


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Build the tiny model once per test session in a private cache, never in the user's."""
    os.environ["LORATUI_CACHE_DIR"] = str(tmp_path_factory.mktemp("loratui-cache"))
    os.environ["LORATUI_STATE_DIR"] = str(tmp_path_factory.mktemp("loratui-state"))  # the job registry
    yield


@pytest.fixture
def private_tui_settings(tmp_path, monkeypatch):
    """The app never reads or writes the user's own settings and themes, and its default theme
    (which depends on the terminal) is the same on every machine."""
    monkeypatch.setenv("LORATUI_CONFIG_DIR", str(tmp_path / "user-config"))
    monkeypatch.delenv("LORATUI_THEMES_DIR", raising=False)
    monkeypatch.delenv("TEXTUAL_COLOR_SYSTEM", raising=False)
    monkeypatch.setenv("COLORTERM", "truecolor")
    # What the wizard shows depends on the machine (fp16/bf16 need a CUDA GPU): the same one everywhere.
    from loratui import preflight

    monkeypatch.setattr(preflight, "this_machine", lambda: preflight.Machine(None, no_gpu="this test has no GPU"))


def small_config(**sections) -> dict:
    """A fast config over the sample images: 8 images x 10 repeats, batch 4 -> 20 steps/epoch."""
    data = {
        "model": {"path": "loratui:tiny-sd"},
        "dataset": {
            "image_dir": "img",
            "resolution": 128,
            "min_bucket_reso": 64,
            "max_bucket_reso": 256,
            "cache_latents": "memory",
        },
        "network": {"rank": 8, "alpha": 2.0},
        "training": {"batch_size": 4, "epochs": 2, "mixed_precision": "no", "seed": 7},
        "optimizer": {"name": "AdamW", "unet_lr": 1e-3, "text_encoder_lr": 5e-4, "scheduler": "constant"},
        "output": {"name": "test_lora", "output_dir": "model", "log_dir": "log", "save_every_n_epochs": 1},
    }
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return data


@pytest.fixture
def project(tmp_path) -> Path:
    """A project folder with the sample's images (no reg folder: tests add what they need)."""
    shutil.copytree(SAMPLE / "img", tmp_path / "img")
    return tmp_path


def write_config(folder: Path, data: dict, name: str = "loratui.toml") -> Path:
    import tomli_w

    path = folder / name
    path.write_text(tomli_w.dumps(data))
    return path


class Recorder(io.StringIO):
    """An event stream that keeps the decoded events and can act on them (e.g. request a stop)."""

    def __init__(self, on_event=None) -> None:
        super().__init__()
        self.events: list[dict] = []
        self.on_event = on_event

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                event = json.loads(line)
                self.events.append(event)
                if self.on_event:
                    self.on_event(event)
        return super().write(text)

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["type"] == kind]


def train_in_process(config_path: Path, on_event=None, resume: str | None = None, overwrite: bool = False):
    """Run the engine's Trainer in this process; returns (recorder, trainer). ``overwrite``: as
    ``python -m engine --overwrite`` (the run may replace an earlier run's files)."""
    from accelerate.state import AcceleratorState

    from engine.events import EventWriter
    from engine.train import StopFlag, Trainer
    from loratui.config import load_config

    # accelerate keeps one state per process; the engine runs one training per process, but
    # these tests run many (with different precisions) in one, so start each from a clean state.
    AcceleratorState._reset_state(reset_partial_state=True)
    cfg = load_config(config_path)
    if resume:
        cfg.training.resume_from = resume
    stop = StopFlag()
    recorder = Recorder(on_event=(lambda e: on_event(e, stop)) if on_event else None)
    trainer = Trainer(cfg, EventWriter(recorder), stop, overwrite=overwrite)
    trainer.run()
    return recorder, trainer


async def workers_done(app) -> None:
    """Wait for the app's workers. A worker cancelled because a newer one replaced it (an
    exclusive group: the dataset scan restarts when a field changes) is not a failure: wait for
    its replacement instead."""
    from textual.worker import WorkerCancelled

    for _ in range(100):
        try:
            await app.workers.wait_for_complete()
            return
        except WorkerCancelled:
            await asyncio.sleep(0.01)
    raise AssertionError("workers kept being cancelled and replaced")


# `pytest --hypothesis-profile=thorough` runs the property tests with many more examples than
# the default profile CI uses (a search for crashes before a release).
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("thorough", max_examples=1500)
