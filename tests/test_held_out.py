"""Held-out images for the validation loss (loratui/held_out.py): which images, and that every count
of the run (the check's schedule, the wizard's calculator, the engine's batches) leaves them out."""

from __future__ import annotations

import shutil

import pytest

from loratui.check import check_run
from loratui.config import config_from_dict
from loratui.held_out import scan_run_dataset
from tests.conftest import small_config


def _cfg(project, **dataset):
    data = small_config(dataset=dataset)
    return config_from_dict(data, base_dir=project)


def test_a_quarter_of_the_images_is_held_out_and_never_in_a_batch(project):
    cfg = _cfg(project, validation_split=0.25)
    report = scan_run_dataset(cfg)
    assert len(report.held_out) == 2 and report.num_images == 6  # the sample has 8 images
    trained = {entry.path for epoch in range(3) for batch in report.epoch_batches(4, 7, epoch) for entry in batch}
    assert len(trained) == 6 and not trained & {entry.path for entry in report.held_out}
    concept = report.concepts[0]
    assert sum(concept.bucket_counts.values()) == 6
    assert report.num_train_items == 60  # 6 images x 10 repeats


def test_the_same_seed_holds_out_the_same_images_and_another_seed_others(project):
    def held(seed):
        cfg = _cfg(project, validation_split=0.25)
        cfg.training.seed = seed
        return [entry.path.name for entry in scan_run_dataset(cfg).held_out]

    assert held(7) == held(7)
    assert len({tuple(held(seed)) for seed in range(6)}) > 1


def test_the_check_schedule_counts_the_training_images_only(project):
    without = check_run(_cfg(project))
    held = check_run(_cfg(project, validation_split=0.25))
    assert without.ok and held.ok, held.problems
    assert without.schedule.total_steps == 40  # 8 x 10 / 4 x 2 epochs
    assert held.schedule.total_steps == 30  # 6 x 10 / 4 -> 15 per epoch x 2


def test_a_small_split_still_holds_out_one_image_and_each_folder_keeps_one(project):
    report = scan_run_dataset(_cfg(project, validation_split=0.01))
    assert len(report.held_out) == 1 and report.num_images == 7
    report = scan_run_dataset(_cfg(project, validation_split=0.9))
    assert len(report.held_out) == 7 and report.num_images == 1


def test_a_split_that_cannot_hold_out_an_image_is_one_error_at_the_setting(project):
    folder = project / "img" / "10_ohwx shape"
    for image in sorted(folder.glob("*.png"))[1:]:
        image.unlink()
    result = check_run(_cfg(project, validation_split=0.5))
    errors = [p for p in result.errors if p.where == "dataset.validation_split"]
    assert len(errors) == 1 and "cannot hold out an image" in errors[0].message
    assert "validation_split = 0" in errors[0].fix


def test_validation_dir_images_are_held_out_as_well_and_training_keeps_all(project):
    shutil.copytree(project / "img", project / "val")
    report = scan_run_dataset(_cfg(project, validation_dir="val"))
    assert report.num_images == 8 and len(report.held_out) == 8
    assert all(entry.path.is_relative_to(project / "val") for entry in report.held_out)
    report = scan_run_dataset(_cfg(project, validation_dir="val", validation_split=0.25))
    assert report.num_images == 6 and len(report.held_out) == 10


@pytest.mark.parametrize("layout", ["missing", "empty", "no_images"])
def test_a_validation_dir_without_images_is_an_error_naming_it(project, layout):
    val = project / "val"
    if layout != "missing":
        val.mkdir()
    if layout == "no_images":
        (val / "1_ohwx shape").mkdir()
        (val / "1_ohwx shape" / "notes.txt").write_text("no image here")
    result = check_run(_cfg(project, validation_dir="val"))
    assert result.errors, result.problems
    assert any("validation_dir" in f"{p.where} {p.message}" for p in result.errors), result.errors


def test_validating_every_n_steps_without_held_out_images_is_a_warning(project):
    data = small_config(training={"validate_every_n_steps": 5})
    result = check_run(config_from_dict(data, base_dir=project))
    warnings = [p for p in result.problems if p.where == "training.validate_every_n_steps"]
    assert len(warnings) == 1 and warnings[0].severity == "warning"
    data = small_config(training={"validate_every_n_steps": 5}, dataset={"validation_split": 0.25})
    result = check_run(config_from_dict(data, base_dir=project))
    assert not [p for p in result.problems if p.where == "training.validate_every_n_steps"]


def test_a_validation_dir_that_is_the_image_dir_is_a_warning(project):
    result = check_run(_cfg(project, validation_dir="img"))
    warnings = [p for p in result.problems if p.where == "dataset.validation_dir"]
    assert len(warnings) == 1 and warnings[0].severity == "warning"
    assert warnings[0].message.startswith("8 images of the validation folder are also trained")
