"""Aspect-ratio buckets: which buckets exist, which one an image gets, and how it is cropped into it."""

from __future__ import annotations

import itertools

import pytest

from loratui.buckets import assign_bucket, crop_geometry, make_buckets, no_buckets, sdxl_crop_top_left

# (resolution, min_reso, max_reso, step)
SETTINGS = [
    (512, 256, 1024, 64),
    (256, 128, 512, 64),
    (1024, 512, 2048, 64),
    (64, 32, 128, 32),
]


@pytest.mark.parametrize(("resolution", "min_reso", "max_reso", "step"), SETTINGS)
def test_buckets_fit_the_area_budget_and_the_grid(resolution, min_reso, max_reso, step):
    buckets = make_buckets(resolution, min_reso, max_reso, step)
    assert (resolution, resolution) in buckets
    assert buckets == sorted(set(buckets)), "sorted and unique"
    for width, height in buckets:
        assert width * height <= resolution * resolution
        assert width % step == 0 and height % step == 0
        assert min_reso <= width <= max_reso and min_reso <= height <= max_reso
        assert (height, width) in buckets, "every shape also exists turned sideways"
    assert len(buckets) > 1, "more than the square at these settings"


def test_sd15_buckets_are_the_familiar_ones():
    assert make_buckets(512, 256, 1024, 64) == [
        (256, 832), (256, 896), (256, 960), (256, 1024),
        (320, 704), (320, 768),
        (384, 640),
        (448, 576),
        (512, 512),
        (576, 448),
        (640, 384),
        (704, 320), (768, 320),
        (832, 256), (896, 256), (960, 256), (1024, 256),
    ]  # fmt: skip


def test_small_settings_give_exactly_these_buckets():
    assert make_buckets(64, 32, 128, 32) == [(32, 96), (32, 128), (64, 64), (96, 32), (128, 32)]


def test_the_square_is_kept_even_off_the_step_grid():
    buckets = make_buckets(520, 256, 1024, 64)
    assert (520, 520) in buckets
    assert all(width % 64 == 0 and height % 64 == 0 for width, height in buckets if (width, height) != (520, 520))


def test_no_buckets_is_the_square():
    assert no_buckets(768) == [(768, 768)]


@pytest.mark.parametrize(
    ("resolution", "min_reso", "max_reso", "step"),
    [
        (512, 256, 1024, 0),  # no step
        (512, 0, 1024, 64),  # zero-sized buckets
        (2048, 256, 1024, 64),  # resolution above the max
        (128, 256, 1024, 64),  # resolution below the min
        (512, 250, 1024, 64),  # min off the grid
        (512, 256, 1000, 64),  # max off the grid
    ],
)
def test_impossible_bucket_settings_raise(resolution, min_reso, max_reso, step):
    with pytest.raises(ValueError):
        make_buckets(resolution, min_reso, max_reso, step)


def test_assign_bucket_picks_the_nearest_aspect_ratio():
    buckets = make_buckets(512, 256, 1024, 64)
    assert assign_bucket(1000, 1000, buckets) == (512, 512)
    # 3:2 lies between 5:3 (640x384) and 9:7 (576x448); 5:3 is nearer.
    assert assign_bucket(3000, 2000, buckets) == (640, 384)
    assert assign_bucket(2000, 3000, buckets) == (384, 640)
    assert assign_bucket(5000, 500, buckets) == (1024, 256)  # beyond the widest: the widest


def test_assign_bucket_measures_distance_in_log_space():
    # A square is 2x away from 2:1 and 2.5x away from 2:5. A linear difference of ratios would
    # pick 2:5 (|1 - 0.4| < |1 - 2|); in log space 2:1 is the nearer.
    assert assign_bucket(300, 300, [(512, 256), (256, 640)]) == (512, 256)


def test_assign_bucket_ties_go_to_the_larger_area_then_sorted_order():
    assert assign_bucket(100, 100, [(256, 256), (512, 512)]) == (512, 512)
    # 5:3 and 3:5 are equally far from a square and equally large: the first in sorted order wins,
    # whichever order they are given in.
    assert assign_bucket(100, 100, [(640, 384), (384, 640)]) == (384, 640)
    assert assign_bucket(100, 100, [(384, 640), (640, 384)]) == (384, 640)


@pytest.mark.parametrize(
    ("size", "bucket", "expected"),
    [
        ((192, 128), (128, 128), (192, 128, 32, 0)),  # wider: fit the height, crop the sides
        ((128, 192), (128, 128), (128, 192, 0, 32)),  # taller: fit the width, crop top and bottom
        ((1024, 1024), (512, 512), (512, 512, 0, 0)),  # same shape: plain downscale
        ((64, 64), (128, 128), (128, 128, 0, 0)),  # upscale
        ((1000, 500), (512, 512), (1024, 512, 256, 0)),
        # 500 * 256 / 333 = 384.38...: rounded up to 385 so the bucket's 384 rows are all covered
        ((333, 500), (256, 384), (256, 385, 0, 0)),
    ],
)
def test_crop_geometry_examples(size, bucket, expected):
    assert crop_geometry(*size, bucket) == expected


def test_crop_geometry_covers_the_bucket_with_a_centred_box_for_many_shapes():
    buckets = make_buckets(512, 256, 1024, 64)
    sizes = itertools.product(range(1, 2200, 97), range(1, 2200, 89))
    for (width, height), bucket in itertools.product(sizes, buckets):
        bucket_width, bucket_height = bucket
        scaled_width, scaled_height, left, top = crop_geometry(width, height, bucket)
        assert scaled_width >= bucket_width and scaled_height >= bucket_height
        assert scaled_width == bucket_width or scaled_height == bucket_height
        # The crop box lies inside the scaled image and is centred (to the pixel) on the overflow.
        assert left >= 0 and left + bucket_width <= scaled_width
        assert top >= 0 and top + bucket_height <= scaled_height
        assert left == (scaled_width - bucket_width) // 2 and top == (scaled_height - bucket_height) // 2
        # Uniform scale: the overflowing side is the exact scaled length rounded up, not more.
        if scaled_width == bucket_width:
            assert (scaled_height - 1) * width < height * scaled_width <= scaled_height * width
        else:
            assert (scaled_width - 1) * height < width * scaled_height <= scaled_width * height


def test_crop_geometry_rejects_empty_sizes():
    with pytest.raises(ValueError):
        crop_geometry(0, 10, (64, 64))


@pytest.mark.parametrize(
    ("width", "height", "bucket", "top_left"),
    [
        (192, 128, (128, 96), (5, 0)),  # wider than the bucket: fitted inside as 128x85.3, centred top to bottom
        (128, 192, (96, 128), (0, 5)),  # the same turned sideways
        (1024, 1024, (1216, 832), (0, 192)),  # a square in a landscape bucket: 832 wide, 192 each side
        (256, 256, (128, 128), (0, 0)),  # the same shape: nothing to centre
        # sd-scripts' floats give 138 where exact arithmetic gives 139: its number is the one trained on.
        (640, 490, (640, 768), (138, 0)),
    ],
)
def test_sdxl_crop_conditioning_is_sd_scripts_centring_offset(width, height, bucket, top_left):
    assert sdxl_crop_top_left(width, height, bucket) == top_left


def test_sdxl_crop_conditioning_is_not_the_pixels_the_training_crop_trims():
    _, _, left, top = crop_geometry(192, 128, (128, 96))
    assert (top, left) == (0, 8) != sdxl_crop_top_left(192, 128, (128, 96))
