"""Damaged resume states and values that pass a quick look but would crash the engine (issue 9,
items 14 and 11).

A state folder that was edited, cut short, mixed from two runs or saved by another optimizer is
refused before anything trains, with one line naming the file: by ``loratui check`` where the
standard library can read it (progress.json, the LoRA's safetensors header, training.pt's zip
and pickle), by the engine where only torch can (the tensors themselves, the optimizer's state).
Ranks wider than the layers they train, optimizer values the optimizer refuses, a seed beyond
32 bits and a clip skip beyond the text encoder are refused by the check and the engine alike.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from loratui import cli, preflight
from loratui.check import check_run
from loratui.config import load_config
from loratui.errors import UserError
from tests.conftest import REPO, SAMPLE, small_config, train_in_process, write_config

RESUME = "training.resume_from"


def _config(folder: Path, images: Path, **sections) -> dict:
    """The fixture run's config (1 epoch of 20 steps at 64 px), its images where they are."""
    data = small_config(
        dataset={"image_dir": str(images), "resolution": 64, "min_bucket_reso": 64, "max_bucket_reso": 128},
        training={"epochs": 1},
    )
    for section, values in sections.items():
        data[section].update(values)
    folder.mkdir(parents=True, exist_ok=True)
    return data


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> SimpleNamespace:
    """One run stopped after its first step: its state folder and images, shared read-only."""
    folder = tmp_path_factory.mktemp("stopped")
    shutil.copytree(SAMPLE / "img", folder / "img")
    config = write_config(folder, _config(folder, folder / "img"))

    def stop_at_once(event, stop):
        if event["type"] == "step":
            stop.request("request")

    recorder, _ = train_in_process(config, on_event=stop_at_once)
    state = Path(recorder.of("stopped")[0]["state"])
    assert json.loads((state / "progress.json").read_text())["optimizer"] == "AdamW"
    return SimpleNamespace(state=state, images=folder / "img")


def _resume_config(saved, folder: Path, damage=None, **sections) -> Path:
    """A config in ``folder`` resuming from a copy of the saved state, ``damage``d."""
    state = folder / "state"
    shutil.copytree(saved.state, state)
    if damage:
        damage(state)
    data = _config(folder, saved.images, **sections)
    data["training"]["resume_from"] = str(state)
    return write_config(folder, data)


# ---------------------------------------------------------------------------------------------
# Ways to damage a state.


def _edit_progress(change):
    def damage(state: Path) -> None:
        progress = json.loads((state / "progress.json").read_text())
        change(progress)
        (state / "progress.json").write_text(json.dumps(progress))

    return damage


def _edit_lora(change):
    def damage(state: Path) -> None:
        weights = load_file(state / "lora.safetensors")
        change(weights)
        save_file(weights, state / "lora.safetensors")

    return damage


def _edit_training(change):
    def damage(state: Path) -> None:
        blob = torch.load(state / "training.pt", weights_only=True)
        change(blob)
        torch.save(blob, state / "training.pt")

    return damage


def _cut_in_half(name: str):
    def damage(state: Path) -> None:
        raw = (state / name).read_bytes()
        (state / name).write_bytes(raw[: len(raw) // 2])

    return damage


def _first_module(weights: dict) -> str:
    return sorted(key for key in weights if key.startswith("unet."))[0].rsplit(".lora_", 1)[0]


def _lower_rank(weights: dict) -> None:
    """One module's LoRA at rank 4 (both halves), in a state of rank 8."""
    module = _first_module(weights)
    down, up = f"{module}.lora_down.weight", f"{module}.lora_up.weight"
    weights[down], weights[up] = weights[down][:4].clone(), weights[up][:, :4].clone()


def _drop_module(weights: dict) -> None:
    module = _first_module(weights)
    del weights[f"{module}.lora_down.weight"], weights[f"{module}.lora_up.weight"]


def _pickle_that_runs_code(state: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo this never runs",))

    (state / "training.pt").unlink()
    with zipfile.ZipFile(state / "training.pt", "w") as archive:
        archive.writestr("training/data.pkl", pickle.dumps(Payload()))  # written, never loaded


def _history_of(steps: int):
    return lambda progress: progress.update(step=steps, loss_history=[0.5] * steps)


# (id, damage, config changes, what the one line says)
CHECKED = [
    ("extra-key", _edit_progress(lambda p: p.update(bogus=1)), {}, "has keys loratui never writes ('bogus')"),
    ("missing-key", _edit_progress(lambda p: p.pop("loss_history")), {}, "lacks 'loss_history'"),
    ("step-not-a-number", _edit_progress(lambda p: p.update(step="abc")), {}, 'its step is "abc", not a whole number'),
    ("negative-epoch", _edit_progress(lambda p: p.update(epoch=-1)), {}, "its epoch is -1"),
    ("history-of-another-length", _edit_progress(lambda p: p.update(loss_history=[])), {}, "holds 0 step losses"),
    ("network-not-an-object", _edit_progress(lambda p: p.update(network=[8])), {}, "its network is [8]"),
    ("deeply-nested-json", lambda s: (s / "progress.json").write_text("[" * 100_000), {}, "not valid JSON"),
    ("epoch-past-the-end", _edit_progress(lambda p: p.update(epoch=1_000_000_000)), {}, "nothing left to train"),
    ("step-past-the-end", _edit_progress(_history_of(20)), {}, "ends at step 20"),
    (
        "batches-past-the-epoch",
        _edit_progress(lambda p: p.update(batches_in_epoch=21)),
        {},
        "is 21 batches into epoch 1, which has 20 batches",
    ),
    ("training-pt-garbage", lambda s: (s / "training.pt").write_bytes(b"garbage"), {}, "not in PyTorch's file format"),
    ("training-pt-cut-in-half", _cut_in_half("training.pt"), {}, "not in PyTorch's file format"),
    ("training-pt-missing", lambda s: (s / "training.pt").unlink(), {}, "has no training.pt"),
    ("training-pt-runs-code", _pickle_that_runs_code, {}, "would run code from the file (posix.system)"),
    ("lora-cut-in-half", _cut_in_half("lora.safetensors"), {}, "is damaged: its header"),
    ("lora-of-another-rank", _edit_lora(_lower_rank), {}, "is of rank 4, but the state's network has rank 8"),
    ("lora-module-missing", _edit_lora(_drop_module), {}, "for 83 UNet layers, but progress.json says 84"),
    (
        "lora-foreign-tensor",
        _edit_lora(lambda w: w.update({"unet.x": torch.zeros(1)})),
        {},
        "holds 'unet.x', which is no LoRA weight",
    ),
    (
        "another-optimizer",
        None,
        {"optimizer": {"name": "Lion", "unet_lr": 1e-4, "text_encoder_lr": 5e-5}},
        "saved by the AdamW optimizer; this config trains with Lion, which cannot continue its state",
    ),
]


@pytest.mark.parametrize("damage,changes,says", [case[1:] for case in CHECKED], ids=[case[0] for case in CHECKED])
def test_check_refuses_a_damaged_state_in_one_line(saved, tmp_path, capsys, damage, changes, says):
    config = _resume_config(saved, tmp_path, damage, **changes)
    assert cli.main(["check", str(config)]) == 1
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.strip().startswith("error")]
    assert len(lines) == 1 and f"error    {RESUME}: " in lines[0], out
    assert says in lines[0], lines[0]


def test_the_saved_state_itself_is_ready(saved, tmp_path):
    """The cases above are refused for their damage alone; a state stopped after the last batch
    of an epoch (before its end was recorded) is inside the run too."""
    assert check_run(load_config(_resume_config(saved, tmp_path / "as-saved"))).errors == []
    last_batch = _edit_progress(lambda p: p.update(batches_in_epoch=20))
    assert check_run(load_config(_resume_config(saved, tmp_path / "last-batch", last_batch))).errors == []


def test_the_engine_refuses_a_damaged_state_by_itself(saved, tmp_path):
    """The engine's own reader is the check's: without the check (here: a state damaged after it
    ran) it refuses the same, as a user error."""
    from engine.state import read_progress

    for case_id, damage, _, says in CHECKED:
        if case_id in ("another-optimizer", "epoch-past-the-end", "step-past-the-end", "batches-past-the-epoch"):
            continue  # judged against the config, which the engine leaves to the check
        folder = tmp_path / case_id
        _resume_config(saved, folder, damage)
        with pytest.raises(UserError) as refused:
            read_progress(folder / "state")
        assert refused.value.where == RESUME and refused.value.kind == "config", case_id
        assert says.split(" (fix")[0] in refused.value.message, (case_id, refused.value.message)


# ---------------------------------------------------------------------------------------------
# What only torch can read: the check says ready, the engine refuses before the first step.


def _mismatched_in_features(weights: dict) -> None:
    """Same module, same rank, but the layer's inputs of another model."""
    module = _first_module(weights)
    down = weights[f"{module}.lora_down.weight"]
    weights[f"{module}.lora_down.weight"] = torch.zeros(down.shape[0], down.shape[1] + 1, *down.shape[2:])


def _moments_of_another_shape(blob: dict) -> None:
    first = min(blob["optimizer"]["state"])
    blob["optimizer"]["state"][first]["exp_avg"] = torch.zeros(3)


def _state_of_a_smaller_model(state: Path) -> None:
    """A whole, consistent state of a model with one UNet layer less than this one."""
    _edit_lora(_drop_module)(state)
    _edit_progress(lambda p: p["network"].update(unet_modules=p["network"]["unet_modules"] - 1))(state)


def _old_state(progress: dict) -> None:
    del progress["optimizer"]  # saved before states recorded their optimizer


ENGINE_ONLY = [
    (
        "old-state-of-another-optimizer",
        _edit_progress(_old_state),
        {"optimizer": {"name": "Adafactor"}},
        "holds the state of another optimizer: it lacks beta1",
    ),
    ("lora-of-another-model", _edit_lora(_mismatched_in_features), {}, "does not fit this network"),
    (
        "state-of-another-base-model",
        _state_of_a_smaller_model,
        {},
        "was trained on a model with 83 UNet and 18 text encoder LoRA layers; loratui:tiny-sd has 84 and 18",
    ),
    (
        "lora-not-floats",
        _edit_lora(lambda w: w.update({k: v.int() for k, v in w.items()})),
        {},
        "holds torch.int32, not weights",
    ),
    (
        "training-pt-of-something-else",
        lambda s: torch.save({"epoch": 3}, s / "training.pt"),
        {},
        "is not a loratui training state",
    ),
    ("moments-of-another-shape", _edit_training(_moments_of_another_shape), {}, "an optimizer exp_avg is [3]"),
    (
        "schedule-damaged",
        _edit_training(lambda b: b["scheduler"].update(last_epoch="x")),
        {},
        "its LR schedule cannot be restored",
    ),
    (
        "random-generator-damaged",
        _edit_training(lambda b: b.update(rng_cpu=torch.zeros(3))),
        {},
        "its random generator cannot be restored",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("damage,changes,says", [c[1:] for c in ENGINE_ONLY], ids=[c[0] for c in ENGINE_ONLY])
def test_the_engine_refuses_what_only_torch_can_see_before_the_first_step(saved, tmp_path, damage, changes, says):
    config = _resume_config(saved, tmp_path, damage, **changes)
    assert check_run(load_config(config)).errors == []
    events = []
    with pytest.raises(UserError) as refused:
        train_in_process(config, on_event=lambda event, stop: events.append(event["type"]))
    assert refused.value.where == RESUME and refused.value.kind == "config"
    assert says in refused.value.message, refused.value.message
    assert "weights_only" not in refused.value.message  # torch's advice to run the file's code: never
    assert "step" not in events and "run_started" not in events


@pytest.mark.slow
def test_a_refused_resume_ends_with_a_final_event_and_exit_status_2(saved, tmp_path):
    """The step of "step": "abc" once reached the final event and broke it: the run ended with none."""
    config = _resume_config(saved, tmp_path, _edit_progress(lambda p: p.update(step="abc")))
    result = subprocess.run(
        [sys.executable, "-m", "engine", str(config)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=600,
        check=False,
    )
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert [e["type"] for e in events[-2:]] == ["error", "failed"] and events[-1]["step"] == 0
    assert events[-2]["kind"] == "config" and 'its step is "abc"' in events[-2]["message"]
    assert "Traceback" not in result.stderr


def test_the_final_event_gets_a_step_whatever_the_trainer_holds():
    from engine.__main__ import _steps_done

    assert _steps_done(SimpleNamespace(progress=SimpleNamespace(step="abc"))) == 0
    assert _steps_done(SimpleNamespace(progress=SimpleNamespace(step=-4))) == 0
    assert _steps_done(SimpleNamespace()) == 0
    assert _steps_done(SimpleNamespace(progress=SimpleNamespace(step=12))) == 12


# ---------------------------------------------------------------------------------------------
# Item 11: values the check passed and the engine crashed on.


def _check_lines(tmp_path: Path, capsys, **sections) -> list[str]:
    shutil.copytree(SAMPLE / "img", tmp_path / "img")
    config = write_config(tmp_path, _config(tmp_path, tmp_path / "img", **sections))
    code = cli.main(["check", str(config)])
    lines = [line.strip() for line in capsys.readouterr().out.splitlines() if line.strip().startswith("error")]
    assert (code == 1) == bool(lines)
    return lines


@pytest.mark.parametrize(
    "sections,where,says",
    [
        ({"training": {"seed": 9223372036854775807}}, "training.seed", "above 4_294_967_295"),
        ({"model": {"clip_skip": 12}}, "model.clip_skip", "which has 3 layers"),
        ({"network": {"conv_rank": 1_000_000_000}}, "network.conv_rank", "above 1_024"),
        ({"network": {"conv_rank": 128}}, "network.conv_rank", "(the widest is 64)"),
        ({"network": {"rank": 128, "alpha": 64.0}}, "network.rank", "(the widest is 64)"),
        ({"optimizer": {"args": ["eps=-1"]}}, "optimizer.args", "AdamW's eps must be 0 or more, got -1"),
    ],
    ids=["seed-of-64-bits", "clip-skip-beyond-the-layers", "conv-rank-of-a-billion", "conv-rank", "rank", "eps"],
)
def test_check_refuses_values_the_engine_would_crash_on(tmp_path, capsys, sections, where, says):
    lines = _check_lines(tmp_path, capsys, **sections)
    assert len(lines) == 1 and lines[0].startswith(f"error    {where}: ") and says in lines[0], lines


def test_ranks_up_to_the_widest_layer_are_ready(tmp_path, capsys):
    assert _check_lines(tmp_path, capsys, network={"rank": 64, "alpha": 32.0, "conv_rank": 64}) == []


# Values each optimizer refuses in its own __init__ (and one policy: no negative weight decay).
REFUSED_ARGS = [
    ("AdamW", "eps=-1"),
    ("AdamW", "betas=0.9,1.0"),
    ("AdamW", "weight_decay=-0.1"),
    ("AdamW8bit", "betas=-0.1,0.999"),
    ("Lion", "lr=0"),
    ("Lion", "betas=0.9,1.5"),
    ("Prodigy", "d0=0"),
    ("DAdaptAdam", "eps=0"),
]
ACCEPTED_ARGS = [("AdamW", "eps=0"), ("Lion", "betas=0.9,1.0"), ("Prodigy", "d0=1e-6"), ("AdamW", "weight_decay=0")]


@pytest.mark.parametrize("name,arg", REFUSED_ARGS + ACCEPTED_ARGS)
def test_optimizer_values_are_judged_alike_by_the_check_and_the_optimizer(tmp_path, name, arg):
    from engine.optim import make_optimizer
    from loratui.optimizer_args import parse_optimizer_args

    lr = 1.0 if name in ("Prodigy", "DAdaptAdam") else 1e-4
    optimizer = {"name": name, "args": [arg], "unet_lr": lr, "text_encoder_lr": lr}
    data = small_config(optimizer=optimizer)
    problems = [p for p in preflight.preflight(load_config(write_config(tmp_path, data))) if p.severity == "error"]
    refused_by_check = [p for p in problems if p.where == "optimizer.args"]
    assert len(refused_by_check) == len(problems)
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2, 2))], "lr": lr}]
    try:
        make_optimizer(name, groups, parse_optimizer_args([arg]))
        refused_by_engine = False
    except UserError as exc:
        assert exc.where == "optimizer.args"
        refused_by_engine = True
    assert bool(refused_by_check) == refused_by_engine == ((name, arg) in REFUSED_ARGS), refused_by_check


# ---------------------------------------------------------------------------------------------
# Ranks: the check's widths from the configs are what the engine measures on the layers.


def _widest_measured(unet, text_encoders: list, conv_rank: int) -> tuple[int, int]:
    from engine.lora import (
        TEXT_ENCODER_BLOCKS,
        UNET_ATTENTION_BLOCKS,
        UNET_CONV_BLOCKS,
        find_targets,
        widest_targets,
    )

    targets = find_targets(unet, UNET_ATTENTION_BLOCKS, 8, 4.0, UNET_CONV_BLOCKS, conv_rank, 1.0)
    for text_encoder in text_encoders:
        targets += find_targets(text_encoder, TEXT_ENCODER_BLOCKS, 8, 4.0)
    return widest_targets(targets)


def _folder_model(folder: Path, encoders: tuple[str, ...]):
    """(UNet, [text encoders], UNet config, [their configs]) of a diffusers folder."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    classes = {"text_encoder": CLIPTextModel, "text_encoder_2": CLIPTextModelWithProjection}
    return (
        UNet2DConditionModel.from_pretrained(folder / "unet"),
        [classes[name].from_pretrained(folder / name) for name in encoders],
        json.loads((folder / "unet" / "config.json").read_text()),
        [json.loads((folder / name / "config.json").read_text()) for name in encoders],
    )


@pytest.mark.slow
def test_the_builtin_models_widths_are_what_the_engine_measures():
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from engine import reference_models as ref
    from engine.tiny_model import ensure_tiny_model
    from engine.tiny_sdxl import ensure_tiny_sdxl

    models = {
        "loratui:tiny-sd": _folder_model(ensure_tiny_model(), ("text_encoder",)),
        "loratui:tiny-sdxl": _folder_model(ensure_tiny_sdxl(), ("text_encoder", "text_encoder_2")),
    }
    with torch.device("meta"):  # SD 1.5's and SDXL's shapes without their gigabytes of weights
        for name, unet_config, te_configs in (
            ("loratui:sd15-random", ref.SD15_UNET_CONFIG, [ref.SD15_TEXT_ENCODER_CONFIG]),
            (
                "loratui:sdxl-random",
                ref.SDXL_UNET_CONFIG,
                [ref.SDXL_TEXT_ENCODER_CONFIG, ref.SDXL_TEXT_ENCODER_2_CONFIG],
            ),
        ):
            classes = [CLIPTextModel, CLIPTextModelWithProjection][: len(te_configs)]
            models[name] = (
                UNet2DConditionModel(**unet_config),
                [cls(CLIPTextConfig(**config)) for cls, config in zip(classes, te_configs, strict=True)],
                json.loads(json.dumps(unet_config)),
                [json.loads(json.dumps(config)) for config in te_configs],
            )
    assert set(models) == set(preflight.BUILTIN_LAYER_WIDTHS)
    for name, (unet, text_encoders, unet_config, te_configs) in models.items():
        widths = preflight.BUILTIN_LAYER_WIDTHS[name]
        assert preflight.layer_widths(unet_config, *te_configs) == widths, name
        for conv_rank in (0, 4):
            both = (True, True) if len(text_encoders) == 2 else (True, False)
            expected = preflight.widest_trained(widths, conv_rank, *both)
            assert _widest_measured(unet, text_encoders, conv_rank) == expected, (name, conv_rank)
            # The U-Net alone: no text encoder's width counts.
            assert _widest_measured(unet, [], conv_rank) == preflight.widest_trained(widths, conv_rank, False), name


def test_widths_from_configs_of_other_shapes():
    sd2 = {
        "block_out_channels": [320, 640, 1280, 1280],
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    }
    te = {"hidden_size": 1024}
    assert preflight.layer_widths(sd2, te) == preflight.LayerWidths(1280, 1280, 1024)
    # Attention in the outer blocks only, no middle block: the deep 1280 channels get no LoRA.
    shallow = {**sd2, "down_block_types": ["CrossAttnDownBlock2D"] + ["DownBlock2D"] * 3, "mid_block_type": None}
    shallow["up_block_types"] = ["UpBlock2D"] * 3 + ["CrossAttnUpBlock2D"]
    assert preflight.layer_widths(shallow, te) == preflight.LayerWidths(320, 1280, 1024)
    assert preflight.widest_trained(preflight.layer_widths(shallow, te), 0, trains_text_encoder=True) == (1024, 0)
    assert preflight.layer_widths({"block_out_channels": "320"}, te) is None
    assert preflight.layer_widths({**sd2, "up_block_types": ["UpBlock2D"]}, te) is None


@pytest.mark.slow
def test_the_engine_measures_its_layers_and_refuses_a_wider_rank_before_allocating_it(project, monkeypatch):
    """A model whose configs the check cannot read (here: the built-in one, its widths hidden)."""
    from accelerate.state import AcceleratorState

    from engine.events import EventWriter
    from engine.lora import lora_parameters
    from engine.train import StopFlag, Trainer
    from tests.conftest import Recorder

    monkeypatch.setattr(preflight, "BUILTIN_LAYER_WIDTHS", {})
    data = small_config(network={"rank": 128, "alpha": 64.0})
    config = load_config(write_config(project, data))
    assert check_run(config).errors == []
    AcceleratorState._reset_state(reset_partial_state=True)
    trainer = Trainer(config, EventWriter(Recorder()), StopFlag())
    with pytest.raises(UserError) as refused:
        trainer.run()
    assert refused.value.where == "network.rank" and "(the widest is 64)" in refused.value.message
    assert lora_parameters(trainer.model.unet) == [] and lora_parameters(trainer.model.text_encoder) == []
