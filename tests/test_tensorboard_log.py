"""TensorBoard logs written from the events (engine/tensorboard_log.py), read back with
tensorboard's own reader, as `tensorboard --logdir` would read them."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.events import EventWriter
from engine.tensorboard_log import TENSORBOARD_FOLDER, TensorBoardLog, tensorboard_log
from loratui.config import config_from_dict
from tests.conftest import REPO, Recorder, small_config, write_config
from tests.event_log import EventLog

RUN_ID = "r1"  # EventLog's run id


def read_back(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def scalars(accumulator, tag: str) -> dict[int, float]:
    return {point.step: point.value for point in accumulator.Scalars(tag)}


def text(accumulator, tag: str) -> str:
    (entry,) = accumulator.Tensors(f"{tag}/text_summary")
    return entry.tensor_proto.string_val[0].decode()


def replay(log: EventLog, log_dir: Path) -> TensorBoardLog:
    from torch.utils.tensorboard import SummaryWriter

    observer = TensorBoardLog(log_dir, RUN_ID, SummaryWriter)
    for line in log.lines:
        observer.observe(json.loads(line))
    return observer


def events_of(log: EventLog, kind: str) -> list[dict]:
    return [event for event in map(json.loads, log.lines) if event["type"] == kind]


def sample_png(path: Path, colour: tuple[int, int, int]) -> Path:
    image = Image.new("RGB", (24, 16), colour)
    image.putpixel((3, 5), (1, 2, 3))  # not one flat colour: the pixels must come back as they are
    image.save(path)
    return path


def add_sample(log: EventLog, path: Path, step: int, index: int = 0, prompt: str = "ohwx cat") -> None:
    log.add(
        "sample",
        step=step,
        epoch=step // 20,
        path=str(path),
        index=index,
        prompt=prompt,
        negative_prompt="blurry",
        seed=7 + index,
        width=24,
        height=16,
        steps=30,
        cfg_scale=7.5,
        guidance=None,
        sampler="euler_a",
        trigger="epoch",
        seconds=1.5,
    )


@pytest.fixture
def recorded_run(tmp_path) -> EventLog:
    """Two epochs of 20 steps with samples and validation losses, then the end."""
    log = EventLog()
    log.started(total_steps=40, steps_per_epoch=20)
    log.add("eval", step=0, epoch=0, loss=0.4)
    log.steps(1, 20)
    add_sample(log, sample_png(tmp_path / "p0-20.png", (200, 10, 30)), step=20, index=0)
    add_sample(log, sample_png(tmp_path / "p1-20.png", (10, 200, 30)), step=20, index=1, prompt="ohwx dog")
    log.add("validation", step=20, epoch=1, loss=0.31, images=2)
    log.steps(21, 40)
    add_sample(log, sample_png(tmp_path / "p0-40.png", (30, 10, 200)), step=40, index=0)
    log.add("validation", step=40, epoch=2, loss=0.29, images=2)
    log.add("finished", step=40, epoch=2, path="/p/model/x.safetensors", elapsed_s=log.elapsed)
    return log


def test_scalars_come_back_at_the_training_steps_with_the_events_values(recorded_run, tmp_path):
    observer = replay(recorded_run, tmp_path / "log")
    assert observer.folder == tmp_path / "log" / RUN_ID / TENSORBOARD_FOLDER
    logs = read_back(observer.folder)
    steps = events_of(recorded_run, "step")
    assert scalars(logs, "loss/current") == {e["step"]: pytest.approx(e["loss"], rel=1e-6) for e in steps}
    assert scalars(logs, "loss/average") == {e["step"]: pytest.approx(e["loss_avg"]) for e in steps}
    assert scalars(logs, "lr/unet") == {e["step"]: pytest.approx(1e-4) for e in steps}
    assert scalars(logs, "lr/text_encoder") == {e["step"]: pytest.approx(5e-5) for e in steps}
    assert scalars(logs, "speed/samples_per_s") == {e["step"]: pytest.approx(8.0) for e in steps}
    assert scalars(logs, "speed/s_per_step") == {e["step"]: pytest.approx(0.5) for e in steps}
    assert scalars(logs, "loss/epoch") == {20: pytest.approx(0.3), 40: pytest.approx(0.3)}
    assert scalars(logs, "loss/eval") == {0: pytest.approx(0.4), 20: pytest.approx(0.25), 40: pytest.approx(0.25)}
    assert scalars(logs, "loss/validation") == {20: pytest.approx(0.31), 40: pytest.approx(0.29)}
    # The time of each point is the event's, so a replayed events.jsonl gives the run's own times.
    assert [p.wall_time for p in logs.Scalars("loss/current")] == pytest.approx([e["t"] for e in steps])


def test_sample_images_by_prompt_at_their_step_with_their_pixels(recorded_run, tmp_path):
    logs = read_back(replay(recorded_run, tmp_path / "log").folder)
    assert sorted(logs.Tags()["images"]) == ["samples/prompt_0", "samples/prompt_1"]
    first_prompt = logs.Images("samples/prompt_0")
    assert [image.step for image in first_prompt] == [20, 40]
    for image, png in zip(first_prompt, ["p0-20.png", "p0-40.png"], strict=True):
        assert (image.width, image.height) == (24, 16)
        decoded = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB"))
        assert (decoded == np.asarray(Image.open(tmp_path / png).convert("RGB"))).all()
    assert [image.step for image in logs.Images("samples/prompt_1")] == [20]
    told = text(logs, "sample_prompts/1")
    assert "ohwx dog" in told and "blurry" in told and "seed 8" in told


def test_the_config_as_toml_text(recorded_run, tmp_path):
    logs = read_back(replay(recorded_run, tmp_path / "log").folder)
    config = text(logs, "config")
    assert "[network]" in config and "rank = 8" in config
    (entry,) = logs.Tensors("config/text_summary")
    assert entry.step == 0


def test_a_sample_whose_png_is_gone_is_skipped_and_the_rest_is_logged(tmp_path):
    log = EventLog()
    log.started(total_steps=4, steps_per_epoch=4)
    add_sample(log, tmp_path / "never-written.png", step=0)
    log.steps(1, 4)
    log.add("finished", step=4, epoch=1, path="/p/model/x.safetensors", elapsed_s=log.elapsed)
    logs = read_back(replay(log, tmp_path / "log").folder)
    assert logs.Tags()["images"] == []
    assert sorted(scalars(logs, "loss/current")) == [1, 2, 3, 4]


def test_a_resumed_run_continues_the_same_curves(tmp_path):
    first = EventLog(seed=1)
    first.started(total_steps=40, steps_per_epoch=20)
    first.steps(1, 30)
    first.add("failed", step=30, message="the machine went away")  # the last state was saved at step 20
    replay(first, tmp_path / "log")
    _next_two_event_files_sort_in_order()
    resumed = EventLog(t0=first.t + 600, seed=2)
    resumed.started(total_steps=40, steps_per_epoch=20, start_step=20, elapsed_s=10.0)
    resumed.steps(21, 40)
    resumed.add("finished", step=40, epoch=2, path="/p/model/x.safetensors", elapsed_s=resumed.elapsed)
    observer = replay(resumed, tmp_path / "log")
    assert observer.folder == tmp_path / "log" / RUN_ID / TENSORBOARD_FOLDER  # the same run, the same folder

    points = read_back(observer.folder).Scalars("loss/current")
    # One point a step: what the first try logged after step 20 (its 21..30) is hidden.
    assert [point.step for point in points] == list(range(1, 41))
    losses = {point.step: point.value for point in points}
    expected = {e["step"]: e["loss"] for e in events_of(first, "step") if e["step"] <= 20}
    expected.update({e["step"]: e["loss"] for e in events_of(resumed, "step")})
    assert losses == {step: pytest.approx(loss, rel=1e-6) for step, loss in expected.items()}


def _next_two_event_files_sort_in_order() -> None:
    """Event files are read in name order; within one second and one process their names end in a
    counter (…9, …10 would sort backwards). Two engine processes never share a second and a pid;
    this test's two "processes" do, so it skips to counter values of equal length."""
    from tensorboard.summary.writer import event_file_writer

    counter = event_file_writer._global_uid
    while len(str((n := counter.get()) + 1)) != len(str(n + 2)):
        pass


def test_an_observer_of_a_run_with_no_writer_yet_ignores_events(tmp_path):
    log = EventLog()
    log.add("warning", code="check", message="m", hint="h")  # before run_started: nothing to write to
    observer = replay(log, tmp_path / "log")
    assert observer.writer is None and not (tmp_path / "log").exists()


def config_with(log_with: str, tmp_path: Path):
    data = small_config(output={"log_with": log_with})
    return config_from_dict(data, tmp_path)


def test_log_with_none_writes_nothing_and_never_imports_tensorboard(tmp_path, monkeypatch):
    _without_tensorboard(monkeypatch)
    recorder = Recorder()
    assert tensorboard_log(config_with("none", tmp_path), EventWriter(recorder), "job-1") is None
    assert recorder.events == []  # no tensorboard_missing warning: nothing was asked of tensorboard


def test_tensorboard_missing_is_one_warning_with_the_fix(tmp_path, monkeypatch):
    _without_tensorboard(monkeypatch)
    recorder = Recorder()
    assert tensorboard_log(config_with("tensorboard", tmp_path), EventWriter(recorder), "job-1") is None
    (warning,) = recorder.of("warning")
    assert warning["code"] == "tensorboard_missing"
    assert "pip install 'tensorboard>=2.14'" in warning["hint"] and 'log_with = "none"' in warning["hint"]


def _without_tensorboard(monkeypatch) -> None:
    """``import tensorboard`` fails, as where the package is not installed."""
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    for name in [name for name in sys.modules if name.startswith("torch.utils.tensorboard")]:
        monkeypatch.delitem(sys.modules, name)


# ------------------------------------------------------------------ real engine runs


def run_engine(project: Path, run_id: str, log_with: str, block_tensorboard: bool = False) -> list[dict]:
    """``python -m engine`` as the jobs layer starts it (--run-id = the run folder's name); its events."""
    data = small_config(
        dataset={"resolution": 64, "min_bucket_reso": 64, "max_bucket_reso": 128},
        training={"batch_size": 2, "max_train_steps": 2},
        output={"name": run_id, "log_with": log_with, "save_every_n_epochs": 0},
    )
    config = write_config(project, data, f"{run_id}.toml")
    prelude = "import sys; sys.modules['tensorboard'] = None; " if block_tensorboard else ""
    code = prelude + "from engine.__main__ import main; sys.exit(main(sys.argv[1:]))"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    events_file = project / f"{run_id}.jsonl"
    with events_file.open("w") as events, (project / f"{run_id}.log").open("w") as log:
        done = subprocess.run(
            [sys.executable, "-c", "import sys; " + code, f"--run-id={run_id}", "--", str(config)],
            stdout=events,
            stderr=log,
            cwd=project,
            env=env,
        )
    assert done.returncode == 0, (project / f"{run_id}.log").read_text()[-3000:]
    return [json.loads(line) for line in events_file.read_text().splitlines()]


def test_a_real_run_leaves_readable_tensorboard_files_in_its_run_folder(project):
    events = run_engine(project, "tb-run", "tensorboard")
    folder = project / "log" / "tb-run" / TENSORBOARD_FOLDER
    assert list(folder.glob("events.out.tfevents.*")), "no event file"
    logs = read_back(folder)
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == [1, 2]
    assert scalars(logs, "loss/current") == {e["step"]: pytest.approx(e["loss"], rel=1e-6) for e in steps}
    assert set(scalars(logs, "lr/unet")) == {1, 2}
    evals = {e["step"]: pytest.approx(e["loss"], rel=1e-6) for e in events if e["type"] == "eval"}
    assert scalars(logs, "loss/eval") == evals
    assert 'name = "tb-run"' in text(logs, "config")
    assert not [e for e in events if e["type"] == "warning" and e["code"] in ("observer_failed", "tensorboard_missing")]


def test_a_real_run_without_the_tensorboard_package_trains_and_says_so_once(project):
    events = run_engine(project, "no-tb", "tensorboard", block_tensorboard=True)
    assert events[-1]["type"] == "finished"
    assert [e["code"] for e in events if e["type"] == "warning"].count("tensorboard_missing") == 1
    assert not (project / "log" / "no-tb" / TENSORBOARD_FOLDER).exists()
