"""A run never overwrites an earlier run's LoRA or state: the rule `loratui check` reports and the
engine applies (the engine side, with real training, is in test_engine.py), and the clean-up of
what a killed save leaves behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from loratui.check import check_run
from loratui.config import load_config
from loratui.outputs import (
    clean_interrupted_saves,
    epoch_stem,
    final_stem,
    lora_file,
    parse_output,
    state_folder,
    step_stem,
)
from tests.conftest import REPO, small_config, write_config


def _state(folder: Path, step: int, epoch: int) -> Path:
    """A state folder as the engine writes it (only progress.json matters to the rule)."""
    folder.mkdir(parents=True)
    (folder / "progress.json").write_text(
        json.dumps(
            {
                "format": 1,
                "run_id": "r",
                "step": step,
                "epoch": epoch,
                "batches_in_epoch": 0,
                "elapsed_s": 1.0,
                "loss_history": [],
                "network": {},
            }
        )
    )
    return folder


def _name_problems(config: Path, overwrite: bool = False) -> list:
    return [p for p in check_run(load_config(config), overwrite=overwrite).errors if p.where == "output.name"]


def test_the_engines_file_names_are_the_ones_the_rule_recognises():
    for stem, epoch, step in (
        (final_stem("ohwx v1"), None, None),
        (epoch_stem("ohwx v1", 3), 3, None),
        (step_stem("ohwx v1", 57), None, 57),
    ):
        for name in (lora_file(stem), state_folder(stem)):
            parsed = parse_output("ohwx v1", Path("/m") / name)
            assert parsed is not None and (parsed.epoch, parsed.step) == (epoch, step), name
    assert lora_file(step_stem("ohwx", 57)) == "ohwx-step00000057.safetensors"
    assert state_folder(epoch_stem("ohwx", 3)) == "ohwx-000003-state"
    for other in ("ohwx-v2.safetensors", "ohwx.ckpt", "ohwx-1.safetensors", "xohwx.safetensors", "ohwx-state.txt"):
        assert parse_output("ohwx", Path(other)) is None, other


def test_check_refuses_a_run_over_an_earlier_runs_files(project):
    config = write_config(project, small_config())
    assert _name_problems(config) == []
    (project / "model").mkdir()
    (project / "model" / "test_lora-v2.safetensors").write_bytes(b"another LoRA, another name")
    assert _name_problems(config) == []
    _state(project / "model" / "test_lora-000001-state", 20, 1)
    (project / "model" / "test_lora.safetensors").write_bytes(b"the earlier run's LoRA")
    (problem,) = _name_problems(config)
    assert problem.message == (
        "model/test_lora.safetensors exists from an earlier run (and 1 more of its files); this run would overwrite it"
    )
    assert problem.fix == "set another output.name, move the files, or run with --overwrite"
    assert _name_problems(config, overwrite=True) == []


def test_a_resumed_run_may_write_beside_the_run_it_continues_but_not_over_later_files(project):
    model = project / "model"
    stop_state = _state(model / "test_lora-step00000013-state", 13, 0)  # stopped mid-epoch 1
    (model / "test_lora-step00000013.safetensors").write_bytes(b"lora at 13")
    config = write_config(project, small_config(training={"resume_from": str(stop_state)}))
    assert _name_problems(config) == []  # the stopped run's own files: nothing this run writes
    (model / "test_lora-000001.safetensors").write_bytes(b"another resume of it got here")
    (problem,) = _name_problems(config)
    assert problem.message.startswith("model/test_lora-000001.safetensors exists, saved after the state you resume")
    assert problem.fix.startswith("resume from the newest state") and "--overwrite" in problem.fix
    assert _name_problems(config, overwrite=True) == []
    (model / "test_lora-000001.safetensors").unlink()
    (model / "test_lora-step00000009.safetensors").write_bytes(b"an earlier save of the same run")
    assert _name_problems(config) == []
    (model / "test_lora-step00000014.safetensors").write_bytes(b"a later save")
    assert len(_name_problems(config)) == 1


def test_loratui_check_and_train_say_so_and_check_overwrite_agrees_with_train_overwrite(project):
    config = write_config(project, small_config())
    (project / "model").mkdir()
    (project / "model" / "test_lora.safetensors").write_bytes(b"the earlier run's LoRA")
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "LORATUI_STATE_DIR": str(project / "state")}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "loratui.cli", *args],
            capture_output=True,
            text=True,
            cwd=project,
            env=env,
            check=False,
        )

    checked = run("check", str(config))
    assert checked.returncode == 1 and "model/test_lora.safetensors exists from an earlier run" in checked.stdout
    assert run("check", str(config), "--overwrite").returncode == 0
    trained = run("train", str(config), "--detach")
    assert trained.returncode == 2 and "run with --overwrite" in trained.stderr and "Traceback" not in trained.stderr
    assert not (project / "log").exists()  # nothing was started


def test_leftovers_of_killed_saves_are_cleaned_up_and_nothing_else(project):
    cfg = load_config(write_config(project, small_config(output={"name": "ohwx v1"})))
    model = project / "model"
    model.mkdir()
    gone = [".ohwx v1.safetensors.0123456789ab.tmp", ".ohwx v1-000002.safetensors.a1b2c3d4e5f6.tmp"]
    for name in gone:
        (model / name).write_bytes(b"half")
    (model / ".ohwx v1-step00000009-state.ffeeddccbbaa.tmp").mkdir()
    _state(model / ".ohwx v1-000001-state.old", 20, 1)  # its replacement never arrived: put back
    _state(model / "ohwx v1-state", 40, 2)
    _state(model / ".ohwx v1-state.old", 20, 1)  # its replacement did: removed
    kept = [
        ".ohwx v2.safetensors.0123456789ab.tmp",
        ".ohwx v1.safetensors.tmp",
        "ohwx v1.safetensors.0123456789ab.tmp",
        ".ohwx v1.safetensors.0123456789AB.tmp",
        "notes.old",
        ".cache.old",
    ]
    for name in kept:
        (model / name).write_text("not a leftover of this run")
    done = clean_interrupted_saves(cfg)
    assert len(done) == 5, done
    assert sorted(p.name for p in model.iterdir()) == sorted(kept + ["ohwx v1-000001-state", "ohwx v1-state"])
    assert json.loads((model / "ohwx v1-000001-state" / "progress.json").read_text())["step"] == 20
    assert json.loads((model / "ohwx v1-state" / "progress.json").read_text())["step"] == 40
    assert clean_interrupted_saves(cfg) == []


def test_a_state_left_moved_aside_counts_as_existing(project):
    config = write_config(project, small_config())
    _state(project / "model" / ".test_lora-state.old", 40, 2)
    (problem,) = _name_problems(config)
    assert problem.message.startswith("model/.test_lora-state.old exists from an earlier run")
