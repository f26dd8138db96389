"""The dataset scan: folder parsing, captions, problems, and the epoch plan the engine trains."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from loratui.buckets import assign_bucket, make_buckets
from loratui.dataset import (
    DatasetReport,
    parse_concept_folder,
    repeats_for_target,
    scan_dataset,
)

SAMPLE_PROJECT = Path(__file__).resolve().parent.parent / "sample_project"
# Small buckets so the test images can stay tiny: (64,192) (64,256) (128,128) (192,64) (256,64).
SMALL = {"resolution": 128, "min_bucket_reso": 64, "max_bucket_reso": 256, "bucket_reso_steps": 64}


def image(path: Path, size: tuple[int, int] = (128, 128), caption: str | None = None, **save_args) -> Path:
    """Write a plain image (format from the extension) and, when given, its .txt caption."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 40, 40)).save(path, **save_args)
    if caption is not None:
        path.with_suffix(".txt").write_text(caption, encoding="utf-8")
    return path


def problems(report: DatasetReport, where: Path | str, severity: str) -> list:
    return [p for p in report.problems if p.where == str(where) and p.severity == severity]


def only_problem(report: DatasetReport, where: Path | str, severity: str):
    found = problems(report, where, severity)
    assert len(found) == 1, report.problems
    return found[0]


# --------------------------------------------------------------------------------------------
# Folder names and repeats


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("10_ohwx woman", (10, "ohwx woman")),
        ("1_shape", (1, "shape")),
        ("3_snake_case name", (3, "snake_case name")),  # only the first underscore separates
        ("007_bond", (7, "bond")),
        ("0_nothing", (0, "nothing")),  # parsed; the scan reports 0 repeats
        ("10_", (10, "")),
        ("ohwx woman", None),
        ("woman_10", None),
        ("_10", None),
        ("10-ohwx", None),
        ("10", None),
        ("-1_x", None),
        ("1.5_x", None),
    ],
)
def test_parse_concept_folder(name, expected):
    assert parse_concept_folder(name) == expected


def test_repeats_for_target():
    assert repeats_for_target(4800, 32, 10) == 15  # the guides' example
    assert repeats_for_target(4800, 32, 10, batch_size=2) == 30
    assert repeats_for_target(10, 100, 10) == 1  # never below one
    with pytest.raises(ValueError):
        repeats_for_target(4800, 0, 10)


# --------------------------------------------------------------------------------------------
# Images and captions


def test_images_with_captions(tmp_path):
    root = tmp_path / "img"
    image(root / "10_ohwx woman" / "b.png", (128, 128), "ohwx woman, red dress")
    image(root / "10_ohwx woman" / "a.jpg", (192, 128), "ohwx woman, smiling")
    image(root / "10_ohwx woman" / "c.WEBP", (128, 192), "ohwx woman, outdoors")
    image(root / "2_other" / "d.JPEG", (128, 128), "other")

    report = scan_dataset(root, **SMALL)

    assert report.problems == ()
    assert not report.has_errors
    assert [c.folder.name for c in report.concepts] == ["10_ohwx woman", "2_other"]
    concept = report.concepts[0]
    assert (concept.name, concept.repeats, concept.is_reg) == ("ohwx woman", 10, False)
    assert [e.path.name for e in concept.images] == ["a.jpg", "b.png", "c.WEBP"]  # sorted
    first = concept.images[0]
    assert (first.width, first.height) == (192, 128)
    assert (first.caption, first.caption_source) == ("ohwx woman, smiling", "file")
    assert first.concept == "10_ohwx woman" and first.bucket == (128, 128)
    assert report.num_images == 4
    assert report.num_train_items == 3 * 10 + 1 * 2
    assert report.num_items_per_epoch == 32


def test_missing_captions_fall_back_to_the_folder_caption_with_one_warning(tmp_path):
    folder = tmp_path / "img" / "10_ohwx shape"
    image(folder / "a.png", caption="ohwx shape, circle")
    image(folder / "b.png")
    image(folder / "c.png")

    report = scan_dataset(tmp_path / "img", **SMALL)

    entries = {e.path.name: e for e in report.concepts[0].images}
    assert (entries["b.png"].caption, entries["b.png"].caption_source) == ("ohwx shape", "folder")
    assert report.concepts[0].missing_captions == (folder / "b.png", folder / "c.png")
    warning = only_problem(report, folder, "warning")
    assert "2 of 3 images have no .txt caption" in warning.message
    assert "folder caption 'ohwx shape'" in warning.message
    assert "b.txt" in warning.fix
    assert not report.has_errors


def test_empty_caption_files_fall_back_to_the_folder_caption(tmp_path):
    folder = tmp_path / "img" / "5_ohwx shape"
    image(folder / "a.png", caption="  \n\t ")
    image(folder / "b.png", caption="square")

    report = scan_dataset(tmp_path / "img", **SMALL)

    entry = report.concepts[0].images[0]
    assert (entry.caption, entry.caption_source) == ("ohwx shape", "empty")
    assert report.concepts[0].empty_captions == (folder / "a.txt",)
    assert report.concepts[0].missing_captions == ()
    warning = only_problem(report, folder, "warning")
    assert "1 of 2 .txt captions are empty" in warning.message


def test_caption_is_stripped_and_a_byte_order_mark_tolerated(tmp_path):
    path = image(tmp_path / "img" / "1_x" / "a.png")
    path.with_suffix(".txt").write_bytes("\ufeff  ohwx, caf\u00e9 \n\n".encode())
    report = scan_dataset(tmp_path / "img", **SMALL)
    assert report.concepts[0].images[0].caption == "ohwx, caf\u00e9"


def test_a_caption_that_is_not_utf8_is_an_error(tmp_path):
    path = image(tmp_path / "img" / "1_x" / "a.png")
    path.with_suffix(".txt").write_bytes(b"caf\xe9")
    report = scan_dataset(tmp_path / "img", **SMALL)
    assert "not UTF-8" in only_problem(report, path.with_suffix(".txt"), "error").message
    assert report.concepts[0].images[0].caption == "x"


def test_custom_caption_extension(tmp_path):
    folder = tmp_path / "img" / "1_x"
    image(folder / "a.png", caption="from txt")
    (folder / "a.caption").write_text("from caption")
    image(folder / "b.png", caption="only txt")

    report = scan_dataset(tmp_path / "img", caption_extension="caption", **SMALL)

    captions = [(e.caption, e.caption_source) for e in report.concepts[0].images]
    assert captions == [("from caption", "file"), ("x", "folder")]
    assert "no .caption caption" in only_problem(report, folder, "warning").message


@pytest.mark.parametrize(
    "settings",
    [
        {"min_bucket_reso": 640},  # above the resolution (off the grid is moved onto it: see test_image_options)
        {"bucket_reso_steps": 0},
        {"resolution": 2048},  # above max_bucket_reso
    ],
)
def test_impossible_bucket_settings_are_a_problem_not_a_crash(tmp_path, settings):
    image(tmp_path / "img" / "1_x" / "a.png", caption="x")
    report = scan_dataset(tmp_path / "img", **settings)
    error = only_problem(report, "buckets", "error")
    side = settings.get("resolution", 512)
    assert f"single {side}x{side} bucket" in error.message
    assert report.buckets == ((side, side),)
    assert report.concepts[0].images[0].bucket == (side, side)


def test_an_empty_caption_extension_is_a_problem_not_a_crash(tmp_path):
    image(tmp_path / "img" / "1_x" / "a.png", caption="from txt")
    report = scan_dataset(tmp_path / "img", caption_extension="", **SMALL)
    assert "looked up as .txt" in only_problem(report, "caption_extension", "error").message
    assert report.concepts[0].images[0].caption == "from txt"


@pytest.mark.parametrize(("orientation", "expected"), [(1, (60, 20)), (3, (60, 20)), (6, (20, 60)), (8, (20, 60))])
def test_exif_orientation_is_honoured(tmp_path, orientation, expected):
    exif = Image.Exif()
    exif[0x0112] = orientation
    image(tmp_path / "img" / "1_x" / "a.jpg", (60, 20), caption="x", exif=exif)
    report = scan_dataset(tmp_path / "img", **SMALL)
    entry = report.concepts[0].images[0]
    assert (entry.width, entry.height) == expected


def test_exif_orientation_in_a_png_is_honoured(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 5
    image(tmp_path / "img" / "1_x" / "a.png", (60, 20), caption="x", exif=exif)
    entry = scan_dataset(tmp_path / "img", **SMALL).concepts[0].images[0]
    assert (entry.width, entry.height) == (20, 60)


def test_png_orientation_from_xmp_agrees_with_exif_transpose(tmp_path):
    # The engine straightens images with ImageOps.exif_transpose; the scan must see the same size.
    from PIL import ImageOps, PngImagePlugin

    xmp = PngImagePlugin.PngInfo()
    xmp.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>')
    path = image(tmp_path / "img" / "1_x" / "a.png", (60, 20), caption="x", pnginfo=xmp)
    entry = scan_dataset(tmp_path / "img", **SMALL).concepts[0].images[0]
    with Image.open(path) as img:
        assert (entry.width, entry.height) == ImageOps.exif_transpose(img).size == (20, 60)


def test_images_get_their_nearest_bucket_or_the_square_without_buckets(tmp_path):
    image(tmp_path / "img" / "1_x" / "wide.png", (1024, 256), caption="x")
    image(tmp_path / "img" / "1_x" / "tall.png", (300, 700), caption="x")

    report = scan_dataset(tmp_path / "img")
    buckets = make_buckets(512, 256, 1024, 64)
    assert report.buckets == tuple(buckets)
    assert [e.bucket for e in report.concepts[0].images] == [
        assign_bucket(300, 700, buckets),
        (1024, 256),
    ]
    assert report.concepts[0].bucket_counts == {assign_bucket(300, 700, buckets): 1, (1024, 256): 1}

    flat = scan_dataset(tmp_path / "img", enable_buckets=False, resolution=256)
    assert flat.buckets == ((256, 256),)
    assert {e.bucket for e in flat.concepts[0].images} == {(256, 256)}


# --------------------------------------------------------------------------------------------
# Problems


def test_missing_image_dir(tmp_path):
    report = scan_dataset(tmp_path / "nope")
    error = only_problem(report, tmp_path / "nope", "error")
    assert "does not exist" in error.message
    assert len(report.problems) == 1, "no second error for the same cause"
    assert report.concepts == () and report.num_images == 0 and report.has_errors


def test_image_dir_that_is_a_file(tmp_path):
    (tmp_path / "img").write_text("")
    report = scan_dataset(tmp_path / "img")
    assert "not a folder" in only_problem(report, tmp_path / "img", "error").message


def test_image_dir_without_concept_folders_explains_the_layout(tmp_path):
    (tmp_path / "img").mkdir()
    report = scan_dataset(tmp_path / "img")
    error = only_problem(report, tmp_path / "img", "error")
    assert "no concept folders" in error.message
    assert "<repeats>_<name>" in error.fix and "10_ohwx woman" in error.fix


def test_reg_dir_given_but_missing(tmp_path):
    image(tmp_path / "img" / "1_x" / "a.png", caption="x")
    report = scan_dataset(tmp_path / "img", tmp_path / "reg", **SMALL)
    error = only_problem(report, tmp_path / "reg", "error")
    assert "reg_dir does not exist" in error.message
    assert report.num_images == 1


def test_folder_without_repeats_prefix(tmp_path):
    image(tmp_path / "img" / "1_x" / "a.png", caption="x")
    image(tmp_path / "img" / "photos" / "b.png", caption="x")
    report = scan_dataset(tmp_path / "img", **SMALL)
    error = only_problem(report, tmp_path / "img" / "photos", "error")
    assert "rename it to e.g. 10_photos" in error.fix
    assert [c.folder.name for c in report.concepts] == ["1_x"]


def test_folder_with_zero_repeats(tmp_path):
    image(tmp_path / "img" / "1_x" / "a.png", caption="x")
    image(tmp_path / "img" / "0_y" / "b.png", caption="y")
    report = scan_dataset(tmp_path / "img", **SMALL)
    error = only_problem(report, tmp_path / "img" / "0_y", "error")
    assert "0 repeats" in error.message and "1_y" in error.fix
    assert report.num_images == 1


def test_concept_folder_without_images(tmp_path):
    image(tmp_path / "img" / "1_x" / "a.png", caption="x")
    (tmp_path / "img" / "2_empty").mkdir()
    (tmp_path / "img" / "2_empty" / "notes.txt").write_text("captions without images are ignored")
    report = scan_dataset(tmp_path / "img", **SMALL)
    error = only_problem(report, tmp_path / "img" / "2_empty", "error")
    assert "no images" in error.message
    assert len(report.problems) == 1


def test_images_directly_in_image_dir(tmp_path):
    image(tmp_path / "img" / "1_x" / "a.png", caption="x")
    image(tmp_path / "img" / "loose.png")
    report = scan_dataset(tmp_path / "img", **SMALL)
    error = only_problem(report, tmp_path / "img", "error")
    assert "loose.png" in error.message and "ignored" in error.message
    assert "move them into" in error.fix
    assert report.num_images == 1


def test_image_dir_pointing_at_a_concept_folder_suggests_its_parent(tmp_path):
    concept = tmp_path / "img" / "10_ohwx woman"
    image(concept / "a.png", caption="x")
    report = scan_dataset(concept, **SMALL)
    stray = [p for p in problems(report, concept, "error") if "directly in image_dir" in p.message]
    assert len(stray) == 1
    assert f"point image_dir at {tmp_path / 'img'}," in stray[0].fix


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "zero bytes"), (b"this is not a png at all", "not a readable image")],
)
def test_broken_images_are_errors_and_left_out(tmp_path, content, reason):
    folder = tmp_path / "img" / "1_x"
    image(folder / "good.png", caption="x")
    (folder / "broken.png").write_bytes(content)
    report = scan_dataset(tmp_path / "img", **SMALL)
    assert reason in only_problem(report, folder / "broken.png", "error").message
    assert report.concepts[0].unreadable == ((folder / "broken.png", reason),)
    assert [e.path.name for e in report.concepts[0].images] == ["good.png"]
    assert report.concepts[0].missing_captions == (), "a broken image is not also a missing caption"


def test_other_image_formats_are_a_warning_and_not_used(tmp_path):
    folder = tmp_path / "img" / "1_x"
    image(folder / "a.png", caption="x")
    image(folder / "b.gif")
    image(folder / "c.BMP")
    report = scan_dataset(tmp_path / "img", **SMALL)
    warning = only_problem(report, folder, "warning")
    assert "b.gif" in warning.message and "c.BMP" in warning.message
    assert ".png, .jpg or .webp" in warning.fix
    assert report.num_images == 1


def test_hidden_files_caches_and_stray_captions_are_ignored_silently(tmp_path):
    folder = tmp_path / "img" / "1_x"
    image(folder / "a.png", caption="x")
    image(folder / ".hidden.png")
    (folder / "a.npz").write_bytes(b"latents")
    (folder / "orphan.txt").write_text("a caption without an image")
    (tmp_path / "img" / ".cache").mkdir()
    report = scan_dataset(tmp_path / "img", **SMALL)
    assert report.problems == ()
    assert report.num_images == 1


def test_small_images_are_one_warning_per_concept_naming_the_smallest(tmp_path):
    folder = tmp_path / "img" / "1_x"
    image(folder / "big.png", (256, 256), caption="x")
    image(folder / "small.png", (100, 100), caption="x")
    image(folder / "smaller.png", (90, 60), caption="x")
    image(folder / "short.png", (150, 120), caption="x")  # wide enough, 8 rows short of 128x128
    report = scan_dataset(tmp_path / "img", **SMALL)
    warning = only_problem(report, folder, "warning")
    assert "3 of 4 images are smaller than their bucket" in warning.message
    assert "smaller.png, 90x60" in warning.message
    assert report.concepts[0].small_images == (
        folder / "short.png",
        folder / "small.png",
        folder / "smaller.png",
    )


def test_no_usable_training_images_at_all(tmp_path):
    (tmp_path / "img" / "1_x").mkdir(parents=True)
    (tmp_path / "img" / "1_x" / "a.png").write_bytes(b"")
    report = scan_dataset(tmp_path / "img", **SMALL)
    assert "no usable training images" in only_problem(report, tmp_path / "img", "error").message


def test_only_badly_named_folders_means_no_usable_images(tmp_path):
    image(tmp_path / "img" / "photos" / "a.png", caption="x")
    report = scan_dataset(tmp_path / "img", **SMALL)
    assert "no usable training images" in only_problem(report, tmp_path / "img", "error").message


def test_reg_images_without_captions_are_only_a_note(tmp_path):
    image(tmp_path / "img" / "1_x" / "a.png", caption="x")
    image(tmp_path / "reg" / "1_woman" / "r.png")
    report = scan_dataset(tmp_path / "img", tmp_path / "reg", **SMALL)
    note = only_problem(report, tmp_path / "reg" / "1_woman", "note")
    assert "folder caption 'woman'" in note.message
    assert report.reg_concepts[0].images[0].caption == "woman"
    assert report.reg_concepts[0].images[0].is_reg


def test_every_problem_is_reported_in_one_scan(tmp_path):
    root = tmp_path / "img"
    image(root / "loose.png")
    image(root / "photos" / "a.png")
    (root / "0_zero").mkdir(parents=True)
    (root / "3_empty").mkdir()
    folder = root / "2_mixed"
    image(folder / "nocaption.png", (100, 100))
    (folder / "zero.png").write_bytes(b"")
    image(folder / "anim.gif")
    report = scan_dataset(root, tmp_path / "reg", **SMALL)
    found = {(p.where, p.severity) for p in report.problems}
    assert found == {
        (str(root), "error"),  # loose.png
        (str(root / "photos"), "error"),
        (str(root / "0_zero"), "error"),
        (str(root / "3_empty"), "error"),
        (str(folder / "zero.png"), "error"),
        (str(folder), "warning"),  # the gif, the missing caption, the small image
        (str(tmp_path / "reg"), "error"),
    }
    assert len(problems(report, folder, "warning")) == 3


# --------------------------------------------------------------------------------------------
# The epoch plan


def mixed_dataset(tmp_path: Path, with_reg: bool) -> DatasetReport:
    """Three buckets, uneven counts and repeats, so batching has remainders to get wrong."""
    root = tmp_path / "img"
    for index in range(5):
        image(root / "3_square" / f"s{index}.png", (128, 128), caption="square")
    for index in range(3):
        image(root / "2_wide" / f"w{index}.png", (256, 64), caption="wide")
    image(root / "1_tall" / "t0.png", (64, 256), caption="tall")
    reg = None
    if with_reg:
        reg = tmp_path / "reg"
        for index in range(4):
            image(reg / "2_shape" / f"r{index}.png", (128, 128), caption="shape")
        image(reg / "1_shape wide" / "rw.png", (192, 64), caption="shape")
    report = scan_dataset(root, reg, **SMALL)
    assert not report.has_errors, report.problems
    return report


@pytest.mark.parametrize("with_reg", [False, True])
@pytest.mark.parametrize("batch_size", [1, 2, 3, 4])
def test_steps_per_epoch_matches_the_batches(tmp_path, batch_size, with_reg):
    report = mixed_dataset(tmp_path, with_reg)
    for seed, epoch in [(0, 0), (42, 1), (7, 99)]:
        batches = report.epoch_batches(batch_size, seed, epoch)
        assert report.steps_per_epoch(batch_size) == len(batches)
        for batch in batches:
            assert 1 <= len(batch) <= batch_size
            assert len({entry.bucket for entry in batch}) == 1, "a batch never mixes sizes"
        assert sum(len(batch) for batch in batches) == report.num_items_per_epoch


def test_an_epoch_trains_each_image_times_its_repeats(tmp_path):
    report = mixed_dataset(tmp_path, with_reg=False)
    items = Counter(entry.path.name for batch in report.epoch_batches(2, 1, 0) for entry in batch)
    assert items == Counter({**{f"s{i}.png": 3 for i in range(5)}, **{f"w{i}.png": 2 for i in range(3)}, "t0.png": 1})
    assert report.num_items_per_epoch == report.num_train_items == 22
    assert report.steps_per_epoch(1) == 22
    assert report.steps_per_epoch(4) == 4 + 2 + 1  # ceil(15/4) + ceil(6/4) + ceil(1/4)


def test_reg_items_match_the_train_items_in_number(tmp_path):
    report = mixed_dataset(tmp_path, with_reg=True)
    entries = [entry for batch in report.epoch_batches(1, 0, 0) for entry in batch]
    reg = Counter(entry.path.name for entry in entries if entry.is_reg)
    assert sum(reg.values()) == report.num_reg_items == report.num_train_items == 22
    assert report.num_items_per_epoch == 44
    # In path order "1_shape wide/rw" comes before "2_shape/r0..r3". One round is 9 items in two
    # passes (rw r0 r1 r2 r3, then r0 r1 r2 r3 for the second repeat), cycled to 22: two full
    # rounds and the first 4 of a third (rw r0 r1 r2).
    assert reg == Counter({"r0.png": 5, "r1.png": 5, "r2.png": 5, "r3.png": 4, "rw.png": 3})


def test_reg_items_are_truncated_across_images_when_there_are_too_many(tmp_path):
    image(tmp_path / "img" / "2_x" / "a.png", caption="x")
    for index in range(3):
        image(tmp_path / "reg" / "5_y" / f"r{index}.png", caption="y")
    report = scan_dataset(tmp_path / "img", tmp_path / "reg", **SMALL)
    reg = [entry.path.name for batch in report.epoch_batches(1, 0, 0) for entry in batch if entry.is_reg]
    assert sorted(reg) == ["r0.png", "r1.png"], "two reg items, from two different images"


def test_epoch_batches_are_deterministic_and_vary_by_epoch_and_seed(tmp_path):
    report = mixed_dataset(tmp_path, with_reg=True)

    def order(seed: int, epoch: int) -> list[list[str]]:
        return [[entry.path.name for entry in batch] for batch in report.epoch_batches(2, seed, epoch)]

    assert order(5, 3) == order(5, 3)
    # The batches of different buckets are interleaved, not served bucket after bucket.
    buckets = [batch[0].bucket for batch in report.epoch_batches(2, 5, 3)]
    assert buckets != sorted(buckets)
    # Items are reshuffled inside each bucket every epoch, so batches are not just reordered.

    def compositions(epoch: int) -> set[tuple[str, ...]]:
        return {tuple(sorted(names)) for names in order(5, epoch)}

    assert compositions(3) != compositions(4)
    assert order(5, 3) != order(5, 4)
    assert order(5, 3) != order(6, 3)
    # A fresh interpreter (different str hash salt) plans the same epoch.
    code = (
        "import sys; from pathlib import Path; from loratui.dataset import scan_dataset;"
        f"r = scan_dataset(Path(sys.argv[1]), Path(sys.argv[2]), **{SMALL!r});"
        "print([[e.path.name for e in b] for b in r.epoch_batches(2, 5, 3)])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "img"), str(tmp_path / "reg")],
        capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "random", "PATH": ""},
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert result.stdout.strip() == str(order(5, 3))


def test_batch_size_must_be_positive(tmp_path):
    report = mixed_dataset(tmp_path, with_reg=False)
    with pytest.raises(ValueError):
        report.steps_per_epoch(0)
    with pytest.raises(ValueError):
        report.epoch_batches(0, 0, 0)


# --------------------------------------------------------------------------------------------
# Training metadata (kohya's ss_* fields)


def test_tag_frequency_counts_each_tag_once_per_image(tmp_path):
    image(tmp_path / "img" / "10_ohwx" / "a.png", caption="ohwx, red , red,, blue")
    image(tmp_path / "img" / "10_ohwx" / "b.png", caption="ohwx,red")
    image(tmp_path / "img" / "10_ohwx" / "c.png")  # folder caption "ohwx"
    image(tmp_path / "reg" / "1_person" / "r.png", caption="person")
    report = scan_dataset(tmp_path / "img", tmp_path / "reg", **SMALL)
    assert report.tag_frequency() == {"10_ohwx": {"blue": 1, "ohwx": 3, "red": 2}}


def test_dataset_dirs(tmp_path):
    report = mixed_dataset(tmp_path, with_reg=True)
    assert report.dataset_dirs() == {
        "1_tall": {"n_repeats": 1, "img_count": 1},
        "2_wide": {"n_repeats": 2, "img_count": 3},
        "3_square": {"n_repeats": 3, "img_count": 5},
    }
    assert report.reg_dataset_dirs() == {
        "1_shape wide": {"n_repeats": 1, "img_count": 1},
        "2_shape": {"n_repeats": 2, "img_count": 4},
    }


def test_bucket_info(tmp_path):
    image(tmp_path / "img" / "2_x" / "square.png", (128, 128), caption="x")
    image(tmp_path / "img" / "2_x" / "wideish.png", (192, 128), caption="x")  # 1.5 -> the 1:1 bucket
    image(tmp_path / "img" / "2_x" / "wide.png", (256, 64), caption="x")
    report = scan_dataset(tmp_path / "img", **SMALL)
    info = report.bucket_info()
    assert info["buckets"] == {
        "0": {"resolution": [128, 128], "count": 4},
        "1": {"resolution": [256, 64], "count": 2},
    }
    assert info["mean_img_ar_error"] == pytest.approx((0 + 0.5 + 0) / 3)


# --------------------------------------------------------------------------------------------
# The sample project and the import promise


def test_the_sample_project_scans_cleanly():
    report = scan_dataset(SAMPLE_PROJECT / "img", SAMPLE_PROJECT / "reg", **SMALL)
    assert report.problems == ()
    assert report.num_images == 8
    assert [(c.name, c.repeats) for c in report.concepts] == [("ohwx shape", 10)]
    assert report.num_train_items == 80
    assert report.num_reg_images == 4
    assert report.num_items_per_epoch == 160  # 80 train items + as many reg items
    assert report.steps_per_epoch(1) == 160
    sizes = {(e.width, e.height) for e in report.concepts[0].images}
    assert sizes == {(128, 128), (192, 128), (128, 192), (256, 256)}
    assert all(e.caption.startswith("ohwx shape, ") and e.caption_source == "file" for e in report.concepts[0].images)
    assert all(e.caption.startswith("shape, ") for e in report.reg_concepts[0].images)
    # the shipped images only: a run of the sample project writes its samples under model/sample/
    shipped = [*SAMPLE_PROJECT.glob("img/*/*.png"), *SAMPLE_PROJECT.glob("reg/*/*.png")]
    assert len(shipped) == 12 and all(path.stat().st_size < 4096 for path in shipped)


def test_importing_the_scanner_loads_no_heavy_modules():
    code = (
        "import sys, loratui.dataset, loratui.buckets;"
        "heavy = {'torch', 'numpy', 'PIL', 'diffusers', 'transformers'} & set(sys.modules);"
        "print(sorted(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
    assert result.stdout.strip() == "[]"


def test_kohya_ss_folder_name_captions_caption_every_image_with_its_folder_and_warn_of_nothing():
    """kohya_ss's ".none-use-foldername" (the GUI's "no captions", which its import keeps): every
    image gets its folder's caption, even beside .txt files, and no caption is reported missing."""
    report = scan_dataset(SAMPLE_PROJECT / "img", None, caption_extension=".none-use-foldername", **SMALL)
    assert report.problems == ()
    images = report.concepts[0].images
    assert len(images) == 8
    assert all(e.caption == "ohwx shape" and e.caption_source == "folder" for e in images)
