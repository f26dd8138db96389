"""The wizard's steps, in order, and the settings each one shows."""

from __future__ import annotations

from dataclasses import dataclass

from loratui.tui.wizard.fields import FIELDS, FieldSpec


@dataclass(frozen=True)
class Step:
    id: str
    title: str
    intro: str
    fields: tuple[str, ...]
    panel_after: str = ""  # the step's live panel (dataset scan) goes after this field

    @property
    def specs(self) -> tuple[FieldSpec, ...]:
        return tuple(FIELDS[name] for name in self.fields)


STEPS: tuple[Step, ...] = (
    Step(
        "model", "Model",
        "The base model the LoRA is trained against. Start from a preset, or import a kohya_ss config with Ctrl+O.",
        ("model.path", "model.family", "model.v_prediction", "model.clip_skip", "model.tokenizer"),
    ),
    Step(
        "dataset", "Dataset",
        "Images go in img/<repeats>_<token class>/, e.g. img/15_ohwx woman/001.png with 001.txt as its caption. "
        "10-30 repeats per image are usual.",
        ("dataset.image_dir", "dataset.reg_dir", "dataset.caption_extension", "dataset.resolution",
         "dataset.enable_buckets", "dataset.min_bucket_reso", "dataset.max_bucket_reso",
         "dataset.bucket_reso_steps", "dataset.cache_latents"),
        panel_after="dataset.image_dir",
    ),
    Step(
        "training", "Training",
        "How long the run is: steps = images x repeats x epochs / batch size (the Dataset step shows the numbers).",
        ("training.batch_size", "training.epochs", "training.max_train_steps", "training.mixed_precision",
         "training.gradient_checkpointing", "training.attention", "training.gradient_accumulation_steps",
         "training.seed", "training.noise_offset", "training.min_snr_gamma", "training.max_grad_norm",
         "training.resume_from"),
    ),
    Step(
        "network", "Network",
        "The shape of the LoRA: its rank and alpha.",
        ("network.rank", "network.alpha", "network.conv_rank", "network.conv_alpha"),
    ),
    Step(
        "optimizer", "Optimizer",
        "How the weights are updated. AdamW8bit at 1e-4 is the safe start.",
        ("optimizer.name", "optimizer.unet_lr", "optimizer.text_encoder_lr", "optimizer.args",
         "optimizer.scheduler", "optimizer.scheduler_cycles", "optimizer.warmup_steps", "optimizer.scheduler_power"),
    ),
    Step(
        "output", "Output",
        "What the run writes, and where.",
        ("output.name", "output.output_dir", "output.log_dir", "output.save_every_n_epochs",
         "output.save_precision", "output.save_state", "output.comment"),
    ),
    Step(
        "review", "Review",
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
