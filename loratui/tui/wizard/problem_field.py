"""Which wizard field a launch problem belongs to, so that the wizard can show it there.

The check names a config field (``model.path``) or, for the dataset, a file or folder (the image
folder, one of its ``NN_name`` folders), or a dataset setting by its short name. A folder's
problem goes under the folder field that holds it, its path written in front of the message.
"""

from __future__ import annotations

from pathlib import Path

from loratui.config import RunConfig
from loratui.errors import Problem
from loratui.tui.wizard.dataset_panel import shown_path
from loratui.tui.wizard.fields import FIELDS

# The dataset scan names some settings without their section.
SHORT_NAMES = {"buckets": "dataset.enable_buckets", "caption_extension": "dataset.caption_extension"}
FOLDER_FIELDS = ("dataset.image_dir", "dataset.reg_dir")


def field_problem(problem: Problem, cfg: RunConfig) -> Problem | None:
    """``problem`` as shown under its field (``where`` is that field), or None when it concerns no
    field the wizard has."""
    where = problem.where
    if where in FIELDS:
        return problem
    if where in SHORT_NAMES:
        return Problem(SHORT_NAMES[where], problem.message, problem.fix, problem.severity)
    field = _folder_field(where, cfg)
    if field is None:
        return None
    path = Path(where)
    folder = cfg.resolve(getattr(cfg.dataset, field.partition(".")[2]))
    message = problem.message if path == folder else f"{shown_path(path, cfg.base_dir)}: {problem.message}"
    return Problem(field, message, problem.fix, problem.severity)


def _folder_field(where: str, cfg: RunConfig) -> str | None:
    """The folder field whose folder is or holds the path ``where`` (the deepest one)."""
    path = Path(where)
    if not where or not path.is_absolute():
        return None
    found: tuple[int, str] | None = None
    for field in FOLDER_FIELDS:
        value = getattr(cfg.dataset, field.partition(".")[2])
        if not value:
            continue
        folder = cfg.resolve(value)
        if (path == folder or folder in path.parents) and (found is None or len(folder.parts) > found[0]):
            found = (len(folder.parts), field)
    return found[1] if found else None
