"""Sample images during training (engine/sampling.py, engine/sample_runs.py) on the tiny models: when
they are rendered, what the files and events hold, that training is the same with them as without,
that a failing render never fails the run, and `loratui sample JOB` on a live job."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from loratui.core.protocol import validate_event
from tests.conftest import SAMPLE, Recorder, small_config, train_in_process, write_config

# Tiny renders: 64x64, two sampling steps.
PROMPTS = ["ohwx shape --w 64 --h 64 --s 2", "ohwx shape, red --n blurry --w 80 --h 64 --s 2 --d 99 --l 5"]


def short_project(project: Path) -> Path:
    """The sample images once each: 8 items per epoch, 2 steps of 4."""
    (project / "img" / "10_ohwx shape").rename(project / "img" / "1_ohwx shape")
    return project


def sampled_config(project: Path, sample: dict | None, **sections) -> Path:
    data = small_config(**sections)
    data["dataset"]["resolution"] = 64  # the smallest bucket: the fastest steps
    data["training"]["epochs"] = 3
    data["output"]["save_every_n_epochs"] = 0
    if sample is not None:
        data["sample"] = sample
    return write_config(project, data)


def step_losses(recorder: Recorder) -> list[float]:
    return [e["loss"] for e in recorder.of("step")]


def test_samples_at_start_every_n_steps_and_every_n_epochs_and_training_is_unchanged(project):
    short_project(project)
    settings = {"prompts": PROMPTS, "at_start": True, "every_n_steps": 4, "every_n_epochs": 2, "sampler": "euler"}
    recorder, _ = train_in_process(sampled_config(project, settings))
    assert recorder.events[-1]["type"] == "finished"
    samples = recorder.of("sample")
    for event in recorder.events:
        validate_event(event)
    # 6 steps (2 per epoch): the start (step 0), step 4, and after epoch 2 (step 4); each renders both prompts.
    assert [(e["trigger"], e["step"], e["epoch"], e["index"]) for e in samples] == [
        ("start", 0, 0, 0),
        ("start", 0, 0, 1),
        ("steps", 4, 1, 0),
        ("steps", 4, 1, 1),
        ("epoch", 4, 2, 0),
        ("epoch", 4, 2, 1),
    ]
    folder = project / "model" / "sample"
    assert [Path(e["path"]) for e in samples] == [
        folder / "test_lora_000000_00_7.png",
        folder / "test_lora_000000_01_99.png",
        folder / "test_lora_000004_00_7.png",
        folder / "test_lora_000004_01_99.png",
        folder / "test_lora_e000002_00_7.png",
        folder / "test_lora_e000002_01_99.png",
    ]
    second = samples[-1]
    assert (second["prompt"], second["negative_prompt"], second["seed"]) == ("ohwx shape, red", "blurry", 99)
    assert (second["width"], second["height"], second["steps"], second["cfg_scale"]) == (80, 64, 2, 5.0)
    assert second["sampler"] == "euler" and second["guidance"] is None
    with Image.open(second["path"]) as image:
        assert image.size == (80, 64) and image.format == "PNG"
        text = dict(image.text)
    assert text["prompt"] == "ohwx shape, red" and text["negative_prompt"] == "blurry"
    assert (text["seed"], text["steps"], text["cfg_scale"], text["sampler"]) == ("99", "2", "5.0", "euler")
    assert (text["size"], text["step"], text["epoch"]) == ("80x64", "4", "2")
    assert text["lora"] == "test_lora at step 4" and text["model"] == "loratui:tiny-sd"
    # The LoRA is active: what it learnt in 4 steps shows in the image of the same seed.
    with Image.open(samples[0]["path"]) as before, Image.open(samples[2]["path"]) as after:
        assert before.tobytes() != after.tobytes()
    # Samples arrive between steps: never inside one, and the run's clock leaves them out.
    kinds = [e["type"] for e in recorder.events]
    assert kinds.index("sample") > kinds.index("eval") and kinds[-1] == "finished"

    # The same run without samples trains exactly the same: rendering drew no training random number.
    shutil.rmtree(project / "model")
    plain, _ = train_in_process(sampled_config(project, None))
    assert not plain.of("sample")
    assert step_losses(plain) == step_losses(recorder) and len(step_losses(plain)) == 6
    assert [e["loss"] for e in plain.of("eval")] == [e["loss"] for e in recorder.of("eval")]


# Flux with its memory savers: fp8 base weights, and blocks swapped in and out by hooks during the render too.
FLUX_LOW_MEMORY = {"model": {"fp8_base": True}, "training": {"blocks_to_swap": 2, "gradient_checkpointing": True}}


@pytest.mark.parametrize(
    ("config", "model_name", "sampler", "options"),
    [
        ("sdxl.toml", "loratui:tiny-sdxl", "dpmsolver++", {}),
        ("flux.toml", "loratui:tiny-flux", "flow_euler", {}),
        ("flux.toml", "loratui:tiny-flux", "flow_euler", FLUX_LOW_MEMORY),
    ],
    ids=["sdxl", "flux", "flux-fp8-block-swap"],
)
def test_sdxl_and_flux_render_a_png_of_the_asked_size(tmp_path, config, model_name, sampler, options):
    import tomllib

    shutil.copytree(SAMPLE / "img", tmp_path / "img")
    data = tomllib.loads((SAMPLE / config).read_text())
    assert data["model"]["path"] == model_name
    for section, values in options.items():
        data[section].update(values)
    data["dataset"].pop("reg_dir", None)
    data["dataset"]["resolution"] = 64
    data["training"].update({"max_train_steps": 1, "batch_size": 1})
    data["output"].update({"output_dir": "model", "log_dir": "log", "save_every_n_epochs": 0})
    data["sample"] = {
        "prompts": ["ohwx shape --w 80 --h 64 --s 2 --g 2.5"],
        "every_n_steps": 1,
        "sampler": "dpmsolver++",
    }
    recorder, _ = train_in_process(write_config(tmp_path, data))
    assert recorder.events[-1]["type"] == "finished", recorder.of("error")
    [sample] = recorder.of("sample")
    validate_event(sample)
    assert (sample["trigger"], sample["step"], sample["sampler"]) == ("steps", 1, sampler)
    flux = config == "flux.toml"
    assert sample["guidance"] == (2.5 if flux else None)
    with Image.open(sample["path"]) as image:
        assert image.size == (80, 64)
        assert image.text["model"] == model_name and image.text["prompt"] == "ohwx shape"
        assert image.text.get("guidance") == ("2.5" if flux else None)


def test_a_failing_render_is_a_warning_and_the_run_finishes(project, monkeypatch):
    from engine.sampling import Renderer

    def out_of_memory(self, prompt):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore details")

    monkeypatch.setattr(Renderer, "render", out_of_memory)
    short_project(project)
    recorder, _ = train_in_process(sampled_config(project, {"prompts": PROMPTS[:1], "every_n_steps": 2}))
    assert recorder.events[-1]["type"] == "finished"
    assert not recorder.of("sample") and not list((project / "model").glob("sample/*.png"))
    warnings = [e for e in recorder.of("warning") if e["code"] == "sample_failed"]
    assert len(warnings) == 3  # steps 2, 4 and 6
    assert warnings[0]["message"] == (
        "sample 0 ('ohwx shape') failed at step 2: CUDA out of memory. Tried to allocate 2.00 GiB"
    )
    assert len(step_losses(recorder)) == 6 and all(math.isfinite(loss) for loss in step_losses(recorder))


class QueuedCommands:
    """A control channel whose commands the test queues (engine/control.py's interface)."""

    def __init__(self) -> None:
        self.queue: list[dict] = []

    def poll(self) -> list[dict]:
        commands, self.queue = self.queue, []
        return commands

    def wait(self, timeout_s: float) -> list[dict]:
        return self.poll()

    def close(self) -> None:
        pass


def run_with_commands(config: Path, commands: dict[int, dict]) -> Recorder:
    """Train in this process; after step N the command ``commands[N]`` arrives."""
    from accelerate.state import AcceleratorState

    from engine.events import EventWriter
    from engine.train import StopFlag, Trainer
    from loratui.config import load_config

    AcceleratorState._reset_state(reset_partial_state=True)
    control = QueuedCommands()

    def on_event(event: dict) -> None:
        if event["type"] == "step" and event["step"] in commands:
            control.queue.append(commands[event["step"]])

    recorder = Recorder(on_event=on_event)
    Trainer(load_config(config), EventWriter(recorder), StopFlag(), control=control).run()
    return recorder


def test_sample_command_renders_now_or_is_refused_without_prompts(project):
    short_project(project)
    command = {"v": 1, "cmd": "sample", "id": "abc123"}
    recorder = run_with_commands(sampled_config(project, {"prompts": PROMPTS[:1]}), {3: command})
    [answer] = recorder.of("control")
    [sample] = recorder.of("sample")
    assert (sample["trigger"], sample["step"], sample["epoch"]) == ("request", 3, 1)
    assert answer["ok"] and answer["message"] == f"1 sample at step 3 in {project / 'model' / 'sample'}"
    kinds = [e["type"] for e in recorder.events]
    assert kinds.index("sample") < kinds.index("control")  # answered once the image is written
    assert Path(sample["path"]).is_file()

    shutil.rmtree(project / "model")
    refused = run_with_commands(sampled_config(project, None), {1: dict(command, id="def456")})
    [answer] = refused.of("control")
    assert not answer["ok"] and "no sample prompts" in answer["message"] and "sample.prompts" in answer["message"]
    assert refused.events[-1]["type"] == "finished" and not refused.of("sample")


# ----------------------------------------------------------------- `loratui sample JOB` on a live job
def loratui(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    from tests.test_jobs import _env

    return subprocess.run(
        [sys.executable, "-m", "loratui.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_env(),
        timeout=timeout,
    )


@pytest.mark.slow
def test_loratui_sample_job_renders_on_a_running_job(project, tmp_path, monkeypatch):
    from loratui.jobs import registry
    from tests.test_jobs import steps_done, wait_for

    monkeypatch.setenv("LORATUI_STATE_DIR", str(tmp_path / "state"))
    data = small_config(training={"epochs": 500}, output={"save_every_n_epochs": 0})
    data["sample"] = {"prompts": PROMPTS[:1]}
    config = write_config(project, data)
    started = loratui("train", str(config), "--detach", cwd=project)
    assert started.returncode == 0, started.stderr
    job_id = started.stdout.strip().splitlines()[0]
    record = registry.find_job(job_id)
    try:
        wait_for(lambda: steps_done(record) >= 1, what="a training step")
        result = loratui("sample", job_id)
        assert result.returncode == 0, result.stderr
        folder = project / "model" / "sample"
        assert result.stdout.startswith(f"{job_id}: 1 sample at step ") and str(folder) in result.stdout
        assert len(list(folder.glob("test_lora_*_00_7.png"))) == 1
    finally:
        loratui("stop", job_id, "--wait", timeout=300)
    ended = loratui("sample", job_id)
    assert ended.returncode == 2 and "there is nothing to sample" in ended.stderr and "Traceback" not in ended.stderr
    unknown = loratui("sample", "no-such-job-20991231")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr, unknown.stderr


# ------------------------------------------------------------------------------ the pieces
@pytest.mark.parametrize("sampler", ["euler_a", "k_euler_a", "dpmsolver", "dpmsolver++", "ddim"])
def test_each_sampler_name_is_its_diffusers_scheduler_on_the_models_config(sampler):
    from diffusers import DDPMScheduler

    from engine.sampling import SCHEDULERS, make_scheduler
    from loratui.params import SAMPLERS

    assert set(SAMPLERS) <= set(SCHEDULERS)
    training = DDPMScheduler(beta_schedule="scaled_linear", prediction_type="v_prediction")
    scheduler = make_scheduler(sampler, training)
    assert type(scheduler).__name__ == SCHEDULERS[sampler][0] and scheduler is not training
    assert scheduler.config.prediction_type == "v_prediction"  # the model's, not the scheduler's default
    if sampler.startswith("dpmsolver"):
        assert scheduler.config.algorithm_type == sampler
    assert make_scheduler("k_euler_a", training).__class__ is make_scheduler("euler_a", training).__class__


def test_an_unknown_or_unusable_sampler_is_one_line():
    from diffusers import DDPMScheduler

    from engine.sampling import make_scheduler

    with pytest.raises(ValueError, match="unknown sampler 'dpm\\+\\+_2m' \\(known: ddim, "):
        make_scheduler("dpm++_2m", DDPMScheduler())
    try:
        import scipy  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="^the lms sampler requires the scipy library; choose another"):
            make_scheduler("lms", DDPMScheduler())


def test_sample_png_keeps_its_facts_in_text_chunks_and_is_written_atomically(tmp_path):
    from engine.sampling import save_sample_png

    prompt = "ohwx woman, 日本の庭 " + "detailed " * 200  # not Latin-1, and long
    image = Image.new("RGB", (64, 80), (200, 10, 10))
    path = save_sample_png(image, tmp_path / "sample" / "x.png", {"prompt": prompt, "seed": 7, "guidance": None})
    assert path == tmp_path / "sample" / "x.png" and [p.name for p in path.parent.iterdir()] == ["x.png"]
    with Image.open(path) as read:
        assert read.size == (64, 80) and read.getpixel((3, 3)) == (200, 10, 10)
        assert read.text == {"prompt": prompt, "seed": "7", "guidance": ""}


def test_sample_file_names_follow_kohya():
    from engine.sample_runs import sample_file_name
    from loratui.sample_prompts import SamplePrompt

    prompt = SamplePrompt(3, "a cat", "", 512, 512, 1234, 30, 7.5, None, "euler_a")
    assert sample_file_name("ohwx", prompt, 120, 2, "steps") == "ohwx_000120_03_1234.png"
    assert sample_file_name("ohwx", prompt, 120, 2, "epoch") == "ohwx_e000002_03_1234.png"
    assert sample_file_name("ohwx", prompt, 0, 0, "start") == "ohwx_000000_03_1234.png"
