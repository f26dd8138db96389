"""Checkpoints beside their validation losses (loratui/core/checkpoint_losses.py), and the
validation losses kept by a re-attach that rebuilds the summary from events.jsonl."""

from __future__ import annotations

from loratui.core.checkpoint_losses import best_checkpoint, checkpoint_losses
from loratui.core.protocol import encode, make_event
from loratui.core.summary import RunSummary
from loratui.jobs.rebuild import rebuild


def _checkpoint(step: int, kind: str, name: str) -> dict:
    return make_event("checkpoint", path=f"/runs/model/{name}", bytes=1000, epoch=step // 10, step=step, kind=kind)


def _events() -> list[dict]:
    """Validation at 0, 5, 10 (epoch 1, saved), 15, 20 (epoch 2, saved), then a stop at 23 and the final at 30."""
    losses = {0: 0.50, 5: 0.40, 10: 0.35, 15: 0.30, 20: 0.33, 30: 0.45}
    events = []
    for step in range(1, 31):
        events.append(make_event("step", step=step, epoch=step // 10 + 1, loss=0.4, loss_avg=0.4, lr={"unet": 1e-3},
                                 s_per_step=0.1, samples_per_s=10.0, elapsed_s=step * 0.1))  # fmt: skip
        if step in losses:
            events.append(make_event("validation", step=step, epoch=step // 10, loss=losses[step], images=2))
        if step in (10, 20):
            events.append(_checkpoint(step, "epoch", f"lora-{step // 10:06d}.safetensors"))
            events.append(_checkpoint(step, "state", f"lora-{step // 10:06d}-state"))
        if step == 23:
            events.append(_checkpoint(step, "manual", "lora-step00000023.safetensors"))
    events.insert(0, make_event("validation", step=0, epoch=0, loss=losses[0], images=2))
    events.append(_checkpoint(30, "final", "lora.safetensors"))
    return events


def _summary(events) -> RunSummary:
    summary = RunSummary()
    summary.apply_all(events)
    return summary


def test_each_lora_checkpoint_has_the_loss_measured_at_its_step_or_none():
    pairs = [(c.step, c.kind, loss) for c, loss in checkpoint_losses(_summary(_events()))]
    assert pairs == [(10, "epoch", 0.35), (20, "epoch", 0.33), (23, "manual", None), (30, "final", 0.45)]


def test_the_best_checkpoint_is_the_one_at_or_right_after_the_lowest_validation_loss():
    summary = _summary(_events())
    assert summary.best_validation == (15, 0.30)
    best = best_checkpoint(summary)
    assert best is not None and best.step == 20 and best.kind == "epoch"  # saved right after step 15


def test_no_best_checkpoint_without_validation_or_before_anything_is_saved_after_it():
    events = [e for e in _events() if e["type"] != "validation"]
    assert best_checkpoint(_summary(events)) is None
    assert all(loss is None for _, loss in checkpoint_losses(_summary(events)))
    early = [e for e in _events() if not (e["type"] == "checkpoint" and e["step"] > 10)]
    early.append(make_event("validation", step=12, epoch=1, loss=0.1, images=2))
    assert best_checkpoint(_summary(early)) is None  # the lowest loss came after the last file


def test_a_rebuilt_summary_keeps_the_validation_losses(tmp_path):
    events = _events()
    path = tmp_path / "events.jsonl"
    path.write_text("".join(encode(e) + "\n" for e in events))
    rebuilt, _ = rebuild(path, use_snapshot=False)
    assert rebuilt.validations == _summary(events).validations
    assert len(rebuilt.validations) == 6 and rebuilt.best_validation == (15, 0.30)
