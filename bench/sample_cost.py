"""What sample images cost a run. Run: ``python bench/sample_cost.py``.

What is measured: the sample project's own run (``sample_project/loratui.toml``: the built-in tiny
SD-shaped model, 128 px, 8 images x 10 repeats plus regularisation images, batch 4, 2 epochs, a LoRA
file and a state saved after each epoch) trained by the real engine (``engine.train.Trainer``, in
this process, events into memory) twice per round: once as it is (the baseline) and once with
samples at loratui's defaults for SD, ``[sample] every_n_epochs = 1`` and ``--prompts`` prompts
without options, so each renders at the training resolution with 30 euler_a steps and CFG 7.5
(the two passes of classifier-free guidance: 60 UNet calls per image).

Printed: the seconds per sample image (the ``seconds`` of the ``sample`` events: text encoding, the
sampler's steps, the VAE decode and the PNG), the same in training steps of the same runs (the
figure least moved by a busy machine), the images per run, the wall time of each run, the share of
the sampled run spent rendering, and the ratio of the two runs' wall times. It also says
whether the step losses of the two runs are equal, as they must be (rendering draws no training
random number). The runs alternate (baseline, sampled, sampled, baseline, ...) so that background
load hits both alike; medians over the rounds.

Options: ``--rounds`` (pairs of runs, default 2), ``--prompts`` (default 2), ``--epochs`` (default the
config's 2), ``--threads`` (torch threads; 1 is steadier on a busy machine). Results:
docs/benchmarks.md. Exit status is always 0: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import statistics
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from bench.engine_step import print_environment, print_load, quiet_libraries, run_measurement  # noqa: E402

SAMPLE_PROJECT = REPO / "sample_project"
PROMPTS = ("ohwx shape", "ohwx shape, red background", "a photo of ohwx shape on a table", "ohwx shape, blue")


def run_config(epochs: int, prompts: int) -> dict:
    data = tomllib.loads((SAMPLE_PROJECT / "loratui.toml").read_text())
    data["training"]["epochs"] = epochs
    data.pop("sample", None)  # the baseline renders nothing; the sampled run renders the bench's own prompts
    if prompts:
        data["sample"] = {"prompts": list(PROMPTS[:prompts]), "every_n_epochs": 1}
    return data


def train(data: dict) -> tuple[float, list[dict]]:
    """One run in a fresh copy of the sample project: (wall seconds, its events)."""
    import tomli_w
    from accelerate.state import AcceleratorState

    from engine.events import EventWriter
    from engine.train import StopFlag, Trainer
    from loratui.config import load_config
    from tests.conftest import Recorder

    with tempfile.TemporaryDirectory() as folder:
        project = Path(folder)
        for name in ("img", "reg"):
            shutil.copytree(SAMPLE_PROJECT / name, project / name)
        config = project / "loratui.toml"
        config.write_text(tomli_w.dumps(data))
        AcceleratorState._reset_state(reset_partial_state=True)
        recorder = Recorder()
        torch.manual_seed(0)
        started = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):
            Trainer(load_config(config), EventWriter(recorder), StopFlag()).run()
        wall = time.perf_counter() - started
    if recorder.events[-1]["type"] != "finished":
        raise RuntimeError(f"the run did not finish: {recorder.events[-1]}")
    return wall, recorder.events


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="pairs of runs, alternated (default 2)")
    parser.add_argument("--prompts", type=int, default=2, choices=range(1, len(PROMPTS) + 1), help="sample prompts")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (default 2, the config's)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own choice)")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # each run's line as it ends, into a file too
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    quiet_libraries()
    print_environment()
    print(
        f"sample_project/loratui.toml (tiny SD, 128 px, batch 4), {args.epochs} epochs; sampled runs: "
        f"{args.prompts} prompts every epoch at the defaults (128x128, 30 euler_a steps, CFG 7.5); "
        f"{args.rounds} rounds"
    )
    walls: dict[str, list[float]] = {"baseline": [], "sampled": []}
    per_sample: list[float] = []
    step_seconds: list[float] = []  # s_per_step of the sampled runs: the same load as their samples
    shares: list[float] = []
    losses: dict[str, list[float]] = {}
    images = 0
    for round_number in range(max(1, args.rounds)):
        order = ("baseline", "sampled") if round_number % 2 == 0 else ("sampled", "baseline")
        for kind in order:
            wall, events = train(run_config(args.epochs, args.prompts if kind == "sampled" else 0))
            walls[kind].append(wall)
            losses[kind] = [e["loss"] for e in events if e["type"] == "step"]
            seconds = [e["seconds"] for e in events if e["type"] == "sample"]
            if kind == "sampled":
                per_sample += seconds
                step_seconds += [e["s_per_step"] for e in events if e["type"] == "step"]
                shares.append(sum(seconds) / wall)
                images = len(seconds)
            steps = len(losses[kind])
            print(f"  round {round_number + 1} {kind:8s}: {wall:6.1f} s wall, {steps} steps, {len(seconds)} samples")
        print_load(f"after round {round_number + 1}")
    baseline, sampled = statistics.median(walls["baseline"]), statistics.median(walls["sampled"])
    print(
        f"seconds per sample image: median {statistics.median(per_sample):.2f} (min {min(per_sample):.2f}, "
        f"max {max(per_sample):.2f}, {len(per_sample)} images)"
    )
    print(f"images per run: {images} ({args.prompts} prompts x {args.epochs} epochs)")
    per_step = statistics.median(step_seconds)
    print(
        f"one sample image costs {statistics.median(per_sample) / per_step:.1f} training steps "
        f"(median {per_step:.2f} s/step in the same runs)"
    )
    print(f"run wall time: baseline {baseline:.1f} s, with samples {sampled:.1f} s (medians)")
    print(f"share of the sampled run spent rendering: {statistics.median(shares) * 100:.1f} %")
    print(f"ratio sampled / baseline wall time: {sampled / baseline:.3f}")
    print(f"step losses equal with and without samples: {losses['baseline'] == losses['sampled']}")


if __name__ == "__main__":
    run_measurement(main)
