"""The check's rules for the image options and the ``[[subsets]]`` tables: a latent cache of images
cropped at random, a bucket step the SD VAE does not divide, a subset's values out of range.

Registered with :func:`loratui.rules.rule` (imported at the end of that module). A subset naming a
folder that does not exist, and an image listed twice, are found by the scan
(:func:`loratui.dataset.scan_dataset`), which reads the folders.

Torch-free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loratui.dataset import MAX_REPEATS
from loratui.errors import Problem, error, warning
from loratui.params import SD_FAMILIES
from loratui.rules import rule
from loratui.subset_options import subset_options

if TYPE_CHECKING:
    from loratui.config import RunConfig

# The SD VAE halves the image three times: a bucket side that 8 does not divide is not a whole latent.
VAE_FACTOR = 8


@rule("dataset.cache_latents", "dataset.random_crop")
def _cached_random_crops(cfg: RunConfig) -> list[Problem]:
    """sd-scripts refuses cache_latents with random_crop: a cache holds one crop, the option asks
    for a new one every step."""
    if cfg.dataset.cache_latents == "off":
        return []
    whose = [
        "the [dataset] section" if where == "dataset" else where
        for where, options in _options_by_place(cfg)
        if options.random_crop
    ]
    if not whose:
        return []
    message = (
        f"random_crop (set in {', '.join(whose)}) crops each image anew every step, but cache_latents "
        f'"{cfg.dataset.cache_latents}" encodes one crop per image once'
    )
    fix = 'set cache_latents = "off" to keep the random crops, or random_crop = false to cache'
    return [error("dataset.cache_latents", message, fix)]


def _options_by_place(cfg: RunConfig) -> list[tuple[str, object]]:
    """(where, options) of the [dataset] section (when the kohya folders are used) and of each subset."""
    places: list[tuple[str, object]] = []
    if cfg.dataset.image_dir.strip() or not cfg.subsets:
        places.append(("dataset", subset_options(cfg.dataset)))
    for number, subset in enumerate(cfg.subsets, start=1):
        places.append((f"subsets[{number}]", subset_options(cfg.dataset, **subset.options)))
    return places


@rule("dataset.enable_buckets", "dataset.bucket_reso_steps", "model.family")
def _sd_bucket_steps(cfg: RunConfig) -> list[Problem]:
    """SD 1.x/2.x take any step, as sd-scripts 0.8 did (kohya_ss presets use 1 with bucket_no_upscale);
    a side 8 does not divide is rounded by the VAE, and sd-scripts 0.9 and later refuse such a step."""
    steps = cfg.dataset.bucket_reso_steps
    if cfg.model.family not in SD_FAMILIES or not cfg.dataset.enable_buckets or steps % VAE_FACTOR == 0:
        return []
    message = (
        f"bucket_reso_steps {steps} makes bucket sides that are not multiples of 8: the VAE rounds them to whole "
        "latents, and sd-scripts 0.9 and later refuse a step that is not a multiple of 64 for SD 1.x/2.x"
    )
    return [warning("dataset.bucket_reso_steps", message, "use 64 (the usual value) to train as sd-scripts does")]


@rule("dataset.image_dir")
def _subset_values(cfg: RunConfig) -> list[Problem]:
    """Each [[subsets]] table's own values: a folder, repeats in range, rates within 0..1."""
    problems = []
    for number, subset in enumerate(cfg.subsets, start=1):
        where = f"subsets[{number}]"
        if not subset.image_dir.strip():
            fix = 'set image_dir to a folder of images and their captions, e.g. image_dir = "img/cats"'
            problems.append(error(f"{where}.image_dir", "this [[subsets]] table's image_dir is empty", fix))
        if not 1 <= subset.num_repeats <= MAX_REPEATS:
            message = f"num_repeats {subset.num_repeats} is out of range (allowed: 1..{MAX_REPEATS})"
            fix = "use 1 to 100 (10 to 30 is usual); train more epochs for more steps"
            problems.append(error(f"{where}.num_repeats", message, fix))
        for key, value in subset.options.items():
            problems.extend(_option_problems(f"{where}.{key}", key, value))
    return problems


def _option_problems(where: str, key: str, value: object) -> list[Problem]:
    if key.endswith("_rate") and not 0 <= value <= 1:  # type: ignore[operator]
        return [error(where, f"{key} {value} is not a fraction between 0 and 1", "use 0 (off) to 1, e.g. 0.05")]
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        return [error(where, f"{key} {value} is negative", "use 0 (off) or more")]
    return []
