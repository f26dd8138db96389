"""flip_aug, random_crop and bucket_no_upscale: what each does to the pixels and the buckets, and
the check's refusals (sd-scripts' semantics)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from loratui.buckets import no_upscale_bucket
from loratui.check import check_run
from loratui.config import config_from_dict
from loratui.dataset import ImageEntry, scan_dataset
from loratui.subset_options import SubsetOptions
from tests.conftest import small_config


def _columns_image(path: Path, width: int, height: int) -> Path:
    """Each column's red value is its x (mod 256), green its y: a crop's place can be read off it."""
    image = Image.new("RGB", (width, height))
    image.putdata([(x % 256, y % 256, 0) for y in range(height) for x in range(width)])
    image.save(path)
    return path


def _entry(path: Path, size: tuple[int, int], bucket: tuple[int, int], **options) -> ImageEntry:
    return ImageEntry(path, *size, "x", "file", bucket, "1_x", False, SubsetOptions(**options))


def _red(pixels) -> list[int]:
    """The red channel of the first row, back in 0..255."""
    return [round(float(value)) for value in (pixels[0, 0] + 1.0) * 127.5]


def test_flip_aug_mirrors_about_half_the_draws_and_the_same_draw_the_same_way(tmp_path: Path):
    from engine.data import draw, load_pixels

    path = _columns_image(tmp_path / "a.png", 64, 64)
    entry = _entry(path, (64, 64), (64, 64), flip_aug=True)
    plain = load_pixels(entry)  # no draw: the eval losses see the image as it is
    assert _red(plain) == list(range(64))
    flips = 0
    for index in range(200):
        pixels = load_pixels(entry, draw(7, 1, index, 0))
        if _red(pixels) == list(range(63, -1, -1)):
            flips += 1
            assert bool((pixels == plain.flip(2)).all())  # mirrored left to right, nothing else
        else:
            assert bool((pixels == plain).all())
    assert 70 <= flips <= 130  # 50% each; fixed seed, so a fixed count
    again = [bool((load_pixels(entry, draw(7, 1, i, 0)) != plain).any()) for i in range(20)]
    assert again == [bool((load_pixels(entry, draw(7, 1, i, 0)) != plain).any()) for i in range(20)]


def test_without_flip_aug_a_draw_never_flips(tmp_path: Path):
    from engine.data import draw, load_pixels

    entry = _entry(_columns_image(tmp_path / "a.png", 64, 64), (64, 64), (64, 64))
    assert all(_red(load_pixels(entry, draw(7, 1, i, 0))) == list(range(64)) for i in range(50))


def test_random_crop_moves_the_box_within_the_image(tmp_path: Path):
    from engine.data import draw, load_pixels

    # 128x64 into a 64x64 bucket: no resize, 64 columns to spare; the centre crop starts at 32.
    entry = _entry(_columns_image(tmp_path / "wide.png", 128, 64), (128, 64), (64, 64), random_crop=True)
    assert _red(load_pixels(entry))[0] == 32
    lefts = set()
    for index in range(100):
        row = _red(load_pixels(entry, draw(3, 2, index, 1)))
        left = row[0]
        assert row == list(range(left, left + 64))  # a whole box of the image, columns in order
        assert 0 <= left <= 64
        lefts.add(left)
    assert len(lefts) > 20  # it moves
    assert {0, 64} & lefts or min(lefts) < 8 and max(lefts) > 56  # and spans the spare columns


def test_bucket_no_upscale_gives_a_small_image_its_own_size_rounded_down(tmp_path: Path):
    assert no_upscale_bucket(200, 136, 512, 64) == ((192, 128), (200, 136))
    assert no_upscale_bucket(200, 136, 512, 1) == ((200, 136), (200, 136))
    # larger than 512x512 in area: shrunk to about that area, sd-scripts' rounding
    # (sd-scripts by hand: 591x443 at 4:3; 576 wide would need 384 high, 3:2; 384 high gives 512, 4:3 exactly)
    assert no_upscale_bucket(1024, 768, 512, 64) == ((512, 384), (512, 384))
    bucket, resized = no_upscale_bucket(1000, 700, 512, 64)
    assert resized[0] >= bucket[0] and resized[1] >= bucket[1] and bucket[0] * bucket[1] <= 512 * 512


def _two_sizes(tmp_path: Path) -> Path:
    folder = tmp_path / "img" / "2_ohwx"
    folder.mkdir(parents=True)
    _columns_image(folder / "small.png", 200, 136)
    _columns_image(folder / "big.png", 512, 512)
    return tmp_path / "img"


def test_bucket_no_upscale_in_the_scan_and_the_step_count(tmp_path: Path):
    img = _two_sizes(tmp_path)
    usual = scan_dataset(img, resolution=512, min_bucket_reso=256, max_bucket_reso=1024)
    small = next(e for c in usual.concepts for e in c.images if e.path.name == "small.png")
    assert small.bucket[0] > 200 and usual.concepts[0].small_images  # upscaled, with the warning
    kept = scan_dataset(img, resolution=512, min_bucket_reso=256, max_bucket_reso=1024, bucket_no_upscale=True)
    buckets = {e.path.name: e.bucket for c in kept.concepts for e in c.images}
    assert buckets == {"small.png": (192, 128), "big.png": (512, 512)}
    assert kept.concepts[0].small_images == ()
    assert kept.buckets == ((192, 128), (512, 512))
    # 2 images x 2 repeats in two buckets, batch 2: one batch per bucket
    assert kept.steps_per_epoch(2) == 2
    assert kept.bucket_info()["buckets"]["0"] == {"resolution": [192, 128], "count": 2}


def test_bucket_no_upscale_crops_a_small_image_without_resizing_it(tmp_path: Path):
    from engine.data import load_pixels

    img = _two_sizes(tmp_path)
    kept = scan_dataset(img, resolution=512, min_bucket_reso=256, max_bucket_reso=1024, bucket_no_upscale=True)
    small = next(e for c in kept.concepts for e in c.images if e.path.name == "small.png")
    pixels = load_pixels(small)
    assert tuple(pixels.shape) == (3, 128, 192)
    assert _red(pixels) == list(range(4, 196))  # the centre 192 of 200 columns, not a resize


def _checked(project: Path, **dataset):
    cfg = config_from_dict(small_config(dataset=dataset), project)
    return check_run(cfg)


def test_check_refuses_cached_latents_with_random_crop(project: Path):
    problems = _checked(project, random_crop=True).problems
    refused = [p for p in problems if p.where == "dataset.cache_latents" and p.severity == "error"]
    assert len(refused) == 1 and "random_crop" in refused[0].message and 'cache_latents = "off"' in refused[0].fix
    allowed = _checked(project, random_crop=True, cache_latents="off")
    assert not [p for p in allowed.problems if p.severity == "error"]
    flips = _checked(project, flip_aug=True)  # mirrored latents are cached too: allowed
    assert not [p for p in flips.problems if p.severity == "error"]


def test_bucket_reso_steps_1_is_allowed_for_sd15_with_a_warning(project: Path):
    result = _checked(project, bucket_reso_steps=1, bucket_no_upscale=True)
    steps = [p for p in result.problems if p.where == "dataset.bucket_reso_steps"]
    assert [p.severity for p in steps] == ["warning"]
    assert not [p for p in result.problems if p.severity == "error"]
    entries = [entry for concept in result.dataset.concepts for entry in concept.images]
    # at resolution 128: a 128x128 image keeps its size to the pixel, larger ones shrink to that area
    assert {e.bucket for e in entries if (e.width, e.height) == (128, 128)} == {(128, 128)}
    # sd-scripts' arithmetic: 156.8x104.5 at 3:2; 157 wide gives 105 high and 105 high 158 wide, the
    # nearer 3:2 (by a float's last bits), and that is also the size it is resized to
    assert {e.bucket for e in entries if (e.width, e.height) == (192, 128)} == {(158, 105)}
    assert all(e.bucket[0] * e.bucket[1] <= 128 * 128 * 1.02 for e in entries)
    sdxl = config_from_dict(small_config(model={"family": "sdxl"}, dataset={"bucket_reso_steps": 1}), project)
    refused = [p for p in check_run(sdxl).problems if p.where == "dataset.bucket_reso_steps"]
    assert [p.severity for p in refused if p.severity != "note"] == ["error"]  # (the note: not scanned)


@pytest.mark.parametrize("steps", [0, -4])
def test_bucket_reso_steps_below_1_is_refused(project: Path, steps: int):
    problems = _checked(project, bucket_reso_steps=steps).problems
    assert [p.severity for p in problems if p.where == "dataset.bucket_reso_steps" and p.severity != "note"] == [
        "error"
    ]


def test_a_step_draws_from_its_place_in_the_plan_alone_so_a_resumed_run_draws_the_same(tmp_path: Path):
    """No random state to save: a run resumed at epoch 2, batch 5 flips and crops what the
    uninterrupted run did there, whatever was drawn before."""
    from types import SimpleNamespace

    from engine.data import stack_pixels
    from engine.train import Trainer

    entry = _entry(_columns_image(tmp_path / "wide.png", 128, 64), (128, 64), (64, 64), flip_aug=True, random_crop=True)
    batch = [entry] * 4

    def trainer_at(epoch: int, index: int) -> SimpleNamespace:
        cfg = SimpleNamespace(training=SimpleNamespace(seed=7))
        return SimpleNamespace(cfg=cfg, progress=SimpleNamespace(epoch=epoch, batches_in_epoch=index))

    def pixels_at(epoch: int, index: int):
        return stack_pixels(batch, Trainer._step_draws(trainer_at(epoch, index), batch))

    first = pixels_at(1, 5)
    for other in range(20):  # what an uninterrupted run would have drawn in between
        pixels_at(0, other)
    assert bool((pixels_at(1, 5) == first).all())
    assert not bool((pixels_at(1, 6) == first).all())  # the next batch draws anew
    assert len({tuple(_red(image)) for image in first}) > 1  # and each image of a batch has its own draw


def test_bucket_sides_off_the_step_grid_are_moved_onto_it_with_a_warning(tmp_path: Path):
    """sd-scripts rounds min_bucket_reso down and max_bucket_reso up to bucket_reso_steps, and warns."""
    img = _two_sizes(tmp_path)
    report = scan_dataset(img, resolution=512, min_bucket_reso=300, max_bucket_reso=1000, bucket_reso_steps=64)
    warnings = [p for p in report.problems if p.where == "dataset.bucket_reso_steps"]
    assert [p.severity for p in warnings] == ["warning"] and "256..1024" in warnings[0].message
    assert not [p for p in report.problems if p.severity == "error"]
    assert min(min(bucket) for bucket in report.buckets) == 256 and max(max(b) for b in report.buckets) == 1024
