"""The check's rules for the LR schedule: a scheduler class by name (kohya's lr_scheduler_type) and
its arguments, the warmup as steps or as a ratio, and Adafactor's own schedule. Registered with
:func:`loratui.rules.rule` when rules.py imports this module.

sd-scripts (get_scheduler_fix) builds ``lr_scheduler_type``'s class with the optimizer and
``lr_scheduler_args`` and refuses a warmup with it; a float ``lr_warmup_steps`` below 1 is a ratio
of the steps; Adafactor with relative_step gets Adafactor's own schedule whatever lr_scheduler says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loratui.errors import Problem, UserError, error, warning
from loratui.optimizer_args import (
    adafactor_relative_step,
    canonical_optimizer,
    parse_optimizer_args,
    parse_scheduler_args,
)
from loratui.rules import rule
from loratui.scheduler_signatures import scheduler_args_problems, scheduler_type_problems

if TYPE_CHECKING:
    from loratui.config import RunConfig


def _adafactor_schedule(cfg: RunConfig) -> bool:
    """Adafactor sets its own step size and schedule (relative_step, on unless the args turn it off)."""
    if canonical_optimizer(cfg.optimizer.name) != "Adafactor":
        return False
    try:
        return adafactor_relative_step(parse_optimizer_args(cfg.optimizer.args))
    except UserError:
        return False  # the optimizer.args rule reports it


def schedule_text(cfg: RunConfig) -> str:
    """The schedule in words for the check's Optim line: "cosine schedule", "CosineAnnealingLR(T_max=100)"."""
    opt = cfg.optimizer
    if _adafactor_schedule(cfg):
        return "Adafactor's own schedule (relative_step)"
    if opt.scheduler_type.strip():
        return f"{opt.scheduler_type.strip()}({', '.join(opt.scheduler_args)})"
    warmup = f", warmup {opt.warmup_ratio:g} of the steps" if opt.warmup_ratio else ""
    return f"{opt.scheduler} schedule{warmup}"


@rule("optimizer.scheduler_type", "optimizer.scheduler_args")
def _scheduler_class(cfg: RunConfig) -> list[Problem]:
    opt = cfg.optimizer
    if not opt.scheduler_type.strip():
        if opt.scheduler_args:
            message = "scheduler_args are the arguments of scheduler_type's class, and no scheduler_type is set"
            return [error("optimizer.scheduler_args", message, "set scheduler_type, or remove scheduler_args")]
        return []
    found, problems = scheduler_type_problems(opt.scheduler_type)
    try:
        kwargs = parse_scheduler_args(opt.scheduler_args)
    except UserError as err:
        return [*problems, error(err.where, err.message, err.fix)]
    if found is not None:
        problems += scheduler_args_problems(found, kwargs)
    return problems


@rule("optimizer.warmup_steps", "optimizer.warmup_ratio")
def _one_warmup(cfg: RunConfig) -> list[Problem]:
    opt = cfg.optimizer
    if opt.warmup_steps and opt.warmup_ratio:
        # sd-scripts has one value, lr_warmup_steps: a step count, or a ratio when below 1.
        message = f"warmup_steps ({opt.warmup_steps}) and warmup_ratio ({opt.warmup_ratio:g}) are both set"
        return [error("optimizer.warmup_ratio", message, "keep one: set the other to 0")]
    return []


@rule(
    "optimizer.scheduler_type",
    "optimizer.warmup_steps",
    "optimizer.warmup_ratio",
    "optimizer.name",
    "optimizer.args",
)
def _schedule_conflicts(cfg: RunConfig) -> list[Problem]:
    opt = cfg.optimizer
    warmup = "optimizer.warmup_ratio" if opt.warmup_ratio else "optimizer.warmup_steps"
    has_warmup = bool(opt.warmup_steps or opt.warmup_ratio)
    if _adafactor_schedule(cfg):
        if opt.scheduler_type.strip():
            message = "Adafactor with relative_step has no LR for scheduler_type's class to schedule"
            fix = "remove scheduler_type, or add relative_step=False to optimizer.args"
            return [error("optimizer.scheduler_type", message, fix)]
        if has_warmup:
            # sd-scripts refuses a warmup with Adafactor's schedule; here it is said and left out.
            message = "the warmup is ignored: Adafactor with relative_step runs its own schedule, which has none"
            return [warning(warmup, message, "set it to 0, or add relative_step=False to optimizer.args")]
        return []
    if opt.scheduler_type.strip() and has_warmup:
        message = f"{opt.scheduler_type.strip()} has no warmup (sd-scripts refuses a warmup with lr_scheduler_type too)"
        fix = "set it to 0, or use optimizer.scheduler (e.g. cosine) for a schedule with warmup"
        return [error(warmup, message, fix)]
    if not opt.scheduler_type.strip() and opt.scheduler == "constant" and has_warmup:
        # diffusers' constant schedule takes no warmup (sd-scripts refuses the pair): it would be left out.
        message = "the warmup is ignored: the constant schedule has none"
        return [warning(warmup, message, 'set scheduler = "constant_with_warmup", or set it to 0')]
    return []
