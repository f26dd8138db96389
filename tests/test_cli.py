"""The ``loratui`` command as a user runs it: real processes, real exit codes, readable errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import REPO, small_config, write_config


def loratui(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "loratui.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


def assert_clean_failure(result: subprocess.CompletedProcess, *needles: str) -> str:
    text = result.stdout + result.stderr
    assert result.returncode != 0, text
    assert "Traceback" not in text, text
    for needle in needles:
        assert needle in text, f"{needle!r} not in:\n{text}"
    return text


def test_terminal_side_never_imports_torch():
    code = (
        "import sys, loratui, loratui.cli, loratui.config, loratui.dataset, loratui.check, loratui.jobs.launch, "
        "loratui.jobs.follow, loratui.core.protocol, loratui.report, loratui.plain_progress; "
        "heavy = {'torch', 'diffusers', 'transformers', 'peft', 'accelerate', 'bitsandbytes'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


def test_check_of_the_sample_project_passes():
    result = loratui("check", str(REPO / "sample_project" / "loratui.toml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "10_ohwx shape" in result.stdout and "60 steps" in result.stdout and "OK: ready to train" in result.stdout
    assert "2 images held out for the validation loss" in result.stdout


def test_check_without_torch_in_the_process(project):
    """`loratui check` scans and validates without ever loading torch."""
    config = write_config(project, small_config())
    code = (
        "import sys; from loratui.cli import main; rc = main(['check', sys.argv[1]]); "
        "assert 'torch' not in sys.modules; sys.exit(rc)"
    )
    result = subprocess.run([sys.executable, "-c", code, str(config)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def _break(project: Path, how: str) -> dict:
    """Make one classic user mistake in ``project``; return config overrides that go with it."""
    concept = project / "img" / "10_ohwx shape"
    if how == "missing image folder":
        return {"dataset": {"image_dir": "no-such-folder"}}
    if how == "empty image folder":
        (project / "empty").mkdir()
        return {"dataset": {"image_dir": "empty"}}
    if how == "folder without NN_ prefix":
        (project / "img" / "ohwx extra").mkdir()
        Image.new("RGB", (128, 128)).save(project / "img" / "ohwx extra" / "a.png")
    if how == "folder with 0 repeats":
        (project / "img" / "0_ohwx extra").mkdir()
        Image.new("RGB", (128, 128)).save(project / "img" / "0_ohwx extra" / "a.png")
    if how == "corrupt image":
        (concept / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    if how == "zero-byte image":
        (concept / "empty.jpg").write_bytes(b"")
    if how == "missing model file":
        return {"model": {"path": "models/nothing-here.safetensors"}}
    if how == "rank 0":
        return {"network": {"rank": 0}}
    if how == "negative LR":
        return {"optimizer": {"unet_lr": -1e-4}}
    if how == "negative max_train_steps":  # crashed check and train in the step calculator
        return {"training": {"max_train_steps": -5}}
    if how == "batch larger than the dataset":
        return {"training": {"batch_size": 500}}
    if how == "unwritable output folder":
        (project / "a-file").write_text("not a folder")
        return {"output": {"output_dir": "a-file/model"}}
    return {}


@pytest.mark.parametrize(
    "how,needle",
    [
        ("missing image folder", "no-such-folder"),
        ("empty image folder", "empty"),
        ("folder without NN_ prefix", "ohwx extra"),
        ("folder with 0 repeats", "0_ohwx extra"),
        ("corrupt image", "broken.png"),
        ("zero-byte image", "empty.jpg"),
        ("missing model file", "nothing-here.safetensors"),
        ("rank 0", "network.rank"),
        ("negative LR", "optimizer.unet_lr"),
        ("negative max_train_steps", "training.max_train_steps"),
        ("batch larger than the dataset", "training.batch_size"),
        ("unwritable output folder", "output.output_dir"),
    ],
)
def test_each_mistake_gets_a_clear_message_and_a_non_zero_exit(project, how, needle):
    data = small_config()
    for section, values in _break(project, how).items():
        data[section].update(values)
    config = write_config(project, data)
    assert_clean_failure(loratui("check", str(config)), needle, "fix:")
    # `train` refuses before starting anything, with the same message.
    assert_clean_failure(loratui("train", str(config), "--no-tui"), needle)
    assert not (project / "log").exists() or not any((project / "log").iterdir())


def test_missing_captions_are_a_warning_that_names_the_caption_used(project):
    for caption in (project / "img" / "10_ohwx shape").glob("*.txt"):
        caption.unlink()
    result = loratui("check", str(write_config(project, small_config())))
    assert result.returncode == 0, result.stdout
    assert "warning" in result.stdout and "ohwx shape" in result.stdout and "caption" in result.stdout


def test_invalid_toml_names_file_and_line(project):
    config = project / "loratui.toml"
    config.write_text("[network]\nrank = = 8\n")
    text = assert_clean_failure(loratui("check", str(config)), "loratui.toml", "line 2")
    assert text.count("\n") <= 3  # one plain message, not a dump


def test_missing_config_file(project):
    assert_clean_failure(loratui("check", str(project / "nope.toml")), "nope.toml")


@pytest.mark.slow
def test_train_runs_the_engine_as_a_child_and_prints_progress(project):
    data = small_config()
    data["training"].update({"max_train_steps": 8})
    config = write_config(project, data)
    result = loratui("train", str(config), "--no-tui", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Finished:" in result.stdout and "step 8/8" in result.stdout
    runs = list((project / "log").iterdir())
    assert len(runs) == 1
    events = [json.loads(line) for line in (runs[0] / "events.jsonl").read_text().splitlines()]
    assert events[-1]["type"] == "finished"
    assert (project / "model" / "test_lora.safetensors").is_file()

    # The same command again would overwrite that LoRA: refused, with the way out; nothing starts.
    again = loratui("train", str(config), "--no-tui", cwd=project)
    assert again.returncode == 2
    assert_clean_failure(again, "model/test_lora.safetensors exists from an earlier run", "run with --overwrite")
    assert len(list((project / "log").iterdir())) == 1


def test_a_resume_path_is_taken_from_the_folder_the_command_runs_in(project, monkeypatch):
    """`loratui train my_lora/loratui.toml --resume my_lora/model/...-state`, as the README shows,
    from the folder above the project: the state path is the one typed, not one under the project."""
    from loratui import cli
    from tests.test_preflight import _state

    (project / "model").mkdir()
    network = {"rank": 8, "alpha": 2.0, "conv_rank": 0, "conv_alpha": 1.0, "unet_modules": 10, "te_modules": 6}
    state = _state(project / "model" / "test_lora-step00000000-state", network)  # a state the check accepts
    write_config(project, small_config())
    started = {}

    class Started(Exception):
        pass

    def start_job(config_path, cfg, resume=None, **options):
        started.update(resume=resume, resume_from=cfg.training.resume_from)
        raise Started

    monkeypatch.setattr("loratui.jobs.launch.start_job", start_job)
    monkeypatch.setenv("LORATUI_STATE_DIR", str(project / "state"))
    monkeypatch.chdir(project.parent)
    with pytest.raises(Started):
        cli.main(
            ["train", f"{project.name}/loratui.toml", "--resume", f"{project.name}/model/{state.name}", "--detach"]
        )
    assert started == {"resume": str(state), "resume_from": str(state)}


@pytest.mark.slow
def test_engine_errors_reach_the_user_as_one_message(project):
    """A model problem found only by the engine (a .ckpt that needs pickle) is reported plainly."""
    import pickle

    with open(project / "model.ckpt", "wb") as handle:
        pickle.dump({"state_dict": {"weights": object()}}, handle)
    config = write_config(project, small_config(model={"path": "model.ckpt"}))
    text = assert_clean_failure(loratui("train", str(config), "--no-tui"), "pickle", "fix:")
    assert "error:" in text


@pytest.mark.slow
def test_engine_directly_writes_only_events_on_stdout(project):
    data = small_config()
    data["training"].update({"max_train_steps": 3})
    config = write_config(project, data)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-m", "engine", str(config)], capture_output=True, text=True, cwd=project, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    from loratui.core.protocol import decode

    events = [decode(line) for line in result.stdout.splitlines()]  # every stdout line is an event
    assert events[-1]["type"] == "finished" and len([e for e in events if e["type"] == "step"]) == 3
