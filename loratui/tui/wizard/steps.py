"""The wizard's steps, in order. The settings each one shows are those declared for it
(:attr:`loratui.params.Setting.step`), in the order of their declarations."""

from __future__ import annotations

from dataclasses import dataclass

from loratui.params import SETTINGS
from loratui.tui.wizard.fields import FIELDS, FieldSpec


@dataclass(frozen=True)
class Step:
    id: str
    title: str
    intro: str
    fields: tuple[str, ...]
    panel_after: str = ""  # the step's live panel (dataset scan) goes after this field
    short: str = ""  # the step bar's label where the titles do not fit on one line; "" = the title

    @property
    def short_title(self) -> str:
        return self.short or self.title

    @property
    def specs(self) -> tuple[FieldSpec, ...]:
        return tuple(FIELDS[name] for name in self.fields)


def _settings_of(step: str) -> tuple[str, ...]:
    return tuple(setting.name for setting in SETTINGS if setting.step == step)


STEPS: tuple[Step, ...] = (
    Step(
        "model",
        "Model",
        "The base model the LoRA is trained against. Start from a preset, or import a kohya_ss config with Ctrl+O.",
        _settings_of("model"),
    ),
    Step(
        "dataset",
        "Dataset",
        "Images go in img/<repeats>_<token class>/, e.g. img/15_ohwx woman/001.png with 001.txt as its caption. "
        "10-30 repeats per image are usual.",
        _settings_of("dataset"),
        short="Data",
        panel_after="dataset.image_dir",
    ),
    Step(
        "training",
        "Training",
        "How long the run is: steps = images x repeats x epochs / batch size (the Dataset step shows the numbers).",
        _settings_of("training"),
        short="Train",
    ),
    Step(
        "network",
        "Network",
        "The shape of the LoRA: its type (LoRA or a LyCORIS algorithm), rank and alpha.",
        _settings_of("network"),
        short="Net",
    ),
    Step(
        "optimizer",
        "Optimizer",
        "How the weights are updated. AdamW8bit at 1e-4 is the safe start.",
        _settings_of("optimizer"),
        short="Optim",
    ),
    Step(
        "output",
        "Output",
        "What the run writes, and where.",
        _settings_of("output"),
    ),
    Step(
        "sample",
        "Samples",
        "Images rendered with the LoRA as it trains, to see what it learns: a few prompts, every epoch or n steps.",
        _settings_of("sample"),
        short="Sample",
    ),
    Step(
        "review",
        "Review",
        "The config as it will be saved, and every problem left. Launch is refused while errors remain.",
        (),
    ),
)

STEP_IDS = tuple(step.id for step in STEPS)


def step_of(field: str) -> Step | None:
    """The step showing a field, or None for a problem that belongs to no field (a dataset file)."""
    for step in STEPS:
        if field in step.fields:
            return step
    return None
