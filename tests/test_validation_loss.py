"""The validation loss on held-out images (engine side): when it is measured, that it is the same
from run to run, and that measuring it changes nothing the run trains."""

from __future__ import annotations

import shutil

from loratui.core.protocol import validate_event
from loratui.core.summary import RunSummary
from tests.conftest import small_config, train_in_process, write_config


def _run(project, dataset=None, training=None, overwrite=True):
    data = small_config(dataset=dataset or {}, training={"max_train_steps": 0, **(training or {})})
    data["output"]["save_every_n_epochs"] = 0
    return train_in_process(write_config(project, data), overwrite=overwrite)[0]


def test_validation_before_training_every_n_steps_and_at_each_epoch_end(project):
    recorder = _run(project, {"validation_split": 0.25}, {"validate_every_n_steps": 4, "epochs": 2})
    for event in recorder.events:
        validate_event(event)
    started = recorder.of("run_started")[0]
    # 6 images trained (2 held out) x 10 repeats / batch 4 -> 15 steps per epoch: the check's count
    assert started["steps_per_epoch"] == 15 and started["total_steps"] == 30
    validations = recorder.of("validation")
    assert [(v["step"], v["epoch"]) for v in validations] == [
        (0, 0), (4, 0), (8, 0), (12, 0), (15, 1), (16, 1), (20, 1), (24, 1), (28, 1), (30, 2)
    ]  # fmt: skip
    assert all(v["images"] == 2 and v["loss"] > 0 for v in validations)
    # an epoch's validation follows its epoch_end, as the eval does
    kinds = [e["type"] for e in recorder.events if e["type"] in ("epoch_end", "eval", "validation")]
    assert kinds[-3:] == ["epoch_end", "eval", "validation"]
    summary = RunSummary()
    for event in recorder.events:
        summary.apply(event)
    assert summary.validations == [(v["step"], v["loss"]) for v in validations]


def test_no_held_out_images_no_validation_events(project):
    recorder = _run(project, training={"epochs": 1, "validate_every_n_steps": 5})
    assert recorder.of("validation") == []
    assert any(w["message"].startswith("training.validate_every_n_steps") for w in recorder.of("warning"))


def test_the_same_run_twice_gives_the_same_validation_losses(project):
    settings = ({"validation_split": 0.25}, {"epochs": 1, "validate_every_n_steps": 5})
    first = [v["loss"] for v in _run(project, *settings).of("validation")]
    second = [v["loss"] for v in _run(project, *settings).of("validation")]
    assert len(first) == 4 and first == second
    assert first[0] != first[-1]  # it measures the LoRA as it trains, not a constant


def test_measuring_the_validation_loss_changes_no_training_loss(project):
    """A validation folder leaves the training images as they are: the step losses of a run that
    measures after every step are exactly those of the run without it."""
    val = project / "val" / "1_ohwx shape"
    val.mkdir(parents=True)
    for image in sorted((project / "img" / "10_ohwx shape").glob("shape_0[12].*")):
        shutil.copy(image, val / image.name.replace("shape", "held"))
    without = _run(project, training={"epochs": 1})
    measured = _run(project, {"validation_dir": "val"}, {"epochs": 1, "validate_every_n_steps": 1})
    assert len(measured.of("validation")) == 21 and measured.of("validation")[0]["images"] == 2
    assert [s["loss"] for s in measured.of("step")] == [s["loss"] for s in without.of("step")]
    assert [e["loss"] for e in measured.of("eval")] == [e["loss"] for e in without.of("eval")]


def test_held_out_latents_are_cached_with_the_training_ones(project):
    recorder = _run(project, {"validation_split": 0.25, "cache_latents": "disk"}, {"max_train_steps": 1})
    assert len(list((project / "model" / ".latent-cache").glob("*.safetensors"))) == 8
    caching = [e for e in recorder.of("status") if e["phase"] == "caching_latents"]
    assert caching[-1]["total"] == 8
