"""The check's rules for the caption options (loratui/captions.py): a dropout that drops every
caption, a text encoder output cache for captions that change at every step, keep_tokens that
keeps a whole caption, a token length FLUX.1 ignores.

The [dataset] section's values are judged by rules registered with :func:`loratui.rules.rule`
(imported at the end of that module); :func:`dataset_caption_problems` judges each scanned image
with its subset's options, after the scan (``loratui.check.check_run`` calls it).

Torch-free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loratui import captions
from loratui.errors import Problem, error, note, warning
from loratui.quantities import count
from loratui.rules import rule
from loratui.subset_options import SubsetOptions, subset_options

if TYPE_CHECKING:
    from loratui.config import RunConfig
    from loratui.dataset import DatasetReport, ImageEntry

_DROPOUT_FIX = "use a small fraction such as 0.05 (one caption in twenty dropped), or 0 for none"


@rule("dataset.caption_dropout_rate")
def _every_caption_dropped(cfg: RunConfig) -> list[Problem]:
    if cfg.dataset.caption_dropout_rate < 1:
        return []
    return [error("dataset.caption_dropout_rate", _all_dropped_message("every image"), _DROPOUT_FIX)]


def _all_dropped_message(whose: str) -> str:
    return (
        f"caption_dropout_rate 1 trains {whose} with an empty caption at every step: the LoRA would never "
        "learn its captions or trigger words"
    )


@rule(
    "dataset.cache_text_encoder_outputs",
    "dataset.shuffle_caption",
    "dataset.caption_tag_dropout_rate",
)
def _cache_of_changing_captions(cfg: RunConfig) -> list[Problem]:
    """A cache keeps one encoding per caption; a shuffle or a tag dropout makes a new caption at
    nearly every step (sd-scripts refuses them with its cache too). A caption dropout only adds the
    empty caption, which is cached too."""
    mode = cfg.dataset.cache_text_encoder_outputs
    reason = _changing(subset_options(cfg.dataset))
    if mode == "off" or not reason:
        return []
    return [_cache_error(mode, reason, "every image")]


def _changing(options: SubsetOptions) -> str:
    """The setting that makes the captions change at every step, in words; "" when none does."""
    if options.shuffle_caption:
        return "shuffle_caption is on"
    if options.caption_tag_dropout_rate > 0:
        return f"caption_tag_dropout_rate is {options.caption_tag_dropout_rate:g}"
    return ""


def _cache_error(mode: str, reason: str, whose: str) -> Problem:
    message = (
        f'cache_text_encoder_outputs "{mode}" encodes each caption once before training, but {reason}: the '
        f"captions of {whose} change at every step and a cache would train stale ones"
    )
    setting_off = "shuffle_caption = false" if reason.startswith("shuffle") else "caption_tag_dropout_rate = 0"
    fix = (
        'set cache_text_encoder_outputs = "off" (the text encoders then encode each step\'s captions), '
        f"or {setting_off}"
    )
    return error("dataset.cache_text_encoder_outputs", message, fix)


@rule("dataset.keep_tokens", "dataset.shuffle_caption", "dataset.caption_tag_dropout_rate")
def _keep_tokens_without_shuffle(cfg: RunConfig) -> list[Problem]:
    """keep_tokens only says which tags a shuffle or a tag dropout leaves alone (as in sd-scripts)."""
    data = cfg.dataset
    if not data.keep_tokens or data.shuffle_caption or data.caption_tag_dropout_rate > 0:
        return []
    message = (
        f"keep_tokens {data.keep_tokens} has no effect: it keeps tags in place when shuffle_caption or "
        "caption_tag_dropout_rate moves or drops the others, and both are off"
    )
    return [note("dataset.keep_tokens", message, "set shuffle_caption = true if the tags should be shuffled")]


@rule("dataset.max_token_length", "model.family")
def _token_length_for_flux(cfg: RunConfig) -> list[Problem]:
    """sd-scripts warns that FLUX.1 does not use --max_token_length, and trains on."""
    length = cfg.dataset.max_token_length
    if cfg.model.family != "flux" or length == 75:
        return []
    message = (
        f"max_token_length {length} is not used by FLUX.1: its CLIP-L reads 75 tokens, its T5-XXL "
        "model.t5xxl_max_token_length"
    )
    return [warning("dataset.max_token_length", message, "remove it (or set it to 75)")]


# ---------------------------------------------------------------------------------------------
# After the scan: each image with its subset's options


def dataset_caption_problems(cfg: RunConfig, dataset: DatasetReport) -> list[Problem]:
    """The problems of the captions as each image's subset trains them. A subset's own options
    (a [[subsets]] table) are judged here; the [dataset] section's, by the rules above."""
    entries = [
        entry for group in (dataset.concepts, dataset.reg_concepts) for concept in group for entry in concept.images
    ]
    section = subset_options(cfg.dataset)
    own = [entry for entry in entries if entry.options != section]  # images of a subset with options of its own
    return [
        *_subset_dropout_problems(own),
        *_subset_cache_problems(cfg, own),
        *_keep_tokens_problems(entries),
    ]


def _by_concept(entries: list[ImageEntry]) -> dict[str, ImageEntry]:
    """One image of each concept (subset) among ``entries``."""
    return {entry.concept: entry for entry in reversed(entries)}


def _subset_dropout_problems(entries: list[ImageEntry]) -> list[Problem]:
    dropped = _by_concept([entry for entry in entries if entry.options.caption_dropout_rate >= 1])
    return [
        error("dataset.caption_dropout_rate", _all_dropped_message(f"the images of {concept!r}"), _DROPOUT_FIX)
        for concept in dropped
    ]


def _subset_cache_problems(cfg: RunConfig, entries: list[ImageEntry]) -> list[Problem]:
    mode = cfg.dataset.cache_text_encoder_outputs
    if mode == "off":
        return []
    changing = _by_concept([entry for entry in entries if not captions.cacheable(entry.options)])
    return [
        _cache_error(mode, _changing(entry.options), f"the images of {concept!r}")
        for concept, entry in changing.items()
    ]


def _keep_tokens_problems(entries: list[ImageEntry]) -> list[Problem]:
    """keep_tokens above a caption's tag count keeps every tag of it in place: nothing of it is
    shuffled or dropped (sd-scripts trains it so, silently). One warning, one example."""
    short = [entry for entry in entries if _keeps_whole_caption(entry)]
    if not short:
        return []
    example = short[0]
    keep = example.options.keep_tokens
    tags = captions.tag_count(captions.fixed_caption(example.caption, example.options))
    message = (
        f"keep_tokens {keep} keeps every tag of {count(len(short), 'caption')} in place, so nothing of "
        f"{'it' if len(short) == 1 else 'them'} is shuffled or dropped (e.g. the caption of {example.path} has "
        f"{count(tags, 'tag')})"
    )
    fix = "lower keep_tokens to the number of trigger tags each caption starts with (usually 1), or add tags"
    return [warning("dataset.keep_tokens", message, fix)]


def _keeps_whole_caption(entry: ImageEntry) -> bool:
    options = entry.options
    if not options.keep_tokens or not (options.shuffle_caption or options.caption_tag_dropout_rate > 0):
        return False
    caption = captions.fixed_caption(entry.caption, options)
    if options.keep_tokens_separator and options.keep_tokens_separator in caption:
        return False  # the separator decides, not keep_tokens
    return captions.tag_count(caption) < options.keep_tokens
