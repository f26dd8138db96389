"""sd-scripts' dataset config TOML imported into [dataset]/[training] values and [[subsets]] tables,
with every key it cannot carry reported."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from loratui.check import check_run
from loratui.config import config_from_dict
from loratui.dataset_config import import_dataset_config
from loratui.errors import UserError
from tests.conftest import SAMPLE, small_config

DATASET_CONFIG = """
[general]
shuffle_caption = true
caption_extension = ".txt"
keep_tokens = 1
color_aug = true

[[datasets]]
resolution = 128
batch_size = 2
enable_bucket = true
bucket_no_upscale = true
bucket_reso_steps = 64
min_bucket_reso = 64
max_bucket_reso = 256
flip_aug = true

  [[datasets.subsets]]
  image_dir = "shapes"
  num_repeats = 10
  class_tokens = "ohwx shape"

  [[datasets.subsets]]
  image_dir = "reg"
  is_reg = true
  num_repeats = 1
  class_tokens = "shape"
  flip_aug = false
  alpha_mask = true

[[datasets]]
resolution = [768, 768]

  [[datasets.subsets]]
  image_dir = "more"
  num_repeats = 2

  [[datasets.subsets]]
  metadata_file = "meta.json"
  image_dir = "ft"
"""


@pytest.fixture
def dataset_toml(tmp_path: Path) -> Path:
    path = tmp_path / "dataset.toml"
    path.write_text(DATASET_CONFIG)
    return path


def test_values_and_subsets_are_carried_and_the_rest_reported(dataset_toml: Path):
    result = import_dataset_config(dataset_toml)
    assert result.values == {
        "dataset.shuffle_caption": True,
        "dataset.caption_extension": ".txt",
        "dataset.keep_tokens": 1,
        "dataset.resolution": 128,
        "training.batch_size": 2,
        "dataset.enable_buckets": True,
        "dataset.bucket_no_upscale": True,
        "dataset.bucket_reso_steps": 64,
        "dataset.min_bucket_reso": 64,
        "dataset.max_bucket_reso": 256,
    }
    # a dataset's own options go into each of its subsets; a subset's own win
    assert result.subsets == [
        {"image_dir": "shapes", "flip_aug": True, "num_repeats": 10, "class_tokens": "ohwx shape"},
        {"image_dir": "reg", "flip_aug": False, "is_reg": True, "num_repeats": 1, "class_tokens": "shape"},
        {"image_dir": "more", "num_repeats": 2},
    ]
    assert result.lines == [
        "general.shuffle_caption = True -> dataset.shuffle_caption",
        "general.caption_extension = '.txt' -> dataset.caption_extension",
        "general.keep_tokens = 1 -> dataset.keep_tokens",
        "datasets[1].resolution = 128 -> dataset.resolution",
        "datasets[1].batch_size = 2 -> training.batch_size",
        "datasets[1].enable_bucket = True -> dataset.enable_buckets",
        "datasets[1].min_bucket_reso = 64 -> dataset.min_bucket_reso",
        "datasets[1].max_bucket_reso = 256 -> dataset.max_bucket_reso",
        "datasets[1].bucket_reso_steps = 64 -> dataset.bucket_reso_steps",
        "datasets[1].bucket_no_upscale = True -> dataset.bucket_no_upscale",
        "datasets[1].subsets[1] -> subsets[1]: image_dir = 'shapes', flip_aug = True, num_repeats = 10, "
        "class_tokens = 'ohwx shape'",
        "datasets[1].subsets[2] -> subsets[2]: image_dir = 'reg', flip_aug = False, is_reg = True, num_repeats = 1, "
        "class_tokens = 'shape'",
        "datasets[2].subsets[1] -> subsets[3]: image_dir = 'more', num_repeats = 2",
        "relative image_dir paths were read by sd-scripts from the folder it ran in; loratui reads them from the "
        "run config's folder: check that they still lead to the images",
        "not carried: general.color_aug: loratui has no colour augmentation",
        "not carried: datasets[1].subsets[2].alpha_mask: loratui has no alpha-mask loss",
        "not carried: datasets[2]: its resolution = [768, 768] differ from datasets[1]'s; loratui trains one "
        "resolution, batch size and set of buckets, so its subsets are trained with datasets[1]'s",
        "not carried: datasets[2].subsets[2]: a fine-tuning subset (metadata_file = 'meta.json'): loratui reads "
        "captions from files beside the images; run sd-scripts' merge_captions_to_metadata the other way, or write "
        "them",
    ]


def test_the_imported_config_checks_and_scans_its_subsets(dataset_toml: Path, tmp_path: Path):
    shutil.copytree(SAMPLE / "img" / "10_ohwx shape", tmp_path / "shapes")
    shutil.copytree(SAMPLE / "img" / "10_ohwx shape", tmp_path / "more")
    (tmp_path / "reg").mkdir()
    shutil.copy(SAMPLE / "img" / "10_ohwx shape" / "shape_01.png", tmp_path / "reg" / "r.png")
    result = import_dataset_config(dataset_toml)
    data = small_config()
    data["dataset"]["image_dir"] = ""
    for section, values in result.sections().items():
        if section == "subsets":
            data["subsets"] = values
        else:
            data[section].update(values)
    check = check_run(config_from_dict(data, tmp_path))
    assert not [p for p in check.problems if p.severity == "error"], check.problems
    report = check.dataset
    assert [(c.folder.name, c.repeats) for c in report.concepts] == [("shapes", 10), ("more", 2)]
    assert [(c.folder.name, c.is_reg) for c in report.reg_concepts] == [("reg", True)]
    assert report.num_train_items == 8 * 10 + 8 * 2
    reg_image = report.reg_concepts[0].images[0]
    assert reg_image.caption == "shape" and not reg_image.options.flip_aug and reg_image.options.shuffle_caption


def test_a_dataset_config_that_is_not_one_names_the_file(tmp_path: Path):
    with pytest.raises(UserError, match="dataset config not found"):
        import_dataset_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[general\n")
    with pytest.raises(UserError, match="not valid TOML"):
        import_dataset_config(bad)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('datasets = "x"\n')
    with pytest.raises(UserError, match="not an sd-scripts dataset config"):
        import_dataset_config(wrong)
