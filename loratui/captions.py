"""The caption an image is trained with at one step, as kohya's sd-scripts makes it.

sd-scripts' order (``BaseDataset.process_caption``), applied to each image with its subset's
options (:class:`loratui.subset_options.SubsetOptions`):

1. ``caption_prefix`` and ``caption_suffix`` are joined to the caption with a space;
2. the whole caption is dropped (trained as ``""``) at ``caption_dropout_rate``, and in every
   epoch whose number (from 1) is a multiple of ``caption_dropout_every_n_epochs``;
3. with ``shuffle_caption`` or ``caption_tag_dropout_rate``, the caption is split at commas into
   tags: the part before ``keep_tokens_separator`` (and after a second one) stays fixed, or else
   the first ``keep_tokens`` tags do; the other tags are shuffled, then each is dropped at
   ``caption_tag_dropout_rate``; the tags are joined again with ", ".

The random draws come from a generator of their own, seeded by (training seed, epoch, batch,
position in the batch): a resumed run draws what an uninterrupted run would have drawn, and two
runs with the same seed train the same captions. The draws never touch the training's other
random numbers (noise, timesteps).

This module never imports torch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from loratui.subset_options import SubsetOptions

# sd-scripts' caption_separator: tags are separated by commas.
TAG_SEPARATOR = ","
# What the tags are joined with again after a shuffle or a tag dropout (sd-scripts' ", ").
TAG_JOINER = ", "


@dataclass(frozen=True)
class Tags:
    """A caption split for shuffling: ``fixed`` first, then ``flexible`` (shuffled, dropped at the
    tag rate), then ``fixed_suffix`` (after a second keep_tokens_separator)."""

    fixed: tuple[str, ...]
    flexible: tuple[str, ...]
    fixed_suffix: tuple[str, ...] = ()


def with_prefix_and_suffix(caption: str, options: SubsetOptions) -> str:
    """The caption with the subset's prefix and suffix, each joined by a space (as sd-scripts)."""
    if options.caption_prefix:
        caption = f"{options.caption_prefix} {caption}"
    if options.caption_suffix:
        caption = f"{caption} {options.caption_suffix}"
    return caption


def fixed_caption(caption: str, options: SubsetOptions) -> str:
    """The caption with none of the random changes: what the eval and validation losses read, and
    what a text encoder output cache holds besides the empty caption of a dropout."""
    return with_prefix_and_suffix(caption, options)


def split_tags(caption: str, options: SubsetOptions) -> Tags:
    """The caption's tags, those kept in place apart (sd-scripts' rules, empty tags included:
    with keep_tokens, ``"a,,b"`` is three tags as there)."""
    separator = options.keep_tokens_separator
    if separator and separator in caption:
        fixed_part, flexible_part = caption.split(separator, 1)
        suffix_part = ""
        if separator in flexible_part:
            flexible_part, suffix_part = flexible_part.split(separator, 1)
        return Tags(_nonempty_tags(fixed_part), _nonempty_tags(flexible_part), _nonempty_tags(suffix_part))
    tags = tuple(tag.strip() for tag in caption.strip().split(TAG_SEPARATOR))
    keep = max(0, options.keep_tokens)
    return Tags(tags[:keep], tags[keep:])


def _nonempty_tags(text: str) -> tuple[str, ...]:
    return tuple(tag.strip() for tag in text.split(TAG_SEPARATOR) if tag.strip())


def tag_count(caption: str) -> int:
    """How many comma-separated tags a caption has (what keep_tokens counts)."""
    return len(caption.strip().split(TAG_SEPARATOR))


def dropped_by_epoch(options: SubsetOptions, epoch: int) -> bool:
    """Whether every caption of the subset is dropped in ``epoch`` (counted from 1, as sd-scripts)."""
    every = options.caption_dropout_every_n_epochs
    return every > 0 and epoch % every == 0


def caption_rng(seed: int, epoch: int, batch: int, position: int) -> random.Random:
    """The generator of one image's draws at one step. A string seed is hashed with SHA-512 by
    Python (not by the per-process hash): the same on every machine and in every process."""
    return random.Random(f"loratui-caption:{seed}:{epoch}:{batch}:{position}")


def process_caption(caption: str, options: SubsetOptions, epoch: int, rng: random.Random) -> str:
    """The caption trained in ``epoch`` (from 1), its random choices drawn from ``rng``."""
    caption = with_prefix_and_suffix(caption, options)
    rate = options.caption_dropout_rate
    # Drawn only when the rate is set, as sd-scripts: a run without it draws the same shuffles.
    dropped = rate > 0 and rng.random() < rate
    if dropped or dropped_by_epoch(options, epoch):
        return ""
    if not (options.shuffle_caption or options.caption_tag_dropout_rate > 0):
        return caption
    tags = split_tags(caption, options)
    flexible = list(tags.flexible)
    if options.shuffle_caption:
        rng.shuffle(flexible)
    tag_rate = options.caption_tag_dropout_rate
    if tag_rate > 0:
        flexible = [tag for tag in flexible if rng.random() >= tag_rate]
    return TAG_JOINER.join([*tags.fixed, *flexible, *tags.fixed_suffix])


def step_caption(caption: str, options: SubsetOptions, seed: int, epoch: int, batch: int, position: int) -> str:
    """The caption of the image at ``position`` in batch ``batch`` (from 0) of ``epoch`` (from 1)."""
    if not options.captions_vary:
        return fixed_caption(caption, options)  # nothing random: no generator to make
    return process_caption(caption, options, epoch, caption_rng(seed, epoch, batch, position))


def cacheable(options: SubsetOptions) -> bool:
    """Whether the captions of a subset take few enough forms for a text encoder output cache:
    the fixed caption, and the empty one of a caption dropout. A shuffle or a tag dropout makes a
    new caption at nearly every step."""
    return not (options.shuffle_caption or options.caption_tag_dropout_rate > 0)


def cached_captions(caption: str, options: SubsetOptions) -> list[str]:
    """Every caption a cacheable image can be trained with."""
    drops = options.caption_dropout_rate > 0 or options.caption_dropout_every_n_epochs > 0
    return [fixed_caption(caption, options), *([""] if drops else [])]
