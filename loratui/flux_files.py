"""FLUX.1's files as users have them, told apart by their safetensors headers (no torch).

sd-scripts' recipe trains FLUX.1 from four files (docs/flux_train_network.md): the transformer
alone in Black Forest Labs' names (``flux1-dev.safetensors``; keys ``double_blocks.N...``, sometimes
under ``model.diffusion_model.``), the autoencoder ``ae.safetensors`` (BFL's ``encoder.down.N...``),
CLIP-L in Hugging Face CLIPTextModel names (``text_model.encoder.layers.N...``) and T5-XXL in
T5EncoderModel names (``encoder.block.N.layer.0.SelfAttention.q.weight``), fp16/bf16 or
float8_e4m3fn. A diffusers FLUX.1 folder holds the same parts, one folder each.

What each file is, dev or schnell (schnell has no ``guidance_in`` layer: library/flux_utils.py
``analyze_checkpoint_state``), and the widths the files must agree on are read from the headers
alone, so ``loratui check`` names a wrong file in a second, before the engine would read 30 GB.
The engine refuses the same problems (engine/flux_files.py asks :func:`flux_problems` first).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from loratui import model_files
from loratui.errors import Problem, error, warning
from loratui.model_files import ModelFileError

if TYPE_CHECKING:
    from loratui.config import RunConfig

TRANSFORMER, DIFFUSERS_TRANSFORMER, AE, CLIP_L, T5XXL = "transformer", "diffusers_transformer", "ae", "clip_l", "t5xxl"
DEV, SCHNELL = "dev", "schnell"
BFL_PREFIX = "model.diffusion_model."  # what some tools save the BFL transformer under

# The file each extra setting takes, what a message calls it, and where users get it
# (sd-scripts' docs/flux_train_network.md: the AE from the FLUX.1 repo, the encoders from
# comfyanonymous/flux_text_encoders).
FILE_SETTINGS = {AE: "model.ae_path", CLIP_L: "model.clip_l_path", T5XXL: "model.t5xxl_path"}
NAMES = {
    TRANSFORMER: "a FLUX.1 transformer (BFL layout)",
    DIFFUSERS_TRANSFORMER: "a FLUX.1 transformer in diffusers' layout",
    AE: "the FLUX.1 autoencoder (AE)",
    CLIP_L: "a CLIP text encoder",
    T5XXL: "a T5 text encoder",
}
_USUAL_FILES = {
    AE: "ae.safetensors (from black-forest-labs/FLUX.1-dev or FLUX.1-schnell)",
    CLIP_L: "clip_l.safetensors (from comfyanonymous/flux_text_encoders)",
    T5XXL: "t5xxl_fp16.safetensors or t5xxl_fp8_e4m3fn.safetensors (from comfyanonymous/flux_text_encoders)",
}

# Keys that say what a file is (after the transformer's optional prefix is taken off).
_BFL_BLOCK = "double_blocks."
_BFL_GUIDANCE = "guidance_in.in_layer.weight"
_DIFFUSERS_BLOCK = "transformer_blocks."
_DIFFUSERS_GUIDANCE = "time_text_embed.guidance_embedder.linear_1.weight"
_AE_KEYS = ("encoder.conv_in.weight", "decoder.conv_in.weight")
# CLIP's token embedding: under text_model. in the files users have (clip_l.safetensors) and in
# transformers 4's saves; transformers 5 saves a CLIPTextModel without that prefix.
CLIP_PREFIX = "text_model."
_CLIP_TOKENS = "embeddings.token_embedding.weight"
_T5_QUERY = "encoder.block.0.layer.0.SelfAttention.q.weight"
_T5_EMBEDDING = "shared.weight"
# ComfyUI's "scaled" fp8 files hold a scale per tensor (and a ``scaled_fp8`` marker): read as plain
# fp8 their weights are wrong. sd-scripts' docs: use the T5 fp8 file "without scaled".
_SCALED_FP8_MARKERS = ("scaled_fp8",)
_SCALED_FP8_SUFFIX = ".scale_weight"
FP8_E4M3, FP8_E5M2 = "F8_E4M3", "F8_E5M2"

# The repo whose tokenizers every FLUX.1 model shares; schnell's is not gated (dev's is).
TOKENIZER_REPOS = ("black-forest-labs/FLUX.1-schnell", "black-forest-labs/FLUX.1-dev")
TOKENIZERS = ("tokenizer", "tokenizer_2")  # CLIP-L's, T5's
_T5_TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
SHIPPED = {DEV: "flux_dev", SCHNELL: "flux_schnell"}
# The components of a diffusers FLUX.1 folder: config file, weight files (single or sharded).
_DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json")
_TRANSFORMERS_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
FOLDER_COMPONENTS = {
    "transformer": ("config.json", _DIFFUSERS_WEIGHTS),
    "vae": ("config.json", _DIFFUSERS_WEIGHTS),
    "text_encoder": ("config.json", _TRANSFORMERS_WEIGHTS),
    "text_encoder_2": ("config.json", _TRANSFORMERS_WEIGHTS),
    "scheduler": ("scheduler_config.json", ()),
}
_BROKEN_FILE_FIX = "the file is damaged or incomplete: download or copy it again"


@dataclass(frozen=True)
class FluxFile:
    """What one safetensors file holds, as far as FLUX.1 is concerned.

    kind: TRANSFORMER, DIFFUSERS_TRANSFORMER, AE, CLIP_L, T5XXL, or None for anything else
    (``other`` then says what, when known). variant: DEV or SCHNELL for a transformer.
    dtype: the safetensors dtype of its weights ("BF16", "F8_E4M3"), read from one large matrix.
    widths: what the files must agree on: a transformer's ``text`` (T5's width it reads),
    ``pooled`` (CLIP's) and ``latent`` (AE channels it reads); an encoder's ``width``; the AE's ``latent``.
    """

    kind: str | None
    variant: str | None = None
    dtype: str | None = None
    prefix: str = ""
    scaled_fp8: bool = False
    widths: Mapping[str, int] = field(default_factory=dict)
    other: str = ""

    @property
    def what(self) -> str:
        if self.kind == TRANSFORMER:
            return f"the FLUX.1 {self.variant} transformer (BFL layout)"
        if self.kind == T5XXL and self.dtype:
            return f"{NAMES[T5XXL]} ({_DTYPE_NAMES.get(self.dtype, self.dtype)})"
        return NAMES.get(self.kind or "", self.other or "not a FLUX.1 file loratui knows")


_DTYPE_NAMES = {"F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "BF16": "bf16", "F16": "fp16", "F32": "fp32"}


def classify(header: model_files.SafetensorsHeader) -> FluxFile:
    """What the file of this header is (see :class:`FluxFile`)."""
    shapes, dtypes = header.shapes, header.dtypes
    prefix = BFL_PREFIX if any(name.startswith(BFL_PREFIX + _BFL_BLOCK) for name in shapes) else ""
    if prefix:
        shapes = {name[len(prefix) :]: shape for name, shape in shapes.items() if name.startswith(prefix)}
        dtypes = {name[len(prefix) :]: dtype for name, dtype in dtypes.items() if name.startswith(prefix)}
    scaled = any(name in shapes for name in _SCALED_FP8_MARKERS) or any(
        name.endswith(_SCALED_FP8_SUFFIX) for name in shapes
    )
    if any(name.startswith(_BFL_BLOCK) for name in shapes) and "img_in.weight" in shapes:
        return _transformer(shapes, dtypes, prefix, scaled)
    if any(name.startswith(_DIFFUSERS_BLOCK) for name in shapes) and "x_embedder.weight" in shapes:
        variant = DEV if _DIFFUSERS_GUIDANCE in shapes else SCHNELL
        return FluxFile(DIFFUSERS_TRANSFORMER, variant, dtypes.get("x_embedder.weight"), scaled_fp8=scaled)
    if all(key in shapes for key in _AE_KEYS) and any(name.startswith("encoder.down.") for name in shapes):
        latent = shapes.get("encoder.conv_out.weight", (0,))[0] // 2  # mean and log-variance
        return FluxFile(AE, dtype=dtypes.get("decoder.conv_in.weight"), widths={"latent": latent})
    clip_tokens = next((name for name in (CLIP_PREFIX + _CLIP_TOKENS, _CLIP_TOKENS) if name in shapes), None)
    if clip_tokens is not None:
        width = shapes[clip_tokens][1] if len(shapes[clip_tokens]) == 2 else 0
        prefix = CLIP_PREFIX if clip_tokens.startswith(CLIP_PREFIX) else ""
        widths = {"width": width}
        return FluxFile(CLIP_L, dtype=dtypes.get(clip_tokens), prefix=prefix, widths=widths, scaled_fp8=scaled)
    if _T5_QUERY in shapes:
        # The dtype of its attention weights: what sd-scripts checks (get_t5xxl_actual_dtype); an fp8
        # file keeps its embeddings and norms in a wider type.
        width = shapes[_T5_QUERY][1] if len(shapes[_T5_QUERY]) == 2 else 0
        return FluxFile(T5XXL, dtype=dtypes.get(_T5_QUERY), widths={"width": width}, scaled_fp8=scaled)
    return FluxFile(None, other=_other_kind(header))


def _transformer(shapes: Mapping, dtypes: Mapping, prefix: str, scaled: bool) -> FluxFile:
    widths = {
        "text": _in_width(shapes.get("txt_in.weight")),
        "pooled": _in_width(shapes.get("vector_in.in_layer.weight")),
        "latent": _in_width(shapes.get("img_in.weight")) // 4,  # 2x2 packed patches
        "head": shapes.get("double_blocks.0.img_attn.norm.query_norm.scale", (0,))[0],  # one head's width
    }
    variant = DEV if _BFL_GUIDANCE in shapes else SCHNELL
    dtype = dtypes.get("double_blocks.0.img_attn.qkv.weight") or dtypes.get("img_in.weight")
    return FluxFile(TRANSFORMER, variant, dtype, prefix, scaled, widths)


def _in_width(shape: tuple[int, ...] | None) -> int:
    return shape[1] if shape is not None and len(shape) == 2 else 0


def _other_kind(header: model_files.SafetensorsHeader) -> str:
    from loratui import model_detect

    names = header.shapes.keys()
    if any(name.startswith(("lora_unet_", "lora_te")) or ".lora_" in name for name in names):
        return "a LoRA"
    found = model_detect.detect(header.shapes).family
    shown = {"sd1": "an SD 1.x checkpoint", "sd2": "an SD 2.x checkpoint", "sdxl": "an SDXL checkpoint"}
    if found in shown:
        return shown[found]
    if any(name.startswith(("encoder.down_blocks.", "decoder.up_blocks.")) for name in names):
        return "an autoencoder in diffusers' layout"
    return "not a FLUX.1 file loratui knows"


def flux_file(path: Path) -> FluxFile:
    """What the safetensors file at ``path`` is. Raises ModelFileError or OSError."""
    return classify(model_files.safetensors_header(path))


# ---------------------------------------------------------------------------------------------
# dev or schnell.


def flux_variant_of(cfg: RunConfig) -> str | None:
    """DEV or SCHNELL as the model's weights say (a diffusers folder: its transformer config's
    ``guidance_embeds``; a BFL file: a ``guidance_in`` layer; ``loratui:tiny-flux`` is dev); None
    when they cannot be read (other checks say why)."""
    if cfg.model.is_builtin:
        return DEV if cfg.model.path == "loratui:tiny-flux" else None
    try:
        path = cfg.resolve(cfg.model.path)
        if path.is_dir():
            config = model_files.json_object(path / "transformer" / "config.json")
            return DEV if config.get("guidance_embeds") else SCHNELL
        found = flux_file(path)
    except (ValueError, ModelFileError, OSError):
        return None
    return found.variant if found.kind in (TRANSFORMER, DIFFUSERS_TRANSFORMER) else None


def resolved_variant(cfg: RunConfig) -> str:
    """model.flux_variant, with "auto" read from the weights (dev when they cannot be read)."""
    setting = cfg.model.flux_variant
    return setting if setting in (DEV, SCHNELL) else flux_variant_of(cfg) or DEV


# ---------------------------------------------------------------------------------------------
# Configs and tokenizers a transformer file loads with.


def shipped_configs(variant: str) -> Path:
    """FLUX.1's component configs shipped in the package (``loratui/model_configs/flux_dev``, ``flux_schnell``),
    written from the published ones of black-forest-labs/FLUX.1-dev and FLUX.1-schnell."""
    return Path(str(resources.files("loratui").joinpath("model_configs", SHIPPED[variant])))


def component_config(config_root: Path | None, variant: str, component: str) -> Path:
    """The config file of ``component`` ("transformer", "vae", "text_encoder", "text_encoder_2",
    "scheduler"): ``config_root``'s own when it has one (a diffusers FLUX.1 folder given as
    model.tokenizer: the exact layout of its model), else the shipped one of the variant."""
    name = FOLDER_COMPONENTS[component][0]
    if config_root is not None and (config_root / component / name).is_file():
        return config_root / component / name
    return shipped_configs(variant) / component / name


def tokenizer_download_command() -> str:
    """What fetches FLUX.1's two tokenizers into the Hugging Face cache, where they are then found."""
    return shlex.join(["hf", "download", TOKENIZER_REPOS[0], "--include", "tokenizer/*", "tokenizer_2/*"])


def tokenizer_root(cfg: RunConfig) -> Path | Problem:
    """The folder holding ``tokenizer/`` (CLIP-L's) and ``tokenizer_2/`` (T5's): model.tokenizer (the
    folder, or its tokenizer/ subfolder), else FLUX.1's in the local Hugging Face cache; or the problem."""
    fix = (
        "set model.tokenizer to a folder with tokenizer/ and tokenizer_2/ (a local FLUX.1 diffusers model), "
        f"or fetch FLUX.1's tokenizers once with network: {tokenizer_download_command()}"
    )
    if cfg.model.tokenizer.strip():
        folder = cfg.resolve(cfg.model.tokenizer)
        root = folder.parent if folder.name in TOKENIZERS else folder
        gaps = tokenizer_gaps(root)
        if gaps:
            return error("model.tokenizer", f"{root} lacks FLUX.1's tokenizers: {'; '.join(gaps)}", fix)
        return root
    for repo in TOKENIZER_REPOS:
        snapshot = model_files.hf_cached_snapshot(repo)
        if snapshot is not None and not tokenizer_gaps(snapshot):
            return snapshot
    message = "a FLUX.1 transformer file needs the CLIP-L and T5 tokenizers beside it, and none are on this machine"
    return error("model.tokenizer", message, fix)


def tokenizer_gaps(root: Path) -> list[str]:
    """What ``root`` lacks of FLUX.1's two tokenizers, one phrase each."""
    gaps = []
    clip, t5 = (root / name for name in TOKENIZERS)
    if not clip.is_dir():
        gaps.append("no tokenizer/ folder (CLIP-L's)")
    elif not model_files.tokenizer_files_present(clip):
        gaps.append("no tokenizer files in tokenizer/ (vocab.json and merges.txt, or tokenizer.json)")
    if not t5.is_dir():
        gaps.append("no tokenizer_2/ folder (T5's)")
    elif not any((t5 / name).is_file() for name in _T5_TOKENIZER_FILES):
        gaps.append("no tokenizer files in tokenizer_2/ (tokenizer.json or spiece.model)")
    return gaps


# ---------------------------------------------------------------------------------------------
# A diffusers FLUX.1 folder.


def folder_gaps(folder: Path) -> list[str]:
    """What a diffusers FLUX.1 folder lacks for the engine, one phrase per missing part."""
    gaps = []
    for part, (config, weights) in FOLDER_COMPONENTS.items():
        if not (folder / part / config).is_file():
            gaps.append(f"no {part}/{config}")
        elif weights and not any((folder / part / name).is_file() for name in weights):
            gaps.append(f"no safetensors weights in {part}/ ({weights[0]})")
    return gaps + tokenizer_gaps(folder)


def folder_variant(folder: Path) -> str | None:
    try:
        config = model_files.json_object(folder / "transformer" / "config.json")
    except (ModelFileError, OSError):
        return None
    return DEV if config.get("guidance_embeds") else SCHNELL


# ---------------------------------------------------------------------------------------------
# The check: every problem of a FLUX.1 model's files, before any weight loads.


def flux_problems(cfg: RunConfig) -> list[Problem]:
    """The problems of model.path (a BFL transformer file or a diffusers folder), its three extra
    files, the tokenizers and the variant, for ``model.family = "flux"``; [] for other families."""
    if cfg.model.family != "flux":
        return []
    if cfg.model.is_builtin or not cfg.model.path.strip():
        return []  # rules.py judges the built-in names and an empty path
    path = cfg.resolve(cfg.model.path)
    if path.is_dir():
        return _variant_problems(cfg, path.name, folder_variant(path), _FOLDER_REASONS)
    if not path.is_file():
        return []  # rules.py reports a missing path
    try:
        found = flux_file(path)
    except ModelFileError as exc:
        return [error("model.path", f"{path.name} is not a readable safetensors file: {exc}", _BROKEN_FILE_FIX)]
    except OSError as exc:
        return [error("model.path", f"cannot read {path}: {exc.strerror or exc}", "check the file's permissions")]
    problems = _transformer_problems(path, found)
    if problems:
        return problems
    problems += _variant_problems(cfg, path.name, found.variant, _FILE_REASONS)
    for kind in FILE_SETTINGS:
        problems += _extra_file_problems(cfg, kind, found)
    root = tokenizer_root(cfg)
    if isinstance(root, Problem):
        return [*problems, root]
    if any(problem.severity == "error" for problem in problems):
        return problems
    return problems + _layout_problems(path, found, root, flux_file(cfg.resolve(cfg.model.clip_l_path)))


def _layout_problems(path: Path, found: FluxFile, root: Path, clip_file: FluxFile) -> list[Problem]:
    """What the shapes cannot say comes from the configs (model.tokenizer's folder, else the shipped
    FLUX.1 ones): RoPE's axes must add up to the transformer's head width, and CLIP's head count must
    divide its width. A file narrower than FLUX.1's needs its own model's configs."""
    fix = "set model.tokenizer to the model's own diffusers folder (its configs say the layout)"
    try:
        transformer = model_files.json_object(component_config(root, str(found.variant), "transformer"))
        clip = model_files.json_object(component_config(root, str(found.variant), "text_encoder"))
    except (ModelFileError, OSError):
        return []  # a damaged config: the engine's loader names it
    axes, head = transformer.get("axes_dims_rope", [16, 56, 56]), found.widths.get("head")
    if isinstance(axes, list) and all(isinstance(axis, int) for axis in axes) and head and sum(axes) != head:
        message = (
            f"{path.name} has attention heads {head} wide, but the RoPE axes of the FLUX.1 config it loads with "
            f"({axes}) add up to {sum(axes)}"
        )
        return [error("model.tokenizer", message, fix)]
    heads, width = clip.get("num_attention_heads"), clip_file.widths.get("width")
    if isinstance(heads, int) and heads > 0 and width and width % heads:
        message = f"the CLIP file is {width} wide, which the {heads} heads of the config it loads with do not divide"
        return [error("model.tokenizer", message, fix)]
    return []


def _transformer_problems(path: Path, found: FluxFile) -> list[Problem]:
    if found.kind == DIFFUSERS_TRANSFORMER:
        message = f"{path.name} is {NAMES[DIFFUSERS_TRANSFORMER]}, which loratui loads as part of its folder"
        fix = "point model.path at its diffusers FLUX.1 folder (the one holding transformer/), or at a BFL file"
        return [error("model.path", message, fix)]
    if found.kind != TRANSFORMER:
        if found.kind in FILE_SETTINGS:
            fix = f"set {FILE_SETTINGS[found.kind]} to it, and model.path to the transformer (flux1-dev.safetensors)"
        else:
            fix = "point model.path at the FLUX.1 transformer (flux1-dev.safetensors or flux1-schnell.safetensors)"
        return [error("model.path", f"{path.name} is {found.what}, not a FLUX.1 transformer", fix)]
    if found.scaled_fp8:
        message = f"{path.name} is a scaled fp8 transformer (ComfyUI's), whose weights read wrong without their scales"
        return [error("model.path", message, "use flux1-dev.safetensors (bf16) or an unscaled fp8 file")]
    return []


# How the weights tell dev (guidance-distilled: guidance is a model input) from schnell.
_FILE_REASONS = {DEV: "it has a guidance_in layer", SCHNELL: "it has no guidance_in layer"}
_FOLDER_REASONS = {DEV: "its transformer has guidance_embeds", SCHNELL: "its transformer has no guidance_embeds"}


def _variant_problems(cfg: RunConfig, name: str, found: str | None, reasons: dict[str, str]) -> list[Problem]:
    wanted = cfg.model.flux_variant
    if found is None or wanted not in (DEV, SCHNELL) or wanted == found:
        return []
    message = f'{name} is FLUX.1 {found} ({reasons[found]}), but model.flux_variant is "{wanted}"'
    fix = f'set model.flux_variant = "{found}" (or "auto"), or point model.path at FLUX.1 {wanted} weights'
    return [error("model.flux_variant", message, fix)]


def _extra_file_problems(cfg: RunConfig, kind: str, transformer: FluxFile) -> list[Problem]:
    setting = FILE_SETTINGS[kind]
    value, transformer_name = str(cfg.get(setting)), cfg.resolve(cfg.model.path).name
    if not value.strip():
        message = f"{transformer_name} is a FLUX.1 transformer file, which needs {NAMES[kind]} beside it"
        return [error(setting, message, f"set {setting.split('.')[1]} to {_USUAL_FILES[kind]}")]
    path = cfg.resolve(value)
    if not path.exists():
        fix = f"check the file name; relative paths start at the config's folder ({cfg.base_dir})"
        return [error(setting, f"file not found: {path}", fix)]
    if not path.is_file():
        return [error(setting, f"{path} is a folder, not a file", f"set it to {_USUAL_FILES[kind]}")]
    try:
        found = flux_file(path)
    except ModelFileError as exc:
        return [error(setting, f"{path.name} is not a readable safetensors file: {exc}", _BROKEN_FILE_FIX)]
    except OSError as exc:
        return [error(setting, f"cannot read {path}: {exc.strerror or exc}", "check the file's permissions")]
    if found.kind != kind:
        return [_wrong_file(setting, kind, path, found)]
    return _width_problems(setting, kind, path, found, transformer) or _dtype_problems(cfg, setting, path, found)


def _wrong_file(setting: str, kind: str, path: Path, found: FluxFile) -> Problem:
    message = f"{setting.split('.')[1]} points at {path.name}, which is {found.what}, not {NAMES[kind]}"
    fix = f"set it to {_USUAL_FILES[kind]}"
    belongs = FILE_SETTINGS.get(found.kind or "") or ("model.path" if found.kind == TRANSFORMER else "")
    if belongs:
        fix += f"; that file belongs in {belongs}"
    return error(setting, message, fix)


def _width_problems(setting: str, kind: str, path: Path, found: FluxFile, transformer: FluxFile) -> list[Problem]:
    """The transformer reads T5's states (txt_in), CLIP's pooled vector (vector_in) and the AE's latents
    (img_in) at fixed widths: a file of another width fails at the first step."""
    have, want, what = {
        AE: (found.widths.get("latent"), transformer.widths.get("latent"), "latent channels"),
        CLIP_L: (found.widths.get("width"), transformer.widths.get("pooled"), "wide"),
        T5XXL: (found.widths.get("width"), transformer.widths.get("text"), "wide"),
    }[kind]
    if not have or not want or have == want:
        return []
    hint = {AE: " (an SD or SDXL VAE has 4)", CLIP_L: " (CLIP-L is 768 wide)", T5XXL: " (T5-XXL is 4096 wide)"}[kind]
    message = f"{path.name} is {have} {what}, but the transformer takes {want}{hint}"
    return [error(setting, message, f"set it to {_USUAL_FILES[kind]}")]


def _dtype_problems(cfg: RunConfig, setting: str, path: Path, found: FluxFile) -> list[Problem]:
    if found.scaled_fp8:
        message = f"{path.name} is a scaled fp8 file (ComfyUI's format), whose weights read wrong without their scales"
        return [error(setting, message, "use the file without _scaled (t5xxl_fp8_e4m3fn.safetensors), or the fp16 one")]
    if found.kind != T5XXL or found.dtype not in (FP8_E4M3, FP8_E5M2):
        return []
    if found.dtype == FP8_E5M2 and cfg.model.fp8_base:
        # sd-scripts (flux_train_network.py) refuses float8 kinds other than e4m3fn with --fp8_base.
        message = f"{path.name} holds float8_e5m2 weights; fp8_base keeps fp8 weights as float8_e4m3fn only"
        return [error(setting, message, "use t5xxl_fp8_e4m3fn.safetensors or t5xxl_fp16.safetensors")]
    if not cfg.model.fp8_base:
        # As sd-scripts does without --fp8_base (load_t5xxl with the training dtype): the weights are
        # upcast, so the file saves no memory and keeps fp8's rounding.
        precision = {"bf16": "bf16", "fp16": "fp16"}.get(cfg.training.mixed_precision, "fp32")
        message = (
            f"{path.name} holds fp8 weights and fp8_base is off: they load upcast to {precision}, "
            "with fp8's precision and without its memory saving"
        )
        fix = "set fp8_base = true to keep T5 in fp8, or use t5xxl_fp16.safetensors"
        return [warning(setting, message, fix)]
    return []
