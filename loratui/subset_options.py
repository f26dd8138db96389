"""How the images of one subset are trained: their caption rules and their augmentation.

A subset is a concept folder of the kohya layout (``img/10_ohwx woman``) or a ``[[subsets]]`` table
of the run config (sd-scripts' dataset config). Its options default to the ``[dataset]`` section's;
a ``[[subsets]]`` table may set its own. Each scanned image carries its subset's options
(:attr:`loratui.dataset.ImageEntry.options`), so the engine applies them image by image.

This module never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SubsetOptions:
    """sd-scripts' per-subset caption and augmentation options, under their sd-scripts names."""

    shuffle_caption: bool = False
    keep_tokens: int = 0
    keep_tokens_separator: str = ""
    caption_prefix: str = ""
    caption_suffix: str = ""
    caption_dropout_rate: float = 0.0
    caption_dropout_every_n_epochs: int = 0
    caption_tag_dropout_rate: float = 0.0
    flip_aug: bool = False
    random_crop: bool = False

    @property
    def captions_vary(self) -> bool:
        """True when an image's caption may differ from one step to the next (a cached text encoder
        output would then be wrong)."""
        return bool(
            self.shuffle_caption
            or self.caption_dropout_rate
            or self.caption_dropout_every_n_epochs
            or self.caption_tag_dropout_rate
        )

    @property
    def pixels_vary(self) -> bool:
        """True when an image's pixels may differ from one step to the next (random crops)."""
        return self.random_crop


OPTION_NAMES = tuple(SubsetOptions.__dataclass_fields__)


def subset_options(dataset: object, **overrides: object) -> SubsetOptions:
    """The options of the ``[dataset]`` section (a DatasetSettings), with a subset's own ``overrides``."""
    values = {name: getattr(dataset, name, default) for name, default in _defaults().items()}
    values.update(overrides)
    return SubsetOptions(**values)  # type: ignore[arg-type]


def _defaults() -> dict[str, object]:
    plain = SubsetOptions()
    return {name: getattr(plain, name) for name in OPTION_NAMES}
