"""Every setting the wizard edits: its label, its kind of input, and the help text shown under it.

The help texts carry the advice of the guides users learnt LoRA training from (kohya's): the
numbers people look for (rank 128 for faces, 64 for anime; alpha at half the rank; 10-30 repeats;
5-10 epochs; batch 1 on small GPUs; AdamW8bit; LR 1 for the adaptive optimizers).

Parsing turns what is typed into the config's types; a mistake becomes a Problem naming the field
and the fix, shown under the field like every validation problem.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass

from loratui.config import (
    ATTENTION_CHOICES,
    CACHE_LATENTS_CHOICES,
    MIXED_PRECISION_CHOICES,
    MODEL_FAMILIES,
    OPTIMIZERS,
    SAVE_PRECISIONS,
    SCHEDULERS,
    RunConfig,
)
from loratui.errors import Problem

# Kinds of input: text and path (Input; path completes from the file system), dir (completes
# folders only), int and float (Input restricted to numbers), bool (Switch), choice (Select),
# args (Input of space-separated key=value entries).
KINDS = ("text", "path", "dir", "int", "float", "bool", "choice", "args")


@dataclass(frozen=True)
class FieldSpec:
    name: str  # "network.rank": the config section and key, also the `where` of its problems
    label: str
    kind: str
    help: str
    choices: tuple[str, ...] = ()
    placeholder: str = ""

    @property
    def section(self) -> str:
        return self.name.partition(".")[0]

    @property
    def key(self) -> str:
        return self.name.partition(".")[2]

    @property
    def dom_id(self) -> str:
        """The id of the input widget: ``f-network-rank``."""
        return "f-" + self.name.replace(".", "-").replace("_", "-")


def _f(name: str, label: str, kind: str, help: str, choices: tuple[str, ...] = (), placeholder: str = "") -> FieldSpec:
    return FieldSpec(name, label, kind, help, choices, placeholder)


FIELD_LIST: tuple[FieldSpec, ...] = (
    # -- model
    _f("model.path", "Base model", "path",
       "A diffusers folder, a .safetensors/.ckpt checkpoint, or loratui:tiny-sd (built in, for a quick test "
       "run). SD 1.5 models give the most convincing faces. Right arrow completes the path.",
       placeholder="(not set) e.g. models/v1-5-pruned.safetensors"),
    _f("model.family", "Model family", "choice",
       "sd1 for SD 1.x (SD1.5 and its fine-tunes), sd2 for SD 2.x. SDXL and Flux are not supported yet.",
       MODEL_FAMILIES),
    _f("model.v_prediction", "V-prediction", "bool",
       "Only for SD 2.x 768-v models; off for SD 1.5."),
    _f("model.tokenizer", "Tokenizer folder", "dir",
       "Only for single-file checkpoints: a folder with vocab.json and merges.txt, e.g. the tokenizer/ "
       "folder of a diffusers model of the same family. Empty = the local Hugging Face cache.",
       placeholder="(optional)"),
    _f("model.clip_skip", "CLIP skip", "int",
       "1 for photos and realistic models; 2 is common for anime models."),
    # -- dataset
    _f("dataset.image_dir", "Image folder", "dir",
       "The img folder that holds the <repeats>_<name> folders, e.g. img/15_ohwx woman/. Point at img, "
       "not at the concept folder inside it."),
    _f("dataset.reg_dir", "Regularisation", "dir",
       "Optional folder of class images, e.g. reg/1_woman/, so the model does not forget what other people "
       "look like. Less relevant for faces and anime characters. Empty = none.",
       placeholder="(none)"),
    _f("dataset.caption_extension", "Caption extension", "text",
       "Each image's caption is the same-named file with this extension, usually .txt. Without one, the "
       "folder name after the repeats is the caption."),
    _f("dataset.resolution", "Resolution", "int",
       "512 for SD 1.5, 768 for SD 2.x 768-v. Crop faces to 1:1 on the head and shoulders and upscale "
       "images smaller than this."),
    _f("dataset.enable_buckets", "Aspect buckets", "bool",
       "Group images by aspect ratio instead of cropping them to squares. The guides advise cropping all "
       "images to one size instead: buckets can cost quality and speed."),
    _f("dataset.min_bucket_reso", "Min bucket side", "int", "Smallest bucket side in pixels; 256 is usual."),
    _f("dataset.max_bucket_reso", "Max bucket side", "int", "Largest bucket side in pixels; twice the resolution is usual."),
    _f("dataset.bucket_reso_steps", "Bucket step", "int", "Bucket sides are multiples of this; 64 is usual."),
    _f("dataset.cache_latents", "Cache latents", "choice",
       "memory: encode each image once and keep it (fastest). disk: keep beside the images (less RAM, "
       "reused by the next run). off: encode every step.",
       CACHE_LATENTS_CHOICES),
    # -- training
    _f("training.batch_size", "Batch size", "int",
       "Images per step. 1 fits most GPUs, including 8 GB cards; raise it only when memory allows."),
    _f("training.epochs", "Epochs", "int",
       "Passes over the dataset; 5-10 is sensible. One LoRA is saved per epoch, so you can pick the best."),
    _f("training.max_train_steps", "Max train steps", "int",
       "0 = run for the epochs above. Set it (typically 3000-5000) to fix the length; it overrides epochs."),
    _f("training.gradient_accumulation_steps", "Grad. accumulation", "int",
       "Sum the gradients of this many batches per step: a larger effective batch without more memory. 1 = off."),
    _f("training.mixed_precision", "Mixed precision", "choice",
       "fp16 saves memory and is faster; bf16 is steadier on RTX 30xx/40xx and newer; no = full fp32.",
       MIXED_PRECISION_CHOICES),
    _f("training.gradient_checkpointing", "Grad. checkpointing", "bool",
       "Saves a lot of GPU memory for slower steps. Turn it on when a run does not fit."),
    _f("training.attention", "Attention", "choice",
       "sdpa: PyTorch's built-in memory-efficient attention. xformers: needs the xformers package; "
       "less memory, faster.",
       ATTENTION_CHOICES),
    _f("training.seed", "Seed", "int", "Same seed, same run. Any whole number from 0."),
    _f("training.noise_offset", "Noise offset", "float",
       "Helps very dark and very bright images; 0.05 is a common value. 0 = off."),
    _f("training.min_snr_gamma", "Min-SNR gamma", "float",
       "Min-SNR loss weighting; 5 is the usual value. 0 = off."),
    _f("training.max_grad_norm", "Max grad norm", "float", "Clip large gradients; 1.0 is usual, 0 = off."),
    _f("training.resume_from", "Resume from", "dir",
       "Continue a stopped run from its <name>-000004-state folder (in the model folder). Empty = a fresh run.",
       placeholder="(fresh run)"),
    # -- network
    _f("network.rank", "Rank (dim)", "int",
       "Capacity of the LoRA (kohya: network_dim). 128 is a good balance for faces; 64 suffices for anime "
       "characters and styles. Higher means larger files, not always better results."),
    _f("network.alpha", "Alpha", "float",
       "Scales the update by alpha / rank (kohya: network_alpha). Keep it at half the rank or less, "
       "e.g. 64 for rank 128."),
    _f("network.conv_rank", "Conv rank (LoCon)", "int",
       "Also train the convolution layers (LoCon); 0 = plain LoRA. 4-32 when used."),
    _f("network.conv_alpha", "Conv alpha", "float", "Alpha of the conv layers: 1, or half of the conv rank."),
    # -- optimizer
    _f("optimizer.name", "Optimizer", "choice",
       "AdamW8bit is the stable choice (less memory than AdamW). Adafactor suits small GPUs. DAdaptAdam "
       "(6 GB or more) and Prodigy find the learning rate themselves: set both LRs to 1.",
       OPTIMIZERS),
    _f("optimizer.args", "Optimizer args", "args",
       "Extra key=value arguments separated by spaces (kohya's optimizer_args). Adafactor: relative_step=True "
       "scale_parameter=True warmup_init=True. DAdaptAdam: decouple=True weight_decay=0.01 betas=0.9,0.999.",
       placeholder="(none)"),
    _f("optimizer.unet_lr", "U-Net LR", "float",
       "1e-4 for AdamW and AdamW8bit; 1 for DAdaptAdam, Prodigy and Adafactor with relative_step. Higher "
       "learns faster but overfits sooner."),
    _f("optimizer.text_encoder_lr", "Text encoder LR", "float",
       "Usually half the U-Net LR (5e-5); 0 freezes the text encoder. DAdaptAdam and Prodigy: the same as "
       "the U-Net LR, or 0."),
    _f("optimizer.scheduler", "LR schedule", "choice",
       "cosine_with_restarts (3-5 cycles) revisits the data with fresh peaks; constant suits the adaptive "
       "optimizers.",
       SCHEDULERS),
    _f("optimizer.warmup_steps", "Warmup steps", "int",
       "Steps over which the LR ramps up from 0; about 5-10% of the run, or 0."),
    _f("optimizer.scheduler_cycles", "Cycles", "int",
       "Restarts of cosine_with_restarts; 3-5 balances learning against settling too early."),
    _f("optimizer.scheduler_power", "Power", "float", "Only for the polynomial schedule; 1 = linear decay."),
    # -- output
    _f("output.name", "LoRA name", "text",
       "The file name: <name>.safetensors at the end, <name>-000001.safetensors for each saved epoch."),
    _f("output.output_dir", "Output folder", "dir", "Where the LoRA files go (the model folder)."),
    _f("output.log_dir", "Log folder", "dir", "Training logs, one folder per run."),
    _f("output.save_every_n_epochs", "Save every n epochs", "int",
       "1 saves every epoch, so you can compare them (an XYZ plot of epoch x LoRA weight in A1111) and keep "
       "the best. 0 = only the final file."),
    _f("output.save_precision", "Save precision", "choice",
       "fp16 files load everywhere and are half the size of float.", SAVE_PRECISIONS),
    _f("output.save_state", "Save state", "bool",
       "Also save a resumable state folder beside each checkpoint: larger, but a stopped run can continue."),
    _f("output.comment", "Comment", "text",
       "Free text stored in the LoRA's metadata, e.g. the trigger word.", placeholder="(optional)"),
)

FIELDS: dict[str, FieldSpec] = {spec.name: spec for spec in FIELD_LIST}


# ---------------------------------------------------------------------------------------------
# Typed text <-> config values


def get_value(cfg: RunConfig, name: str) -> object:
    section, _, key = name.partition(".")
    return getattr(getattr(cfg, section), key)


def set_value(cfg: RunConfig, name: str, value: object) -> None:
    section, _, key = name.partition(".")
    setattr(getattr(cfg, section), key, value)


def format_value(spec: FieldSpec, value: object) -> str:
    """The text an Input shows for a config value."""
    if spec.kind == "float":
        number = float(value)  # type: ignore[arg-type]
        short = f"{number:g}"
        return short if float(short) == number else repr(number)
    if spec.kind == "args":
        return " ".join(shlex.quote(item) if any(c.isspace() for c in item) else item for item in value)  # type: ignore[union-attr]
    return str(value)


def parse_value(spec: FieldSpec, text: str) -> object:
    """The config value for what was typed; raises FieldInputError naming the field and the fix."""
    kind = spec.kind
    if kind in ("int", "float"):
        cleaned = text.strip().replace("_", "")
        noun = "a whole number" if kind == "int" else "a number"
        if not cleaned:
            raise FieldInputError(Problem(spec.name, f"{spec.label} is empty", f"type {noun}"))
        try:
            number = int(cleaned) if kind == "int" else float(cleaned)
        except ValueError:
            raise FieldInputError(Problem(spec.name, f"{text.strip()!r} is not {noun}",
                                          f"type {noun}, e.g. {'32' if kind == 'int' else '1e-4'}")) from None
        if kind == "float" and not math.isfinite(number):
            raise FieldInputError(Problem(spec.name, f"{text.strip()!r} is not a finite number", "type a number such as 0.05"))
        return number
    if kind == "args":
        try:
            return shlex.split(text)
        except ValueError:
            raise FieldInputError(Problem(spec.name, "an opening quote is not closed",
                                          'close the quote, or write entries without quotes: key=value key2=value2')) from None
    if kind in ("path", "dir"):
        return text.strip()
    return text


class FieldInputError(ValueError):
    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem
