"""Held-out images: the ones the validation loss is measured on, which the LoRA never trains on.

Two sources, used together when both are set (kohya's names where it has them):

- ``dataset.validation_split``: that fraction of each training concept folder's images, chosen by
  ``training.seed`` (kohya: ``validation_split``, per subset, chosen by ``validation_seed``, which
  defaults to ``seed``). Each folder holds out round(images x fraction) of its images, but always
  keeps one to train on; when that rounds to none in every folder, the largest folder that can
  spare one gives one, so a split above 0 always holds out an image (kohya may hold out none).
  Regularisation images are never held out.
- ``dataset.validation_dir``: a folder laid out as image_dir (``val/1_ohwx woman/`` with captions)
  whose images are all held out; the repeats in its folder names are ignored (each held-out image is
  measured once). sd-scripts has no such folder.

The held-out images leave the training concept folders before anything is counted, so the check's
step arithmetic, the wizard's dataset panel and the engine's batches all come from the training
images alone. Torch-free: the CLI and the wizard import it.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

from loratui.dataset import (
    MAX_REPEATS,
    ConceptReport,
    DatasetReport,
    ImageEntry,
    SubsetFolder,
    count_tags,
    scan_dataset,
)
from loratui.errors import Problem
from loratui.quantities import count
from loratui.subset_options import subset_options


def scan_run_dataset(cfg) -> DatasetReport:
    """The run's dataset as the check, the wizard and the engine see it: scanned, with the
    held-out images taken out of the training folders (``cfg`` is a RunConfig)."""
    data = cfg.dataset
    report = scan_dataset(
        cfg.resolve(data.image_dir) if data.image_dir.strip() else None,
        cfg.resolve(data.reg_dir) if data.reg_dir.strip() else None,
        caption_extension=data.caption_extension,
        resolution=data.resolution,
        enable_buckets=data.enable_buckets,
        min_bucket_reso=data.min_bucket_reso,
        max_bucket_reso=data.max_bucket_reso,
        bucket_reso_steps=data.bucket_reso_steps,
        bucket_no_upscale=data.bucket_no_upscale,
        validation_dir=cfg.resolve(data.validation_dir) if data.validation_dir.strip() else None,
        options=subset_options(data),
        subsets=subset_folders(cfg),
    )
    return hold_out(report, data.validation_split, cfg.training.seed)


def subset_folders(cfg) -> list[SubsetFolder]:
    """The run's ``[[subsets]]`` tables as the scan takes them. A table whose values the check
    refuses (an empty image_dir, repeats out of range) is left out: its problem says why."""
    folders = []
    for number, subset in enumerate(cfg.subsets, start=1):
        if not subset.image_dir.strip() or not 1 <= subset.num_repeats <= MAX_REPEATS:
            continue
        folders.append(
            SubsetFolder(
                folder=cfg.resolve(subset.image_dir),
                repeats=subset.num_repeats,
                class_tokens=subset.class_tokens,
                is_reg=subset.is_reg,
                caption_extension=subset.caption_extension or cfg.dataset.caption_extension,
                options=subset_options(cfg.dataset, **subset.options),
                label=f"subsets[{number}]",
            )
        )
    return folders


def hold_out(report: DatasetReport, fraction: float, seed: int) -> DatasetReport:
    """``report`` with ``fraction`` of each training folder's images (and every image of the
    validation folder) moved into ``held_out``. Same arguments, same images held out."""
    problems = list(report.problems)
    counts = _held_out_counts(report.concepts, fraction)
    if fraction > 0 and report.num_images and not sum(counts):
        problems.append(_nothing_to_spare(fraction))
    concepts, held = [], []
    for concept, held_count in zip(report.concepts, counts, strict=True):
        chosen = _chosen(concept, held_count, seed)
        held.extend(chosen)
        concepts.append(_without(concept, chosen) if chosen else concept)
    from_folder = [image for concept in report.validation_concepts for image in concept.images]
    if report.validation_concepts and not from_folder:
        problems.append(
            Problem(
                "dataset.validation_dir",
                "the validation folder has no usable images",
                "put .png, .jpg or .webp images (with their captions) into its <repeats>_<name> folders, "
                "or clear validation_dir",
            )
        )
    trained = {image.path.resolve() for concept in concepts for image in concept.images}
    also_trained = [image.path for image in from_folder if image.path.resolve() in trained]
    if also_trained:
        problems.append(
            Problem(
                "dataset.validation_dir",
                f"{count(len(also_trained), 'image')} of the validation folder {'is' if len(also_trained) == 1 else 'are'}"
                " also trained (the folder is, or holds, image_dir), so their loss shows nothing about overfitting",
                "point validation_dir at a folder of other images, or use validation_split instead",
                severity="warning",
            )
        )
    return replace(report, concepts=tuple(concepts), held_out=tuple(held + from_folder), problems=tuple(problems))


def _held_out_counts(concepts: tuple[ConceptReport, ...], fraction: float) -> list[int]:
    """How many images each folder gives: round(images x fraction), keeping one to train on; at
    least one in all when the fraction is above 0 and a folder has two images or more."""
    if fraction <= 0:
        return [0] * len(concepts)
    counts = [min(len(c.images) - 1, round(len(c.images) * fraction)) if c.images else 0 for c in concepts]
    counts = [max(0, n) for n in counts]
    if not sum(counts):
        largest = max(range(len(concepts)), key=lambda i: len(concepts[i].images), default=None)
        if largest is not None and len(concepts[largest].images) >= 2:
            counts[largest] = 1
    return counts


def _chosen(concept: ConceptReport, how_many: int, seed: int) -> list[ImageEntry]:
    """``how_many`` of the folder's images, drawn by ``seed`` and the folder's name (a str seed is
    hashed with SHA-512 by random.Random: the same on every machine and Python run)."""
    if how_many < 1:
        return []
    images = sorted(concept.images, key=lambda image: str(image.path))
    random.Random(f"{seed}:{concept.folder.name}").shuffle(images)
    return sorted(images[:how_many], key=lambda image: str(image.path))


def _without(concept: ConceptReport, held: list[ImageEntry]) -> ConceptReport:
    """The folder as it trains: its counts and tags from the images it keeps."""
    held_paths = {image.path for image in held}
    kept = tuple(image for image in concept.images if image.path not in held_paths)
    return replace(
        concept,
        images=kept,
        small_images=tuple(path for path in concept.small_images if path not in held_paths),
        bucket_counts=dict(sorted(Counter(image.bucket for image in kept).items())),
        tag_frequency=count_tags(image.caption for image in kept),
    )


def _nothing_to_spare(fraction: float) -> Problem:
    return Problem(
        "dataset.validation_split",
        f"validation_split = {fraction:g} cannot hold out an image: every concept folder has only one, "
        "and each must keep one to train on",
        "add images, put held-out images in a validation_dir instead, or set validation_split = 0",
    )


def held_out_summary(report: DatasetReport) -> str:
    """``"2 images held out for the validation loss"``, or "" without any."""
    if not report.held_out:
        return ""
    return f"{count(len(report.held_out), 'image')} held out for the validation loss (never trained)"
