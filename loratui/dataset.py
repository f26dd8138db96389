"""The dataset scan: what a kohya-style image folder holds, what is wrong with it, and the epoch plan.

The layout (the one kohya's trainers and the guides written for them use)::

    img/10_ohwx woman/a.png       an image, trained 10 times per epoch
    img/10_ohwx woman/a.txt       its caption; without one, the caption is the folder's
                                  name after the repeats ("ohwx woman")
    reg/1_woman/b.png             optional regularisation images, same shape

The scan reads image headers only (Pillow's ``Image.open`` parses the size without decoding
pixels), so thousands of images take seconds. It never raises for bad data: every mistake becomes a
:class:`~loratui.errors.Problem` naming the file or folder and the fix, and they are all collected in
one pass so the user can fix everything at once.

The epoch plan lives here too (:meth:`DatasetReport.epoch_batches`), so the number of steps the CLI
shows and the batches the engine trains come from the same code.

This module must stay free of torch/numpy: the CLI imports it. Pillow is imported lazily, only when
an image is actually read.
"""

from __future__ import annotations

import functools
import os
import random
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from loratui.buckets import Bucket, assign_bucket, make_buckets, no_buckets
from loratui.errors import Problem
from loratui.quantities import count

if TYPE_CHECKING:
    from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
# Formats people have lying around that the trainer does not read: worth a warning, not silence.
UNSUPPORTED_IMAGE_EXTENSIONS = (".gif", ".bmp", ".tif", ".tiff", ".avif", ".heic")

_EXIF_ORIENTATION = 0x0112
# Where Pillow's getexif() (and so ImageOps.exif_transpose, which the engine uses) finds an
# orientation in a PNG's header chunks: the eXIf chunk, ImageMagick's text profile, or XMP.
_PNG_ORIENTATION_SOURCES = ("exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp")
# Orientations 5-8 rotate the picture by 90 degrees (some also mirror it): shown upright, its
# width and height are swapped relative to the stored pixels.
_ORIENTATIONS_SWAPPING_SIDES = frozenset({5, 6, 7, 8})

_CONCEPT_FOLDER = re.compile(r"([0-9]+)_(.*)", re.DOTALL)
_LIST_LIMIT = 5  # how many file names a problem message lists before "and N more"


# --------------------------------------------------------------------------------------------
# What a scan finds


@dataclass(frozen=True)
class ImageEntry:
    """One usable image with everything the trainer needs to know about it."""

    path: Path
    width: int  # as displayed, i.e. after the EXIF orientation is applied
    height: int
    caption: str
    caption_source: str  # "file" | "folder" (no caption file) | "empty" (blank caption file)
    bucket: Bucket  # (width, height) it is resized and cropped to
    concept: str  # the concept folder's name, e.g. "10_ohwx shape"
    is_reg: bool


@dataclass(frozen=True)
class ConceptReport:
    """One ``<repeats>_<name>`` folder.

    ``bucket_counts`` and ``tag_frequency`` count images, not images x repeats.
    """

    folder: Path
    name: str  # the folder name after the repeats, e.g. "ohwx shape"; the fallback caption
    repeats: int
    is_reg: bool
    images: tuple[ImageEntry, ...]
    missing_captions: tuple[Path, ...]  # images without a caption file
    empty_captions: tuple[Path, ...]  # caption files holding only whitespace
    unreadable: tuple[tuple[Path, str], ...]  # (file, reason); not in ``images``
    small_images: tuple[Path, ...]  # narrower or lower than their bucket: will be upscaled
    bucket_counts: dict[Bucket, int]
    tag_frequency: dict[str, int]


@dataclass(frozen=True)
class DatasetReport:
    """The result of :func:`scan_dataset`: the usable images, the problems, and the epoch plan."""

    image_dir: Path
    reg_dir: Path | None
    resolution: int
    buckets: tuple[Bucket, ...]  # every bucket an image could go to
    concepts: tuple[ConceptReport, ...]
    reg_concepts: tuple[ConceptReport, ...]
    problems: tuple[Problem, ...]

    @property
    def num_images(self) -> int:
        """Usable training images (each counted once)."""
        return sum(len(concept.images) for concept in self.concepts)

    @property
    def num_reg_images(self) -> int:
        return sum(len(concept.images) for concept in self.reg_concepts)

    @property
    def num_train_items(self) -> int:
        """Training images x their folder's repeats: kohya's "num train images * repeats"."""
        return sum(len(concept.images) * concept.repeats for concept in self.concepts)

    @property
    def num_reg_items(self) -> int:
        """Regularisation items per epoch: as many as train items when there are any reg images."""
        return self.num_train_items if self.num_reg_images else 0

    @property
    def num_items_per_epoch(self) -> int:
        """Everything one epoch trains on: train items plus reg items (see :meth:`epoch_batches`)."""
        return self.num_train_items + self.num_reg_items

    @property
    def has_errors(self) -> bool:
        return any(problem.severity == "error" for problem in self.problems)

    def steps_per_epoch(self, batch_size: int) -> int:
        """How many batches :meth:`epoch_batches` yields, without shuffling anything."""
        _check_batch_size(batch_size)
        return sum(_ceil_div(len(items), batch_size) for items in _items_by_bucket(self).values())

    def epoch_batches(self, batch_size: int, seed: int, epoch: int) -> list[list[ImageEntry]]:
        """The batches of one epoch, in training order. Same arguments, same batches.

        Every batch holds items of one bucket only (a batch must be one size). Within each bucket
        the items are shuffled and cut into ``batch_size`` pieces, the last piece of a bucket
        possibly smaller; then the order of all batches is shuffled, so buckets interleave.
        """
        _check_batch_size(batch_size)
        rng = random.Random(_epoch_seed(seed, epoch))
        batches: list[list[ImageEntry]] = []
        for items in _items_by_bucket(self).values():
            rng.shuffle(items)
            batches.extend(items[start : start + batch_size] for start in range(0, len(items), batch_size))
        rng.shuffle(batches)
        return batches

    def tag_frequency(self) -> dict[str, dict[str, int]]:
        """kohya's ``ss_tag_frequency``: tag counts per training concept folder name."""
        return {concept.folder.name: dict(concept.tag_frequency) for concept in self.concepts}

    def dataset_dirs(self) -> dict[str, dict[str, int]]:
        """kohya's ``ss_dataset_dirs``: repeats and image count per training concept folder."""
        return _dataset_dirs(self.concepts)

    def reg_dataset_dirs(self) -> dict[str, dict[str, int]]:
        """kohya's ``ss_reg_dataset_dirs``: the same for the regularisation folders."""
        return _dataset_dirs(self.reg_concepts)

    def bucket_info(self) -> dict:
        """kohya's ``ss_bucket_info``: items per epoch in each used bucket, and how far the images'
        aspect ratios are from their buckets' on average (training images only)."""
        used = _items_by_bucket(self)
        buckets = {
            str(index): {"resolution": [width, height], "count": len(items)}
            for index, ((width, height), items) in enumerate(used.items())
        }
        return {"buckets": buckets, "mean_img_ar_error": _mean_aspect_error(self.concepts)}


# --------------------------------------------------------------------------------------------
# Small helpers the CLI uses on their own


def parse_concept_folder(name: str) -> tuple[int, str] | None:
    """``"10_ohwx woman"`` -> ``(10, "ohwx woman")``; None without a ``<digits>_`` prefix.

    The text after the first underscore is kept as it is (underscores included), as kohya does.
    """
    match = _CONCEPT_FOLDER.fullmatch(name)
    if match is None:
        return None
    return int(match.group(1)), match.group(2)


def repeats_for_target(target_steps: int, num_images: int, epochs: int, batch_size: int = 1) -> int:
    """The folder repeats that make ``epochs`` epochs last about ``target_steps`` steps.

    steps = images x repeats x epochs / batch size, solved for repeats and rounded; at least 1.
    E.g. 4800 steps, 32 images, 10 epochs, batch 1 -> 15 repeats.
    """
    if num_images < 1 or epochs < 1 or batch_size < 1:
        raise ValueError(
            f"num_images, epochs and batch_size must be at least 1, got {num_images}, {epochs}, {batch_size}"
        )
    return max(1, round(target_steps * batch_size / (num_images * epochs)))


# --------------------------------------------------------------------------------------------
# The scan


@dataclass(frozen=True)
class _ScanSettings:
    caption_extension: str  # with its leading dot
    buckets: tuple[Bucket, ...]
    resolution: int


def scan_dataset(
    image_dir: Path,
    reg_dir: Path | None = None,
    *,
    caption_extension: str = ".txt",
    resolution: int = 512,
    enable_buckets: bool = True,
    min_bucket_reso: int = 256,
    max_bucket_reso: int = 1024,
    bucket_reso_steps: int = 64,
) -> DatasetReport:
    """Scan ``image_dir`` (and ``reg_dir`` when given) and report images, problems and buckets.

    Nothing the user can get wrong raises: bad files and folders, and settings the scan cannot use
    (impossible bucket sizes, an empty caption extension), are all reported in ``problems``.
    """
    image_dir = Path(image_dir)
    reg_dir = Path(reg_dir) if reg_dir is not None else None
    problems: list[Problem] = []
    buckets = _buckets_or_square(
        resolution, enable_buckets, min_bucket_reso, max_bucket_reso, bucket_reso_steps, problems
    )
    settings = _ScanSettings(_caption_extension(caption_extension, problems), buckets, resolution)

    concepts = _scan_root(image_dir, False, settings, problems)
    reg_concepts = _scan_root(reg_dir, True, settings, problems) if reg_dir is not None else ()
    # None means the folder itself was unusable, which is already reported in its own words.
    if concepts is not None and not any(concept.images for concept in concepts):
        problems.append(
            Problem(
                str(image_dir),
                "there are no usable training images",
                fix="put .png, .jpg or .webp images into its <repeats>_<name> folders (see the other problems listed)",
                severity="error",
            )
        )
    return DatasetReport(
        image_dir=image_dir,
        reg_dir=reg_dir,
        resolution=resolution,
        buckets=buckets,
        concepts=concepts or (),
        reg_concepts=reg_concepts or (),
        problems=tuple(problems),
    )


def _buckets_or_square(
    resolution: int, enabled: bool, min_reso: int, max_reso: int, step: int, problems: list[Problem]
) -> tuple[Bucket, ...]:
    """The buckets to sort images into; the plain square when the settings cannot make buckets.

    The config check reports bad bucket settings too, but it does not stop a scan: carrying on with
    a fallback still lists every problem in the dataset itself in the same pass.
    """
    try:
        return tuple(make_buckets(resolution, min_reso, max_reso, step) if enabled else no_buckets(resolution))
    except ValueError as error:
        side = resolution if resolution > 0 else 512
        problems.append(
            Problem(
                "buckets",
                f"{error}; the images were sorted into the single {side}x{side} bucket instead",
                fix="set min_bucket_reso <= resolution <= max_bucket_reso, with min and max multiples "
                "of bucket_reso_steps (e.g. 256, 512, 1024 with steps 64)",
                severity="error",
            )
        )
        return ((side, side),)


def _caption_extension(extension: str, problems: list[Problem]) -> str:
    """The caption extension with its leading dot (".txt" when none is given, which is reported)."""
    if extension.strip(".") == "":
        problems.append(
            Problem(
                "caption_extension",
                f"caption extension {extension!r} names no extension; captions were looked up as .txt",
                fix='set caption_extension = ".txt" (or the extension your caption files use)',
                severity="error",
            )
        )
        return ".txt"
    return extension if extension.startswith(".") else "." + extension


def _scan_root(
    root: Path, is_reg: bool, settings: _ScanSettings, problems: list[Problem]
) -> tuple[ConceptReport, ...] | None:
    """The concept folders under ``img/`` (or ``reg/``); None when the folder itself is unusable."""
    label = "reg_dir" if is_reg else "image_dir"
    example_repeats, example_name = (1, "woman") if is_reg else (10, "ohwx woman")
    example = root / f"{example_repeats}_{example_name}"
    if not root.exists():
        problems.append(
            _error(
                root,
                f"{label} does not exist",
                f"check the path, or create it with sub-folders like {example}/",
            )
        )
        return None
    if not root.is_dir():
        problems.append(
            _error(root, f"{label} is a file, not a folder", f"point {label} at a folder of concept folders")
        )
        return None
    try:
        folders, file_names = _list_folder(root)
    except OSError as error:
        problems.append(_error(root, f"{label} cannot be read ({error.strerror})", "check its permissions"))
        return None

    stray_images = [root / file for file in file_names if _extension(file) in IMAGE_EXTENSIONS]
    if stray_images:
        problems.append(_stray_images_problem(root, label, example, stray_images))
    if not folders:
        problems.append(
            _error(
                root,
                f"{label} has no concept folders",
                f"put the images in sub-folders named <repeats>_<name>: e.g. {example}/ trains each image "
                f"in it {count(example_repeats, 'time')} per epoch, captioned '{example_name}' unless the image "
                "has its own caption file",
            )
        )
        return None

    concepts = []
    for folder in folders:
        parsed = parse_concept_folder(folder.name)
        if parsed is None:
            problems.append(
                _error(
                    folder,
                    "the folder name does not start with a repeat count, so it would be ignored",
                    f"rename it to e.g. {example_repeats}_{folder.name}",
                )
            )
        elif parsed[0] == 0:
            problems.append(
                _error(folder, "0 repeats: its images would never be trained", f"rename it to e.g. 1_{parsed[1]}")
            )
        else:
            concepts.append(_scan_concept(folder, parsed[0], parsed[1], is_reg, settings, problems))
    return tuple(concepts)


def _scan_concept(
    folder: Path, repeats: int, name: str, is_reg: bool, settings: _ScanSettings, problems: list[Problem]
) -> ConceptReport:
    """Read every image header and caption in one concept folder."""
    try:
        _, file_names = _list_folder(folder)
    except OSError as error:
        problems.append(_error(folder, f"the folder cannot be read ({error.strerror})", "check its permissions"))
        return ConceptReport(folder, name, repeats, is_reg, (), (), (), (), (), {}, {})
    # Caption files are looked up in this listing rather than stat'ed one by one: far fewer syscalls.
    present = set(file_names)
    image_paths = [folder / file for file in file_names if _extension(file) in IMAGE_EXTENSIONS]
    unsupported = [folder / file for file in file_names if _extension(file) in UNSUPPORTED_IMAGE_EXTENSIONS]

    images: list[ImageEntry] = []
    missing: list[Path] = []
    empty: list[Path] = []
    unreadable: list[tuple[Path, str]] = []
    small: list[ImageEntry] = []
    for path in image_paths:
        size = _read_image_size(path)
        if isinstance(size, str):
            unreadable.append((path, size))
            problems.append(
                _error(
                    path,
                    f"cannot be used ({size}); it is left out of training",
                    "re-export it as .png/.jpg/.webp, or delete it",
                )
            )
            continue
        width, height = size
        caption_name = os.path.splitext(path.name)[0] + settings.caption_extension
        has_caption_file = caption_name in present
        caption_path = folder / caption_name if has_caption_file else None
        caption, source = _caption(caption_path, name, problems)
        if not has_caption_file:
            missing.append(path)
        elif source == "empty":
            empty.append(caption_path)
        bucket = _bucket_for(width, height, settings.buckets)
        entry = ImageEntry(path, width, height, caption, source, bucket, folder.name, is_reg)
        images.append(entry)
        if width < bucket[0] or height < bucket[1]:
            small.append(entry)

    concept = ConceptReport(
        folder=folder,
        name=name,
        repeats=repeats,
        is_reg=is_reg,
        images=tuple(images),
        missing_captions=tuple(missing),
        empty_captions=tuple(empty),
        unreadable=tuple(unreadable),
        small_images=tuple(entry.path for entry in small),
        bucket_counts=dict(sorted(Counter(entry.bucket for entry in images).items())),
        tag_frequency=_count_tags(entry.caption for entry in images),
    )
    problems.extend(_concept_problems(concept, unsupported, image_paths, small, settings))
    return concept


def _concept_problems(
    concept: ConceptReport,
    unsupported: list[Path],
    image_paths: list[Path],
    small: list[ImageEntry],
    settings: _ScanSettings,
) -> list[Problem]:
    """The per-folder summaries (one problem per kind, not one per file)."""
    found: list[Problem] = []
    folder, ext = concept.folder, settings.caption_extension
    if unsupported:
        found.append(
            Problem(
                str(folder),
                f"{count(len(unsupported), 'file')} in a format loratui does not train on will not be used: "
                f"{_names(unsupported)}",
                fix="convert them to .png, .jpg or .webp",
                severity="warning",
            )
        )
    if not image_paths:
        found.append(
            _error(
                folder,
                f"the folder has no images ({', '.join(IMAGE_EXTENSIONS)})",
                f"put the images for '{concept.name}' in it, or delete the folder",
            )
        )
    fallback = (
        f"the folder caption '{concept.name}'"
        if concept.name
        else "an empty caption (the folder has no name after the repeats)"
    )
    # Regularisation images usually rely on the folder caption on purpose, so there it is a note.
    caption_severity = "note" if concept.is_reg else "warning"
    total = len(concept.images)
    if concept.missing_captions:
        example = concept.missing_captions[0]
        found.append(
            Problem(
                str(folder),
                f"{len(concept.missing_captions)} of {total} images have no {ext} caption; they are "
                f"trained with {fallback}: {_names(concept.missing_captions)}",
                fix=f"add a same-named {ext} file next to each image (e.g. {example.stem}{ext} for "
                f"{example.name}), or keep it this way if that caption is what you want",
                severity=caption_severity,
            )
        )
    if concept.empty_captions:
        found.append(
            Problem(
                str(folder),
                f"{len(concept.empty_captions)} of {total} {ext} captions are empty; those images are "
                f"trained with {fallback}: {_names(concept.empty_captions)}",
                fix=f"write a caption into each, or delete the empty {ext} files to use the folder caption on purpose",
                severity=caption_severity,
            )
        )
    if small:
        smallest = min(small, key=lambda entry: (entry.width * entry.height, entry.path))
        found.append(
            Problem(
                str(folder),
                f"{len(small)} of {total} images are smaller than their bucket and will be upscaled "
                f"(smallest: {smallest.path.name}, {smallest.width}x{smallest.height} for bucket "
                f"{smallest.bucket[0]}x{smallest.bucket[1]})",
                fix=f"use larger source images, or lower the resolution (now {settings.resolution})",
                severity="warning",
            )
        )
    return found


def _stray_images_problem(root: Path, label: str, example: Path, stray: list[Path]) -> Problem:
    # The classic mistake: pointing image_dir at the concept folder itself.
    if parse_concept_folder(root.name) is not None:
        fix = f"point {label} at {root.parent}, the folder that contains {root.name}/"
    else:
        fix = f"move them into a <repeats>_<name> folder, e.g. {example}/"
    return _error(
        root,
        f"{count(len(stray), 'image')} {'lies' if len(stray) == 1 else 'lie'} directly in {label}, outside any "
        "<repeats>_<name> folder, and "
        f"would be ignored: {_names(stray)}",
        fix,
    )


# --------------------------------------------------------------------------------------------
# Reading files


def _list_folder(folder: Path) -> tuple[list[Path], list[str]]:
    """(sub-folders, names of files) in ``folder``, sorted by name, hidden entries skipped.

    Files stay names: most are captions that need no Path object, and pathlib is slow to make.
    """
    # os.scandir knows each entry's type from the directory listing itself, without a stat per file.
    with os.scandir(folder) as entries:
        visible = sorted((entry for entry in entries if not entry.name.startswith(".")), key=lambda e: e.name)
    folders = [Path(entry.path) for entry in visible if entry.is_dir()]
    file_names = [entry.name for entry in visible if entry.is_file()]
    return folders, file_names


def _extension(name: str) -> str:
    """The lower-cased extension with its dot (image extensions match in any case)."""
    return os.path.splitext(name)[1].lower()


def _read_image_size(path: Path) -> tuple[int, int] | str:
    """The displayed (width, height) read from the header alone, or why the file is unusable."""
    from PIL import Image  # lazy: importing this module must stay cheap

    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = _exif_orientation(img)
    except (PermissionError, FileNotFoundError) as error:
        return f"cannot be read ({error.strerror})"
    except Image.DecompressionBombError:
        return "too many pixels for Pillow to open safely"
    except Exception:  # noqa: BLE001 - Pillow's format plugins raise many types on corrupt headers
        # (OSError, SyntaxError, ValueError, struct.error, EOFError...); all mean the same here.
        return _why_not_an_image(path)
    if orientation in _ORIENTATIONS_SWAPPING_SIDES:
        return height, width
    return width, height


def _why_not_an_image(path: Path) -> str:
    # Only asked after Pillow gave up, so good images cost no extra stat call.
    try:
        return "zero bytes" if path.stat().st_size == 0 else "not a readable image"
    except OSError as error:
        return f"cannot be read ({error.strerror})"


def _exif_orientation(img: Image.Image) -> int | None:
    """The EXIF orientation tag, read without decoding pixels."""
    if img.format == "PNG" and not any(key in img.info for key in _PNG_ORIENTATION_SOURCES):
        # Pillow's PNG getexif() decodes the whole image to look for an eXIf chunk after the pixel
        # data. Writers put it before the pixels (where the header parse already found it), so a
        # PNG with no orientation source in its header is taken as upright: no full decode per PNG.
        return None
    orientation = img.getexif().get(_EXIF_ORIENTATION)
    return orientation if isinstance(orientation, int) else None


def _caption(caption_path: Path | None, folder_caption: str, problems: list[Problem]) -> tuple[str, str]:
    """(caption text, source) for one image; falls back to the folder caption."""
    if caption_path is None:
        return folder_caption, "folder"
    try:
        # utf-8-sig: Windows editors like to start UTF-8 files with a byte-order mark.
        text = caption_path.read_bytes().decode("utf-8-sig").strip()
    except OSError as error:
        problems.append(_error(caption_path, f"the caption cannot be read ({error.strerror})", "check its permissions"))
        return folder_caption, "folder"
    except UnicodeDecodeError:
        problems.append(_error(caption_path, "the caption is not UTF-8 text", "re-save it with UTF-8 encoding"))
        return folder_caption, "folder"
    if not text:
        return folder_caption, "empty"
    return text, "file"


@functools.lru_cache(maxsize=4096)
def _bucket_for(width: int, height: int, buckets: tuple[Bucket, ...]) -> Bucket:
    # Datasets repeat a handful of sizes: remembering them skips a logarithm per bucket per image.
    return assign_bucket(width, height, buckets)


def _count_tags(captions: Iterable[str]) -> dict[str, int]:
    """How many images carry each comma-separated tag (a tag repeated in one caption counts once)."""
    counts: Counter[str] = Counter()
    for caption in captions:
        counts.update({tag.strip() for tag in caption.split(",")} - {""})
    return dict(sorted(counts.items()))


# --------------------------------------------------------------------------------------------
# The epoch plan


def _items_by_bucket(report: DatasetReport) -> dict[Bucket, list[ImageEntry]]:
    """One epoch's items grouped by bucket (buckets in sorted order, items in a fixed order).

    Train items are each image repeated by its folder's repeats. With regularisation images, kohya
    trains exactly as many reg items as train items per epoch (prior preservation weighs the two
    equally), so the reg items (images x repeats) are cycled or truncated to that count.
    Returns fresh lists: callers may shuffle them.
    """
    train = [image for concept in report.concepts for image in concept.images for _ in range(concept.repeats)]
    items = train + _reg_items(report.reg_concepts, len(train))
    grouped: dict[Bucket, list[ImageEntry]] = {}
    for item in items:
        grouped.setdefault(item.bucket, []).append(item)
    return {bucket: grouped[bucket] for bucket in sorted(grouped)}


def _reg_items(reg_concepts: tuple[ConceptReport, ...], count: int) -> list[ImageEntry]:
    """Exactly ``count`` reg items (none when there are no reg images)."""
    images = sorted(
        ((image, concept.repeats) for concept in reg_concepts for image in concept.images),
        key=lambda pair: pair[0].path,
    )
    if not images or count == 0:
        return []
    # One round is every reg image x its repeats, laid out in passes (pass k holds the images whose
    # repeats exceed k, in path order) so that a truncated round still spreads over all images
    # instead of giving every slot to the first folder.
    most_repeats = max(repeats for _, repeats in images)
    one_round = [image for k in range(most_repeats) for image, repeats in images if repeats > k]
    return [one_round[index % len(one_round)] for index in range(count)]


def _epoch_seed(seed: int, epoch: int) -> int:
    # Plain arithmetic, never hash(): hash() of a str is salted per process, and no hash value is
    # promised to stay the same across Python versions. Resuming a run must replay the same epoch.
    return seed * 1_000_003 + epoch


def _dataset_dirs(concepts: tuple[ConceptReport, ...]) -> dict[str, dict[str, int]]:
    return {
        concept.folder.name: {"n_repeats": concept.repeats, "img_count": len(concept.images)} for concept in concepts
    }


def _mean_aspect_error(concepts: tuple[ConceptReport, ...]) -> float:
    images = [image for concept in concepts for image in concept.images]
    if not images:
        return 0.0
    errors = (abs(image.width / image.height - image.bucket[0] / image.bucket[1]) for image in images)
    return sum(errors) / len(images)


# --------------------------------------------------------------------------------------------
# Small utilities


def _error(where: Path, message: str, fix: str) -> Problem:
    return Problem(str(where), message, fix=fix, severity="error")


def _names(paths: Iterable[Path]) -> str:
    """``a.png, b.png, c.png and 4 more``: enough names to find the files, not a wall of text."""
    paths = list(paths)
    shown = ", ".join(path.name for path in paths[:_LIST_LIMIT])
    hidden = len(paths) - _LIST_LIMIT
    return f"{shown} and {hidden} more" if hidden > 0 else shown


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)
