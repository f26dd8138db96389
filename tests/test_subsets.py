"""[[subsets]] tables: several folders, each with its own repeats, class tokens, regularisation flag and
options; loaded, saved, checked, scanned, counted and trained."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from loratui.check import check_run
from loratui.config import SubsetSettings, config_from_dict, load_config, save_config
from loratui.errors import UserError
from loratui.held_out import scan_run_dataset
from tests.conftest import SAMPLE, small_config, train_in_process, write_config

SHAPES = SAMPLE / "img" / "10_ohwx shape"


@pytest.fixture
def folders(tmp_path: Path) -> Path:
    """Two flat folders: shapes/ (the sample's 8 captioned images) and plain/ (3 of them, no captions)."""
    shutil.copytree(SHAPES, tmp_path / "shapes")
    (tmp_path / "plain").mkdir()
    for name in ("shape_01.png", "shape_02.png", "shape_04.png"):
        shutil.copy(SHAPES / name, tmp_path / "plain" / name.replace("shape", "plain"))
    return tmp_path


def _config(project: Path, subsets: list[dict], **dataset) -> dict:
    data = small_config(dataset={"image_dir": "", **dataset})
    data["subsets"] = subsets
    return data


def test_subsets_load_save_and_load_again(tmp_path: Path):
    data = _config(
        tmp_path,
        [
            {"image_dir": "shapes", "num_repeats": 3, "class_tokens": "ohwx shape", "flip_aug": True},
            {"image_dir": "plain", "is_reg": True, "caption_extension": ".caption", "keep_tokens": 1},
        ],
    )
    cfg = load_config(write_config(tmp_path, data))
    assert cfg.subsets == [
        SubsetSettings("shapes", 3, "ohwx shape", False, "", {"flip_aug": True}),
        SubsetSettings("plain", 1, "", True, ".caption", {"keep_tokens": 1}),
    ]
    save_config(cfg, tmp_path / "again.toml")
    text = (tmp_path / "again.toml").read_text()
    assert text.count("[[subsets]]") == 2 and text.index("[sample]") < text.index("[[subsets]]")
    assert load_config(tmp_path / "again.toml") == cfg


def test_subset_type_and_name_mistakes_are_reported_like_the_sections(tmp_path: Path):
    data = _config(tmp_path, [{"image_dir": "shapes", "num_repeats": "3", "flip": True}, {"num_repeats": 2}])
    with pytest.raises(UserError) as raised:
        load_config(write_config(tmp_path, data))
    text = str(raised.value)
    assert "subsets[1].num_repeats: expected a whole number" in text and "num_repeats = 3, without quotes" in text
    assert "subsets[1].flip: unknown key 'flip' in [[subsets]]; did you mean 'flip_aug'?" in text
    assert "subsets[2]: this [[subsets]] table has no image_dir" in text
    with pytest.raises(UserError, match="must be \\[\\[subsets\\]\\] tables"):
        config_from_dict({**small_config(), "subsets": "shapes"})


def test_each_subset_is_a_concept_with_its_own_repeats_captions_and_options(folders: Path):
    subsets = [
        {"image_dir": "shapes", "num_repeats": 3, "flip_aug": True},
        {"image_dir": "plain", "num_repeats": 2, "class_tokens": "plain thing", "shuffle_caption": True},
    ]
    cfg = config_from_dict(_config(folders, subsets), folders)
    report = scan_run_dataset(cfg)
    assert not [p for p in report.problems if p.severity == "error"]
    shapes, plain = report.concepts
    assert (shapes.folder.name, len(shapes.images), shapes.repeats) == ("shapes", 8, 3)
    assert (plain.folder.name, len(plain.images), plain.repeats) == ("plain", 3, 2)
    assert {e.caption for e in plain.images} == {"plain thing"}  # no caption files: the class tokens
    assert all(e.caption_source == "file" for e in shapes.images)
    assert all(e.options.flip_aug and not e.options.shuffle_caption for e in shapes.images)
    assert all(e.options.shuffle_caption and not e.options.flip_aug for e in plain.images)
    # 8 x 3 + 3 x 2 = 30 items per epoch; batch 4 per bucket (the sample has 3 shapes of image)
    assert report.num_train_items == 30
    assert report.steps_per_epoch(1) == 30
    assert report.dataset_dirs() == {
        "shapes": {"n_repeats": 3, "img_count": 8},
        "plain": {"n_repeats": 2, "img_count": 3},
    }
    result = check_run(cfg)
    assert result.schedule is not None and result.schedule.steps_per_epoch == report.steps_per_epoch(4)


def test_a_reg_subset_is_a_regularisation_concept(folders: Path):
    subsets = [{"image_dir": "shapes", "num_repeats": 1}, {"image_dir": "plain", "is_reg": True, "class_tokens": "x"}]
    report = scan_run_dataset(config_from_dict(_config(folders, subsets), folders))
    assert [c.folder.name for c in report.concepts] == ["shapes"]
    assert [c.folder.name for c in report.reg_concepts] == ["plain"]
    assert report.num_reg_items == report.num_train_items == 8


def _errors(cfg) -> list:
    return [p for p in check_run(cfg).problems if p.severity == "error"]


def test_a_subset_folder_that_does_not_exist_is_one_line(folders: Path):
    subsets = [{"image_dir": "shapes"}, {"image_dir": "nowhere"}]
    errors = _errors(config_from_dict(_config(folders, subsets), folders))
    assert len(errors) == 1
    assert errors[0].where == "subsets[2]" and "does not exist" in errors[0].message
    assert str(folders / "nowhere") in errors[0].message


def test_two_subsets_on_one_folder_list_its_images_twice(folders: Path):
    subsets = [{"image_dir": "plain"}, {"image_dir": "shapes"}, {"image_dir": "plain", "num_repeats": 4}]
    errors = _errors(config_from_dict(_config(folders, subsets), folders))
    assert len(errors) == 1
    assert "3 images are listed twice" in errors[0].message and "subsets[1] and in subsets[3]" in errors[0].message


def test_an_image_in_a_kohya_folder_and_a_subset_is_listed_twice(folders: Path):
    (folders / "img").mkdir()
    shutil.copytree(SHAPES, folders / "img" / "10_ohwx shape")
    subsets = [{"image_dir": "img/10_ohwx shape", "num_repeats": 2}]
    errors = _errors(config_from_dict(_config(folders, subsets, image_dir="img"), folders))
    assert len(errors) == 1 and "8 images are listed twice" in errors[0].message


def test_subset_values_out_of_range_and_random_crop_with_a_cache(folders: Path):
    subsets = [
        {"image_dir": "shapes", "num_repeats": 0},
        {"image_dir": "plain", "caption_dropout_rate": 1.5, "random_crop": True},
    ]
    errors = _errors(config_from_dict(_config(folders, subsets), folders))
    by_where = {p.where: p.message for p in errors}
    assert "num_repeats 0 is out of range" in by_where["subsets[1].num_repeats"]
    assert "caption_dropout_rate 1.5" in by_where["subsets[2].caption_dropout_rate"]
    assert "random_crop (set in subsets[2])" in by_where["dataset.cache_latents"]


def test_a_subset_pointed_at_a_kohya_img_folder_says_it_is_scanned_flat(folders: Path):
    (folders / "img").mkdir()
    shutil.copytree(SHAPES, folders / "img" / "10_ohwx shape")
    errors = _errors(config_from_dict(_config(folders, [{"image_dir": "img"}]), folders))
    assert any("scanned flat" in p.message and "10_ohwx shape" in p.fix for p in errors)


def test_an_engine_run_on_a_subset_with_flip_aug(folders: Path):
    subsets = [{"image_dir": "plain", "num_repeats": 2, "class_tokens": "plain thing", "flip_aug": True}]
    data = _config(folders, subsets)
    data["training"].update({"epochs": 1, "batch_size": 2})
    data["output"].update({"save_every_n_epochs": 0})
    recorder, trainer = train_in_process(write_config(folders, data))
    assert recorder.of("finished"), recorder.events[-3:]
    assert len(recorder.of("step")) == trainer.dataset.steps_per_epoch(2) == 3  # 3 images x 2 repeats / 2
    cached = set(trainer.latents._params)  # each image's latents, and its mirrored ones
    assert {mirrored for _path, mirrored in cached} == {False, True} and len(cached) == 6
