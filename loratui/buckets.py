"""Aspect-ratio buckets, the way kohya's trainers make them.

A diffusion model trains on a batch of equally sized images, so every image is resized and cropped
to one of a fixed set of "buckets": (width, height) pairs of about the same pixel area as
``resolution`` squared but of different shapes. Each image goes to the bucket whose shape is nearest
its own, which keeps a portrait a portrait instead of cutting its head off to make it square.

All sizes here are ``(width, height)`` tuples of ints. This module is pure arithmetic (no Pillow),
so the dataset scan and the training engine share exactly the same numbers.
"""

from __future__ import annotations

import math

Bucket = tuple[int, int]

# The longest an image may be for its width (or the widest for its height): 8 to 1. kohya's
# default buckets reach 4:1 (1024x256 at 512 px), so a longer image loses over half of itself to
# the crop; and the resize that covers a bucket grows with the ratio: a 60000x1 strip at 512 px
# goes to the 1024x256 bucket and would be resized to 15 million by 256 pixels, 12 GB. At 8:1
# the resized image is at most 8 bucket areas, and no guide's advice comes near the bound.
MAX_ASPECT_RATIO = 8


def too_elongated(width: int, height: int) -> bool:
    """Whether an image's longer side is more than :data:`MAX_ASPECT_RATIO` times its shorter."""
    return max(width, height) > MAX_ASPECT_RATIO * min(width, height)


def make_buckets(resolution: int, min_reso: int, max_reso: int, step: int) -> list[Bucket]:
    """Every bucket with area at most ``resolution**2``, sides in ``[min_reso, max_reso]``.

    For each width (a multiple of ``step``) the tallest height that keeps the area within budget is
    taken, and so is the same bucket turned sideways. The square ``(resolution, resolution)`` is
    always present, even when ``resolution`` is off the step grid, so square images are never cropped.

    Raises ``ValueError`` for settings that cannot make buckets; checking the user's config is the
    config module's job, so reaching this with bad numbers is a bug in the caller.
    """
    _check_bucket_settings(resolution, min_reso, max_reso, step)
    max_area = resolution * resolution
    buckets = {(resolution, resolution)}
    for width in range(min_reso, max_reso + 1, step):
        # Round the height down to the step so the area never exceeds the budget.
        height = min(max_reso, (max_area // width) // step * step)
        if height >= min_reso:
            buckets.add((width, height))
            buckets.add((height, width))
    return sorted(buckets)


def no_buckets(resolution: int) -> list[Bucket]:
    """The single square bucket used when bucketing is turned off."""
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    return [(resolution, resolution)]


def no_upscale_bucket(width: int, height: int, resolution: int, step: int) -> tuple[Bucket, Bucket]:
    """``bucket_no_upscale``'s ``(bucket, resized)`` for an image: sd-scripts' BucketManager arithmetic.

    An image of at most ``resolution**2`` pixels is not resized at all, and its bucket is its own
    size rounded down to ``step``: the crop trims what is over, nothing is enlarged. A larger image
    is shrunk (aspect kept) to about that area, one side on the step grid (the side whose rounding
    keeps the aspect ratio better), and its bucket is that size rounded down to ``step``. A side
    shorter than one step still gets a bucket of one step (sd-scripts would make it 0 pixels).
    """
    if width <= 0 or height <= 0 or resolution <= 0 or step <= 0:
        raise ValueError(f"sizes must be positive, got image {width}x{height}, resolution {resolution}, step {step}")
    max_area = resolution * resolution
    if width * height > max_area:
        resized = _shrunk_to_area(width, height, max_area, step)
    else:
        resized = (width, height)
    bucket = (max(step, resized[0] - resized[0] % step), max(step, resized[1] - resized[1] % step))
    return bucket, resized


def _shrunk_to_area(width: int, height: int, max_area: int, step: int) -> Bucket:
    """The size sd-scripts shrinks a too large image to under bucket_no_upscale (its floats and roundings)."""
    aspect = width / height
    resized_width = math.sqrt(max_area * aspect)
    resized_height = max_area / resized_width

    def to_steps(value: float) -> int:
        whole = int(value + 0.5)
        return max(step, whole - whole % step)  # never 0: an 8:1 strip at a small resolution

    width_rounded = to_steps(resized_width)
    height_for_width = to_steps(width_rounded / aspect)
    height_rounded = to_steps(resized_height)
    width_for_height = to_steps(height_rounded * aspect)
    if abs(width_rounded / height_for_width - aspect) < abs(width_for_height / height_rounded - aspect):
        return width_rounded, int(width_rounded / aspect + 0.5)
    return int(height_rounded * aspect + 0.5), height_rounded


def assign_bucket(width: int, height: int, buckets: list[Bucket] | tuple[Bucket, ...]) -> Bucket:
    """The bucket whose aspect ratio is nearest the image's.

    Distance is measured between log aspect ratios, so 2:1 and 1:2 are equally far from 1:1.
    Ties go to the larger bucket (less upscaling); a remaining tie (same area, e.g. 4:3 and 3:4
    for a square image with no square bucket) goes to the first in sorted order, so the choice is
    always deterministic.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if not buckets:
        raise ValueError("no buckets to choose from")
    # log(w) - log(h) rather than log(w / h): the two spellings differ in the last bit, and this
    # one makes mirrored ratios exact negatives of each other so their distances tie exactly.
    image_log_ratio = math.log(width) - math.log(height)

    def preference(bucket: Bucket) -> tuple[float, int, Bucket]:
        bucket_width, bucket_height = bucket
        distance = abs(image_log_ratio - (math.log(bucket_width) - math.log(bucket_height)))
        return (distance, -bucket_width * bucket_height, bucket)

    return min(buckets, key=preference)


def crop_geometry(width: int, height: int, bucket: Bucket) -> tuple[int, int, int, int]:
    """How to fit an image of ``width`` x ``height`` into ``bucket``: ``(scaled_w, scaled_h, left, top)``.

    Resize the image (uniformly) to ``scaled_w`` x ``scaled_h``, then crop the box
    ``(left, top, left + bucket_w, top + bucket_h)``. The scaled image covers the bucket: the side
    that limits the scale matches the bucket exactly, the other is rounded up so it is never short
    by a pixel, and the crop is centred on the overflow.

    Integer arithmetic throughout: a float scale factor could land one pixel off either way.
    """
    bucket_width, bucket_height = bucket
    if width <= 0 or height <= 0 or bucket_width <= 0 or bucket_height <= 0:
        raise ValueError(f"sizes must be positive, got image {width}x{height}, bucket {bucket}")
    # Compare width/height with bucket_width/bucket_height by cross-multiplying.
    if bucket_width * height >= bucket_height * width:
        # The image is relatively taller than the bucket: fit the width, overflow the height.
        scaled_width = bucket_width
        scaled_height = _ceil_div(height * bucket_width, width)
    else:
        # Relatively wider: fit the height, overflow the width.
        scaled_height = bucket_height
        scaled_width = _ceil_div(width * bucket_height, height)
    left = (scaled_width - bucket_width) // 2
    top = (scaled_height - bucket_height) // 2
    return scaled_width, scaled_height, left, top


def sdxl_crop_top_left(width: int, height: int, bucket: Bucket) -> tuple[int, int]:
    """SDXL's crop conditioning for an image of ``width`` x ``height`` trained in ``bucket``: ``(top, left)``.

    What sd-scripts gives the model (``BucketManager.get_crop_ltrb``, after Stability AI's
    preprocessing): the offset at which the image, scaled to fit *inside* the bucket, would sit
    centred in it. It is not the number of pixels :func:`crop_geometry` trims: a 192x128 image
    in a 128x96 bucket fits inside it as 128x85.3, so its crop is (5, 0), though the training
    crop trims 8 columns from each side of the 144x96 resize.

    The arithmetic is sd-scripts' own, in floats and truncated, step for step: exact integer
    arithmetic would differ from it by one for about 1 in 50,000 random sizes.
    """
    bucket_width, bucket_height = bucket
    if width <= 0 or height <= 0 or bucket_width <= 0 or bucket_height <= 0:
        raise ValueError(f"sizes must be positive, got image {width}x{height}, bucket {bucket}")
    bucket_ratio, image_ratio = bucket_width / bucket_height, width / height
    if bucket_ratio > image_ratio:  # the bucket is wider: the image fits its height
        fitted_width, fitted_height = bucket_height * image_ratio, float(bucket_height)
    else:
        fitted_width, fitted_height = float(bucket_width), bucket_width / image_ratio
    return int((bucket_height - fitted_height) // 2), int((bucket_width - fitted_width) // 2)


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def _check_bucket_settings(resolution: int, min_reso: int, max_reso: int, step: int) -> None:
    if step <= 0:
        raise ValueError(f"bucket step must be positive, got {step}")
    if min_reso <= 0:
        raise ValueError(f"min bucket resolution must be positive, got {min_reso}")
    if not min_reso <= resolution <= max_reso:
        raise ValueError(
            f"resolution {resolution} must lie between the min and max bucket resolutions ({min_reso}..{max_reso})"
        )
    # Bucket sides are multiples of the step (the VAE and UNet need multiples of 8). The square
    # (resolution, resolution) is the one exception allowed, as in kohya's trainers.
    for name, value in (("min", min_reso), ("max", max_reso)):
        if value % step:
            raise ValueError(f"{name} bucket resolution {value} is not a multiple of the step {step}")
