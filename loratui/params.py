"""Every training setting, declared once.

One :class:`Setting` per key of the run config says everything loratui knows about it: where it
lives in the TOML file, its type, default, range or choices and unit, the label and the advice the
wizard shows, the wizard step and widget, its names in kohya's sd-scripts (command line) and in the
kohya_ss GUI (the JSON its Save button writes), the ``ss_*`` metadata key it is written under in
every LoRA file, and the model families it applies to. Everything else derives from this table:

- the config model and its TOML load/save (:mod:`loratui.config`),
- the range and choice checks (:mod:`loratui.validation`; rules across several settings are code,
  in :mod:`loratui.rules`),
- the wizard's fields and steps (:mod:`loratui.tui.wizard.fields`, ``steps``),
- the kohya_ss import (:mod:`loratui.kohya_import`) and the "kohya calls it X" hints,
- the LoRA metadata (:mod:`engine.metadata`),
- the reference of every setting, ``docs/config.md`` (:mod:`loratui.params_reference`).

Adding a setting: declare it here, use it in the engine, test it. ``tests/test_params.py`` fails
when a declaration lacks a part, and when ``docs/config.md`` is not regenerated
(``python -m loratui.params_reference > docs/config.md``).

This module never imports torch or Textual.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# ---------------------------------------------------------------------------------------------
# Choices, in the order a user reads them in a help text or an error's fix.

MODEL_FAMILIES = ("sd1", "sd2", "sdxl", "flux")
SD_FAMILIES = ("sd1", "sd2")  # one CLIP text encoder
UNET_FAMILIES = ("sd1", "sd2", "sdxl")  # a UNet trained on DDPM noise (Flux: a transformer on a rectified flow)
FLUX_ONLY = ("flux",)
FLUX_VARIANTS = ("auto", "dev", "schnell")
# sd-scripts' --timestep_sampling and --model_prediction_type (flux_train_network.py), and the
# density/loss weighting of its "sigma" sampling (--weighting_scheme, as diffusers' training_utils).
TIMESTEP_SAMPLINGS = ("sigma", "uniform", "sigmoid", "shift", "flux_shift")
MODEL_PREDICTION_TYPES = ("raw", "additive", "sigma_scaled")
WEIGHTING_SCHEMES = ("uniform", "none", "sigma_sqrt", "logit_normal", "mode", "cosmap")
LOSS_TYPES = ("l2", "l1", "huber", "smooth_l1")  # sd-scripts' --loss_type
HUBER_SCHEDULES = ("snr", "exponential", "constant")  # sd-scripts' --huber_schedule, its default first
BUILTIN_PREFIX = "loratui:"
BUILTIN_MODELS = (
    "loratui:tiny-sd",
    "loratui:sd15-random",
    "loratui:tiny-sdxl",
    "loratui:sdxl-random",
    "loratui:tiny-flux",
    "loratui:flux-random",
)
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
CACHE_LATENTS_CHOICES = ("off", "memory", "disk")
CACHE_TEXT_CHOICES = ("off", "memory", "disk")
MIXED_PRECISION_CHOICES = ("no", "fp16", "bf16")
ATTENTION_CHOICES = ("sdpa", "xformers")
OPTIMIZERS = ("AdamW", "AdamW8bit", "Adafactor", "DAdaptAdam", "Prodigy", "Lion", "Lion8bit")
# These estimate the step size themselves; the configured LR only scales their estimate.
ADAPTIVE_OPTIMIZERS = ("DAdaptAdam", "Prodigy")
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
SAVE_PRECISIONS = ("fp16", "bf16", "float")
# sd-scripts' --sample_sampler names (k_* are its aliases of the same diffusers schedulers). FLUX.1
# samples with its own flow-matching Euler whatever is chosen, as sd-scripts does.
SAMPLERS = (
    "euler_a",
    "euler",
    "ddim",
    "pndm",
    "lms",
    "heun",
    "dpm_2",
    "dpm_2_a",
    "dpmsolver",
    "dpmsolver++",
    "dpmsingle",
    "k_lms",
    "k_euler",
    "k_euler_a",
    "k_dpm_2",
    "k_dpm_2_a",
)
LOG_WITH_CHOICES = ("tensorboard", "none")
# The network types: kohya's LoRA (peft), or one of LyCORIS's algorithms (engine/lycoris_network.py trains them
# through the lycoris-lora library, as kohya's ``--network_module lycoris.kohya`` does).
LYCORIS_TYPES = ("locon", "loha", "lokr", "ia3")
NETWORK_TYPES = ("lora", *LYCORIS_TYPES)
LYCORIS_NAMES = {"locon": "LoCon", "loha": "LoHa", "lokr": "LoKr", "ia3": "iA3"}  # as users write them
LYCORIS_NETWORK_MODULE = "lycoris.kohya"  # ss_network_module of a LyCORIS file, as sd-scripts writes it
# LyCORIS algorithms loratui recognises but does not train yet (the kohya_ss GUI offers them).
NETWORK_TYPES_NOT_YET = ("dylora", "glora", "boft", "diag-oft", "full", "tlora")
# LyCORIS's built-in presets (lycoris.config.PRESET): which modules get a layer.
LYCORIS_PRESETS = (
    "full",
    "full-lin",
    "attn-mlp",
    "attn-only",
    "unet-only",
    "unet-transformer-only",
    "unet-convblock-only",
    "ia3",
)

# Widgets the wizard has: text and path (an Input; path completes from the file system), dir
# (completes folders only), int and float (an Input restricted to numbers), bool (a Switch),
# choice (a Select), args (an Input of space-separated key=value entries).
WIDGETS = ("text", "path", "dir", "int", "float", "bool", "choice", "args")

# The wizard's steps that show settings, in order (Review comes last and shows none).
WIZARD_STEPS = ("model", "dataset", "training", "network", "optimizer", "output", "sample")

# The TOML sections, in file order, with the one line that heads each in docs/config.md.
SECTIONS: dict[str, str] = {
    "model": "the base model the LoRA is trained against",
    "dataset": "the training images and how they are sized",
    "network": "the shape of the LoRA",
    "training": "how long the run is and how each step is computed",
    "optimizer": "the optimizer, its learning rates and the LR schedule",
    "output": "the files a run writes and where they go",
    "sample": "the sample images rendered during training, to see what the LoRA learns",
}


# ---------------------------------------------------------------------------------------------
# The declaration.


@dataclass(frozen=True)
class Absent:
    """A name a setting has no counterpart under (in kohya, or in the metadata), and why."""

    reason: str

    def __bool__(self) -> bool:
        return False


@dataclass(frozen=True)
class Condition:
    """When a setting matters at all; its range is not checked otherwise (e.g. bucket sides
    without buckets). ``text`` says it in words for the docs and the wizard's help."""

    text: str
    holds: Callable[[object], bool]  # takes the RunConfig


@dataclass(frozen=True)
class Setting:
    section: str
    key: str
    type: type  # bool, int, float, str, or list (a list of strings)
    default: object
    label: str  # the wizard's label
    help: str  # the advice shown under the field, in the docs and in `loratui check` fixes
    step: str  # the wizard step that shows it (WIZARD_STEPS)
    kohya: str | tuple[str, ...] | Absent  # sd-scripts' command-line name(s), without "--"
    kohya_gui: str | Absent  # the kohya_ss GUI's JSON key
    metadata: str | tuple[str, ...] | Absent  # the ss_* key(s) every LoRA file records it under
    widget: str = ""  # one of WIDGETS; "" = derived from the type and choices
    choices: tuple[str, ...] = ()
    not_yet: tuple[str, ...] = ()  # values loratui recognises but cannot do yet (refused with a clear line)
    minimum: float | None = None
    maximum: float | None = None
    above_minimum: bool = False  # the minimum itself is not allowed ("must be above 0")
    multiple_of: int | None = None
    range_fix: str = ""  # the advice when the value is out of range
    unit: str = ""
    placeholder: str = ""
    when: Condition | None = None
    free_text: bool = False  # tabs and newlines allowed (a comment), else no control characters
    kohya_gui_special: bool = False  # the GUI key needs more than a type conversion (kohya_import does it)
    metadata_value: Callable[[object], object] | None = None  # the value written, when not the setting's own
    families: tuple[str, ...] = MODEL_FAMILIES

    @property
    def name(self) -> str:
        """``network.rank``: the section and key, also the ``where`` of the setting's problems."""
        return f"{self.section}.{self.key}"

    @property
    def kind(self) -> str:
        """The wizard widget."""
        if self.widget:
            return self.widget
        if self.choices:
            return "choice"
        return {bool: "bool", int: "int", float: "float", list: "args"}.get(self.type, "text")

    @property
    def kohya_names(self) -> tuple[str, ...]:
        if isinstance(self.kohya, Absent):
            return ()
        return (self.kohya,) if isinstance(self.kohya, str) else self.kohya

    @property
    def metadata_keys(self) -> tuple[str, ...]:
        if isinstance(self.metadata, Absent):
            return ()
        return (self.metadata,) if isinstance(self.metadata, str) else self.metadata

    @property
    def dom_id(self) -> str:
        """The id of the wizard's input widget: ``f-network-rank``."""
        return "f-" + self.name.replace(".", "-").replace("_", "-")

    def range_text(self) -> str:
        """The allowed values in words: ``1..1024``, ``above 0``, ``0 or more``, ``multiple of 8``."""
        low, high = self.minimum, self.maximum
        parts = []
        if low is not None and high is not None and not self.above_minimum:
            parts.append(f"{_number(low)}..{_number(high)}")
        else:
            if low is not None:
                parts.append(f"above {_number(low)}" if self.above_minimum else f"{_number(low)} or more")
            if high is not None:
                parts.append(f"at most {_number(high)}")
        if self.multiple_of:
            parts.append(f"a multiple of {self.multiple_of}")
        return ", ".join(parts)


def _number(value: float) -> str:
    if not float(value).is_integer():
        return f"{value:g}"
    whole = int(value)
    return f"{whole:_}" if abs(whole) >= 100_000 else str(whole)  # 1_000_000: TOML reads it too


def _not_in_kohya(why: str) -> Absent:
    return Absent(why)


def _metadata_bool_of(values: tuple[str, ...]) -> Callable[[object], object]:
    return lambda value: value not in values


def _zero_is_absent(value: object) -> object:
    return value if value else None


def _zero_is_none_text(value: object) -> object:
    # sd-scripts writes the option as given: "None" when it was not given.
    return value if value else "None"


def _token_length_text(value: object) -> object:
    """sd-scripts' --max_token_length is None for 75 tokens, and its metadata says "None"."""
    return "None" if value == 75 else value


def _alpha_text(value: object) -> object:
    number = float(value)  # type: ignore[arg-type]
    return str(int(number)) if number.is_integer() else str(number)


_BUCKETS_ON = Condition("when enable_buckets is true", lambda cfg: cfg.dataset.enable_buckets)
_EPOCHS_COUNT = Condition("when max_train_steps is 0", lambda cfg: cfg.training.max_train_steps == 0)
_CONV_ON = Condition("when conv_rank is above 0", lambda cfg: cfg.network.conv_rank > 0)
_LYCORIS_ON = Condition("when type is a LyCORIS type", lambda cfg: cfg.network.type in LYCORIS_TYPES)
_LOKR_ON = Condition("when type is lokr", lambda cfg: cfg.network.type == "lokr")
_IA3_ON = Condition("when type is ia3", lambda cfg: cfg.network.type == "ia3")
_DENOISER_TRAINS = Condition(
    "when train_text_encoder_only is false", lambda cfg: not cfg.network.train_text_encoder_only
)
_MULTIRES_ON = Condition(
    "when multires_noise_iterations is above 0", lambda cfg: cfg.training.multires_noise_iterations > 0
)
_PATH_ONLY = Absent("a path on this machine, not a training fact")
_NO_SAMPLE_METADATA = Absent("samples are rendered from the LoRA; they do not change it")
_SCAN = Absent("the dataset scan writes ss_dataset_dirs, ss_reg_dataset_dirs and ss_tag_frequency instead")

# ---------------------------------------------------------------------------------------------
# The settings, section by section, in the order the wizard shows them and the TOML lists them.
# The advice is the guides' (kohya's): rank 128 for faces and 64 for anime; alpha at half the
# rank; 10-30 repeats; 5-10 epochs; batch 1 on small GPUs; AdamW8bit; LR 1 for adaptive optimizers.

SETTINGS: tuple[Setting, ...] = (
    # -- [model]
    Setting(
        "model",
        "path",
        str,
        "",
        "Base model",
        "A local diffusers folder, a .safetensors/.ckpt checkpoint (FLUX.1: flux1-dev.safetensors, the transformer "
        "alone), or loratui:tiny-sd, tiny-sdxl or tiny-flux (built in, for a quick test run). SD 1.5 models give the "
        "most convincing faces. Right arrow completes the path.",
        "model",
        kohya="pretrained_model_name_or_path",
        kohya_gui="pretrained_model_name_or_path",
        kohya_gui_special=True,
        metadata=Absent("ss_sd_model_name records the model's file name"),
        widget="path",
        placeholder="(not set) e.g. models/v1-5-pruned.safetensors",
    ),
    Setting(
        "model",
        "family",
        str,
        "sd1",
        "Model family",
        "sd1 for SD 1.x (SD1.5 and its fine-tunes), sd2 for SD 2.x, sdxl for SDXL (base 1.0 and its fine-tunes: "
        "Pony, Illustrious, NoobAI, Juggernaut), flux for FLUX.1 dev and schnell (the transformer file, with the "
        "AE, CLIP-L and T5-XXL files set below).",
        "model",
        kohya=Absent("sd-scripts has a flag per family (--v2) and a script per family (sdxl_...)"),
        kohya_gui="v2",
        kohya_gui_special=True,
        metadata="ss_base_model_version",
        choices=MODEL_FAMILIES,
        metadata_value=lambda family: {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0", "flux": "flux1"}.get(
            str(family), str(family)
        ),
    ),
    Setting(
        "model",
        "v_prediction",
        bool,
        False,
        "V-prediction",
        "Train with v-prediction. Only for SD 2.x 768-v models and v-prediction SDXL fine-tunes (with zero terminal "
        "SNR); off for SD 1.5 and SDXL base.",
        "model",
        kohya="v_parameterization",
        kohya_gui="v_parameterization",
        metadata="ss_v_parameterization",
        families=UNET_FAMILIES,
    ),
    Setting(
        "model",
        "clip_skip",
        int,
        1,
        "CLIP skip",
        "Which CLIP layer feeds the U-Net, counted from the end: 1 (the last) for photos and realistic models; "
        "2 is common for anime models.",
        "model",
        kohya="clip_skip",
        kohya_gui="clip_skip",
        metadata="ss_clip_skip",
        minimum=1,
        maximum=12,
        families=SD_FAMILIES,
        range_fix="use 1 (the usual value) or 2 (common for anime models)",
    ),
    Setting(
        "model",
        "tokenizer",
        str,
        "",
        "Tokenizer folder",
        "Only for single-file checkpoints: a folder with vocab.json and merges.txt (or tokenizer.json), e.g. "
        "the tokenizer/ folder of a diffusers model of the same family; SDXL: a folder with tokenizer/ and "
        "tokenizer_2/ (any SDXL diffusers folder). Empty = the local Hugging Face cache.",
        "model",
        kohya=Absent("sd-scripts downloads the tokenizer, or reads --tokenizer_cache_dir"),
        kohya_gui=Absent("the GUI has no tokenizer setting"),
        metadata=_PATH_ONLY,
        widget="dir",
        placeholder="(optional)",
    ),
    Setting(
        "model",
        "no_half_vae",
        bool,
        True,
        "VAE in float32",
        "Run the VAE (FLUX.1: the AE) in float32 whatever the precision: the SDXL VAE gives NaNs in fp16. Turn it off "
        "only with an fp16-safe VAE (e.g. sdxl-vae-fp16-fix baked into the model), to save memory when caching "
        "latents.",
        "model",
        kohya="no_half_vae",
        kohya_gui="sdxl_no_half_vae",
        kohya_gui_special=True,
        metadata=Absent("sd-scripts does not record it"),
    ),
    # -- [model], FLUX.1 only: the three files a BFL transformer file needs beside it, and how the
    # base weights are held. A diffusers FLUX.1 folder has them all inside, and needs none of the paths.
    Setting(
        "model",
        "flux_variant",
        str,
        "auto",
        "FLUX.1 variant",
        "dev (guidance-distilled: guidance is a model input) or schnell (4-step, no guidance input). auto tells "
        "them apart from the weights: dev has a guidance embedding.",
        "model",
        kohya=Absent("sd-scripts tells dev from schnell by the weights (a guidance_in layer)"),
        kohya_gui=Absent("the GUI tells dev from schnell by the weights"),
        metadata=Absent("written as ss_model_type, from the weights"),
        choices=FLUX_VARIANTS,
        families=FLUX_ONLY,
    ),
    Setting(
        "model",
        "ae_path",
        str,
        "",
        "AE file",
        "The FLUX.1 autoencoder, ae.safetensors (also called ae.sft). Empty when model.path is a diffusers FLUX.1 "
        "folder (its vae/ is used).",
        "model",
        kohya="ae",
        kohya_gui="ae",
        metadata=_PATH_ONLY,
        widget="path",
        placeholder="(in the model folder) e.g. models/ae.safetensors",
        families=FLUX_ONLY,
    ),
    Setting(
        "model",
        "clip_l_path",
        str,
        "",
        "CLIP-L file",
        "The CLIP-L text encoder, clip_l.safetensors. Empty when model.path is a diffusers FLUX.1 folder.",
        "model",
        kohya="clip_l",
        kohya_gui="clip_l",
        metadata=_PATH_ONLY,
        widget="path",
        placeholder="(in the model folder) e.g. models/clip_l.safetensors",
        families=FLUX_ONLY,
    ),
    Setting(
        "model",
        "t5xxl_path",
        str,
        "",
        "T5-XXL file",
        "The T5-XXL text encoder: t5xxl_fp16.safetensors, or t5xxl_fp8_e4m3fn.safetensors (half the memory with "
        "fp8_base; without it, its weights are loaded upcast). Empty when model.path is a diffusers FLUX.1 folder.",
        "model",
        kohya="t5xxl",
        kohya_gui="t5xxl",
        metadata=_PATH_ONLY,
        widget="path",
        placeholder="(in the model folder) e.g. models/t5xxl_fp16.safetensors",
        families=FLUX_ONLY,
    ),
    Setting(
        "model",
        "t5xxl_max_token_length",
        int,
        0,
        "T5 tokens",
        "How many T5 tokens a caption is padded or cut to. 0 = the model's own: 512 for dev, 256 for schnell. "
        "Fewer tokens train faster and use less memory when captions are short.",
        "model",
        kohya="t5xxl_max_token_length",
        kohya_gui="t5xxl_max_token_length",
        metadata=Absent("sd-scripts does not record it"),
        minimum=0,
        maximum=512,
        range_fix="use 0 (the model's own), or a length up to 512",
        families=FLUX_ONLY,
    ),
    Setting(
        "model",
        "apply_t5_attn_mask",
        bool,
        False,
        "T5 attention mask",
        "Mask the T5 padding tokens in T5 and in the transformer's attention. sd-scripts advises against it: few "
        "inference tools apply the mask.",
        "model",
        kohya="apply_t5_attn_mask",
        kohya_gui="apply_t5_attn_mask",
        metadata="ss_apply_t5_attn_mask",
        families=FLUX_ONLY,
    ),
    Setting(
        "model",
        "fp8_base",
        bool,
        False,
        "fp8 base weights",
        "Hold the frozen transformer and text encoders in float8 (e4m3fn), computed in the training precision: "
        "half the memory of bf16 for a small loss of precision. The usual way to train FLUX.1 on 16-24 GB.",
        "model",
        kohya="fp8_base",
        kohya_gui="fp8_base",
        metadata="ss_fp8_base",
        families=FLUX_ONLY,
    ),
    Setting(
        "model",
        "nf4_base",
        bool,
        False,
        "NF4 base weights",
        "Hold the frozen transformer in 4-bit NF4 (bitsandbytes; a CUDA GPU): a quarter of bf16's memory, at a "
        "larger loss of precision than fp8. Not with fp8_base.",
        "model",
        kohya=Absent("sd-scripts has no NF4 base"),
        kohya_gui=Absent("the GUI has no NF4 base"),
        metadata=Absent("sd-scripts has no NF4 base; loratui writes ss_nf4_base"),
        families=FLUX_ONLY,
    ),
    # -- [dataset]
    Setting(
        "dataset",
        "image_dir",
        str,
        "img",
        "Image folder",
        "The img folder that holds the <repeats>_<name> folders, e.g. img/15_ohwx woman/. Point at img, not at "
        "the concept folder inside it.",
        "dataset",
        kohya="train_data_dir",
        kohya_gui="train_data_dir",
        metadata=_SCAN,
        widget="dir",
    ),
    Setting(
        "dataset",
        "reg_dir",
        str,
        "",
        "Regularisation",
        "Optional folder of class images, e.g. reg/1_woman/, so the model does not forget what other people look "
        "like. Less relevant for faces and anime characters. Empty = none.",
        "dataset",
        kohya="reg_data_dir",
        kohya_gui="reg_data_dir",
        metadata=_SCAN,
        widget="dir",
        placeholder="(none)",
    ),
    Setting(
        "dataset",
        "caption_extension",
        str,
        ".txt",
        "Caption extension",
        "Each image's caption is the same-named file with this extension, usually .txt. Without one, the folder "
        "name after the repeats is the caption; .none-use-foldername (kohya_ss's value) captions every image "
        "with it.",
        "dataset",
        kohya="caption_extension",
        kohya_gui="caption_extension",
        kohya_gui_special=True,
        metadata="ss_caption_extension",
    ),
    Setting(
        "dataset",
        "resolution",
        int,
        512,
        "Resolution",
        "Training resolution in pixels (the side of a square image of the same area): 512 for SD 1.5, 768 for "
        "SD 2.x 768-v, 1024 for SDXL. Crop faces to 1:1 on the head and shoulders and upscale images smaller than "
        "this.",
        "dataset",
        kohya="resolution",
        kohya_gui="max_resolution",
        kohya_gui_special=True,
        metadata=Absent('written as ss_resolution "(512, 512)" and modelspec.resolution'),
        minimum=64,
        maximum=4096,
        multiple_of=8,
        unit="px",
        range_fix="use 512 for SD 1.x, 768 for SD 2.x 768-v models, 1024 for SDXL",
    ),
    Setting(
        "dataset",
        "enable_buckets",
        bool,
        True,
        "Aspect buckets",
        "Group images by aspect ratio instead of cropping them to squares. The guides advise cropping all images "
        "to one size instead: buckets can cost quality and speed.",
        "dataset",
        kohya="enable_bucket",
        kohya_gui="enable_bucket",
        metadata="ss_enable_bucket",
    ),
    Setting(
        "dataset",
        "min_bucket_reso",
        int,
        256,
        "Min bucket side",
        "Smallest bucket side in pixels; 256 is usual.",
        "dataset",
        kohya="min_bucket_reso",
        kohya_gui="min_bucket_reso",
        metadata="ss_min_bucket_reso",
        minimum=64,
        maximum=4096,
        unit="px",
        when=_BUCKETS_ON,
        range_fix="use 256 (the usual value)",
    ),
    Setting(
        "dataset",
        "max_bucket_reso",
        int,
        1024,
        "Max bucket side",
        "Largest bucket side in pixels; twice the resolution is usual.",
        "dataset",
        kohya="max_bucket_reso",
        kohya_gui="max_bucket_reso",
        metadata="ss_max_bucket_reso",
        minimum=64,
        maximum=8192,
        unit="px",
        when=_BUCKETS_ON,
        range_fix="use twice the resolution",
    ),
    Setting(
        "dataset",
        "bucket_reso_steps",
        int,
        64,
        "Bucket step",
        "Bucket sides are multiples of this many pixels; 64 is usual. SDXL needs a multiple of 32 (32 is usual), "
        "FLUX.1 one of 16. SD 1.x/2.x take any step (1 with bucket_no_upscale trains each image at its own size, "
        "as older kohya_ss presets do); a step that is not a multiple of 8 gets a warning.",
        "dataset",
        kohya="bucket_reso_steps",
        kohya_gui="bucket_reso_steps",
        metadata=Absent("sd-scripts does not record it"),
        minimum=1,
        maximum=512,
        unit="px",
        when=_BUCKETS_ON,
        range_fix="use 64 (the usual value) or 32",
    ),
    Setting(
        "dataset",
        "cache_latents",
        str,
        "memory",
        "Cache latents",
        "Keep the VAE latents. memory: encode each image once and keep it (fastest). disk: keep them beside the "
        "images (less RAM, reused by the next run). off: encode every step.",
        "dataset",
        kohya=("cache_latents", "cache_latents_to_disk"),
        kohya_gui="cache_latents",
        kohya_gui_special=True,
        metadata="ss_cache_latents",
        choices=CACHE_LATENTS_CHOICES,
        metadata_value=_metadata_bool_of(("off",)),
    ),
    Setting(
        "dataset",
        "cache_text_encoder_outputs",
        str,
        "off",
        "Cache text outputs",
        "Encode every caption once before training and move the text encoders off the GPU (SDXL: saves several GB). "
        "memory: keep the outputs in RAM. disk: in output_dir/.text-cache, reused by the next run. Needs frozen "
        "text encoders (network.train_unet_only).",
        "dataset",
        kohya=("cache_text_encoder_outputs", "cache_text_encoder_outputs_to_disk"),
        kohya_gui="sdxl_cache_text_encoder_outputs",
        kohya_gui_special=True,
        metadata=Absent("sd-scripts does not record it"),
        choices=CACHE_TEXT_CHOICES,
    ),
    Setting(
        "dataset",
        "validation_split",
        float,
        0.0,
        "Validation split",
        "Fraction of the training images held out to measure a validation loss on (0.1 = every tenth image): "
        "images the LoRA never trains on, so the loss tells when it starts to overfit. 0 = none. Taken from each "
        "concept folder (round(images x fraction), chosen by training.seed as kohya's validation_seed defaults to "
        "seed), never from reg images; each folder keeps one image to train on, and a split above 0 holds out at "
        "least one (kohya may hold out none). Held-out images count in no step (images x repeats).",
        "dataset",
        kohya="validation_split",
        kohya_gui="validation_split",
        metadata=Absent("sd-scripts does not record it"),
        minimum=0,
        maximum=0.9,
        range_fix="use 0 (no validation) or a fraction such as 0.1",
    ),
    Setting(
        "dataset",
        "validation_dir",
        str,
        "",
        "Validation images",
        "Optional folder of held-out images laid out as image_dir (val/1_ohwx woman/), measured for the validation "
        "loss and never trained on. Empty = none (or validation_split). With validation_split as well, both sets "
        "are measured together; the repeats in its folder names are ignored (each image is measured once).",
        "dataset",
        kohya=Absent("sd-scripts holds images out of the training set with validation_split only"),
        kohya_gui=Absent("the kohya_ss GUI has no validation folder"),
        metadata=_PATH_ONLY,
        widget="dir",
        placeholder="(none)",
    ),
    # -- [dataset] caption options (per image, every step: loratui/captions.py)
    Setting(
        "dataset",
        "shuffle_caption",
        bool,
        False,
        "Shuffle tags",
        "Shuffle a caption's comma-separated tags at every step, so that no tag is learned for its place. For "
        "captions that are tag lists (booru style); keep the trigger word in place with keep_tokens.",
        "dataset",
        kohya="shuffle_caption",
        kohya_gui="shuffle_caption",
        metadata="ss_shuffle_caption",
    ),
    Setting(
        "dataset",
        "keep_tokens",
        int,
        0,
        "Keep first tags",
        "How many comma-separated tags at the start of each caption stay in place when tags are shuffled or "
        "dropped (1 keeps the trigger word first). 0 = none.",
        "dataset",
        kohya="keep_tokens",
        kohya_gui="keep_tokens",
        metadata="ss_keep_tokens",
        minimum=0,
        maximum=1000,
        unit="tags",
        range_fix="use 0, or the number of tags your trigger words take (usually 1)",
    ),
    Setting(
        "dataset",
        "keep_tokens_separator",
        str,
        "",
        "Keep separator",
        'A mark in a caption (kohya uses "|||"): the tags before it stay in place, those after it are shuffled and '
        "dropped; a second mark fixes the tags after it too. Used instead of keep_tokens in captions that have it.",
        "dataset",
        kohya="keep_tokens_separator",
        kohya_gui=Absent("the kohya_ss GUI has no such field"),
        metadata=Absent("sd-scripts records it only per subset, in ss_datasets"),
        placeholder="(none)",
    ),
    Setting(
        "dataset",
        "caption_prefix",
        str,
        "",
        "Caption prefix",
        "Text put before every caption, with a space (e.g. the trigger word). Empty = none.",
        "dataset",
        kohya="caption_prefix",
        kohya_gui=Absent("the kohya_ss GUI has no such field"),
        metadata=Absent("sd-scripts records it only per subset, in ss_datasets"),
        placeholder="(none)",
    ),
    Setting(
        "dataset",
        "caption_suffix",
        str,
        "",
        "Caption suffix",
        "Text put after every caption, with a space. Empty = none.",
        "dataset",
        kohya="caption_suffix",
        kohya_gui=Absent("the kohya_ss GUI has no such field"),
        metadata=Absent("sd-scripts records it only per subset, in ss_datasets"),
        placeholder="(none)",
    ),
    Setting(
        "dataset",
        "caption_dropout_rate",
        float,
        0.0,
        "Caption dropout",
        "Fraction of the steps an image is trained with an empty caption (0.05 = one in twenty), so the LoRA also "
        "works without its trigger words. 0 = never.",
        "dataset",
        kohya="caption_dropout_rate",
        kohya_gui="caption_dropout_rate",
        metadata="ss_caption_dropout_rate",
        minimum=0,
        maximum=1,
        range_fix="use 0 (never) or a small fraction such as 0.05",
    ),
    Setting(
        "dataset",
        "caption_dropout_every_n_epochs",
        int,
        0,
        "Drop captions every n epochs",
        "Train every n-th epoch with empty captions (2: epochs 2, 4, 6...). 0 = never.",
        "dataset",
        kohya="caption_dropout_every_n_epochs",
        kohya_gui="caption_dropout_every_n_epochs",
        metadata="ss_caption_dropout_every_n_epochs",
        minimum=0,
        maximum=1_000_000,
        unit="epochs",
        range_fix="use 0 (never) or 2 or more",
    ),
    Setting(
        "dataset",
        "caption_tag_dropout_rate",
        float,
        0.0,
        "Tag dropout",
        "Fraction of the tags left out of a caption at each step (the tags kept in place by keep_tokens never are). "
        "0 = none.",
        "dataset",
        kohya="caption_tag_dropout_rate",
        kohya_gui=Absent("the kohya_ss GUI has no such field"),
        metadata="ss_caption_tag_dropout_rate",
        minimum=0,
        maximum=1,
        range_fix="use 0 (none) or a small fraction such as 0.1",
    ),
    Setting(
        "dataset",
        "max_token_length",
        int,
        75,
        "Max caption tokens",
        "How many tokens of a caption the CLIP text encoders read: 75, 150 or 225 (read in 75-token chunks, as "
        "kohya does). Longer captions are cut. Not for FLUX.1 (model.t5xxl_max_token_length is its T5's length).",
        "dataset",
        kohya="max_token_length",
        kohya_gui="max_token_length",
        metadata="ss_max_token_length",
        metadata_value=_token_length_text,
        minimum=75,
        maximum=225,
        multiple_of=75,
        unit="tokens",
        range_fix="use 75, 150 or 225",
        families=UNET_FAMILIES,
    ),
    # -- [dataset] image augmentation and bucketing
    Setting(
        "dataset",
        "flip_aug",
        bool,
        False,
        "Flip images",
        "Mirror each image left to right at random, half the steps (a new draw every step). Doubles the variety "
        "of poses; leave it off for faces and anything lopsided (a parting, text, a logo), which the LoRA would "
        "learn both ways. With cached latents, the mirrored latents are cached too.",
        "dataset",
        kohya="flip_aug",
        kohya_gui="flip_aug",
        metadata="ss_flip_aug",
    ),
    Setting(
        "dataset",
        "random_crop",
        bool,
        False,
        "Random crop",
        "Cut each image to its bucket at a random place every step instead of at the centre, so what the crop "
        "loses differs between steps. It changes the pixels every step, so latents cannot be cached: set "
        'cache_latents = "off" with it.',
        "dataset",
        kohya="random_crop",
        kohya_gui="random_crop",
        metadata="ss_random_crop",
    ),
    Setting(
        "dataset",
        "bucket_no_upscale",
        bool,
        False,
        "No upscaling",
        "Never enlarge an image: one smaller than the resolution gets a bucket of its own size (rounded down to "
        "bucket_reso_steps) instead of being upscaled to a full-size bucket; a larger one is shrunk to the "
        "resolution's area as usual. min_bucket_reso and max_bucket_reso are then not used (as in sd-scripts).",
        "dataset",
        kohya="bucket_no_upscale",
        kohya_gui="bucket_no_upscale",
        metadata="ss_bucket_no_upscale",
        when=_BUCKETS_ON,
    ),
    # -- [training]
    Setting(
        "training",
        "batch_size",
        int,
        1,
        "Batch size",
        "Images per step. 1 fits most GPUs, including 8 GB cards; raise it only when memory allows.",
        "training",
        kohya="train_batch_size",
        kohya_gui="train_batch_size",
        metadata="ss_batch_size_per_device",
        minimum=1,
        maximum=4096,
        unit="images",
        range_fix="use 1, or more if memory allows",
    ),
    Setting(
        "training",
        "epochs",
        int,
        10,
        "Epochs",
        "Passes over the dataset; 5-10 is sensible. One LoRA is saved per epoch, so you can pick the best. "
        "Ignored when max_train_steps is set.",
        "training",
        kohya="max_train_epochs",
        kohya_gui="epoch",
        metadata=Absent("ss_num_epochs records the epochs the run really has"),
        minimum=1,
        maximum=1_000_000,
        when=_EPOCHS_COUNT,
        range_fix="set epochs to 1 or more (10 is a common start)",
    ),
    Setting(
        "training",
        "max_train_steps",
        int,
        0,
        "Max train steps",
        "Total optimizer steps; 0 = run for the epochs above. Set it (typically 3000-5000) to fix the length; "
        "it overrides epochs.",
        "training",
        kohya="max_train_steps",
        kohya_gui="max_train_steps",
        metadata=Absent("ss_max_train_steps records the run's real total"),
        minimum=0,
        maximum=1_000_000_000,
        unit="steps",
        range_fix="use 0 (run for epochs) or a positive step count",
    ),
    Setting(
        "training",
        "mixed_precision",
        str,
        "bf16",
        "Mixed precision",
        "Precision of the forward pass. fp16 saves memory and is faster; bf16 is steadier on RTX 30xx/40xx and "
        "newer; no = full fp32 (the only choice without a CUDA GPU).",
        "training",
        kohya="mixed_precision",
        kohya_gui="mixed_precision",
        metadata="ss_mixed_precision",
        choices=MIXED_PRECISION_CHOICES,
    ),
    Setting(
        "training",
        "gradient_checkpointing",
        bool,
        False,
        "Grad. checkpointing",
        "Recompute activations in the backward pass: saves a lot of GPU memory for slower steps. Turn it on when "
        "a run does not fit.",
        "training",
        kohya="gradient_checkpointing",
        kohya_gui="gradient_checkpointing",
        metadata="ss_gradient_checkpointing",
    ),
    Setting(
        "training",
        "attention",
        str,
        "sdpa",
        "Attention",
        "sdpa: PyTorch's built-in memory-efficient attention. xformers: needs the xformers package; less memory, "
        "faster on older PyTorch.",
        "training",
        kohya=("sdpa", "xformers"),
        kohya_gui="xformers",
        kohya_gui_special=True,
        metadata=Absent("sd-scripts does not record it"),
        choices=ATTENTION_CHOICES,
    ),
    Setting(
        "training",
        "gradient_accumulation_steps",
        int,
        1,
        "Grad. accumulation",
        "Sum the gradients of this many batches per step: a larger effective batch without more memory. 1 = off.",
        "training",
        kohya="gradient_accumulation_steps",
        kohya_gui="gradient_accumulation_steps",
        metadata="ss_gradient_accumulation_steps",
        minimum=1,
        maximum=1024,
        unit="batches",
        range_fix="use 1 (no accumulation) or more",
    ),
    Setting(
        "training",
        "seed",
        int,
        42,
        "Seed",
        "Random seed: the same seed gives the same run. Any whole number from 0.",
        "training",
        kohya="seed",
        kohya_gui="seed",
        metadata="ss_seed",
        # numpy's and torch's seeding take 32 bits.
        minimum=0,
        maximum=2**32 - 1,
        range_fix="use a whole number from 0 to 4294967295, e.g. 42",
    ),
    Setting(
        "training",
        "noise_offset",
        float,
        0.0,
        "Noise offset",
        "Offset added to the noise; helps very dark and very bright images. 0.05 is a common value; 0 = off.",
        "training",
        kohya="noise_offset",
        kohya_gui="noise_offset",
        kohya_gui_special=True,
        metadata="ss_noise_offset",
        metadata_value=_zero_is_absent,
        minimum=0,
        maximum=1,
        range_fix="use 0 (off) or a small value such as 0.05",
        families=UNET_FAMILIES,
    ),
    Setting(
        "training",
        "min_snr_gamma",
        float,
        0.0,
        "Min-SNR gamma",
        "Min-SNR loss weighting; 5 is the usual value. 0 = off.",
        "training",
        kohya="min_snr_gamma",
        kohya_gui="min_snr_gamma",
        metadata="ss_min_snr_gamma",
        metadata_value=_zero_is_absent,
        minimum=0,
        maximum=1000,
        range_fix="use 0 (off) or 5 (the usual value)",
        families=UNET_FAMILIES,
    ),
    Setting(
        "training",
        "zero_terminal_snr",
        bool,
        False,
        "Zero terminal SNR",
        "Rescale the noise schedule so the last timestep is pure noise. Only with v-prediction, for models trained "
        "that way (v-prediction SDXL fine-tunes such as NoobAI-XL v-pred).",
        "training",
        kohya="zero_terminal_snr",
        kohya_gui=Absent("the GUI has no such field; add --zero_terminal_snr to its extra arguments"),
        metadata="ss_zero_terminal_snr",
        families=UNET_FAMILIES,
    ),
    # -- [training] noise, timesteps and loss (engine/noise.py, engine/losses.py)
    Setting(
        "training",
        "multires_noise_iterations",
        int,
        0,
        "Multires noise iterations",
        "Multi-resolution (pyramid) noise: adds this many coarser noise layers, so the model learns overall "
        "brightness and large shapes better. 6 to 10 is the usual range; 0 = off.",
        "training",
        kohya="multires_noise_iterations",
        kohya_gui="multires_noise_iterations",
        kohya_gui_special=True,  # the GUI passes it only with noise_offset_type "Multires"
        metadata="ss_multires_noise_iterations",
        metadata_value=_zero_is_absent,
        minimum=0,
        maximum=64,
        range_fix="use 0 (off) or 6 to 10",
        families=UNET_FAMILIES,
    ),
    Setting(
        "training",
        "multires_noise_discount",
        float,
        0.3,
        "Multires noise discount",
        "How much each coarser layer of multires noise counts relative to the one before (0.3 is sd-scripts' "
        "default; higher keeps more low-frequency noise).",
        "training",
        kohya="multires_noise_discount",
        kohya_gui="multires_noise_discount",
        kohya_gui_special=True,  # the GUI passes it only with noise_offset_type "Multires"
        metadata="ss_multires_noise_discount",
        minimum=0,
        maximum=1,
        when=_MULTIRES_ON,
        range_fix="use a value from 0 to 1, e.g. 0.3",
        families=UNET_FAMILIES,
    ),
    Setting(
        "training",
        "adaptive_noise_scale",
        float,
        0.0,
        "Adaptive noise scale",
        "Adds this times each image's mean latent value (absolute) to the noise offset; needs noise_offset above "
        "0. 0 = off.",
        "training",
        kohya="adaptive_noise_scale",
        kohya_gui="adaptive_noise_scale",
        kohya_gui_special=True,  # the GUI passes it only with noise_offset_type "Original"
        metadata="ss_adaptive_noise_scale",
        metadata_value=_zero_is_absent,
        minimum=-1,
        maximum=1,
        range_fix="use 0 (off) or a small value such as 0.005",
        families=UNET_FAMILIES,
    ),
    Setting(
        "training",
        "noise_offset_random_strength",
        bool,
        False,
        "Random noise offset strength",
        "Draw the noise offset's strength each step between 0 and noise_offset instead of using it as it is.",
        "training",
        kohya="noise_offset_random_strength",
        kohya_gui="noise_offset_random_strength",
        kohya_gui_special=True,  # the GUI passes it only with noise_offset_type "Original"
        metadata="ss_noise_offset_random_strength",
        families=UNET_FAMILIES,
    ),
    Setting(
        "training",
        "ip_noise_gamma",
        float,
        0.0,
        "Input perturbation noise",
        "Input perturbation: extra noise on the denoiser's input only (not on its target), a regulariser. "
        "0.1 is the paper's value; 0 = off.",
        "training",
        kohya="ip_noise_gamma",
        kohya_gui="ip_noise_gamma",
        metadata="ss_ip_noise_gamma",
        metadata_value=_zero_is_absent,
        minimum=0,
        maximum=1,
        range_fix="use 0 (off) or about 0.1",
    ),
    Setting(
        "training",
        "ip_noise_gamma_random_strength",
        bool,
        False,
        "Random perturbation strength",
        "Draw the input perturbation's strength each step between 0 and ip_noise_gamma.",
        "training",
        kohya="ip_noise_gamma_random_strength",
        kohya_gui="ip_noise_gamma_random_strength",
        metadata="ss_ip_noise_gamma_random_strength",
    ),
    Setting(
        "training",
        "min_timestep",
        int,
        0,
        "Min timestep",
        "The lowest timestep trained (0 = the least noise). Raising it skips fine detail; 0 trains the whole range.",
        "training",
        kohya="min_timestep",
        kohya_gui="min_timestep",
        metadata=Absent("sd-scripts records the range as modelspec.timestep_range, which loratui does not write"),
        minimum=0,
        maximum=999,
        range_fix="use 0 (the whole range) or a value below max_timestep",
        families=UNET_FAMILIES,
    ),
    Setting(
        "training",
        "max_timestep",
        int,
        1000,
        "Max timestep",
        "One past the highest timestep trained (1000 = up to pure noise, the whole range). Lowering it skips "
        "composition.",
        "training",
        kohya="max_timestep",
        kohya_gui="max_timestep",
        kohya_gui_special=True,  # the GUI's 0 means sd-scripts' default, 1000
        metadata=Absent("sd-scripts records the range as modelspec.timestep_range, which loratui does not write"),
        minimum=1,
        maximum=1000,
        range_fix="use 1000 (the whole range) or a value above min_timestep",
        families=UNET_FAMILIES,
    ),
    Setting(
        "training",
        "loss_type",
        str,
        "l2",
        "Loss type",
        "l2 (mean squared error, the usual); l1; huber and smooth_l1 are l2 for small errors and l1 for large "
        "ones (less pulled by outliers), their threshold set by huber_schedule and huber_c.",
        "training",
        kohya="loss_type",
        kohya_gui="loss_type",
        metadata="ss_loss_type",
        choices=LOSS_TYPES,
    ),
    Setting(
        "training",
        "huber_schedule",
        str,
        "snr",
        "Huber schedule",
        "How the huber/smooth_l1 threshold changes with the noise level: snr (sd-scripts' default), exponential "
        "or constant. FLUX.1 has no SNR schedule: use exponential or constant there.",
        "training",
        kohya="huber_schedule",
        kohya_gui="huber_schedule",
        metadata="ss_huber_schedule",
        choices=HUBER_SCHEDULES,
    ),
    Setting(
        "training",
        "huber_c",
        float,
        0.1,
        "Huber c",
        "The huber/smooth_l1 threshold between l2 and l1 behaviour (0.1 is sd-scripts' default).",
        "training",
        kohya="huber_c",
        kohya_gui="huber_c",
        metadata="ss_huber_c",
        minimum=0,
        above_minimum=True,
        maximum=1,
        range_fix="use a value above 0 and at most 1, e.g. 0.1",
    ),
    Setting(
        "training",
        "huber_scale",
        float,
        1.0,
        "Huber scale",
        "Scales the huber/smooth_l1 threshold of the exponential and constant schedules (1.0 is sd-scripts' default).",
        "training",
        kohya="huber_scale",
        kohya_gui="huber_scale",
        metadata="ss_huber_scale",
        minimum=0,
        above_minimum=True,
        maximum=1000,
        range_fix="use 1.0, or another value above 0",
    ),
    Setting(
        "training",
        "debiased_estimation_loss",
        bool,
        False,
        "Debiased estimation loss",
        "Weight each step's loss by 1/sqrt(SNR) (v-prediction: 1/(SNR+1)), so that noisy timesteps count more.",
        "training",
        kohya="debiased_estimation_loss",
        kohya_gui="debiased_estimation_loss",
        metadata="ss_debiased_estimation",
        families=UNET_FAMILIES,
    ),
    Setting(
        "training",
        "v_pred_like_loss",
        float,
        0.0,
        "V-pred-like loss",
        "Adds this much of a v-prediction-like loss to an epsilon model's loss; 0 = off. Not with v-prediction models.",
        "training",
        kohya="v_pred_like_loss",
        kohya_gui="v_pred_like_loss",
        metadata=Absent("sd-scripts does not record it"),
        minimum=0,
        maximum=10,
        range_fix="use 0 (off) or a small value such as 0.1",
        families=UNET_FAMILIES,
    ),
    Setting(
        "training",
        "scale_v_pred_loss_like_noise_pred",
        bool,
        False,
        "Scale v-pred loss like noise pred",
        "With a v-prediction model: scale its loss by SNR/(SNR+1), as a noise-predicting model's loss weighs "
        "timesteps. Only with model.v_prediction.",
        "training",
        kohya="scale_v_pred_loss_like_noise_pred",
        kohya_gui="scale_v_pred_loss_like_noise_pred",
        metadata=Absent("sd-scripts does not record it"),
        families=UNET_FAMILIES,
    ),
    Setting(
        "training",
        "prior_loss_weight",
        float,
        1.0,
        "Prior loss weight",
        "The loss weight of regularisation images against the training images' 1.0 (1.0 is the usual value).",
        "training",
        kohya="prior_loss_weight",
        kohya_gui="prior_loss_weight",
        metadata="ss_prior_loss_weight",
        minimum=0,
        maximum=100,
        range_fix="use 1.0, or another value from 0 to 100",
    ),
    # -- [training], FLUX.1 only: the rectified flow's timesteps and target, as sd-scripts names them.
    Setting(
        "training",
        "timestep_sampling",
        str,
        "sigma",
        "Timestep sampling",
        "How each step's noise level is drawn. sigma (sd-scripts' default): from the shifted schedule, by the "
        "weighting scheme; uniform; sigmoid of a normal (ai-toolkit's); shift: sigmoid, then shifted by "
        "discrete_flow_shift; flux_shift: shifted by the image size, as FLUX.1 samples. shift with 3.1582 is "
        "sd-scripts' advice.",
        "training",
        kohya="timestep_sampling",
        kohya_gui="timestep_sampling",
        metadata="ss_timestep_sampling",
        choices=TIMESTEP_SAMPLINGS,
        families=FLUX_ONLY,
    ),
    Setting(
        "training",
        "sigmoid_scale",
        float,
        1.0,
        "Sigmoid scale",
        "The scale of the normal draw under the sigmoid (sigmoid, shift and flux_shift sampling); 1.0 is usual.",
        "training",
        kohya="sigmoid_scale",
        kohya_gui="sigmoid_scale",
        metadata="ss_sigmoid_scale",
        minimum=0,
        above_minimum=True,
        maximum=100,
        range_fix="use 1.0",
        families=FLUX_ONLY,
    ),
    Setting(
        "training",
        "discrete_flow_shift",
        float,
        3.0,
        "Flow shift",
        "How far toward high noise shift and sigma sampling move the noise levels; 3.1582 matches FLUX.1 at 1024 px.",
        "training",
        kohya="discrete_flow_shift",
        kohya_gui="discrete_flow_shift",
        metadata="ss_discrete_flow_shift",
        minimum=0,
        above_minimum=True,
        maximum=100,
        range_fix="use 3.1582 (FLUX.1 at 1024 px) or 3.0",
        families=FLUX_ONLY,
    ),
    Setting(
        "training",
        "model_prediction_type",
        str,
        "sigma_scaled",
        "Prediction type",
        "How the transformer's output is read against the target (noise - image): raw as it is (sd-scripts' "
        "advice), additive plus the noisy input, sigma_scaled (sd-scripts' default) the noisy input minus sigma "
        "times the output, with the weighting scheme's loss weights.",
        "training",
        kohya="model_prediction_type",
        kohya_gui="model_prediction_type",
        metadata="ss_model_prediction_type",
        choices=MODEL_PREDICTION_TYPES,
        families=FLUX_ONLY,
    ),
    Setting(
        "training",
        "guidance_scale",
        float,
        3.5,
        "Guidance scale",
        "The guidance FLUX.1 dev is given while it trains (schnell has none). 1.0 is sd-scripts' advice for LoRA; "
        "3.5 its default.",
        "training",
        kohya="guidance_scale",
        kohya_gui="guidance_scale",
        metadata="ss_guidance_scale",
        minimum=0,
        maximum=100,
        range_fix="use 1.0",
        families=FLUX_ONLY,
    ),
    Setting(
        "training",
        "weighting_scheme",
        str,
        "uniform",
        "Weighting scheme",
        "With sigma sampling, the density the noise levels are drawn by (logit_normal, mode; else uniform); with "
        "sigma_scaled prediction, the loss weights (sigma_sqrt, cosmap; else none).",
        "training",
        kohya="weighting_scheme",
        kohya_gui="weighting_scheme",
        metadata="ss_weighting_scheme",
        choices=WEIGHTING_SCHEMES,
        families=FLUX_ONLY,
    ),
    Setting(
        "training",
        "logit_mean",
        float,
        0.0,
        "Logit mean",
        "The mean of the logit_normal weighting scheme.",
        "training",
        kohya="logit_mean",
        kohya_gui="logit_mean",
        metadata="ss_logit_mean",
        minimum=-10,
        maximum=10,
        range_fix="use 0.0",
        families=FLUX_ONLY,
    ),
    Setting(
        "training",
        "logit_std",
        float,
        1.0,
        "Logit std",
        "The standard deviation of the logit_normal weighting scheme.",
        "training",
        kohya="logit_std",
        kohya_gui="logit_std",
        metadata="ss_logit_std",
        minimum=0,
        above_minimum=True,
        maximum=10,
        range_fix="use 1.0",
        families=FLUX_ONLY,
    ),
    Setting(
        "training",
        "mode_scale",
        float,
        1.29,
        "Mode scale",
        "The scale of the mode weighting scheme.",
        "training",
        kohya="mode_scale",
        kohya_gui="mode_scale",
        metadata="ss_mode_scale",
        minimum=-1,
        maximum=1.75,
        range_fix="use 1.29 (the mode scheme is a density only between -1 and 1.75)",
        families=FLUX_ONLY,
    ),
    Setting(
        "training",
        "blocks_to_swap",
        int,
        0,
        "Blocks to swap",
        "Keep this many of the transformer's blocks in CPU memory and stream each to the GPU when it runs: less "
        "VRAM, slower steps. 16 fits FLUX.1 on 12 GB with AdamW8bit; 0 = all on the GPU. Needs "
        "gradient_checkpointing; not with nf4_base.",
        "training",
        kohya="blocks_to_swap",
        kohya_gui="blocks_to_swap",
        metadata=Absent("sd-scripts does not record it"),
        minimum=0,
        maximum=35,
        range_fix="use 0 (none) up to 35; 16 for a 12 GB card",
        families=FLUX_ONLY,
    ),
    Setting(
        "training",
        "cpu_offload_checkpointing",
        bool,
        False,
        "Offload checkpoints",
        "Only with gradient_checkpointing: keep the checkpointed activations in CPU memory, about 1 GB less VRAM, "
        "about 15 % slower. Not with blocks_to_swap.",
        "training",
        kohya="cpu_offload_checkpointing",
        kohya_gui="cpu_offload_checkpointing",
        metadata=Absent("sd-scripts does not record it"),
        families=FLUX_ONLY,
    ),
    Setting(
        "training",
        "max_grad_norm",
        float,
        1.0,
        "Max grad norm",
        "Clip the gradient norm to this value; 1.0 is usual, 0 = no clipping.",
        "training",
        kohya="max_grad_norm",
        kohya_gui="max_grad_norm",
        metadata="ss_max_grad_norm",
        minimum=0,
        maximum=1e6,
        range_fix="use 1.0, or 0 to turn clipping off",
    ),
    Setting(
        "training",
        "validate_every_n_steps",
        int,
        0,
        "Validate every n",
        "Measure the validation loss every n steps as well as at each epoch end (needs validation_split or "
        "validation_dir). 0 = at epoch ends only. Every held-out image is measured at the noise levels 0.1, 0.3, "
        "0.5, 0.7 and 0.9 with noise fixed for the run (kohya also fixes them), and before training on a fresh run; "
        "kohya's validate_every_n_epochs has no counterpart here: every epoch end measures.",
        "training",
        kohya="validate_every_n_steps",
        kohya_gui="validate_every_n_steps",
        metadata=Absent("sd-scripts does not record it"),
        minimum=0,
        maximum=1_000_000,
        unit="steps",
        range_fix="use 0 (epoch ends only) or a number of steps",
    ),
    Setting(
        "training",
        "resume_from",
        str,
        "",
        "Resume from",
        "A saved <name>-000004-state folder (in the model folder) to continue a stopped run from. Empty = a fresh run.",
        "training",
        kohya="resume",
        kohya_gui="resume",
        metadata=_PATH_ONLY,
        widget="dir",
        placeholder="(fresh run)",
    ),
    # -- [network]
    Setting(
        "network",
        "type",
        str,
        "lora",
        "Network type",
        "lora: kohya's LoRA (with conv_rank: LoCon), the most widely supported. locon, loha, lokr, ia3: LyCORIS's "
        "algorithms (LoHa and LoKr hold more in a small file; iA3 trains a scale per channel). Every LyCORIS file "
        "loads in ComfyUI, A1111/Forge and LyCORIS itself.",
        "network",
        kohya="network_module",
        kohya_gui="LoRA_type",
        kohya_gui_special=True,
        metadata=Absent("written as ss_network_module and the algo inside ss_network_args"),
        choices=NETWORK_TYPES,
        not_yet=NETWORK_TYPES_NOT_YET,
        families=UNET_FAMILIES,
    ),
    Setting(
        "network",
        "rank",
        int,
        32,
        "Rank (dim)",
        "Capacity of the LoRA: the size of the low-rank update. 128 is a good balance for faces; 64 suffices for "
        "anime characters and styles. Higher means larger files, not always better results.",
        "network",
        kohya="network_dim",
        kohya_gui="network_dim",
        metadata="ss_network_dim",
        minimum=1,
        maximum=1024,
        range_fix="use 4 to 128; 32 is a common start",
    ),
    Setting(
        "network",
        "alpha",
        float,
        16.0,
        "Alpha",
        "Scales the update by alpha / rank. Keep it at half the rank or less, e.g. 64 for rank 128.",
        "network",
        kohya="network_alpha",
        kohya_gui="network_alpha",
        metadata="ss_network_alpha",
        metadata_value=_alpha_text,
        minimum=0,
        above_minimum=True,
        maximum=1e6,
        range_fix="use half the rank, e.g. alpha = 16 for rank 32",
    ),
    Setting(
        "network",
        "conv_rank",
        int,
        0,
        "Conv rank (LoCon)",
        "Also train the 3x3 convolution layers (LoCon) with this rank; 0 = plain LoRA. 4-32 when used.",
        "network",
        kohya="conv_dim",
        kohya_gui="conv_dim",
        kohya_gui_special=True,
        metadata=Absent("written inside ss_network_args as conv_dim"),
        minimum=0,
        maximum=1024,
        range_fix="use 0 (no conv layers) or 4 to 32 for LoCon",
        families=UNET_FAMILIES,
    ),
    Setting(
        "network",
        "conv_alpha",
        float,
        1.0,
        "Conv alpha",
        "Alpha of the LoCon convolution layers: 1, or half of the conv rank.",
        "network",
        kohya="conv_alpha",
        kohya_gui="conv_alpha",
        kohya_gui_special=True,
        metadata=Absent("written inside ss_network_args as conv_alpha"),
        minimum=0,
        above_minimum=True,
        maximum=1e6,
        when=_CONV_ON,
        range_fix="use 1.0, or half of conv_rank",
        families=UNET_FAMILIES,
    ),
    Setting(
        "network",
        "train_unet_only",
        bool,
        False,
        "U-Net only",
        "Train the U-Net LoRA only and leave every text encoder frozen, whatever its learning rate. Recommended "
        "for SDXL (less memory, and the text outputs can be cached).",
        "network",
        kohya="network_train_unet_only",
        kohya_gui="network_train_unet_only",
        metadata=Absent("ss_training_text_encoder records whether any text encoder trained"),
    ),
    Setting(
        "network",
        "train_text_encoder_only",
        bool,
        False,
        "Text encoder only",
        "Train the text encoder LoRA only and leave the U-Net (FLUX.1: the transformer) frozen; the file then "
        "holds only lora_te keys. Needs a text encoder learning rate above 0.",
        "network",
        kohya="network_train_text_encoder_only",
        kohya_gui=Absent("the GUI derives it: unet_lr 0 with text_encoder_lr above 0"),
        metadata=Absent("ss_training_text_encoder records whether any text encoder trained"),
    ),
    # -- [network] LyCORIS types, dropouts, max norm (engine/lycoris_network.py)
    Setting(
        "network",
        "preset",
        str,
        "full",
        "LyCORIS preset",
        "Which layers a LyCORIS type trains: full (attention, MLP, convolutions), full-lin (no 3x3 convolutions), "
        "attn-mlp (attention and MLP, the lightest), unet-only, unet-transformer-only, unet-convblock-only (with "
        "train_unet_only). attn-only and ia3 name layers of other models and select none here.",
        "network",
        kohya=Absent("inside network_args as preset"),
        kohya_gui="LyCORIS_preset",
        kohya_gui_special=True,  # what it does depends on LoRA_type (kohya_import reads it)
        metadata=Absent("written inside ss_network_args as preset"),
        choices=LYCORIS_PRESETS,
        when=_LYCORIS_ON,
        families=UNET_FAMILIES,
    ),
    Setting(
        "network",
        "dora",
        bool,
        False,
        "DoRA",
        "Weight-decomposed training (DoRA, LyCORIS dora_wd): learns each output's magnitude apart from its "
        "direction; often closer to a full fine-tune at the same rank. Slower per step.",
        "network",
        kohya=Absent("inside network_args as dora_wd"),
        kohya_gui="dora_wd",
        kohya_gui_special=True,  # what it does depends on LoRA_type (kohya_import reads it)
        metadata=Absent("written inside ss_network_args as dora_wd"),
        when=_LYCORIS_ON,
        families=UNET_FAMILIES,
    ),
    Setting(
        "network",
        "lokr_factor",
        int,
        -1,
        "LoKr factor",
        "How LoKr splits each dimension into two Kronecker factors: -1 lets LyCORIS pick the most balanced split; "
        "a number such as 4 or 8 makes the smaller factor at most that (smaller files, less capacity).",
        "network",
        kohya=Absent("inside network_args as factor"),
        kohya_gui="factor",
        kohya_gui_special=True,  # what it does depends on LoRA_type (kohya_import reads it)
        metadata=Absent("written inside ss_network_args as factor"),
        minimum=-1,
        maximum=1_000_000,
        range_fix="use -1 (LyCORIS picks) or a small factor such as 4 or 8",
        when=_LOKR_ON,
        families=UNET_FAMILIES,
    ),
    Setting(
        "network",
        "lokr_full_matrix",
        bool,
        False,
        "LoKr full matrix",
        "Train LoKr's second factor as a full matrix instead of a low-rank pair (kohya_ss: a rank of 100000 or "
        "more). More capacity and a larger file.",
        "network",
        kohya=Absent("inside network_args as full_matrix"),
        kohya_gui=Absent("the GUI asks for it with a network_dim of 100000 or more"),
        metadata=Absent("written inside ss_network_args as full_matrix"),
        when=_LOKR_ON,
        families=UNET_FAMILIES,
    ),
    Setting(
        "network",
        "use_cp",
        bool,
        False,
        "CP decomposition",
        "Decompose the 3x3 convolutions' updates with a CP/Tucker core (LyCORIS use_tucker): fewer weights for "
        "the same rank. Only affects convolutions larger than 1x1.",
        "network",
        kohya=Absent("inside network_args as use_tucker (use_cp)"),
        kohya_gui="use_cp",
        kohya_gui_special=True,  # what it does depends on LoRA_type (kohya_import reads it)
        metadata=Absent("written inside ss_network_args as use_tucker"),
        when=_LYCORIS_ON,
        families=UNET_FAMILIES,
    ),
    Setting(
        "network",
        "train_on_input",
        bool,
        False,
        "iA3 on input",
        "iA3: LyCORIS's kohya wrapper ignores it (its layers scale their output channels), as in kohya; kept "
        "so that an imported kohya_ss config says what it asked for.",
        "network",
        kohya=Absent("inside network_args as train_on_input"),
        kohya_gui="train_on_input",
        kohya_gui_special=True,  # what it does depends on LoRA_type (kohya_import reads it)
        metadata=Absent("written inside ss_network_args as train_on_input"),
        when=_IA3_ON,
        families=UNET_FAMILIES,
    ),
    Setting(
        "network",
        "dropout",
        float,
        0.0,
        "Network dropout",
        "Drops this fraction of each layer's low-rank activations while training (kohya network_dropout), a guard "
        "against overfitting: 0.1 is typical; 0 = off. Needs a LyCORIS type.",
        "network",
        kohya="network_dropout",
        kohya_gui="network_dropout",
        kohya_gui_special=True,  # what it does depends on LoRA_type (kohya_import reads it)
        metadata="ss_network_dropout",
        metadata_value=_zero_is_none_text,
        minimum=0,
        maximum=1,
        range_fix="use 0 (off) or 0.1",
    ),
    Setting(
        "network",
        "rank_dropout",
        float,
        0.0,
        "Rank dropout",
        "Drops this fraction of each layer's ranks at every step (kohya rank_dropout): 0.1 is typical; 0 = off. "
        "Needs a LyCORIS type.",
        "network",
        kohya=Absent("inside network_args as rank_dropout"),
        kohya_gui="rank_dropout",
        kohya_gui_special=True,  # what it does depends on LoRA_type (kohya_import reads it)
        metadata=Absent("written inside ss_network_args as rank_dropout"),
        minimum=0,
        maximum=1,
        range_fix="use 0 (off) or 0.1",
        families=UNET_FAMILIES,
    ),
    Setting(
        "network",
        "module_dropout",
        float,
        0.0,
        "Module dropout",
        "Skips whole layers of the network with this probability at every step (kohya module_dropout): 0.1 is "
        "typical; 0 = off. Needs a LyCORIS type.",
        "network",
        kohya=Absent("inside network_args as module_dropout"),
        kohya_gui="module_dropout",
        kohya_gui_special=True,  # what it does depends on LoRA_type (kohya_import reads it)
        metadata=Absent("written inside ss_network_args as module_dropout"),
        minimum=0,
        maximum=1,
        range_fix="use 0 (off) or 0.1",
        families=UNET_FAMILIES,
    ),
    Setting(
        "network",
        "scale_weight_norms",
        float,
        0.0,
        "Max norm",
        "After every update, scale down each layer whose update's norm is above this (kohya scale_weight_norms): "
        "keeps any layer from growing too strong, so the LoRA mixes better with others. 1 is typical; 0 = off.",
        "network",
        kohya="scale_weight_norms",
        kohya_gui="scale_weight_norms",
        metadata=Absent("a training guard: sd-scripts records it nowhere in the file"),
        minimum=0,
        maximum=1e6,
        range_fix="use 0 (off) or 1",
        families=UNET_FAMILIES,
    ),
    # -- [optimizer]
    Setting(
        "optimizer",
        "name",
        str,
        "AdamW8bit",
        "Optimizer",
        "AdamW8bit is the stable choice (less memory than AdamW). Adafactor suits small GPUs. DAdaptAdam (6 GB or "
        "more) and Prodigy find the learning rate themselves: set both LRs to 1.",
        "optimizer",
        kohya="optimizer_type",
        kohya_gui="optimizer",
        kohya_gui_special=True,
        metadata=Absent("ss_optimizer records the optimizer class with its arguments"),
        choices=OPTIMIZERS,
    ),
    Setting(
        "optimizer",
        "unet_lr",
        float,
        1e-4,
        "U-Net LR",
        "Learning rate of the U-Net LoRA: 1e-4 for AdamW and AdamW8bit; 1 for DAdaptAdam, Prodigy and Adafactor "
        "with relative_step. Higher learns faster but overfits sooner.",
        "optimizer",
        kohya=("unet_lr", "learning_rate"),
        kohya_gui="unet_lr",
        kohya_gui_special=True,
        metadata=("ss_unet_lr", "ss_learning_rate"),
        minimum=0,
        above_minimum=True,
        when=_DENOISER_TRAINS,
        range_fix="use 1e-4 for AdamW, or 1.0 for DAdaptAdam/Prodigy",
    ),
    Setting(
        "optimizer",
        "text_encoder_lr",
        float,
        5e-5,
        "Text encoder LR",
        "Learning rate of the text encoder LoRA: usually half the U-Net LR (5e-5); 0 freezes the text encoder. "
        "DAdaptAdam and Prodigy: the same as the U-Net LR, or 0.",
        "optimizer",
        kohya="text_encoder_lr",
        kohya_gui="text_encoder_lr",
        kohya_gui_special=True,
        metadata="ss_text_encoder_lr",
        minimum=0,
        range_fix="use 5e-5, or 0 to freeze the text encoder",
    ),
    Setting(
        "optimizer",
        "text_encoder_2_lr",
        float,
        5e-5,
        "Text encoder 2 LR",
        "SDXL: learning rate of the second text encoder (OpenCLIP ViT-bigG); text_encoder_lr is the first's "
        "(CLIP ViT-L). kohya trains both at one rate: the import sets both. 0 freezes it.",
        "optimizer",
        kohya=Absent("sd-scripts trains both SDXL text encoders at --text_encoder_lr"),
        kohya_gui=Absent("the GUI's text_encoder_lr sets both rates"),
        metadata=Absent("sd-scripts records one text encoder rate, ss_text_encoder_lr"),
        minimum=0,
        range_fix="use the text_encoder_lr value, or 0 to freeze it",
        families=("sdxl",),
    ),
    Setting(
        "optimizer",
        "args",
        list,
        [],
        "Optimizer args",
        "Extra optimizer arguments as key=value entries separated by spaces. Adafactor: relative_step=True "
        "scale_parameter=True warmup_init=True. DAdaptAdam: decouple=True weight_decay=0.01 betas=0.9,0.999.",
        "optimizer",
        kohya="optimizer_args",
        kohya_gui="optimizer_args",
        metadata=Absent("ss_optimizer records the optimizer class with its arguments"),
        placeholder="(none)",
    ),
    Setting(
        "optimizer",
        "scheduler",
        str,
        "cosine",
        "LR schedule",
        "How the LR changes over the run. cosine_with_restarts (3-5 cycles) revisits the data with fresh peaks; "
        "constant suits the adaptive optimizers.",
        "optimizer",
        kohya="lr_scheduler",
        kohya_gui="lr_scheduler",
        metadata="ss_lr_scheduler",
        choices=SCHEDULERS,
    ),
    Setting(
        "optimizer",
        "scheduler_cycles",
        int,
        1,
        "Cycles",
        "Restarts of cosine_with_restarts; 3-5 balances learning against settling too early.",
        "optimizer",
        kohya="lr_scheduler_num_cycles",
        kohya_gui="lr_scheduler_num_cycles",
        metadata=Absent("sd-scripts does not record it"),
        minimum=1,
        maximum=1000,
        range_fix="use 1 or more",
    ),
    Setting(
        "optimizer",
        "warmup_steps",
        int,
        0,
        "Warmup steps",
        "Steps over which the LR ramps up from 0; about 5-10% of the run, or 0.",
        "optimizer",
        kohya="lr_warmup_steps",
        kohya_gui="lr_warmup_steps",
        kohya_gui_special=True,
        metadata="ss_lr_warmup_steps",
        minimum=0,
        maximum=1_000_000_000,
        unit="steps",
        range_fix="use 0 (no warmup) or a positive step count",
    ),
    Setting(
        "optimizer",
        "scheduler_power",
        float,
        1.0,
        "Power",
        "Power of the polynomial schedule; 1 = a linear decay.",
        "optimizer",
        kohya="lr_scheduler_power",
        kohya_gui="lr_scheduler_power",
        metadata=Absent("sd-scripts does not record it"),
        minimum=0,
        above_minimum=True,
        maximum=100,
        range_fix="use 1.0 (a linear decay)",
    ),
    # -- [optimizer] scheduler classes and warmup as a ratio
    Setting(
        "optimizer",
        "scheduler_type",
        str,
        "",
        "Scheduler class",
        "A scheduler class by name instead of the LR schedule above: one of torch.optim.lr_scheduler's (e.g. "
        "CosineAnnealingLR) or module.Class. Its arguments go in scheduler_args; it has no warmup.",
        "optimizer",
        kohya="lr_scheduler_type",
        kohya_gui="lr_scheduler_type",
        metadata=Absent("sd-scripts does not record it (ss_lr_scheduler keeps lr_scheduler)"),
        placeholder="(none) e.g. CosineAnnealingLR",
    ),
    Setting(
        "optimizer",
        "scheduler_args",
        list,
        [],
        "Scheduler args",
        "Arguments of scheduler_type's class as key=value entries separated by spaces, values as Python writes "
        "them: T_max=100 eta_min=1e-6.",
        "optimizer",
        kohya="lr_scheduler_args",
        kohya_gui="lr_scheduler_args",
        metadata=Absent("sd-scripts does not record it"),
        placeholder="(none) e.g. T_max=100",
    ),
    Setting(
        "optimizer",
        "warmup_ratio",
        float,
        0.0,
        "Warmup ratio",
        "Warmup as a share of all steps instead of a step count: 0.05-0.1 is usual; 0 = use warmup_steps.",
        "optimizer",
        kohya=Absent("sd-scripts' lr_warmup_steps is a ratio when below 1; the import reads it as warmup_ratio"),
        kohya_gui=Absent("the GUI's lr_warmup is a percentage, imported as optimizer.warmup_steps"),
        metadata=Absent("written as ss_lr_warmup_steps, the ratio, as sd-scripts writes a ratio it was given"),
        minimum=0,
        maximum=1,
        range_fix="use a share of the steps below 1, e.g. 0.05, or 0 for none",
    ),
    # -- [output]
    Setting(
        "output",
        "name",
        str,
        "lora",
        "LoRA name",
        "The file stem: <name>.safetensors at the end, <name>-000001.safetensors for each saved epoch.",
        "output",
        kohya="output_name",
        kohya_gui="output_name",
        metadata="ss_output_name",
    ),
    Setting(
        "output",
        "output_dir",
        str,
        "model",
        "Output folder",
        "Where the LoRA files go (the model folder).",
        "output",
        kohya="output_dir",
        kohya_gui="output_dir",
        metadata=_PATH_ONLY,
        widget="dir",
    ),
    Setting(
        "output",
        "log_dir",
        str,
        "log",
        "Log folder",
        "Training logs: one folder per run with its events, engine log and job record.",
        "output",
        kohya="logging_dir",
        kohya_gui="logging_dir",
        metadata=_PATH_ONLY,
        widget="dir",
    ),
    Setting(
        "output",
        "log_with",
        str,
        "tensorboard",
        "Log with",
        "tensorboard: write the losses, learning rates, validation loss, samples/s, sample images and the config "
        "under the log folder; see them with `tensorboard --logdir <log_dir>`. none: only loratui's own logs.",
        "output",
        kohya="log_with",
        kohya_gui="log_with",
        metadata=Absent("a logging choice, not a training fact"),
        choices=LOG_WITH_CHOICES,
        not_yet=("wandb", "all"),
    ),
    Setting(
        "output",
        "save_every_n_epochs",
        int,
        1,
        "Save every n epochs",
        "1 saves every epoch, so you can compare them (an XYZ plot of epoch x LoRA weight in A1111) and keep the "
        "best. 0 = only the final file.",
        "output",
        kohya="save_every_n_epochs",
        kohya_gui="save_every_n_epochs",
        metadata=Absent("sd-scripts does not record it"),
        minimum=0,
        maximum=1_000_000,
        unit="epochs",
        range_fix="use 0 (only the final file) or 1 or more",
    ),
    Setting(
        "output",
        "save_precision",
        str,
        "fp16",
        "Save precision",
        "Precision of the saved weights: fp16 files load everywhere and are half the size of float (fp32).",
        "output",
        kohya="save_precision",
        kohya_gui="save_precision",
        metadata=Absent("sd-scripts does not record it"),
        choices=SAVE_PRECISIONS,
    ),
    Setting(
        "output",
        "save_state",
        bool,
        True,
        "Save state",
        "Also save a resumable <name>-000001-state folder beside each checkpoint: larger, but a stopped run can "
        "continue.",
        "output",
        kohya="save_state",
        kohya_gui="save_state",
        metadata=Absent("a file-saving choice, not a training fact"),
    ),
    Setting(
        "output",
        "comment",
        str,
        "",
        "Comment",
        "Free text stored in the LoRA's metadata, e.g. the trigger word.",
        "output",
        kohya="training_comment",
        kohya_gui="training_comment",
        metadata="ss_training_comment",
        placeholder="(optional)",
        free_text=True,
    ),
    # -- [output] step saves and keeping the last files (loratui/save_plan.py)
    Setting(
        "output",
        "save_every_n_steps",
        int,
        0,
        "Save every n steps",
        "Also save <name>-step00000500.safetensors every n steps (with its state when save_state is on), for long "
        "epochs. 0 = not by steps.",
        "output",
        kohya="save_every_n_steps",
        kohya_gui="save_every_n_steps",
        metadata=Absent("sd-scripts does not record it"),
        minimum=0,
        maximum=1_000_000_000,
        unit="steps",
        range_fix="use 0 (not by steps) or 1 or more",
    ),
    Setting(
        "output",
        "save_last_n_epochs",
        int,
        0,
        "Keep last n epochs",
        "Keep only the newest n epoch files this run saved, deleting older ones as new ones arrive (the final file "
        "is always kept). 0 = keep all.",
        "output",
        kohya="save_last_n_epochs",
        kohya_gui="save_last_n_epochs",
        metadata=Absent("sd-scripts does not record it"),
        minimum=0,
        maximum=1_000_000,
        unit="files",
        range_fix="use 0 (keep all) or 1 or more",
    ),
    Setting(
        "output",
        "save_last_n_epochs_state",
        int,
        0,
        "Keep epoch states",
        "Keep only the newest n epoch state folders (resume points); 0 = as save_last_n_epochs.",
        "output",
        kohya="save_last_n_epochs_state",
        kohya_gui="save_last_n_epochs_state",
        metadata=Absent("sd-scripts does not record it"),
        minimum=0,
        maximum=1_000_000,
        unit="folders",
        range_fix="use 0 (as save_last_n_epochs) or 1 or more",
    ),
    Setting(
        "output",
        "save_last_n_steps",
        int,
        0,
        "Keep last n steps",
        "With save_every_n_steps: keep only the step files saved in the last n steps, deleting older ones "
        "(sd-scripts' rule: 1500 with saves every 500 keeps 4). 0 = keep all.",
        "output",
        kohya="save_last_n_steps",
        kohya_gui="save_last_n_steps",
        metadata=Absent("sd-scripts does not record it"),
        minimum=0,
        maximum=1_000_000_000,
        unit="steps",
        range_fix="use 0 (keep all) or a step count",
    ),
    Setting(
        "output",
        "save_last_n_steps_state",
        int,
        0,
        "Keep step states",
        "Keep only the step state folders saved in the last n steps; 0 = as save_last_n_steps.",
        "output",
        kohya="save_last_n_steps_state",
        kohya_gui="save_last_n_steps_state",
        metadata=Absent("sd-scripts does not record it"),
        minimum=0,
        maximum=1_000_000_000,
        unit="steps",
        range_fix="use 0 (as save_last_n_steps) or a step count",
    ),
    Setting(
        "output",
        "save_state_on_train_end",
        bool,
        False,
        "State at the end",
        "Save the resumable <name>-state folder at the end even with save_state off, to train on later.",
        "output",
        kohya="save_state_on_train_end",
        kohya_gui="save_state_on_train_end",
        metadata=Absent("a file-saving choice, not a training fact"),
    ),
    # -- [sample]
    Setting(
        "sample",
        "prompts",
        list,
        [],
        "Prompts",
        "Sample prompts, each in quotes, with kohya's options at the end: \"ohwx woman, portrait --n blurry --w 512 "
        '--h 768 --d 42 --l 7 --s 28" (--n negative, --w/--h size in 8s, FLUX.1 16s, --d seed, --l CFG scale, --s '
        "steps, FLUX.1 --g guidance). Without --d each prompt keeps one seed (training.seed + its number), so samples "
        "compare.",
        "sample",
        kohya=Absent("sd-scripts reads sample prompts from a file only (sample_prompts = prompt_file here)"),
        kohya_gui="sample_prompts",
        kohya_gui_special=True,
        metadata=_NO_SAMPLE_METADATA,
        placeholder='(none) e.g. "ohwx woman, portrait" "a cat --d 7"',
    ),
    Setting(
        "sample",
        "prompt_file",
        str,
        "",
        "Prompt file",
        "A kohya prompt file instead: .txt with one prompt per line (# starts a comment) and the same options. "
        "Used as well as the prompts above.",
        "sample",
        kohya="sample_prompts",
        kohya_gui=Absent("the kohya_ss GUI keeps its prompts in the config (imported as prompts)"),
        metadata=_PATH_ONLY,
        widget="path",
        placeholder="(none) e.g. prompts.txt",
    ),
    Setting(
        "sample",
        "every_n_epochs",
        int,
        0,
        "Every n epochs",
        "Render the prompts at the end of every n epochs (with the LoRA as trained so far). 0 = not by epochs. "
        "When both this and every_n_steps are set, both apply.",
        "sample",
        kohya="sample_every_n_epochs",
        kohya_gui="sample_every_n_epochs",
        metadata=_NO_SAMPLE_METADATA,
        minimum=0,
        maximum=1_000_000,
        unit="epochs",
        range_fix="use 0 (not by epochs) or 1 or more",
    ),
    Setting(
        "sample",
        "every_n_steps",
        int,
        0,
        "Every n steps",
        "Render the prompts every n steps. 0 = not by steps.",
        "sample",
        kohya="sample_every_n_steps",
        kohya_gui="sample_every_n_steps",
        metadata=_NO_SAMPLE_METADATA,
        minimum=0,
        maximum=1_000_000,
        unit="steps",
        range_fix="use 0 (not by steps) or 1 or more",
    ),
    Setting(
        "sample",
        "at_start",
        bool,
        False,
        "Sample at start",
        "Also render the prompts before the first step: the base model's images, to compare the LoRA's against.",
        "sample",
        kohya="sample_at_first",
        kohya_gui=Absent("the kohya_ss GUI has no such field"),
        metadata=_NO_SAMPLE_METADATA,
    ),
    Setting(
        "sample",
        "sampler",
        str,
        "euler_a",
        "Sampler",
        "The scheduler that renders SD and SDXL samples (kohya's names; k_ ones are aliases). A prompt's --ss "
        "option picks another for that prompt. FLUX.1 always samples with its flow-matching Euler.",
        "sample",
        kohya="sample_sampler",
        kohya_gui="sample_sampler",
        metadata=_NO_SAMPLE_METADATA,
        choices=SAMPLERS,
    ),
)

BY_NAME: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}


def settings_of(section: str) -> tuple[Setting, ...]:
    """The settings of one TOML section, in file order."""
    return tuple(setting for setting in SETTINGS if setting.section == section)


def kohya_cli_names() -> dict[str, Setting]:
    """sd-scripts' name -> the setting, for "kohya's network_dim is called rank here"."""
    return {name: setting for setting in SETTINGS for name in setting.kohya_names}
