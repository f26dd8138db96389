"""Scheduler classes by name (kohya's lr_scheduler_type/lr_scheduler_args), warmup as a ratio, and
Adafactor's defaults as sd-scripts has them: what the engine builds, and what the check refuses."""

from __future__ import annotations

import inspect

import pytest
import torch

from engine.optim import current_lrs, make_optimizer, make_scheduler
from loratui.config import RunConfig
from loratui.errors import UserError
from loratui.optimizer_args import parse_scheduler_args, warmup_steps_for
from loratui.scheduler_signatures import UNUSABLE, scheduler_type_problems, torch_scheduler_names
from loratui.validation import validate


def _groups(unet_lr=1e-3, te_lr=5e-4):
    torch.manual_seed(0)
    return [
        {"params": [torch.nn.Parameter(torch.randn(4, 4))], "lr": unet_lr, "name": "unet"},
        {"params": [torch.nn.Parameter(torch.randn(4, 4))], "lr": te_lr, "name": "text_encoder"},
    ]


def _lrs_per_step(optimizer, scheduler, steps):
    """The LR of each group at each step (flat: step 1's groups, step 2's...), as the training loop reads
    it (before scheduler.step())."""
    seen = []
    for _ in range(steps):
        for group in optimizer.param_groups:
            group["params"][0].grad = torch.ones_like(group["params"][0])
        optimizer.step()
        seen.extend(group["lr"] for group in optimizer.param_groups)
        scheduler.step()
    return seen


# ------------------------------------------------------------------------------ the engine


@pytest.mark.parametrize(
    ("scheduler_type", "args"),
    [
        ("CosineAnnealingLR", ["T_max=10", "eta_min=1e-5"]),
        ("torch.optim.lr_scheduler.StepLR", ["step_size=3", "gamma=0.5"]),
        ("MultiStepLR", ["milestones=[2,5]", "gamma=0.1"]),
        ("OneCycleLR", ["max_lr=[1e-3,5e-4]", "total_steps=12"]),
    ],
)
def test_a_scheduler_class_by_name_gives_the_lrs_of_torchs_class(scheduler_type, args):
    kwargs = parse_scheduler_args(args)
    optimizer = make_optimizer("AdamW", _groups(), {})
    scheduler = make_scheduler(optimizer, "cosine", 0, 12, 1, 1.0, scheduler_type=scheduler_type, scheduler_args=kwargs)
    ours = _lrs_per_step(optimizer, scheduler, 12)

    reference_optimizer = torch.optim.AdamW(_groups())
    torch_class = getattr(torch.optim.lr_scheduler, scheduler_type.rpartition(".")[2])
    reference = _lrs_per_step(reference_optimizer, torch_class(reference_optimizer, **kwargs), 12)
    assert type(scheduler) is torch_class
    assert ours == pytest.approx(reference)
    assert len(set(ours[::2])) > 1  # the schedule does change the LR


def test_scheduler_args_are_python_literals_as_sd_scripts_reads_them():
    assert parse_scheduler_args(["T_max=100", "eta_min=1e-6", "milestones=[1, 2]", "mode='triangular'"]) == {
        "T_max": 100,
        "eta_min": 1e-6,
        "milestones": [1, 2],
        "mode": "triangular",
    }
    assert parse_scheduler_args(["cycle_momentum=false", "anneal_strategy=linear"]) == {
        "cycle_momentum": False,
        "anneal_strategy": "linear",
    }
    with pytest.raises(UserError) as caught:
        parse_scheduler_args(["T_max"])
    assert caught.value.where == "optimizer.scheduler_args"


def test_the_engine_refuses_arguments_the_class_rejects_at_the_field():
    optimizer = make_optimizer("AdamW", _groups(), {})
    with pytest.raises(UserError) as caught:
        make_scheduler(optimizer, "cosine", 0, 10, 1, 1.0, scheduler_type="StepLR", scheduler_args={"stepsize": 3})
    assert caught.value.where == "optimizer.scheduler_args"
    with pytest.raises(UserError) as caught:
        make_scheduler(optimizer, "cosine", 0, 10, 1, 1.0, scheduler_type="no_such_module.X")
    assert caught.value.where == "optimizer.scheduler_type"


def test_warmup_ratio_is_a_share_of_the_total_steps():
    assert warmup_steps_for(7, 0.0, 100) == 7
    assert warmup_steps_for(0, 0.1, 100) == 10
    assert warmup_steps_for(0, 0.25, 30) == 7  # int(), as sd-scripts

    optimizer = make_optimizer("AdamW", _groups(unet_lr=1.0, te_lr=0.5), {})
    scheduler = make_scheduler(optimizer, "constant_with_warmup", warmup_steps_for(0, 0.2, 20), 20, 1, 1.0)
    lrs = _lrs_per_step(optimizer, scheduler, 6)[::2]  # the U-Net group's
    assert lrs == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.0])  # 4 warmup steps


def test_adafactor_without_arguments_sets_its_own_step_size_as_in_sd_scripts():
    optimizer = make_optimizer("Adafactor", _groups(), {})
    defaults = optimizer.defaults
    assert defaults["relative_step"] is True and defaults["scale_parameter"] is True
    assert defaults["warmup_init"] is False
    assert all(group["lr"] is None for group in optimizer.param_groups)
    scheduler = make_scheduler(optimizer, "cosine", 0, 10, 1, 1.0, initial_lr=1e-3)
    assert type(scheduler).__name__ == "AdafactorSchedule"  # the cosine schedule is not used
    assert set(current_lrs(optimizer, scheduler).values()) == {1e-3}  # the initial LR, before the first step
    for group in optimizer.param_groups:
        group["params"][0].grad = torch.ones_like(group["params"][0])
    optimizer.step()
    first = current_lrs(optimizer, scheduler)
    # Adafactor's own relative step: min(1e-2, 1/sqrt(step)) x the parameter's RMS (scale_parameter)
    for group in optimizer.param_groups:
        param = group["params"][0]
        rms = max(1e-3, float(param.detach().pow(2).mean().sqrt()))  # eps[1] floor; the param moved by a tiny step
        assert first[group["name"]] == pytest.approx(1e-2 * rms, rel=1e-2)


def test_adafactor_with_relative_step_off_uses_the_lrs_and_the_schedule():
    optimizer = make_optimizer("Adafactor", _groups(), {"relative_step": False, "scale_parameter": False})
    assert [group["lr"] for group in optimizer.param_groups] == [1e-3, 5e-4]
    scheduler = make_scheduler(optimizer, "linear", 0, 10, 1, 1.0)
    assert type(scheduler).__name__ == "LambdaLR"


# ------------------------------------------------------------------------------- the check


def test_the_checks_list_of_torch_schedulers_is_torchs_own():
    """The check reads torch's source without importing it; what it reads is what torch has."""
    listed = torch_scheduler_names()
    real = {
        name
        for name, value in vars(torch.optim.lr_scheduler).items()
        if isinstance(value, type)
        and issubclass(value, (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau))
        and not name.startswith("_")
        and value.__module__ == "torch.optim.lr_scheduler"
    }
    assert set(listed) == real - set(UNUSABLE)
    for name in listed:
        found, problems = scheduler_type_problems(name)
        assert not problems and found is not None and found.signature is not None
        parameters = list(inspect.signature(getattr(torch.optim.lr_scheduler, name).__init__).parameters.values())[2:]
        assert found.signature.names == tuple(p.name for p in parameters), name
        required = tuple(p.name for p in parameters if p.default is inspect.Parameter.empty)
        assert found.signature.required == required, name


def _problems(tmp_path, **changes):
    model = tmp_path / "sd15"
    model.mkdir(exist_ok=True)
    cfg = RunConfig(base_dir=tmp_path)
    cfg.model.path = str(model)
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        setattr(getattr(cfg, section), key, value)
    return [p for p in validate(cfg) if p.where.startswith("optimizer.")]


@pytest.mark.parametrize(
    ("changes", "where", "words"),
    [
        ({"optimizer__scheduler_type": "CosineAnealingLR"}, "optimizer.scheduler_type", "did you mean Cosine"),
        ({"optimizer__scheduler_type": "not_installed_pkg.Sched"}, "optimizer.scheduler_type", "no module"),
        ({"optimizer__scheduler_type": "ReduceLROnPlateau"}, "optimizer.scheduler_type", "needs a metric"),
        ({"optimizer__scheduler_type": "LambdaLR"}, "optimizer.scheduler_type", "Python function"),
        ({"optimizer__scheduler_type": "CosineAnnealingLR"}, "optimizer.scheduler_args", "needs T_max"),
        (
            {"optimizer__scheduler_type": "CosineAnnealingLR", "optimizer__scheduler_args": ["T_max=9", "eta=0"]},
            "optimizer.scheduler_args",
            "takes no argument 'eta'",
        ),
        ({"optimizer__scheduler_args": ["T_max=9"]}, "optimizer.scheduler_args", "no scheduler_type"),
        ({"optimizer__warmup_steps": 5, "optimizer__warmup_ratio": 0.1}, "optimizer.warmup_ratio", "both set"),
        (
            {
                "optimizer__scheduler_type": "StepLR",
                "optimizer__scheduler_args": ["step_size=3"],
                "optimizer__warmup_ratio": 0.1,
            },
            "optimizer.warmup_ratio",
            "no warmup",
        ),
        (
            {
                "optimizer__name": "Adafactor",
                "optimizer__scheduler_type": "StepLR",
                "optimizer__scheduler_args": ["step_size=3"],
            },
            "optimizer.scheduler_type",
            "no LR",
        ),
        ({"optimizer__warmup_ratio": 1.5}, "optimizer.warmup_ratio", "below 1"),
    ],
)
def test_the_check_refuses(tmp_path, changes, where, words):
    errors = [p for p in _problems(tmp_path, **changes) if p.severity == "error" and p.where == where]
    assert len(errors) == 1, _problems(tmp_path, **changes)
    assert words in errors[0].message + " " + errors[0].fix
    assert errors[0].fix


def test_the_check_accepts_a_good_scheduler_class_and_says_what_adafactor_ignores(tmp_path):
    good = {"optimizer__scheduler_type": "CosineAnnealingLR", "optimizer__scheduler_args": ["T_max=100"]}
    assert not [p for p in _problems(tmp_path, **good) if p.severity == "error"]
    problems = _problems(tmp_path, optimizer__name="Adafactor", optimizer__warmup_steps=5)
    assert [p.severity for p in problems if p.where == "optimizer.args"] == ["note"]
    (note,) = [p for p in problems if p.where == "optimizer.args"]
    assert "optimizer.scheduler (cosine) is ignored" in note.message and "relative_step=False" in note.fix
    assert [p.severity for p in problems if p.where == "optimizer.warmup_steps"] == ["warning"]
    off = _problems(tmp_path, optimizer__name="Adafactor", optimizer__args=["relative_step=False"])
    assert not [p for p in off if p.where == "optimizer.args"]


def test_the_check_imports_no_torch(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from loratui.scheduler_signatures import scheduler_type_problems, torch_scheduler_names\n"
        "assert torch_scheduler_names()\n"
        "scheduler_type_problems('torch.optim.lr_scheduler.StepLR')\n"
        "scheduler_type_problems('diffusers.optimization.get_cosine_schedule_with_warmup')\n"
        "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules, sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_warmup_the_constant_schedule_would_leave_out_is_said(tmp_path):
    problems = _problems(tmp_path, optimizer__scheduler="constant", optimizer__warmup_ratio=0.1)
    assert [(p.where, p.severity) for p in problems] == [("optimizer.warmup_ratio", "warning")]
    assert "constant_with_warmup" in problems[0].fix
    assert not _problems(tmp_path, optimizer__scheduler="constant_with_warmup", optimizer__warmup_ratio=0.1)
