"""Saving as kohya users set it: save_every_n_steps, save_last_n_epochs/_steps (and their _state
variants) and save_state_on_train_end. The tiny model trains for a few epochs and the output
folder is listed; the summary the dashboard, `loratui pick` and the grid read drops what was removed."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors import safe_open

from loratui.config import RunConfig
from loratui.core.summary import RunSummary
from loratui.save_plan import Keep, keep_rule, kept, output_summary
from loratui.schedule import Schedule
from loratui.validation import validate
from tests.conftest import small_config, train_in_process, write_config


def _names(folder):
    return sorted(path.name for path in folder.iterdir() if not path.name.startswith("."))


def _short_project(folder):
    """The sample's 8 images once each (not 10 times): 2 steps of 4 an epoch, 4 of 2."""
    import shutil

    from tests.conftest import SAMPLE

    shutil.copytree(SAMPLE / "img" / "10_ohwx shape", folder / "img" / "1_ohwx shape")
    return folder


def _summary(recorder) -> RunSummary:
    summary = RunSummary()
    summary.apply_all(recorder.events)
    return summary


@pytest.fixture(scope="module")
def epoch_run(tmp_path_factory):
    """4 epochs of 2 steps, a file every epoch, the last 2 files and the last state kept; Adafactor
    without arguments (sd-scripts' defaults: its own step size and schedule)."""
    folder = _short_project(tmp_path_factory.mktemp("epoch-rotation"))
    config = small_config(
        training={"epochs": 4, "batch_size": 4},
        optimizer={"name": "Adafactor", "args": [], "unet_lr": 1e-3, "text_encoder_lr": 1e-3, "scheduler": "cosine"},
        output={"save_every_n_epochs": 1, "save_last_n_epochs": 2, "save_last_n_epochs_state": 1, "save_state": True},
    )
    recorder, _ = train_in_process(write_config(folder, config))
    return folder, recorder


def test_save_last_n_epochs_keeps_the_newest_files_and_states(epoch_run):
    folder, recorder = epoch_run
    assert _names(folder / "model") == [
        "test_lora-000002.safetensors",
        "test_lora-000003-state",
        "test_lora-000003.safetensors",
        "test_lora-state",
        "test_lora.safetensors",
    ]
    model = folder / "model"
    removed = recorder.of("checkpoint_removed")
    assert [(e["path"], e["reason"]) for e in removed] == [
        (str(model / "test_lora-000001-state"), "output.save_last_n_epochs_state = 1"),
        (str(model / "test_lora-000001.safetensors"), "output.save_last_n_epochs = 2"),
        (str(model / "test_lora-000002-state"), "output.save_last_n_epochs_state = 1"),
    ]
    # every removal follows the checkpoint events of the save that made it superfluous
    types = [e["type"] for e in recorder.events if e["type"] in ("checkpoint", "checkpoint_removed")]
    assert types.index("checkpoint_removed") > types.index("checkpoint") + 3


def test_the_summary_lists_only_files_that_are_still_there(epoch_run):
    folder, recorder = epoch_run
    summary = _summary(recorder)
    listed = sorted(checkpoint.path for checkpoint in summary.checkpoints)
    assert listed == sorted(str(folder / "model" / name) for name in _names(folder / "model"))
    assert [c.kind for c in summary.checkpoints if c.path.endswith("-000002.safetensors")] == ["epoch"]


def test_adafactor_without_arguments_runs_its_own_schedule(epoch_run):
    folder, recorder = epoch_run
    steps = recorder.of("step")
    assert all(math.isfinite(step["loss"]) for step in steps)
    unet_lrs = [step["lr"]["unet"] for step in steps]
    # Adafactor's relative step, not 1e-3 on a cosine: min(1e-2, 1/sqrt(step)) x the weight's RMS, which moves
    assert unet_lrs[0] != pytest.approx(1e-3) and len(set(unet_lrs)) > 5
    with safe_open(str(folder / "model" / "test_lora.safetensors"), "pt") as file:
        metadata = file.metadata()
    assert metadata["ss_lr_scheduler"] == "adafactor:0.001"  # as sd-scripts records it


@pytest.fixture(scope="module")
def step_run(tmp_path_factory):
    """3 epochs of 4 steps, a file every 2 steps, the files of the last 4 steps and the states of the
    last 2 kept, and a CosineAnnealingLR by name."""
    folder = _short_project(tmp_path_factory.mktemp("step-rotation"))
    config = small_config(
        training={"epochs": 3, "batch_size": 2},
        optimizer={"scheduler_type": "CosineAnnealingLR", "scheduler_args": ["T_max=12", "eta_min=1e-5"]},
        output={
            "save_every_n_epochs": 0,
            "save_every_n_steps": 2,
            "save_last_n_steps": 4,
            "save_last_n_steps_state": 2,
            "save_state": True,
        },
    )
    recorder, _ = train_in_process(write_config(folder, config))
    return folder, recorder


def test_save_every_n_steps_writes_step_files_and_save_last_n_steps_keeps_the_recent_ones(step_run):
    folder, recorder = step_run
    saved = [(e["step"], e["kind"]) for e in recorder.of("checkpoint") if e["kind"] != "state"]
    assert saved == [(2, "step"), (4, "step"), (6, "step"), (8, "step"), (10, "step"), (12, "final")]
    # sd-scripts' rule: at step 10 with save_last_n_steps = 4, the files of steps 6..10 stay
    assert _names(folder / "model") == [
        "test_lora-state",
        "test_lora-step00000006.safetensors",
        "test_lora-step00000008-state",
        "test_lora-step00000008.safetensors",
        "test_lora-step00000010-state",
        "test_lora-step00000010.safetensors",
        "test_lora.safetensors",
    ]
    removed = {e["path"].rpartition("/")[2]: e for e in recorder.of("checkpoint_removed")}
    assert removed["test_lora-step00000002.safetensors"]["step"] == 8
    assert removed["test_lora-step00000006-state"]["reason"] == "output.save_last_n_steps_state = 2"
    assert sorted(removed) == sorted(
        [f"test_lora-step{step:08d}.safetensors" for step in (2, 4)]
        + [f"test_lora-step{step:08d}-state" for step in (2, 4, 6)]
    )
    summary_paths = {checkpoint.path for checkpoint in _summary(recorder).checkpoints}
    assert summary_paths == {str(folder / "model" / name) for name in _names(folder / "model")}


def test_a_scheduler_class_by_name_drives_the_run(step_run):
    _, recorder = step_run
    ours = [(step["lr"]["unet"], step["lr"]["text_encoder"]) for step in recorder.of("step")]
    param = torch.nn.Parameter(torch.zeros(1))
    other = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([{"params": [param], "lr": 1e-3}, {"params": [other], "lr": 5e-4}])
    reference_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=12, eta_min=1e-5)
    expected = []
    for _ in range(12):
        expected.append(tuple(group["lr"] for group in optimizer.param_groups))
        optimizer.step()
        reference_schedule.step()
    assert [lr for pair in ours for lr in pair] == pytest.approx([lr for pair in expected for lr in pair])


def test_save_state_on_train_end_saves_the_final_state_only(tmp_path):
    _short_project(tmp_path)
    config = small_config(
        training={"epochs": 1, "batch_size": 4},
        output={"save_every_n_epochs": 0, "save_state": False, "save_state_on_train_end": True},
    )
    train_in_process(write_config(tmp_path, config))
    assert _names(tmp_path / "model") == ["test_lora-state", "test_lora.safetensors"]
    assert (tmp_path / "model" / "test_lora-state" / "progress.json").is_file()


# ------------------------------------------------------------------ the plan, torch-free


def test_the_keep_rules_are_sd_scripts():
    epochs = Keep("output.save_last_n_epochs", 2, every=2)
    assert epochs.removed([2, 4, 6], 6) == [2]  # sd-scripts removes epoch 6 - 2 x 2 = 2
    steps = Keep("output.save_last_n_steps", 30, every=10)
    assert steps.removed([10, 20, 30, 40, 50], 50) == [10]  # sd-scripts' own example: 50 keeps 20..50
    assert Keep("output.save_last_n_steps", 0, every=10).removed([10, 20], 20) == []
    assert kept(steps, [10, 20, 30, 40, 50, 60]) == 4


def test_state_variants_default_to_the_plain_ones():
    cfg = RunConfig()
    cfg.output.save_last_n_epochs, cfg.output.save_every_n_epochs = 3, 1
    assert keep_rule(cfg.output, "epoch", state=True).last == 3
    cfg.output.save_last_n_epochs_state = 1
    assert keep_rule(cfg.output, "epoch", state=True) == Keep("output.save_last_n_epochs_state", 1, 1)
    assert keep_rule(cfg.output, "epoch", state=False).last == 3


def test_the_checks_output_line_says_how_many_files_are_written_and_kept():
    cfg = RunConfig()
    cfg.output.save_every_n_epochs, cfg.output.save_last_n_epochs = 1, 2
    cfg.output.save_every_n_steps, cfg.output.save_last_n_steps = 500, 1000
    schedule = Schedule(steps_per_epoch=1000, epochs=5, total_steps=5000, note="")
    assert output_summary(cfg, schedule) == ", every epoch (4 files, 2 kept), every 500 steps (9 files, 3 kept)"
    cfg.output.save_last_n_epochs = 0
    assert output_summary(cfg, schedule).startswith(", every epoch (4 files), ")


def test_keeping_the_last_n_of_what_is_never_saved_is_said(tmp_path):
    cfg = RunConfig(base_dir=tmp_path)
    cfg.output.save_last_n_steps = 3
    problems = [p for p in validate(cfg) if p.where == "output.save_last_n_steps"]
    assert [p.severity for p in problems] == ["warning"] and "save_every_n_steps is 0" in problems[0].message


class _Saver:
    """The engine's saving mixin over a folder, its files written as stand-ins (no model)."""

    def __new__(cls, cfg, folder):
        from engine.events import EventWriter
        from engine.saving import Saving
        from engine.state import Progress
        from loratui.outputs import lora_file, state_folder
        from tests.conftest import Recorder

        class Saver(Saving):
            def _save(self, stem, kind, with_state, asked_by=None):
                path = folder / lora_file(stem)
                path.write_bytes(b"lora")
                self._note_saved(path, kind, is_state=False)
                if with_state:
                    state = folder / state_folder(stem)
                    state.mkdir(exist_ok=True)
                    (state / "progress.json").write_text("{}")
                    self._note_saved(state, kind, is_state=True)
                return path

        saver = Saver()
        saver.cfg, saver.progress, saver.recorder = cfg, Progress(run_id="r"), Recorder()
        saver.events = EventWriter(saver.recorder)
        return saver


def test_only_this_runs_periodic_saves_are_removed(tmp_path):
    from loratui.outputs import step_stem

    cfg = RunConfig(base_dir=tmp_path)
    cfg.output.name, cfg.output.save_state = "x", True
    cfg.output.save_every_n_steps, cfg.output.save_last_n_steps = 2, 2
    earlier_run = tmp_path / "x-step00000001.safetensors"  # another run's file, with a name of this run's kind
    earlier_run.write_bytes(b"theirs")
    saver = _Saver(cfg, tmp_path)
    for step in (2, 4, 6, 8):
        saver.progress.step = step
        saver._save_periodic(step_stem("x", step), "step")
        if step == 4:  # a `save` command at the same step: the user asked for that file, it stays
            saver._save(step_stem("x", step), "manual", with_state=True)
    assert _names(tmp_path) == [
        "x-step00000001.safetensors",
        "x-step00000004-state",
        "x-step00000004.safetensors",
        "x-step00000006-state",
        "x-step00000006.safetensors",
        "x-step00000008-state",
        "x-step00000008.safetensors",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no half-removed state folder left
    removed = [e["path"] for e in saver.recorder.of("checkpoint_removed")]
    assert removed == [str(tmp_path / "x-step00000002.safetensors"), str(tmp_path / "x-step00000002-state")]


def test_a_removed_file_leaves_the_summary_and_its_snapshot_and_is_printed():
    import io

    from loratui.core.protocol import make_event
    from loratui.core.snapshot import summary_from_dict, summary_to_dict
    from loratui.plain_progress import PlainProgress

    saved = [
        make_event("checkpoint", path=f"/p/x-00000{n}.safetensors", bytes=10, epoch=n, step=10 * n, kind="epoch")
        for n in (1, 2, 3)
    ]
    removed = make_event(
        "checkpoint_removed", path="/p/x-000001.safetensors", step=30, reason="output.save_last_n_epochs = 2"
    )
    summary = RunSummary()
    summary.apply_all([*saved, removed])
    assert [c.path for c in summary.checkpoints] == ["/p/x-000002.safetensors", "/p/x-000003.safetensors"]
    assert summary_from_dict(summary_to_dict(summary)).checkpoints == summary.checkpoints
    out = io.StringIO()
    PlainProgress(out, interactive=False).handle(removed)
    assert out.getvalue() == "removed /p/x-000001.safetensors (output.save_last_n_epochs = 2)\n"
