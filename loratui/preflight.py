"""What this machine and these files allow: the last checks before "ready to train" is promised.

A config can be valid and still fail minutes into loading: fp16 on a machine without a CUDA GPU,
xformers that is not installed, a model path that is not a model, a single-file checkpoint whose
configs are on no disk, an optimizer argument the optimizer does not take. Each rule here looks at
the machine (through NVML, never torch) or at the files (with the standard library) and says so
before anything loads, at the setting to change, with the fix.

The engine refuses exactly the same: it runs these checks first (``loratui.validation.validate``),
and where it decides by itself (the GPU torch sees, the files diffusers opens) it uses the same
rules and lookups from here, so ``loratui check`` saying ready means the engine reaches step 1.

Everything that costs time is remembered: the machine for the whole process, file inspections
while the file is unchanged (``loratui.model_files``); the wizard runs this on every keystroke.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from loratui import (
    checkpoint_configs,
    families,
    flux_files,
    model_detect,
    model_files,
    optimizer_signatures,
    resume_state,
)
from loratui.errors import Problem, UserError, error, failed_settings
from loratui.model_files import ModelFileError
from loratui.optimizer_args import argument_value_problem, canonical_optimizer, parse_optimizer_args
from loratui.params import SD_FAMILIES
from loratui.quantities import count

if TYPE_CHECKING:
    from loratui.config import RunConfig
    from loratui.schedule import Schedule


def preflight(cfg: RunConfig, found: Iterable[Problem] = ()) -> list[Problem]:
    """Every problem this machine or these files would make the engine refuse.

    ``found``: the problems validation already reported. A rule that reads a setting with an
    error among them (or among the problems of an earlier rule here) is skipped: one problem
    per mistake, and no rule works on a value that could make it crash."""
    failed = failed_settings(found)
    problems: list[Problem] = []
    for reads, check in _RULES:
        if failed.intersection(reads):
            continue
        new = check(cfg)
        problems += new
        failed.update(problem.where for problem in new if problem.severity == "error")
    return problems


def user_error(problem: Problem, kind: str = "config") -> UserError:
    """The engine's form of a problem found here."""
    return UserError(problem.message, problem.where, problem.fix, kind)


# ---------------------------------------------------------------------------------------------
# The machine: the CUDA GPU a run would train on.

BF16_CAPABILITY = (8, 0)  # Ampere (RTX 30xx, A100) and newer compute in bf16


@dataclass(frozen=True)
class Machine:
    """The CUDA GPU the engine would train on, or why it would train on the CPU."""

    gpu: str | None  # the GPU's name; None: no CUDA GPU, training runs on the CPU
    capability: tuple[int, int] | None = None  # CUDA compute capability, None when unknown
    no_gpu: str = ""  # why there is no CUDA GPU, in plain words


_machines: dict[tuple, Machine] = {}


def this_machine() -> Machine:
    """This machine as NVML and the installed torch build describe it, read once per process.

    Keyed by the pynvml module in use and CUDA_VISIBLE_DEVICES, so a test that swaps in a fake
    NVML, or a changed variable, reads afresh."""
    key = (id(sys.modules.get("pynvml")), os.environ.get("CUDA_VISIBLE_DEVICES"))
    if key not in _machines:
        _machines[key] = _read_machine()
    return _machines[key]


def _read_machine() -> Machine:
    from loratui.gpu.nvml import read_gpus

    snapshot = read_gpus(with_processes=False)
    if not snapshot.available:
        return Machine(None, no_gpu=f"this machine has {snapshot.reason or 'no NVIDIA GPU'}")
    visible = _visible_devices(snapshot.devices, os.environ.get("CUDA_VISIBLE_DEVICES"))
    if not visible:
        value = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        return Machine(None, no_gpu=f"CUDA_VISIBLE_DEVICES={shlex.quote(value)} hides every GPU")
    torch_build = _torch_build()
    if torch_build is not None and torch_build[1] is None:
        return Machine(None, no_gpu=f"the installed PyTorch ({torch_build[0]}) is a CPU-only build")
    # CUDA numbers the GPUs fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID (NVML's order);
    # the fastest is, in practice, the newest: the one of the highest compute capability.
    device = visible[0]
    if os.environ.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
        device = max(visible, key=lambda d: d.compute_capability or (0, 0))
    return Machine(device.name or f"GPU {device.index}", device.compute_capability)


def _visible_devices(devices: list, variable: str | None) -> list:
    """The NVML devices CUDA would see under CUDA_VISIBLE_DEVICES (indices or UUIDs, read up to
    the first entry that names no device, as CUDA does)."""
    if variable is None:
        return list(devices)
    visible = []
    for entry in (part.strip() for part in variable.split(",")):
        match = None
        if entry.isdigit():
            match = next((d for d in devices if d.index == int(entry)), None)
        elif entry.startswith(("GPU-", "MIG-")):
            match = next((d for d in devices if d.uuid and d.uuid.startswith(entry)), None)
        if match is None:
            break
        visible.append(match)
    return visible


def _torch_build() -> tuple[str, str | None] | None:
    """(version, CUDA version or None) of the installed torch, read from its version.py without
    importing it; None when torch is not installed here (the engine then cannot run anyway)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        text = (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text()
    except OSError:
        return None
    version = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)", text, re.MULTILINE)
    cuda = re.search(r"^cuda\s*(?::[^=]*)?=\s*(?:None|['\"]([^'\"]*)['\"])", text, re.MULTILINE)
    return (version.group(1) if version else "unknown version", cuda.group(1) if cuda else None)


def precision_problems(precision: str, machine: Machine) -> list[Problem]:
    """fp16 and bf16 need a CUDA GPU; bf16 one of compute capability 8.0 or newer. The engine
    judges the GPU torch sees with this same rule."""
    if precision not in ("fp16", "bf16"):
        return []
    if machine.gpu is None:
        return [
            error(
                "training.mixed_precision",
                f"{precision} mixed precision needs a CUDA GPU, and {machine.no_gpu}",
                'set mixed_precision = "no" (full fp32) to train on this machine\'s CPU',
            )
        ]
    capability = machine.capability
    if precision == "bf16" and capability is not None and capability < BF16_CAPABILITY:
        shown = ".".join(map(str, capability))
        return [
            error(
                "training.mixed_precision",
                f"bf16 needs a GPU of compute capability 8.0 or newer (RTX 30xx, A100 and later); "
                f"{machine.gpu} is {shown}",
                'set mixed_precision = "fp16" on this GPU',
            )
        ]
    if precision == "bf16" and capability is None:
        return [
            Problem(
                "training.mixed_precision",
                f"the driver does not say whether {machine.gpu} computes in bf16",
                'if the engine refuses it, set mixed_precision = "fp16"',
                "warning",
            )
        ]
    return []


def precision_for(machine: Machine) -> str:
    """The fastest mixed precision this machine allows: the default of a new project."""
    if machine.gpu is None:
        return "no"
    return "bf16" if machine.capability is not None and machine.capability >= BF16_CAPABILITY else "fp16"


def attention_problems(attention: str, machine: Machine) -> list[Problem]:
    """xformers must be installed, and it runs on a CUDA GPU only (diffusers refuses it otherwise)."""
    if attention != "xformers":
        return []
    fix = 'set attention = "sdpa" (PyTorch\'s built-in attention, as fast on recent PyTorch)'
    if not installed("xformers"):
        return [error("training.attention", "xformers is not installed", fix)]
    if machine.gpu is None:
        return [error("training.attention", f"xformers needs a CUDA GPU, and {machine.no_gpu}", fix)]
    return []


def installed(package: str) -> bool:
    """Whether ``import package`` can find it (a None in sys.modules blocks an import)."""
    if package in sys.modules:
        return sys.modules[package] is not None
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------
# The base model's files.

# Layers of the (first) text encoders of the built-in models (engine/tiny_model.py, engine/tiny_sdxl.py,
# engine/reference_models.py; tests/test_preflight.py holds them equal).
BUILTIN_TEXT_ENCODER_LAYERS = {
    "loratui:tiny-sd": 3,
    "loratui:sd15-random": 12,
    "loratui:tiny-sdxl": 3,
    "loratui:sdxl-random": 12,
}
# The hub repos whose configs and tokenizer a single-file checkpoint of each family borrows.
SINGLE_FILE_CONFIG_REPOS = {
    "sd1": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sd2": "stabilityai/stable-diffusion-2-1",
    "sdxl": checkpoint_configs.SDXL_REPO,  # only its tokenizers: loratui ships SDXL's configs
}
# Repos that are gone from the hub, and their copies: runwayml's SD 1.5 was taken down in 2024.
MOVED_REPOS = {"runwayml/stable-diffusion-v1-5": "stable-diffusion-v1-5/stable-diffusion-v1-5"}
_BROKEN_FILE_FIX = "the file is damaged or incomplete: download or copy it again"


def _model_path(cfg: RunConfig) -> Path | None:
    """The model's location on disk, or None for a built-in model or an empty setting."""
    if cfg.model.is_builtin or not cfg.model.path.strip():
        return None
    return cfg.resolve(cfg.model.path)


def hub_id_problems(cfg: RunConfig) -> list[Problem]:
    """A repo id where a local path belongs: loratui never downloads."""
    path = _model_path(cfg)
    repo = model_files.hub_repo_id(cfg.model.path)
    if path is None or repo is None or path.exists() or (cfg.base_dir / repo.split("/")[0]).is_dir():
        return []  # a missing subfolder of a local folder is a typo, not a repo id
    current = MOVED_REPOS.get(repo, repo)
    local = cfg.base_dir / "models" / current.split("/")[1]
    command = shlex.join(
        [
            "hf",
            "download",
            current,
            "--include",
            "*.json",
            "*.txt",
            "*/diffusion_pytorch_model.safetensors",
            "text_encoder/model.safetensors",
            "--local-dir",
            str(local),
        ]
    )
    moved = f" ({repo} is gone from the hub; {current} is its copy)" if current != repo else ""
    return [
        error(
            "model.path",
            f"model folder not found: {path}; {cfg.model.path!r} looks like a Hugging Face repo "
            f"id, and loratui never downloads a model{moved}",
            f'set model.path = "models/{local.name}" after downloading it once with network: {command}',
        )
    ]


def _folder_family(cfg: RunConfig) -> list[Problem]:
    """A diffusers folder says its family (model_index.json, the UNet's config): loaded as another
    family, the engine would build the wrong parts and fail minutes in, on the first step."""
    path = _model_path(cfg)
    if path is None or not path.is_dir():
        return []  # a checkpoint's family is read from its tensors (single-file checks)
    found, wanted = model_files.folder_family(path), cfg.model.family
    if model_files.is_refiner(path):
        message = f"{path} is the SDXL refiner, which has no first text encoder: loratui trains LoRAs for base models"
        return [error("model.path", message, "point model.path at SDXL base 1.0 or a fine-tune of it")]
    if found == "sd3":
        message = f"{path} is an SD3 model; loratui trains SD 1.x, SD 2.x, SDXL and FLUX.1 models"
        return [error("model.path", message, "point model.path at an SD 1.x, SD 2.x, SDXL or FLUX.1 model")]
    if found == "flux" and wanted != "flux":
        message = f"{path} is a FLUX.1 model, but model.family is {wanted!r}"
        return [error("model.family", message, 'set model.family = "flux"')]
    sd = (*SD_FAMILIES, model_files.SD_EITHER)
    if found is None or found == wanted or (found in sd and wanted in SD_FAMILIES):
        return []  # SD 1.x against 2.x: the same parts, and a folder loads with its own configs
    if found == model_files.SD_EITHER:
        shown, fix = "SD 1.x or 2.x", 'set model.family = "sd1" for SD 1.x, "sd2" for SD 2.x'
    else:
        shown, fix = families.family_name(found), f'set model.family = "{found}"'
    return [error("model.family", f"{path} is an {shown} model, but model.family is {wanted!r}", fix)]


def _model_files(cfg: RunConfig) -> list[Problem]:
    path = _model_path(cfg)
    if path is None or not path.exists():
        return []  # validation reports a missing path
    if cfg.model.family == "flux" and path.is_file():
        return []  # loratui.flux_files judges a FLUX.1 transformer file and its three companions (_flux_files)
    return model_location_problems(path)


def model_location_problems(path: Path) -> list[Problem]:
    """Whether the folder or file at ``path`` is a model the engine can load. The engine asks
    this too before it hands the path to diffusers."""
    problems = _folder_problems(path) if path.is_dir() else _checkpoint_file_problems(path)
    return [error("model.path", message, fix) for message, fix in problems]


def _folder_problems(folder: Path) -> list[tuple[str, str]]:
    if model_files.folder_family(folder) == "flux":
        return _flux_folder_problems(folder)
    gaps = model_files.folder_gaps(folder, with_weights=True)
    if gaps and model_files.pickle_only_weights(folder):  # loratui never unpickles weights (it can run code)
        fix = (
            "use the model's .safetensors weights instead: `hf download REPO --include '*.safetensors' "
            "'*.json' '*.txt'` fetches a Hub model without its .bin files; or convert them with a tool you trust"
        )
        return [(f"{folder} is not a diffusers model folder the engine can load: {'; '.join(gaps)}", fix)]
    if gaps:
        fix = (
            "point model.path at the folder that holds model_index.json, unet/, vae/, text_encoder/, "
            "tokenizer/ and scheduler/, or at a .safetensors checkpoint"
        )
        return [(f"{folder} is not a diffusers model folder the engine can load: {'; '.join(gaps)}", fix)]
    for weights in model_files.weight_files(folder):
        try:
            model_files.safetensors_header(weights)
        except ModelFileError as exc:
            return [(f"{weights} is not a readable safetensors file: {exc}", _BROKEN_FILE_FIX)]
        except OSError as exc:
            return [(f"cannot read {weights}: {exc.strerror or exc}", "check the file's permissions")]
    return []


def _flux_folder_problems(folder: Path) -> list[tuple[str, str]]:
    gaps = flux_files.folder_gaps(folder)
    if not gaps:
        return []
    fix = (
        "point model.path at a complete diffusers FLUX.1 folder (transformer/, vae/, text_encoder/, "
        "text_encoder_2/, tokenizer/, tokenizer_2/, scheduler/), or at flux1-dev.safetensors"
    )
    return [(f"{folder} is not a FLUX.1 folder the engine can load: {'; '.join(gaps)}", fix)]


def _checkpoint_file_problems(path: Path) -> list[tuple[str, str]]:
    try:
        if path.stat().st_size == 0:
            return [(f"{path} is empty (zero bytes)", "download or copy the checkpoint again")]
        if path.suffix.lower() == ".safetensors":
            return _safetensors_checkpoint_problems(path, model_files.safetensors_header(path))
        if path.suffix.lower() == ".ckpt":
            return _pickle_problems(path, model_files.unsafe_pickle_globals(path))
    except ModelFileError as exc:
        return [(f"{path.name} is not a readable {path.suffix.lower()[1:]} checkpoint: {exc}", _BROKEN_FILE_FIX)]
    except OSError as exc:
        return [(f"cannot read {path}: {exc.strerror or exc}", "check the file's permissions")]
    return []  # another suffix: validation reports it


def _safetensors_checkpoint_problems(path: Path, header: model_files.SafetensorsHeader) -> list[tuple[str, str]]:
    names = header.shapes.keys()
    if any(name.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")) for name in names):
        fix = "point model.path at the Stable Diffusion checkpoint the LoRA is trained on, not at a LoRA file"
        return [(f"{path.name} is a LoRA, not a base model", fix)]
    kind = model_detect.detect(header.shapes)
    if kind.family == model_detect.FLUX:
        return []  # checkpoint_family_problems and loratui.flux_files judge it
    if kind.family == model_detect.SDXL_REFINER:
        message = (
            f"{path.name} is the SDXL refiner (one text encoder, OpenCLIP ViT-bigG), which is not trainable as a "
            "LoRA base here"
        )
        return [(message, "use the SDXL base model (sd_xl_base_1.0.safetensors) or a fine-tune of it")]
    if kind.family == model_detect.SDXL and kind.missing:
        message = f"{path.name} is an SDXL checkpoint without {' and '.join(kind.missing)}"
        fix = "use a complete SDXL checkpoint (UNet, VAE and both text encoders), such as sd_xl_base_1.0.safetensors"
        return [(message, fix)]
    if not any(name.startswith("model.diffusion_model.") for name in names):
        message = (
            f"{path.name} holds no UNet weights (model.diffusion_model.*): it is not a full Stable Diffusion "
            "checkpoint (a VAE or an embedding?)"
        )
        return [(message, "point model.path at a full SD 1.x, SD 2.x or SDXL checkpoint")]
    return []


def _pickle_problems(path: Path, unsafe: list[str]) -> list[tuple[str, str]]:
    if not unsafe:
        return []
    shown = ", ".join(unsafe[:3]) + (f" and {len(unsafe) - 3} more" if len(unsafe) > 3 else "")
    return [
        (
            f"{path.name} cannot be loaded without pickle, which can run arbitrary code: it needs {shown}",
            "use the .safetensors version of this model, or convert it with a tool you trust",
        )
    ]


def single_file_configs(family: str, tokenizer_dir: Path | None) -> Path | Problem:
    """The folder of configs and tokenizer a single-file checkpoint loads with, or the problem.

    A checkpoint holds weights only; the layouts and the CLIP vocabulary come from a diffusers
    folder: ``model.tokenizer``'s model folder, else the repo of the family in the local Hugging
    Face cache. The engine takes its folder from here, so check and engine look in one place.
    SDXL's configs ship with loratui; only its two tokenizers are looked for (checkpoint_configs)."""
    if family == "sdxl":
        return checkpoint_configs.sdxl_single_file_configs(tokenizer_dir)
    if tokenizer_dir is not None:
        folder = tokenizer_dir.parent if tokenizer_dir.name == "tokenizer" else tokenizer_dir
        fix = "set model.tokenizer to the tokenizer/ folder of a local SD diffusers model of the same family"
        if not (folder / "model_index.json").is_file():
            return error(
                "model.tokenizer",
                f"{tokenizer_dir} is not inside a diffusers model folder (no model_index.json beside it)",
                fix,
            )
        gaps = model_files.folder_gaps(folder, with_weights=False)
        if gaps:
            return error(
                "model.tokenizer",
                f"the model folder {folder} lacks configs the checkpoint needs: {'; '.join(gaps)}",
                fix,
            )
        return folder
    repo = SINGLE_FILE_CONFIG_REPOS[family]
    fix = (
        f"set model.tokenizer to the tokenizer/ folder of a local SD {family} diffusers model, "
        f"or fetch the configs once with network: {config_download_command(repo)}"
    )
    snapshot = model_files.hf_cached_snapshot(repo)
    if snapshot is None:
        return error(
            "model.path",
            "a single-file checkpoint needs the model's configs and CLIP tokenizer, and none are on this machine",
            fix,
        )
    gaps = model_files.folder_gaps(snapshot, with_weights=False)
    if gaps:
        return error(
            "model.path",
            f"the configs of {repo} in the Hugging Face cache ({snapshot}) are incomplete: {'; '.join(gaps)}",
            fix,
        )
    return snapshot


def config_download_command(repo: str) -> str:
    return shlex.join(["hf", "download", repo, "--include", "*.json", "*.txt"])


def _checkpoint_family(cfg: RunConfig) -> list[Problem]:
    path = _model_path(cfg)
    if path is None or not path.is_file():
        return []
    return checkpoint_family_problems(path, cfg.model.family)


def checkpoint_family_problems(path: Path, family: str) -> list[Problem]:
    """A ``.safetensors`` checkpoint of SDXL given as SD 1.x/2.x, or the reverse: diffusers would
    build the other family's parts and fail on the first weight that does not fit, after reading
    the whole file. Told from its keys (loratui.model_detect); the engine asks this too. SD 1.x
    against 2.x is left to the width check, which compares the file with the configs it loads with."""
    if path.suffix.lower() != ".safetensors":
        return []
    try:
        kind = model_detect.checkpoint_kind(path)
    except (ModelFileError, OSError):
        return []  # reported by the rules on the file itself
    found = kind.family
    if found == model_detect.FLUX and family != "flux":
        message = f'{path.name} is a FLUX.1 checkpoint, but model.family is "{family}"'
        return [error("model.family", message, 'set model.family = "flux"')]
    if family == "flux":
        return []  # loratui.flux_files says what a file given for FLUX.1 is
    if family in SD_FAMILIES and found == model_detect.SDXL:
        message = f'{path.name} is an SDXL checkpoint, but model.family is "{family}"'
        return [error("model.family", message, 'set model.family = "sdxl"')]
    if family != "sdxl" or found == model_detect.SDXL:
        return []
    if found in SD_FAMILIES:
        message = f'{path.name} is an {families.family_name(found)} checkpoint, but model.family is "sdxl"'
        fix = f'set model.family = "{found}", or point model.path at an SDXL checkpoint'
        return [error("model.family", message, fix)]
    if kind.has_unet:
        message = (
            f"{path.name} is not an SDXL checkpoint: it has no SDXL text encoders (conditioner.embedders.*) "
            "and its UNet no SDXL embedding (label_emb)"
        )
        fix = 'point model.path at an SDXL checkpoint, or set model.family to the checkpoint\'s ("sd1" or "sd2")'
        return [error("model.family", message, fix)]
    return []


def _tokenizer_dir(cfg: RunConfig) -> Path | None:
    return cfg.resolve(cfg.model.tokenizer) if cfg.model.tokenizer.strip() else None


def _single_file(cfg: RunConfig) -> list[Problem]:
    """A checkpoint file's configs must be on this machine, and its UNet must fit them."""
    path = _model_path(cfg)
    if path is None or not path.is_file() or cfg.model.family not in SINGLE_FILE_CONFIG_REPOS:
        return []
    found = single_file_configs(cfg.model.family, _tokenizer_dir(cfg))
    if isinstance(found, Problem):
        return [found]
    if path.suffix.lower() != ".safetensors":
        return []
    return _width_problems(path, found)


def _width_problems(path: Path, config_folder: Path) -> list[Problem]:
    """The text the UNet attends to is 768 wide in SD 1.x, 1024 in SD 2.x: a checkpoint loaded
    with the other family's configs fails on the first cross-attention layer."""
    try:
        width = model_files.json_object(config_folder / "unet" / "config.json").get("cross_attention_dim")
        shapes = model_files.safetensors_header(path).shapes
    except (ModelFileError, OSError):
        return []  # reported by the rules on the files themselves
    key = next(
        (
            name
            for name in sorted(shapes)
            if name.startswith("model.diffusion_model.") and name.endswith("attn2.to_k.weight")
        ),
        None,
    )
    if key is None or not isinstance(width, int) or len(shapes[key]) != 2 or shapes[key][1] == width:
        return []
    # At model.path, where the engine's loader refuses it: the file and its configs do not fit.
    family = {768: "an SD 1.x checkpoint", 1024: "an SD 2.x checkpoint", 2048: "an SDXL checkpoint"}.get(
        shapes[key][1], "a checkpoint"
    )
    return [
        error(
            "model.path",
            f"{path.name} is {family} of text width {shapes[key][1]}, but the configs "
            f"it would load with ({config_folder}) are for text width {width}",
            'set model.family to the checkpoint\'s ("sd1" for SD 1.x, "sd2" for SD 2.x, "sdxl" for SDXL), or '
            "point model.tokenizer at a model of the checkpoint's family",
        )
    ]


def _model_config_folder(cfg: RunConfig) -> Path | None:
    """The diffusers folder whose configs describe the model: its own, or the one a single-file
    checkpoint borrows them from; None for a built-in model or when there is none (other rules
    say why)."""
    path = _model_path(cfg)
    if path is None:
        return None
    if path.is_dir():
        return path
    if path.is_file() and cfg.model.family in SINGLE_FILE_CONFIG_REPOS:
        found = single_file_configs(cfg.model.family, _tokenizer_dir(cfg))
        return found if isinstance(found, Path) else None
    return None


def _component_config(cfg: RunConfig, component: str) -> dict | None:
    folder = _model_config_folder(cfg)
    if folder is None:
        return None
    try:
        return model_files.json_object(folder / component / "config.json")
    except (ModelFileError, OSError):
        return None


def text_encoder_layers(cfg: RunConfig) -> int | None:
    """How many layers the text encoder has, from the model's own config; None when unknown."""
    if cfg.model.is_builtin:
        return BUILTIN_TEXT_ENCODER_LAYERS.get(cfg.model.path)
    layers = (_component_config(cfg, "text_encoder") or {}).get("num_hidden_layers")
    return layers if isinstance(layers, int) else None


def clip_skip_problems(clip_skip: int, layers: int | None, model: str) -> list[Problem]:
    """clip skip N takes the output of the N-th layer from the end: there must be N layers."""
    if layers is None or clip_skip <= layers:
        return []
    return [
        error(
            "model.clip_skip",
            f"clip_skip {clip_skip} is beyond the text encoder of {model}, which has {layers} layers",
            f"use 1 to {layers} (1 is usual, 2 for anime models)",
        )
    ]


def _clip_skip(cfg: RunConfig) -> list[Problem]:
    if cfg.model.family not in SD_FAMILIES:
        return []  # SDXL has no clip skip (loratui.rules says it is ignored)
    return clip_skip_problems(cfg.model.clip_skip, text_encoder_layers(cfg), cfg.model.path)


# ---------------------------------------------------------------------------------------------
# The LoRA's ranks: no wider than the layers they train.
#
# A layer of n inputs and m outputs (n = in channels x kernel area for a convolution) changes
# in at most min(n, m) independent directions, its width here: a LoRA of a higher rank adds
# memory and nothing else, and a huge one (conv_rank = 1000000000) asks for terabytes. So a rank
# may be at most the widest layer it trains; the engine measures its layers and refuses the same
# before it allocates anything (engine/train.py).


@dataclass(frozen=True)
class LayerWidths:
    """The widest layer of each group a LoRA trains, from the model's configs."""

    attention: int  # the UNet's cross-attention blocks: their channels
    resnet: int  # the UNet's ResNet and up/downsampling blocks (LoCon): the most channels of any block
    text_encoder: int  # the (first) CLIP text encoder: its hidden size
    text_encoder_2: int = 0  # SDXL's second text encoder (OpenCLIP ViT-bigG): its hidden size; 0 = none


# The built-in models' widths (engine/tiny_model.py, engine/tiny_sdxl.py, engine/reference_models.py;
# tests/test_hostile_state.py holds them equal to what the engine measures).
BUILTIN_LAYER_WIDTHS = {
    "loratui:tiny-sd": LayerWidths(attention=64, resnet=64, text_encoder=32),
    "loratui:sd15-random": LayerWidths(attention=1280, resnet=1280, text_encoder=768),
    "loratui:tiny-sdxl": LayerWidths(attention=64, resnet=64, text_encoder=32, text_encoder_2=48),
    "loratui:sdxl-random": LayerWidths(attention=1280, resnet=1280, text_encoder=768, text_encoder_2=1280),
}


def layer_widths(unet: dict, text_encoder: dict, text_encoder_2: dict | None = None) -> LayerWidths | None:
    """The widths from a UNet's and the text encoders' config.json; None when they do not say.

    Every Linear and 1x1 convolution of a cross-attention block (q/k/v/out, proj_in/out, the
    feed-forward) is as wide as the block's channels; every 3x3 convolution of the ResNet blocks
    as its block's channels; a text encoder's layers as its hidden size (SDXL's second encoder's
    MLP is wider, but a LoRA's rank is bounded by the narrower side of a layer)."""
    channels, down, up = (unet.get(key) for key in ("block_out_channels", "down_block_types", "up_block_types"))
    hidden = text_encoder.get("hidden_size")
    hidden_2 = text_encoder_2.get("hidden_size") if text_encoder_2 is not None else 0
    lists = (channels, down, up)
    if not all(isinstance(items, list) and items for items in lists) or not isinstance(hidden, int):
        return None
    if type(hidden_2) is not int or hidden_2 < 0:
        return None
    if not all(type(width) is int and width > 0 for width in channels) or not len(channels) == len(down) == len(up):
        return None
    attention = [width for width, kind in zip(channels, down, strict=True) if "CrossAttn" in str(kind)]
    attention += [width for width, kind in zip(reversed(channels), up, strict=True) if "CrossAttn" in str(kind)]
    if "CrossAttn" in str(unet.get("mid_block_type", "UNetMidBlock2DCrossAttn")):  # absent: diffusers' default
        attention.append(channels[-1])
    return LayerWidths(max(attention, default=0), max(channels), hidden, hidden_2)


# FLUX.1's: every Linear of a double or single block reads or writes the transformer's width (heads x
# head width), so that is its widest side; CLIP-L's is its hidden size (tests/test_flux_check.py holds
# these equal to what the engine measures).
BUILTIN_FLUX_LAYER_WIDTHS = {
    "loratui:tiny-flux": LayerWidths(attention=64, resnet=0, text_encoder=32),
    "loratui:flux-random": LayerWidths(attention=3072, resnet=0, text_encoder=768),
}


def flux_layer_widths(transformer: dict, text_encoder: dict) -> LayerWidths | None:
    """The widths from a FLUX.1 transformer's and CLIP-L's config.json; None when they do not say."""
    heads, head_width = transformer.get("num_attention_heads"), transformer.get("attention_head_dim")
    hidden = text_encoder.get("hidden_size")
    if not all(type(value) is int and value > 0 for value in (heads, head_width, hidden)):
        return None
    return LayerWidths(attention=heads * head_width, resnet=0, text_encoder=hidden)


def model_layer_widths(cfg: RunConfig) -> LayerWidths | None:
    if cfg.model.family == "flux":
        if cfg.model.is_builtin:
            return BUILTIN_FLUX_LAYER_WIDTHS.get(cfg.model.path)
        transformer, text_encoder = _component_config(cfg, "transformer"), _component_config(cfg, "text_encoder")
        return flux_layer_widths(transformer, text_encoder) if transformer and text_encoder else None
    if cfg.model.is_builtin:
        return BUILTIN_LAYER_WIDTHS.get(cfg.model.path)
    unet, text_encoder = _component_config(cfg, "unet"), _component_config(cfg, "text_encoder")
    if unet is None or text_encoder is None:
        return None
    if cfg.model.family != "sdxl":
        return layer_widths(unet, text_encoder)
    text_encoder_2 = _component_config(cfg, "text_encoder_2")
    return layer_widths(unet, text_encoder, text_encoder_2) if text_encoder_2 is not None else None


def widest_trained(
    widths: LayerWidths, conv_rank: int, trains_text_encoder: bool, trains_text_encoder_2: bool = False
) -> tuple[int, int]:
    """(the widest layer trained at the network rank, the widest trained at the conv rank): with
    LoCon the ResNet blocks' Linear and 1x1 layers take the network rank, their 3x3 ones the conv rank."""
    text_encoder = widths.text_encoder if trains_text_encoder else 0
    text_encoder_2 = widths.text_encoder_2 if trains_text_encoder_2 else 0
    at_rank = max(widths.attention, widths.resnet if conv_rank else 0, text_encoder, text_encoder_2)
    return at_rank, widths.resnet if conv_rank else 0


def rank_problems(rank: int, conv_rank: int, widest: tuple[int, int], model: str) -> list[Problem]:
    """``widest``: as :func:`widest_trained` gives it, or as the engine measures it."""
    at_rank, at_conv_rank = widest
    problems = []
    if rank > at_rank:
        problems.append(
            error(
                "network.rank",
                f"rank {rank} is above the width of every layer it trains in {model} (the widest is {at_rank}): "
                "a higher rank only adds memory",
                f"use {at_rank} or less ({min(32, at_rank)} is a common start)",
            )
        )
    if conv_rank > at_conv_rank:
        problems.append(
            error(
                "network.conv_rank",
                f"conv_rank {conv_rank} is above the width of every convolution it trains in {model} "
                f"(the widest is {at_conv_rank}): a higher rank only adds memory",
                f"use {at_conv_rank} or less (4 to 32 is usual for LoCon), or 0 for no conv layers",
            )
        )
    return problems


def rank_bounds_network(network_type: str) -> bool:
    """Whether a rank above every layer's width only wastes memory: not for LoKr (LyCORIS then trains a
    layer's factor as a full matrix, kohya_ss's "full matrix" dim) nor iA3 (no rank at all)."""
    return network_type not in ("lokr", "ia3")


def _ranks(cfg: RunConfig) -> list[Problem]:
    if not rank_bounds_network(cfg.network.type):
        return []
    widths = model_layer_widths(cfg)
    if widths is None:
        return []  # the engine measures them
    net = cfg.network
    trained = {part.name for part in families.trained_text_encoders(cfg)}  # SD: "te"; SDXL: "te1", "te2"
    widest = widest_trained(widths, net.conv_rank, bool(trained & {"te", "te1"}), "te2" in trained)
    return rank_problems(net.rank, net.conv_rank, widest, cfg.model.path)


# ---------------------------------------------------------------------------------------------
# The optimizer: installed, and taking the arguments given (read from its source, not imported).


def _optimizer_package(cfg: RunConfig) -> list[Problem]:
    name = canonical_optimizer(cfg.optimizer.name)
    if name not in optimizer_signatures.OPTIMIZER_SOURCES:
        return []
    package = optimizer_signatures.OPTIMIZER_SOURCES[name][0]
    if installed(package):
        return []
    return [
        error(
            "optimizer.name",
            f"{name} needs the {package} package, which is not installed",
            f"choose another optimizer, or install it: pip install {package}",
        )
    ]


def _optimizer_args(cfg: RunConfig) -> list[Problem]:
    name = canonical_optimizer(cfg.optimizer.name)
    if name not in optimizer_signatures.OPTIMIZER_SOURCES:
        return []
    try:
        args = parse_optimizer_args(cfg.optimizer.args)
    except UserError:
        return []  # validation reports it
    problems = optimizer_signatures.adafactor_problems(args) if name == "Adafactor" else []
    signature = optimizer_signatures.optimizer_signature(name)
    for key, value in args.items():
        problem = optimizer_signatures.argument_problem(name, signature, key, value) if signature else None
        refused = argument_value_problem(name, key, value) if problem is None else None
        if refused:
            problem = error("optimizer.args", *refused)
        if problem:
            problems.append(problem)
    return problems


# ---------------------------------------------------------------------------------------------
# Resuming: the state folder must be one this config can continue.

# Re-exported: the tests and the engine's state module hold these equal.
STATE_FORMAT = resume_state.STATE_FORMAT
STATE_FILES = resume_state.STATE_FILES


def _resume(cfg: RunConfig) -> list[Problem]:
    """The state folder whole (every file read as far as the standard library can: see
    :mod:`loratui.resume_state`), then fitting this config: its network and its optimizer."""
    folder = _resume_folder(cfg)
    if folder is None:
        return []
    try:
        progress = resume_state.read_state(folder)
    except resume_state.StateError as exc:
        return [error("training.resume_from", exc.message, exc.fix)]
    return network_problems(cfg, folder, progress["network"]) + _optimizer_problems(cfg, folder, progress)


def _resume_folder(cfg: RunConfig) -> Path | None:
    if not cfg.training.resume_from.strip():
        return None
    try:
        folder = cfg.resolve(cfg.training.resume_from)
        return folder if folder.is_dir() else None
    except (ValueError, OSError, RuntimeError):
        return None  # a built-in model's name, a name too long, ~nosuchuser: validation says which


def _optimizer_problems(cfg: RunConfig, folder: Path, progress: dict) -> list[Problem]:
    """An optimizer's state (AdamW's two moments, Lion's one, Adafactor's factored ones) fits no
    other optimizer: resuming with another one fails at the first step, or silently misreads it."""
    saved, current = progress.get("optimizer"), canonical_optimizer(cfg.optimizer.name)
    if not saved or current is None or saved == current:
        return []  # a state saved before it recorded its optimizer: the engine compares the states
    return [
        error(
            "training.resume_from",
            f"{folder} was saved by the {saved} optimizer; this config trains with {current}, "
            "which cannot continue its state",
            f'set optimizer.name = "{saved}" to resume it, or start a fresh run with {current}',
        )
    ]


def resume_position_problems(
    cfg: RunConfig, schedule: Schedule, batches_per_epoch: int, found: Iterable[Problem] = ()
) -> list[Problem]:
    """Where the state stands must be inside this config's run: at or past its end there is
    nothing left to train (the engine would report "finished" at once), and past the last batch
    of its epoch the rest of that epoch would be skipped. The schedule and the batches come from
    the dataset scan: loratui.check asks this once it has them. ``found``: the problems so far."""
    folder = _resume_folder(cfg)
    if folder is None or "training.resume_from" in failed_settings(found):
        return []
    try:
        progress = resume_state.read_progress(folder)
    except resume_state.StateError:
        return []  # _resume reports it
    step, done_epochs, batches_done = progress["step"], progress["epoch"], progress["batches_in_epoch"]
    if step >= schedule.total_steps or done_epochs >= schedule.epochs:
        message = (
            f"{folder} is at step {step} after {count(done_epochs, 'epoch')}, and this run ends at step "
            f"{schedule.total_steps} after {count(schedule.epochs, 'epoch')}: there is nothing left to train"
        )
        fix = "raise training.epochs (or max_train_steps) to train on from it, or resume from an earlier state"
        return [error("training.resume_from", message, fix)]
    if batches_done > batches_per_epoch:
        message = (
            f"{folder} is {count(batches_done, 'batch', 'batches')} into epoch {done_epochs + 1}, which has "
            f"{count(batches_per_epoch, 'batch', 'batches')} with this dataset and batch size: "
            "they changed since it was saved"
        )
        fix = "resume with the images and batch size the state was saved with, or start a fresh run"
        return [error("training.resume_from", message, fix)]
    return []


def network_problems(cfg: RunConfig, folder: Path, saved: dict) -> list[Problem]:
    """The LoRA's shape must be the one the state was saved with (the engine also compares the
    module counts, which depend on the base model). ``saved``: progress.json's network."""
    own_parts = families.lora_parts(cfg.model.family)
    saved_parts = resume_state.network_parts(saved)
    if saved_parts is not None and saved_parts != own_parts:
        return [_other_family_problem(cfg, folder, saved_parts)]
    net = cfg.network
    wanted = {"rank": net.rank, "alpha": net.alpha, "conv_rank": net.conv_rank, "conv_alpha": net.conv_alpha}
    # (what, saved, this config's) for each difference, in words.
    differences = [
        (key, f"{saved[key]:g}", f"{value:g}")
        for key, value in wanted.items()
        if isinstance(saved.get(key), (int, float)) and saved[key] != value
    ]
    saved_type = saved.get("type", "lora")  # a state saved before network types were written is a LoRA's
    if isinstance(saved_type, str) and saved_type != net.type:
        differences.append(("type", saved_type, net.type))
    for part in families.text_encoder_parts(cfg.model.family):
        saved_count, trained = saved.get(part.count_key), families.trains(cfg, part)
        if isinstance(saved_count, int) and (saved_count > 0) != trained:
            differences.append((part.label, "trained" if saved_count else "frozen", "trained" if trained else "frozen"))
    if not differences:
        return []
    was = ", ".join(f"{what} {old}" for what, old, _ in differences)
    now = ", ".join(f"{what} {new}" for what, _, new in differences)
    return [
        error(
            "training.resume_from",
            f"{folder} was trained with another network ({was}); this config has {now}",
            "resume with the network settings the state was saved with",
        )
    ]


def _other_family_problem(cfg: RunConfig, folder: Path, saved_parts: tuple) -> Problem:
    """A state of an SDXL run resumed by an SD config, or the reverse: its LoRA fits no part."""
    saved_families = [family for family, parts in families.FAMILY_PARTS.items() if parts == saved_parts]
    shown = " or ".join(families.family_name(family) for family in saved_families)
    return error(
        "training.resume_from",
        f"{folder} was saved by a run on an {shown} model; this config trains an "
        f"{families.family_name(cfg.model.family)} model, whose LoRA has other parts",
        f'resume with the model the state was saved with (model.family = "{saved_families[0]}"), or start a fresh run',
    )


# ---------------------------------------------------------------------------------------------
# The rules, in order, with the settings each reads (skipped when one of those has an error).

_RULES: list[tuple[tuple[str, ...], Callable[[RunConfig], list[Problem]]]] = [
    (("training.mixed_precision",), lambda cfg: precision_problems(cfg.training.mixed_precision, this_machine())),
    (("training.attention",), lambda cfg: attention_problems(cfg.training.attention, this_machine())),
    (("model.path", "model.family"), _folder_family),
    (("model.path",), _model_files),
    (("model.path", "model.family"), _checkpoint_family),
    (("model.path", "model.tokenizer", "model.family"), _single_file),
    (("model.path", "model.tokenizer", "model.family", "model.clip_skip"), _clip_skip),
    (
        (
            "model.path",
            "model.tokenizer",
            "model.family",
            "network.rank",
            "network.conv_rank",
            "network.train_unet_only",
            "optimizer.text_encoder_lr",
            "optimizer.text_encoder_2_lr",
        ),
        _ranks,
    ),
    (
        (
            "model.path",
            "model.family",
            "model.tokenizer",
            "model.flux_variant",
            "model.ae_path",
            "model.clip_l_path",
            "model.t5xxl_path",
            "model.fp8_base",
        ),
        flux_files.flux_problems,
    ),
    (("optimizer.name",), _optimizer_package),
    (("optimizer.name", "optimizer.args"), _optimizer_args),
    (
        (
            "training.resume_from",
            "network.rank",
            "network.alpha",
            "network.conv_rank",
            "network.conv_alpha",
            "network.train_unet_only",
            "optimizer.text_encoder_lr",
            "optimizer.text_encoder_2_lr",
            "model.family",
        ),
        _resume,
    ),
]
