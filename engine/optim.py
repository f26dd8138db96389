"""Optimizers and learning-rate schedules, by the names kohya users know.

Each optimizer takes the user's extra arguments (``optimizer.args``) as keyword arguments.
Parameter groups carry their own LR: ``unet`` and, when it is trained, ``text_encoder``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from loratui.errors import UserError
from loratui.optimizer_args import ADAFACTOR_DEFAULTS


def _adamw(groups, kwargs):
    return torch.optim.AdamW(groups, **kwargs)


def _adamw8bit(groups, kwargs):
    import bitsandbytes as bnb

    return bnb.optim.AdamW8bit(groups, **kwargs)


def _lion(groups, kwargs):
    from lion_pytorch import Lion

    return Lion(groups, **kwargs)


def _lion8bit(groups, kwargs):
    import bitsandbytes as bnb

    return bnb.optim.Lion8bit(groups, **kwargs)


def _adafactor(groups, kwargs):
    from transformers.optimization import Adafactor

    # sd-scripts' defaults: relative_step on unless the arguments say otherwise; scale_parameter and
    # warmup_init as transformers has them (True, False).
    kwargs = {**ADAFACTOR_DEFAULTS, **kwargs}
    if kwargs["relative_step"]:
        # Adafactor then computes its own step size and refuses an explicit lr: the LRs set are
        # only the initial value its schedule reports (make_scheduler), as in sd-scripts.
        for group in groups:
            group["lr"] = None
    return Adafactor(groups, **kwargs)


def _dadapt_adam(groups, kwargs):
    from dadaptation import DAdaptAdam

    return DAdaptAdam(groups, **kwargs)


def _prodigy(groups, kwargs):
    from prodigyopt import Prodigy

    return Prodigy(groups, **kwargs)


OPTIMIZERS: dict[str, Callable[[list[dict], dict], torch.optim.Optimizer]] = {
    "AdamW": _adamw,
    "AdamW8bit": _adamw8bit,
    "Adafactor": _adafactor,
    "DAdaptAdam": _dadapt_adam,
    "Prodigy": _prodigy,
    "Lion": _lion,
    "Lion8bit": _lion8bit,
}


def make_optimizer(name: str, groups: list[dict[str, Any]], kwargs: dict[str, Any]) -> torch.optim.Optimizer:
    """The 8-bit optimizers come from bitsandbytes, which (since 0.45) also runs them on CPU."""
    try:
        return OPTIMIZERS[name](groups, dict(kwargs))
    except TypeError as exc:  # an extra argument the optimizer does not take
        raise UserError(
            f"{name} does not accept these arguments: {exc}",
            "optimizer.args",
            f"remove or rename the argument; see the documentation of {name}",
            "config",
        ) from exc
    except (ValueError, AssertionError) as exc:  # a value it refuses (lion_pytorch asserts instead of raising)
        raise UserError(
            f"{name} refuses these arguments: {exc or 'a value is out of range'}",
            "optimizer.args",
            f"correct the value; see the documentation of {name}",
            "config",
        ) from exc
    except ImportError as exc:
        raise UserError(
            f"{name} needs a package that is not installed: {exc}",
            "optimizer.name",
            "reinstall loratui (pip install -e .) or choose another optimizer",
            "config",
        ) from exc


def make_scheduler(
    optimizer,
    name: str,
    warmup_steps: int,
    total_steps: int,
    cycles: int,
    power: float,
    scheduler_type: str = "",
    scheduler_args: dict[str, Any] | None = None,
    initial_lr: float = 0.0,
):
    """The LR schedule, as sd-scripts' get_scheduler_fix builds it: Adafactor's own when it sets
    its own step size (relative_step; ``initial_lr`` is what it reports before the first step),
    else ``scheduler_type``'s class built with the optimizer and ``scheduler_args``, else the
    named diffusers schedule. ``warmup_steps``: already resolved from optimizer.warmup_ratio."""
    from diffusers.optimization import get_scheduler

    if getattr(optimizer, "param_groups", [{}])[0].get("lr") is None:
        # Adafactor with relative_step sets its own step size; there is no LR to schedule.
        from transformers.optimization import AdafactorSchedule

        return AdafactorSchedule(optimizer, initial_lr)
    if scheduler_type:
        return _custom_scheduler(optimizer, scheduler_type, dict(scheduler_args or {}))
    return get_scheduler(
        name,
        optimizer=optimizer,
        num_warmup_steps=warmup_steps,
        num_training_steps=total_steps,
        num_cycles=cycles,
        power=power,
    )


def _custom_scheduler(optimizer, scheduler_type: str, kwargs: dict[str, Any]):
    """``CosineAnnealingLR`` (torch.optim.lr_scheduler's) or ``module.Class``, built with the optimizer
    and the arguments. The check has judged the name and the arguments without importing anything;
    what only the class itself can refuse is said here, at the field, before the first step."""
    import importlib

    module_name, _, class_name = scheduler_type.rpartition(".")
    try:
        module = importlib.import_module(module_name or "torch.optim.lr_scheduler")
        scheduler_class = getattr(module, class_name)
    except (ImportError, AttributeError) as exc:
        raise UserError(
            f"scheduler class {scheduler_type!r} cannot be loaded: {exc}",
            "optimizer.scheduler_type",
            "give a class of torch.optim.lr_scheduler (e.g. CosineAnnealingLR) or module.Class of an installed module",
            "config",
        ) from exc
    try:
        return scheduler_class(optimizer, **kwargs)
    except (TypeError, ValueError, AssertionError) as exc:
        raise UserError(
            f"{scheduler_type} refuses these arguments: {exc or 'a value is out of range'}",
            "optimizer.scheduler_args",
            f"correct the arguments; see the documentation of {scheduler_type}",
            "config",
        ) from exc


def current_lrs(optimizer, scheduler) -> dict[str, float]:
    """The LR each group runs with now. Adaptive optimizers (DAdapt, Prodigy) report lr x d,
    the step size they actually use, as kohya's logs do."""
    if type(scheduler).__name__ == "AdafactorSchedule":
        values = scheduler.get_lr()
    else:
        values = [g["lr"] for g in optimizer.param_groups]
    out = {}
    for group, lr in zip(optimizer.param_groups, values, strict=True):
        d = group.get("d")
        out[group.get("name", "unet")] = float(lr * d if d is not None else lr)
    return out
