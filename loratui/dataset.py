"""The dataset scan: what a kohya-style image folder holds, what is wrong with it, and the epoch plan.

The layout (the one kohya's trainers and the guides written for them use)::

    img/10_ohwx woman/a.png       an image, trained 10 times per epoch
    img/10_ohwx woman/a.txt       its caption; without one, the caption is the folder's
                                  name after the repeats ("ohwx woman")
    reg/1_woman/b.png             optional regularisation images, same shape

The scan decodes every image in full (:mod:`loratui.image_files`: in threads, JPEGs at 1/8
scale, remembered while a file is unchanged), so a file cut short fails here, named, rather than
in the engine. It never raises for bad data: every mistake becomes a
:class:`~loratui.errors.Problem` naming the file or folder and the fix, and they are all collected in
one pass so the user can fix everything at once.

Captions are read only from inside the dataset folders: a caption that is a link to a file
elsewhere is refused unread, since a caption's text is trained and written into the LoRA's
``ss_tag_frequency`` metadata (a dataset shared as an archive could link ``a.txt`` to a private
file). Images that are links to elsewhere are trained, with a warning.

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from loratui.buckets import (
    MAX_ASPECT_RATIO,
    Bucket,
    assign_bucket,
    make_buckets,
    no_buckets,
    no_upscale_bucket,
    too_elongated,
)
from loratui.errors import Problem
from loratui.image_files import TRUNCATED, ImageVerdict, read_images
from loratui.quantities import count
from loratui.subset_options import SubsetOptions

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
# Formats people have lying around that the trainer does not read: worth a warning, not silence.
UNSUPPORTED_IMAGE_EXTENSIONS = (".gif", ".bmp", ".tif", ".tiff", ".avif", ".heic")

# The most repeats a concept folder may ask for. kohya sets no limit, but the guides advise 10 to
# 100, and `img/1000000000_x` is a typo, not a plan: an epoch's plan lists every image once per
# repeat, so a bound on repeats is a bound on the memory the engine's plan takes (10,000 repeats
# of 1,000 images: 10 million entries, 80 MB).
MAX_REPEATS = 10_000
# kohya_ss GUI's caption extension for "no caption files": every image is captioned with its
# concept folder's name (what is after the repeats), whatever files lie beside it.
FOLDER_NAME_CAPTIONS = ".none-use-foldername"
# A caption is a line of tags or a sentence; CLIP reads 75 tokens of it. A larger "caption" is
# some other file (a link to a log, a device): it is refused rather than read into memory.
MAX_CAPTION_BYTES = 1 << 20

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
    # Its subset's caption rules and augmentation (the [dataset] section's, or its [[subsets]] table's).
    options: SubsetOptions = SubsetOptions()
    # bucket_no_upscale: the size it is resized to before the crop to ``bucket`` (sd-scripts' resized_size;
    # the image's own size when it is small). None: resized to cover the bucket (crop_geometry).
    resized: Bucket | None = None


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

    @property
    def captioned(self) -> int:
        """Images with a caption of their own (read from a non-empty caption file)."""
        return sum(entry.caption_source == "file" for entry in self.images)


@dataclass(frozen=True)
class DatasetReport:
    """The result of :func:`scan_dataset`: the usable images, the problems, and the epoch plan."""

    image_dir: Path | None  # None: the run has [[subsets]] only
    reg_dir: Path | None
    resolution: int
    buckets: tuple[Bucket, ...]  # every bucket an image could go to
    concepts: tuple[ConceptReport, ...]
    reg_concepts: tuple[ConceptReport, ...]
    problems: tuple[Problem, ...]
    # Images measured for the validation loss and never trained (dataset.validation_split and
    # validation_dir, loratui/held_out.py): not in ``concepts``, so no count or batch below has them.
    held_out: tuple[ImageEntry, ...] = ()
    # The concept folders of dataset.validation_dir as scanned; held_out.hold_out moves their images
    # into ``held_out``.
    validation_concepts: tuple[ConceptReport, ...] = ()

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
        """How many batches :meth:`epoch_batches` yields, counted without listing the items."""
        _check_batch_size(batch_size)
        return sum(_ceil_div(items, batch_size) for items in _item_counts_by_bucket(self).values())

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
        used = _item_counts_by_bucket(self)
        buckets = {
            str(index): {"resolution": [width, height], "count": items}
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


_PLAIN_OPTIONS = SubsetOptions()  # sd-scripts' defaults: no caption rules, no augmentation


@dataclass(frozen=True)
class SubsetFolder:
    """A ``[[subsets]]`` table of the run config: one folder of images scanned flat (not a folder of
    ``<repeats>_<name>`` folders), trained as one concept with its own repeats and options."""

    folder: Path
    repeats: int
    class_tokens: str  # the caption of an image without a caption file
    is_reg: bool
    caption_extension: str
    options: SubsetOptions
    label: str  # how problems name it: "subsets[2]" (the second [[subsets]] table)


@dataclass(frozen=True)
class _ScanSettings:
    caption_extension: str  # with its leading dot
    buckets: tuple[Bucket, ...]  # empty with no_upscale: each image's bucket follows its own size
    resolution: int
    step: int = 64  # bucket_reso_steps
    no_upscale: bool = False  # bucket_no_upscale (with buckets on)
    options: SubsetOptions = SubsetOptions()


def scan_dataset(
    image_dir: Path | None,
    reg_dir: Path | None = None,
    *,
    caption_extension: str = ".txt",
    resolution: int = 512,
    enable_buckets: bool = True,
    min_bucket_reso: int = 256,
    max_bucket_reso: int = 1024,
    bucket_reso_steps: int = 64,
    bucket_no_upscale: bool = False,
    validation_dir: Path | None = None,
    options: SubsetOptions = _PLAIN_OPTIONS,
    subsets: Sequence[SubsetFolder] = (),
) -> DatasetReport:
    """Scan ``image_dir`` (and ``reg_dir``, ``validation_dir`` and the ``subsets`` folders when
    given) and report images, problems and buckets. The validation folder's images are in
    ``validation_concepts``, apart from the training ones (:func:`loratui.held_out.hold_out` makes
    them held-out images). The images of the kohya folders carry ``options``; a subset's, its own.

    Nothing the user can get wrong raises: bad files and folders, and settings the scan cannot use
    (impossible bucket sizes, an empty caption extension), are all reported in ``problems``.
    """
    image_dir = Path(image_dir) if image_dir is not None else None
    reg_dir = Path(reg_dir) if reg_dir is not None else None
    problems: list[Problem] = []
    no_upscale = bucket_no_upscale and enable_buckets
    buckets = _buckets_or_square(
        resolution, enable_buckets, min_bucket_reso, max_bucket_reso, bucket_reso_steps, problems
    )
    extension = _caption_extension(caption_extension, problems)
    step = max(1, bucket_reso_steps)
    settings = _ScanSettings(extension, () if no_upscale else buckets, resolution, step, no_upscale, options)

    concepts = _scan_root(image_dir, False, settings, problems) if image_dir is not None else ()
    reg_concepts = _scan_root(reg_dir, True, settings, problems) if reg_dir is not None else ()
    validation_concepts = (
        _scan_root(Path(validation_dir), False, settings, problems, label="validation_dir")
        if validation_dir is not None
        else ()
    )
    subset_concepts = [_scan_subset(subset, settings, problems) for subset in subsets]
    subset_train = tuple(concept for concept in subset_concepts if concept is not None and not concept.is_reg)
    subset_reg = tuple(concept for concept in subset_concepts if concept is not None and concept.is_reg)
    concepts = (*concepts, *subset_train) if concepts is not None or subset_train else None
    reg_concepts = (*(reg_concepts or ()), *subset_reg)
    # None means the folder itself was unusable, which is already reported in its own words.
    if concepts is not None and not any(concept.images for concept in concepts):
        where = str(image_dir) if image_dir is not None else "subsets"
        fix = (
            "put .png, .jpg or .webp images into its <repeats>_<name> folders (see the other problems listed)"
            if image_dir is not None
            else "put .png, .jpg or .webp images into the image_dir of a [[subsets]] table"
        )
        problems.append(Problem(where, "there are no usable training images", fix=fix, severity="error"))
    if subsets:
        named = [(concept, str(concept.folder)) for concept in (*(concepts or ()), *reg_concepts)]
        labels = {id(concept): subset.label for concept, subset in zip(subset_concepts, subsets, strict=True)}
        problems.extend(_listed_twice([(concept, labels.get(id(concept), where)) for concept, where in named]))
    if no_upscale:  # the buckets are the ones the images made
        found = {image.bucket for concept in (*(concepts or ()), *reg_concepts) for image in concept.images}
        buckets = tuple(sorted(found)) or buckets
    return DatasetReport(
        image_dir=image_dir,
        reg_dir=reg_dir,
        resolution=resolution,
        buckets=buckets,
        concepts=concepts or (),
        reg_concepts=reg_concepts,
        problems=tuple(problems),
        validation_concepts=validation_concepts or (),
    )


def _scan_subset(subset: SubsetFolder, settings: _ScanSettings, problems: list[Problem]) -> ConceptReport | None:
    """One ``[[subsets]]`` folder as a concept; None (with the problem) when the folder is unusable."""
    folder = subset.folder
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is a file, not a folder"
        problems.append(
            Problem(
                subset.label,
                f"the image_dir of this [[subsets]] table {what}: {folder}",
                fix="correct image_dir (a folder of images and their captions, relative to the config's folder), "
                "or remove the table",
                severity="error",
            )
        )
        return None
    own = replace(
        settings,
        caption_extension=_caption_extension(subset.caption_extension, problems),
        options=subset.options,
    )
    concept = _scan_concept(
        folder, subset.repeats, subset.class_tokens, subset.is_reg, (os.path.realpath(folder),), own, problems
    )
    if not concept.images and not concept.unreadable:
        try:
            inner = [path for path in sorted(folder.iterdir()) if path.is_dir() and parse_concept_folder(path.name)]
        except OSError:  # unreadable: already reported by the folder's scan
            inner = []
        if inner:  # pointed at an img/ folder: a subset's folder is scanned flat
            problems.append(
                _error(
                    folder,
                    f"the image_dir of {subset.label} holds <repeats>_<name> folders, but a [[subsets]] folder "
                    "is scanned flat, its sub-folders unread",
                    f"point image_dir at the folder of images itself (e.g. {inner[0]}) with its own num_repeats, "
                    "or set the kohya layout's parent folder as dataset.image_dir instead",
                )
            )
    return concept


def _listed_twice(concepts: Sequence[tuple[ConceptReport, str]]) -> list[Problem]:
    """One error when an image is trained from two places (two subsets on one folder, or a subset on a
    folder that dataset.image_dir or reg_dir also holds): it would count, and train, twice.
    ``concepts``: each with the name problems give it (a subset's label, or its folder)."""
    seen: dict[str, str] = {}
    twice: list[tuple[Path, str, str]] = []
    for concept, where in concepts:
        for image in concept.images:
            real = os.path.realpath(image.path)
            if real in seen:
                twice.append((image.path, seen[real], where))
            else:
                seen[real] = where
    if not twice:
        return []
    example, first, second = twice[0]
    return [
        _error(
            Path(example).parent,
            f"{count(len(twice), 'image')} {'is' if len(twice) == 1 else 'are'} listed twice, so "
            f"{'it' if len(twice) == 1 else 'they'} would train twice as often: {_names(p for p, _, _ in twice)} "
            f"({example.name} is in {first} and in {second})",
            "give each folder to one [[subsets]] table only, and keep dataset.image_dir and reg_dir off the "
            'folders the subsets name (set them to "" when the subsets hold everything)',
        )
    ]


def _buckets_or_square(
    resolution: int, enabled: bool, min_reso: int, max_reso: int, step: int, problems: list[Problem]
) -> tuple[Bucket, ...]:
    """The buckets to sort images into; the plain square when the settings cannot make buckets.

    The config check reports bad bucket settings too, but it does not stop a scan: carrying on with
    a fallback still lists every problem in the dataset itself in the same pass.
    """
    if enabled and step > 0 and (min_reso % step or max_reso % step):
        # sd-scripts moves min down and max up to the step grid, with a warning; so does loratui
        fitted_min, fitted_max = min_reso - min_reso % step, max_reso + (-max_reso) % step
        problems.append(
            Problem(
                "dataset.bucket_reso_steps",
                f"min_bucket_reso {min_reso} and max_bucket_reso {max_reso} are not both multiples of "
                f"bucket_reso_steps {step}: the buckets span {fitted_min}..{fitted_max} instead (as sd-scripts does)",
                fix=f"set min_bucket_reso = {fitted_min} and max_bucket_reso = {fitted_max} to say so",
                severity="warning",
            )
        )
        min_reso, max_reso = max(step, fitted_min), fitted_max
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
    root: Path, is_reg: bool, settings: _ScanSettings, problems: list[Problem], label: str = ""
) -> tuple[ConceptReport, ...] | None:
    """The concept folders under ``img/`` (or ``reg/``, or the validation folder, whose ``label``
    names it in the problems); None when the folder itself is unusable."""
    label = label or ("reg_dir" if is_reg else "image_dir")
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
        listing = _list_folder(root)
    except OSError as error:
        problems.append(_error(root, f"{label} cannot be read ({error.strerror})", "check its permissions"))
        return None

    stray_images = [root / file for file in listing.files if _extension(file) in IMAGE_EXTENSIONS]
    if stray_images:
        problems.append(_stray_images_problem(root, label, example, stray_images))
    if not listing.folders:
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

    root_real = os.path.realpath(root)
    concepts = []
    for folder in listing.folders:
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
        elif parsed[0] > MAX_REPEATS:
            problems.append(_too_many_repeats(folder, parsed[0], parsed[1]))
        elif not _is_utf8(folder.name):
            problems.append(
                _error(
                    folder,
                    "the folder's name is not UTF-8 text, and it must be: the LoRA's metadata lists it, and it is "
                    "the caption of images without one",
                    "rename the folder to a name typed anew (its repeats, then the instance token and class)",
                )
            )
        else:
            dataset_folders = _dataset_folders(folder, folder.name in listing.links, root_real, label, problems)
            concepts.append(_scan_concept(folder, parsed[0], parsed[1], is_reg, dataset_folders, settings, problems))
    return tuple(concepts)


def _too_many_repeats(folder: Path, repeats: int, name: str) -> Problem:
    return _error(
        folder,
        f"{repeats} repeats: more than the {MAX_REPEATS:,} a concept folder may have",
        f"rename it to e.g. 10_{name} and train more epochs instead (the same steps: images x repeats x epochs)",
    )


def _dataset_folders(
    folder: Path, is_link: bool, root_real: str, label: str, problems: list[Problem]
) -> tuple[str, ...]:
    """The real folders a concept folder's files may lead into: the dataset root, and the concept
    folder's own target when it is a link to a folder elsewhere (the user linked it in, which is
    worth a warning: everything in it is trained, and its captions go into the metadata)."""
    if not is_link:
        return (root_real,)
    target = os.path.realpath(folder)
    if _inside(target, (root_real,)):
        return (root_real,)
    problems.append(
        Problem(
            str(folder),
            f"the folder is a link to {target}, outside {label}: its images are trained and its captions "
            "written into the LoRA's metadata (ss_tag_frequency)",
            fix="keep it if you linked it on purpose; otherwise delete the link, or copy the folder in its place",
            severity="warning",
        )
    )
    return (root_real, target)


@dataclass
class _Found:
    """What one concept folder's scan collects before it becomes a :class:`ConceptReport`."""

    images: list[ImageEntry] = field(default_factory=list)
    missing: list[Path] = field(default_factory=list)  # images without a caption file
    empty: list[Path] = field(default_factory=list)  # caption files holding only whitespace
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    small: list[ImageEntry] = field(default_factory=list)
    not_files: list[tuple[Path, str]] = field(default_factory=list)  # (caption path, what it is: "a folder")
    captions_outside: list[tuple[Path, str]] = field(default_factory=list)  # (caption link, its target)
    images_outside: list[tuple[Path, str]] = field(default_factory=list)  # (image link, its target)


def _scan_concept(
    folder: Path,
    repeats: int,
    name: str,
    is_reg: bool,
    dataset_folders: tuple[str, ...],
    settings: _ScanSettings,
    problems: list[Problem],
) -> ConceptReport:
    """Decode every image and read every caption in one concept folder."""
    try:
        listing = _list_folder(folder)
    except OSError as error:
        problems.append(_error(folder, f"the folder cannot be read ({error.strerror})", "check its permissions"))
        return ConceptReport(folder, name, repeats, is_reg, (), (), (), (), (), {}, {})
    files = _ConceptFiles(folder, listing, dataset_folders)
    image_names = [file for file in listing.files if _extension(file) in IMAGE_EXTENSIONS]
    unsupported = [folder / file for file in listing.files if _extension(file) in UNSUPPORTED_IMAGE_EXTENSIONS]
    verdicts = read_images(folder, image_names)

    found = _Found()
    for file, verdict in zip(image_names, verdicts, strict=True):
        path = folder / file
        unusable = _unusable(verdict)
        if unusable is not None:
            reason, fix = unusable
            found.unreadable.append((path, reason))
            problems.append(_error(path, f"cannot be used ({reason}); it is left out of training", fix))
            continue
        if file in files.outside:
            found.images_outside.append((path, files.outside[file]))
        width, height = verdict
        caption, source = _caption_of(files, file, name, settings, found, problems)
        bucket, resized = _bucket_and_size(width, height, settings)
        entry = ImageEntry(path, width, height, caption, source, bucket, folder.name, is_reg, settings.options, resized)
        found.images.append(entry)
        if width < bucket[0] or height < bucket[1]:
            found.small.append(entry)

    concept = ConceptReport(
        folder=folder,
        name=name,
        repeats=repeats,
        is_reg=is_reg,
        images=tuple(found.images),
        missing_captions=tuple(found.missing),
        empty_captions=tuple(found.empty),
        unreadable=tuple(found.unreadable),
        small_images=tuple(entry.path for entry in found.small),
        bucket_counts=dict(sorted(Counter(entry.bucket for entry in found.images).items())),
        tag_frequency=count_tags(entry.caption for entry in found.images),
    )
    problems.extend(_concept_problems(concept, unsupported, image_names, found, settings))
    return concept


def _unusable(verdict: ImageVerdict) -> tuple[str, str] | None:
    """(why, fix) for an image that cannot be trained; None for one that can."""
    if isinstance(verdict, str):
        if verdict == TRUNCATED:
            return verdict, "copy it again from where it came from, or delete it"
        return verdict, "re-export it as .png/.jpg/.webp, or delete it"
    width, height = verdict
    if too_elongated(width, height):
        shape = "wide as it is high" if width > height else "high as it is wide"
        return (
            f"it is {width}x{height} pixels, more than {MAX_ASPECT_RATIO} times as {shape}: no bucket comes near "
            "that shape, and most of it would be cropped away",
            f"crop it to at most {MAX_ASPECT_RATIO}:1 around what it shows, or delete it",
        )
    return None


class _ConceptFiles:
    """A concept folder's listing, with what its links lead to outside the dataset folders."""

    def __init__(self, folder: Path, listing: _Listing, dataset_folders: tuple[str, ...]) -> None:
        self.folder = folder
        self.listing = listing
        # Caption files are looked up in this set rather than stat'ed one by one: far fewer syscalls.
        self.present = set(listing.files)
        # name -> real path, for the links that lead outside. Only links need resolving: a plain
        # entry of a folder inside the dataset is inside it too.
        self.outside = {
            link: target
            for link in listing.links
            if not _inside(target := os.path.realpath(folder / link), dataset_folders)
        }


def _caption_of(
    files: _ConceptFiles,
    image: str,
    folder_caption: str,
    settings: _ScanSettings,
    found: _Found,
    problems: list[Problem],
) -> tuple[str, str]:
    """(caption text, source) for one image, noting in ``found`` what kind of caption it has."""
    if settings.caption_extension == FOLDER_NAME_CAPTIONS:  # chosen: no caption is missing
        return folder_caption, "folder"
    caption_name = os.path.splitext(image)[0] + settings.caption_extension
    caption_path = files.folder / caption_name
    if caption_name in files.outside:  # never read: its text would be trained and written into the metadata
        found.captions_outside.append((caption_path, files.outside[caption_name]))
        return folder_caption, "folder"
    if caption_name in files.present:
        caption, source = _caption(caption_path, folder_caption, problems)
        if source == "empty":
            found.empty.append(caption_path)
        return caption, source
    if caption_name in files.listing.others:
        found.not_files.append((caption_path, files.listing.others[caption_name]))
    else:
        found.missing.append(files.folder / image)
    return folder_caption, "folder"


def _concept_problems(
    concept: ConceptReport,
    unsupported: list[Path],
    image_names: list[str],
    found: _Found,
    settings: _ScanSettings,
) -> list[Problem]:
    """The per-folder summaries (one problem per kind, not one per file)."""
    problems: list[Problem] = []
    folder, ext = concept.folder, settings.caption_extension
    if unsupported:
        problems.append(
            Problem(
                str(folder),
                f"{count(len(unsupported), 'file')} in a format loratui does not train on will not be used: "
                f"{_names(unsupported)}",
                fix="convert them to .png, .jpg or .webp",
                severity="warning",
            )
        )
    if not image_names:
        problems.append(
            _error(
                folder,
                f"the folder has no images ({', '.join(IMAGE_EXTENSIONS)})",
                f"put the images for '{concept.name}' in it, or delete the folder",
            )
        )
    problems.extend(_caption_problems(concept, found, ext))
    if found.images_outside:
        links = [path for path, _target in found.images_outside]
        example, target = found.images_outside[0]
        problems.append(
            Problem(
                str(folder),
                f"{count(len(links), 'image')} {'is a link' if len(links) == 1 else 'are links'} to "
                f"{'a file' if len(links) == 1 else 'files'} outside the dataset folders, trained as "
                f"{'it is' if len(links) == 1 else 'they are'}: "
                f"{_names(links)} ({example.name} -> {target})",
                fix="keep them if you linked them on purpose; otherwise delete the links",
                severity="warning",
            )
        )
    if found.small:
        smallest = min(found.small, key=lambda entry: (entry.width * entry.height, entry.path))
        problems.append(
            Problem(
                str(folder),
                f"{len(found.small)} of {len(concept.images)} images are smaller than their bucket and will be "
                f"upscaled (smallest: {smallest.path.name}, {smallest.width}x{smallest.height} for bucket "
                f"{smallest.bucket[0]}x{smallest.bucket[1]})",
                fix=f"use larger source images, or lower the resolution (now {settings.resolution})",
                severity="warning",
            )
        )
    return problems


def _caption_problems(concept: ConceptReport, found: _Found, ext: str) -> list[Problem]:
    problems: list[Problem] = []
    folder = concept.folder
    fallback = (
        f"the folder caption '{concept.name}'"
        if concept.name
        else "an empty caption (the folder has no name after the repeats)"
    )
    # Regularisation images usually rely on the folder caption on purpose, so there it is a note.
    caption_severity = "note" if concept.is_reg else "warning"
    total = len(concept.images)
    if found.captions_outside:
        links = [path for path, _target in found.captions_outside]
        example, target = found.captions_outside[0]
        problems.append(
            _error(
                folder,
                f"{count(len(links), f'{ext} caption')} {'is a link' if len(links) == 1 else 'are links'} to "
                f"{'a file' if len(links) == 1 else 'files'} outside the dataset folders, not read: "
                f"{_names(links)} ({example.name} -> {target}); a caption's text is trained and written "
                "into the LoRA's metadata (ss_tag_frequency), so loratui reads captions from the dataset "
                "folders only",
                f"put the caption files themselves in the folder instead of links (cp --remove-destination "
                f"TARGET LINK), or delete the links to train those images with {fallback}",
            )
        )
    if found.not_files:
        paths = [path for path, _what in found.not_files]
        example, what = found.not_files[0]
        problems.append(
            Problem(
                str(folder),
                f"{count(len(paths), f'{ext} caption path')} {'is' if len(paths) == 1 else 'are'} not a caption "
                f"file ({example.name} is {what}); those images are trained with {fallback}: {_names(paths)}",
                fix=f"replace each with a text file of the caption, or remove it to use {fallback} on purpose",
                severity=caption_severity,
            )
        )
    if found.missing:
        example = found.missing[0]
        problems.append(
            Problem(
                str(folder),
                f"{len(found.missing)} of {total} images have no {ext} caption; they are "
                f"trained with {fallback}: {_names(found.missing)}",
                fix=f"add a same-named {ext} file next to each image (e.g. {example.stem}{ext} for "
                f"{example.name}), or keep it this way if that caption is what you want",
                severity=caption_severity,
            )
        )
    if found.empty:
        problems.append(
            Problem(
                str(folder),
                f"{len(found.empty)} of {total} {ext} captions are empty; those images are "
                f"trained with {fallback}: {_names(found.empty)}",
                fix=f"write a caption into each, or delete the empty {ext} files to use the folder caption on purpose",
                severity=caption_severity,
            )
        )
    return problems


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


@dataclass(frozen=True)
class _Listing:
    """A folder's visible entries (hidden ones are skipped), sorted by name."""

    folders: list[Path]  # sub-folders, links to folders included
    # Names of regular files, links to files included. Names, not Paths: most are captions, which
    # need no Path object, and pathlib is slow to make.
    files: list[str]
    links: frozenset[str]  # the names among folders and files that are symbolic links
    others: dict[str, str]  # name -> what it is, for every entry that is not a regular file


def _list_folder(folder: Path) -> _Listing:
    # os.scandir knows each entry's type from the directory listing itself, without a stat per
    # file; only links cost a stat (to learn what they lead to).
    with os.scandir(folder) as entries:
        visible = sorted((entry for entry in entries if not entry.name.startswith(".")), key=lambda e: e.name)
    folders, files, links, others = [], [], set(), {}
    for entry in visible:
        if entry.is_dir():
            folders.append(Path(entry.path))
            others[entry.name] = "a folder"
        elif entry.is_file():
            files.append(entry.name)
        else:
            others[entry.name] = "a link that leads nowhere" if entry.is_symlink() else "a FIFO, socket or device"
            continue
        if entry.is_symlink():
            links.add(entry.name)
    return _Listing(folders, files, frozenset(links), others)


def _inside(real_path: str, real_folders: tuple[str, ...]) -> bool:
    """Whether a resolved path is one of the resolved folders or lies in one."""
    return any(real_path == folder or real_path.startswith(folder.rstrip(os.sep) + os.sep) for folder in real_folders)


def _is_utf8(name: str) -> bool:
    # A name's bytes that are not UTF-8 come from os.scandir as lone surrogates (U+DC80..U+DCFF).
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _extension(name: str) -> str:
    """The lower-cased extension with its dot (image extensions match in any case)."""
    return os.path.splitext(name)[1].lower()


def _caption(caption_path: Path, folder_caption: str, problems: list[Problem]) -> tuple[str, str]:
    """(caption text, source) for one image from its caption file; the folder caption when the
    file cannot be used (which is reported)."""
    try:
        with open(caption_path, "rb") as handle:
            data = handle.read(MAX_CAPTION_BYTES + 1)
    except OSError as error:
        problems.append(_error(caption_path, f"the caption cannot be read ({error.strerror})", "check its permissions"))
        return folder_caption, "folder"
    if len(data) > MAX_CAPTION_BYTES:
        problems.append(
            _error(
                caption_path,
                f"the caption is larger than {MAX_CAPTION_BYTES >> 20} MiB: not a caption",
                "write the image's caption into it (a line of tags or a sentence), or delete it",
            )
        )
        return folder_caption, "folder"
    try:
        # utf-8-sig: Windows editors like to start UTF-8 files with a byte-order mark.
        text = data.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        problems.append(_error(caption_path, "the caption is not UTF-8 text", "re-save it with UTF-8 encoding"))
        return folder_caption, "folder"
    if not text:
        return folder_caption, "empty"
    return text, "file"


def _bucket_and_size(width: int, height: int, settings: _ScanSettings) -> tuple[Bucket, Bucket | None]:
    """An image's bucket, and with bucket_no_upscale the size it is resized to before the crop."""
    if settings.no_upscale:
        return _no_upscale_bucket(width, height, settings.resolution, settings.step)
    return _bucket_for(width, height, settings.buckets), None


_no_upscale_bucket = functools.lru_cache(maxsize=4096)(no_upscale_bucket)


@functools.lru_cache(maxsize=4096)
def _bucket_for(width: int, height: int, buckets: tuple[Bucket, ...]) -> Bucket:
    # Datasets repeat a handful of sizes: remembering them skips a logarithm per bucket per image.
    return assign_bucket(width, height, buckets)


def count_tags(captions: Iterable[str]) -> dict[str, int]:
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
    Returns fresh lists: callers may shuffle them. This is the plan the engine trains, one entry
    per item (repeats are bounded by MAX_REPEATS); the check counts it with
    :func:`_item_counts_by_bucket` instead, which lists nothing per repeat.
    """
    train = [image for concept in report.concepts for image in concept.images for _ in range(concept.repeats)]
    items = train + _reg_items(report.reg_concepts, len(train))
    grouped: dict[Bucket, list[ImageEntry]] = {}
    for item in items:
        grouped.setdefault(item.bucket, []).append(item)
    return {bucket: grouped[bucket] for bucket in sorted(grouped)}


def _reg_items(reg_concepts: tuple[ConceptReport, ...], count: int) -> list[ImageEntry]:
    """Exactly ``count`` reg items (none when there are no reg images)."""
    images = _reg_images(reg_concepts)
    if not images or count == 0:
        return []
    # One round is every reg image x its repeats, laid out in passes (pass k holds the images whose
    # repeats exceed k, in path order) so that a truncated round still spreads over all images
    # instead of giving every slot to the first folder.
    most_repeats = max(repeats for _, repeats in images)
    one_round = [image for k in range(most_repeats) for image, repeats in images if repeats > k]
    return [one_round[index % len(one_round)] for index in range(count)]


def _reg_images(reg_concepts: tuple[ConceptReport, ...]) -> list[tuple[ImageEntry, int]]:
    """(reg image, its folder's repeats), in path order."""
    return sorted(
        ((image, concept.repeats) for concept in reg_concepts for image in concept.images),
        key=lambda pair: pair[0].path,
    )


def _item_counts_by_bucket(report: DatasetReport) -> dict[Bucket, int]:
    """How many items :func:`_items_by_bucket` puts in each bucket, counted by arithmetic: a
    folder with many repeats costs nothing more than one with a single repeat."""
    counts: Counter[Bucket] = Counter()
    for concept in report.concepts:
        for image in concept.images:
            counts[image.bucket] += concept.repeats
    counts.update(_reg_item_counts(report.reg_concepts, sum(counts.values())))
    return {bucket: counts[bucket] for bucket in sorted(counts) if counts[bucket]}


def _reg_item_counts(reg_concepts: tuple[ConceptReport, ...], count: int) -> Counter[Bucket]:
    """The buckets of :func:`_reg_items`' ``count`` items, counted pass by pass, not listed."""
    counts: Counter[Bucket] = Counter()
    images = _reg_images(reg_concepts)
    if not images or count == 0:
        return counts
    rounds, rest = divmod(count, sum(repeats for _, repeats in images))
    for image, repeats in images:
        counts[image.bucket] += rounds * repeats
    # The partial round: whole passes while they fit (passes between two repeat counts hold the
    # same images), then the first images of the pass that does not.
    done = 0  # passes counted
    for threshold in sorted({repeats for _, repeats in images}):
        members = [image for image, repeats in images if repeats > done]
        passes = min(threshold - done, rest // len(members))
        for image in members:
            counts[image.bucket] += passes
        rest -= passes * len(members)
        done += passes
        if done < threshold:  # the pass that does not fit whole: its first `rest` images
            for image in members[:rest]:
                counts[image.bucket] += 1
            break
    return counts


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
