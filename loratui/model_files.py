"""What a base model's files hold, read with the standard library only (no torch, no diffusers).

The engine loads a model with diffusers and transformers, which takes minutes on a real model and
fails late. These readers look at the same files first, cheaply: a safetensors file's header (the
8-byte length and the JSON table of tensors), the globals a ``.ckpt`` pickle would need, which
parts a diffusers folder has, and where the local Hugging Face cache keeps a repo's files.

Each inspection of a file is remembered by (path, size, mtime): the wizard checks on every
keystroke, and a header of a 4 GB checkpoint need not be parsed twice.
"""

from __future__ import annotations

import json
import os
import pickletools
import re
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class ModelFileError(ValueError):
    """A file that cannot be what it should be; the message says why, in plain words."""


# ---------------------------------------------------------------------------------------------
# Remembering inspections.

_CACHE_SIZE = 64
_inspections: OrderedDict[tuple, object] = OrderedDict()


def inspected(kind: str, path: Path, inspect: Callable[[Path], T]) -> T:
    """``inspect(path)``, remembered while the file keeps its size and modification time.

    A ModelFileError is remembered too (the file stays broken until it changes)."""
    stat = path.stat()
    key = (kind, str(path), stat.st_size, stat.st_mtime_ns)
    if key in _inspections:
        _inspections.move_to_end(key)
        found = _inspections[key]
    else:
        try:
            found = inspect(path)
        except ModelFileError as exc:
            found = exc
        _inspections[key] = found
        if len(_inspections) > _CACHE_SIZE:
            _inspections.popitem(last=False)
    if isinstance(found, ModelFileError):
        raise found
    return found  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# safetensors: an 8-byte little-endian header length, a JSON header, then the tensor data.

# The safetensors library refuses larger headers (its MAX_HEADER_SIZE); so does this reader,
# which also keeps a damaged length field from making it read gigabytes.
MAX_HEADER_BYTES = 100_000_000
_DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U64": 8,
    "U32": 4,
    "U16": 2,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}


@dataclass(frozen=True)
class SafetensorsHeader:
    shapes: dict[str, tuple[int, ...]]  # tensor name -> shape
    metadata: dict[str, str]
    dtypes: dict[str, str] = field(default_factory=dict)  # tensor name -> safetensors dtype ("BF16", "F8_E4M3")


def safetensors_header(path: Path) -> SafetensorsHeader:
    """The header of a safetensors file, checked as the safetensors library checks it when it
    opens the file: a bounded length, a JSON object, tensors that fill the data exactly."""
    return inspected("safetensors", path, _read_safetensors_header)


def _read_safetensors_header(path: Path) -> SafetensorsHeader:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ModelFileError(f"it is only {size} bytes long, too short for a safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES or 8 + length > size:
            raise ModelFileError(
                f"its header length field says {length} bytes, more than the file can hold "
                "(a damaged or truncated file, or not a safetensors file)"
            )
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"its header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise ModelFileError("its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    shapes = _checked_tensors(header, data_bytes=size - 8 - length)
    dtypes = {name: str(header[name]["dtype"]) for name in shapes}
    return SafetensorsHeader(shapes, metadata if isinstance(metadata, dict) else {}, dtypes)


def _checked_tensors(header: dict, data_bytes: int) -> dict[str, tuple[int, ...]]:
    if not header:
        raise ModelFileError("it holds no tensors")
    shapes: dict[str, tuple[int, ...]] = {}
    spans = []
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise ModelFileError(f"its header entry for {name!r} is malformed") from None
        count = 1
        for side in shape:
            count *= side
        if dtype in _DTYPE_BYTES and end - begin != count * _DTYPE_BYTES[dtype]:
            raise ModelFileError(f"its tensor {name!r} does not match its size in the header")
        shapes[name] = shape
        spans.append((begin, end))
    spans.sort()
    position = 0
    for begin, end in spans:
        if begin != position:
            raise ModelFileError("its tensors do not follow each other without gaps (a damaged file)")
        position = end
    if position != data_bytes:
        raise ModelFileError(
            f"its header describes {position} bytes of tensors but the file holds {data_bytes} "
            "(a truncated or unfinished download)"
        )
    return shapes


# ---------------------------------------------------------------------------------------------
# .ckpt: a zip holding a pickle (data.pkl) and the tensors' storages.

# What torch's weights-only unpickler (torch.load(weights_only=True), the only way the engine
# opens a pickle) lets a pickle name; anything else means running code from the file.
_SAFE_GLOBALS = frozenset(
    {
        "collections.OrderedDict",
        "collections.Counter",
        "torch.nn.parameter.Parameter",
        "torch.serialization._get_layout",
        "torch.Size",
        "torch.Tensor",
        "torch.device",
        "_codecs.encode",
        "builtins.bytearray",
        "builtins.set",
        "builtins.complex",
        "torch._tensor._rebuild_from_type_v2",
        "torch.storage.TypedStorage",
        "torch.storage.UntypedStorage",
        *(
            f"torch._utils._rebuild_{name}"
            for name in (
                "tensor",
                "tensor_v2",
                "tensor_v3",
                "parameter",
                "parameter_with_state",
                "qtensor",
                "sparse_tensor",
                "nested_tensor",
                "meta_tensor_no_storage",
                "wrapper_subclass",
                "device_tensor_from_numpy",
                "device_tensor_from_cpu_tensor",
            )
        ),
        *(
            f"torch.{scheme}"
            for scheme in (
                "per_tensor_affine",
                "per_tensor_symmetric",
                "per_channel_affine",
                "per_channel_symmetric",
                "per_channel_affine_float_qparams",
            )
        ),
    }
)
_TENSOR_CLASS_MODULES = ("torch", "torch.cuda", "torch.sparse", "torch.cuda.sparse")
_TENSOR_CLASS = re.compile(r"[A-Z][A-Za-z0-9]*(Storage|Tensor)")
_DTYPE = re.compile(r"(u?int\d+|float\d+(_\w+)?|bfloat16|complex\d+|bool|q?u?int\d+(x\d+)?|quint\w+|bits\w+)")


def is_safe_global(name: str) -> bool:
    """Whether torch's weights-only unpickler accepts a pickle global of this name."""
    if name in _SAFE_GLOBALS:
        return True
    module, _, attr = name.rpartition(".")
    if module in _TENSOR_CLASS_MODULES and _TENSOR_CLASS.fullmatch(attr):
        return True
    return module == "torch" and bool(_DTYPE.fullmatch(attr))


def unsafe_pickle_globals(path: Path) -> list[str]:
    """The globals of a ``.ckpt``'s pickle that the weights-only unpickler refuses (none: it loads).

    ModelFileError when the file is not in torch's zip format: the engine opens checkpoints
    memory-mapped, which needs it (and older files are plain pickles)."""
    return inspected("ckpt", path, _read_unsafe_globals)


def _read_unsafe_globals(path: Path) -> list[str]:
    if not zipfile.is_zipfile(path):
        raise ModelFileError("it is not in PyTorch's zip format (an old-style pickle file)")
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [name for name in archive.namelist() if name.endswith("data.pkl")]
            if not pickles:
                raise ModelFileError("it is a zip file without a PyTorch pickle (data.pkl) in it")
            data = archive.read(pickles[0])
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelFileError(f"its zip structure is damaged ({exc})") from None
    return sorted(name for name in pickle_globals(data) if not is_safe_global(name))


def pickle_globals(data: bytes) -> set[str]:
    """Every ``module.name`` a pickle would import, found by reading its opcodes (never running it)."""
    found: set[str] = set()
    pushed: list[object] = []  # what recent opcodes put on the stack, as far as it matters here
    memo: dict[int, object] = {}
    try:
        for opcode, arg, _ in pickletools.genops(data):
            name = opcode.name
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                found.add(f"{module}.{attr}")
            elif name == "STACK_GLOBAL":
                module, attr = (pushed[-2], pushed[-1]) if len(pushed) >= 2 else (None, None)
                found.add(f"{module}.{attr}" if isinstance(module, str) and isinstance(attr, str) else "<unknown>")
            elif name == "MEMOIZE":
                memo[len(memo)] = pushed[-1] if pushed else None
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg)] = pushed[-1] if pushed else None
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                pushed.append(memo.get(int(arg)))
            elif opcode.stack_after:
                pushed.append(arg if isinstance(arg, str) else None)
    except (ValueError, IndexError, struct.error) as exc:
        raise ModelFileError(f"its pickle is damaged ({exc})") from None
    return found


# ---------------------------------------------------------------------------------------------
# diffusers folders: what the engine's loader reads (engine/model_loading.py).

# Each component's config file and the weight files the engine loads (safetensors, single or
# sharded). A ``.bin`` is a pickle, and unpickling can run code: the engine loads a folder with
# ``use_safetensors=True`` and never opens one, and the check names it (PICKLE_WEIGHTS).
_UNET_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json")
_TEXT_ENCODER_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
COMPONENT_FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "unet": ("config.json", _UNET_WEIGHTS),
    "vae": ("config.json", _UNET_WEIGHTS),
    "text_encoder": ("config.json", _TEXT_ENCODER_WEIGHTS),
    "scheduler": ("scheduler_config.json", ()),
}
# SDXL adds its second text encoder (OpenCLIP ViT-bigG) and that encoder's tokenizer.
SDXL_COMPONENT_FILES = {**COMPONENT_FILES, "text_encoder_2": ("config.json", _TEXT_ENCODER_WEIGHTS)}
TOKENIZER_FOLDERS = {"sdxl": ("tokenizer", "tokenizer_2")}
# The pickle weight files diffusers and transformers would fall back to, per component.
PICKLE_WEIGHTS: dict[str, tuple[str, ...]] = {
    "unet": ("diffusion_pytorch_model.bin", "diffusion_pytorch_model.bin.index.json"),
    "vae": ("diffusion_pytorch_model.bin", "diffusion_pytorch_model.bin.index.json"),
    "text_encoder": ("pytorch_model.bin", "pytorch_model.bin.index.json"),
    "text_encoder_2": ("pytorch_model.bin", "pytorch_model.bin.index.json"),
}
TOKENIZER_FILES = ("vocab.json", "merges.txt")
FAST_TOKENIZER_FILE = "tokenizer.json"  # transformers 5 saves only this one


def _components(folder: Path) -> dict[str, tuple[str, tuple[str, ...]]]:
    return SDXL_COMPONENT_FILES if folder_family(folder) == "sdxl" else COMPONENT_FILES


def folder_gaps(folder: Path, with_weights: bool) -> list[str]:
    """What a diffusers model folder lacks for the engine, one phrase per missing part (an SDXL
    folder, as its model_index.json or UNet config says, has a second text encoder and tokenizer).

    ``with_weights=False`` asks only for the configs and the tokenizer: what a single-file
    checkpoint needs beside it."""
    gaps = []
    for part, (config, weights) in _components(folder).items():
        if not (folder / part).is_dir():
            gaps.append(f"no {part}/ folder")
        elif not (folder / part / config).is_file():
            gaps.append(f"no {part}/{config}")
        elif with_weights and weights and not any((folder / part / name).is_file() for name in weights):
            pickled = _pickle_weights(folder, part)
            if pickled:
                gaps.append(f"{part}/ holds its weights only as {pickled}, a pickle file (loading one can run code)")
            else:
                gaps.append(f"no weights in {part}/ ({weights[0]})")
    for name in TOKENIZER_FOLDERS.get(folder_family(folder) or "", ("tokenizer",)):
        tokenizer = folder / name
        if not tokenizer.is_dir():
            gaps.append(f"no {name}/ folder")
        elif not tokenizer_files_present(tokenizer):
            gaps.append(f"no tokenizer files in {name}/ (vocab.json and merges.txt, or tokenizer.json)")
    return gaps


def pickle_only_weights(folder: Path) -> list[str]:
    """The pickle weight files (``text_encoder/pytorch_model.bin``) of the components that have
    no safetensors weights: what the engine would have to unpickle, and never does."""
    found = []
    for part, (_, weights) in _components(folder).items():
        if weights and not any((folder / part / name).is_file() for name in weights):
            pickled = _pickle_weights(folder, part)
            if pickled:
                found.append(f"{part}/{pickled}")
    return found


def _pickle_weights(folder: Path, part: str) -> str | None:
    return next((name for name in PICKLE_WEIGHTS.get(part, ()) if (folder / part / name).is_file()), None)


def tokenizer_files_present(folder: Path) -> bool:
    return (folder / FAST_TOKENIZER_FILE).is_file() or all((folder / name).is_file() for name in TOKENIZER_FILES)


def weight_files(folder: Path) -> list[Path]:
    """The single-file safetensors weights of a folder's components (sharded ones are left out)."""
    found = []
    for part, (_, weights) in _components(folder).items():
        if weights and (folder / part / weights[0]).is_file():
            found.append(folder / part / weights[0])
    return found


# The pipelines of diffusers folders, by the family they are of. The SDXL refiner has the
# img2img pipeline and no first text encoder: it is refused as such (REFINER_PIPELINE).
PIPELINE_FAMILIES = {
    "StableDiffusionPipeline": None,  # SD 1.x or 2.x: the UNet's text width says which
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusionXLImg2ImgPipeline": "sdxl",
    "FluxPipeline": "flux",
    "StableDiffusion3Pipeline": "sd3",
}
REFINER_PIPELINE = "StableDiffusionXLImg2ImgPipeline"
# The text width the UNet attends to (cross_attention_dim): CLIP ViT-L in SD 1.x, OpenCLIP ViT-H in SD 2.x.
SD_TEXT_WIDTHS = {768: "sd1", 1024: "sd2"}
SD_EITHER = "sd"  # an SD 1.x or 2.x folder of another text width (the built-in tiny one)


def folder_family(folder: Path) -> str | None:
    """The family of a diffusers folder as its own files say it: "sdxl" for an SDXL pipeline or a
    UNet with SDXL's text_time embedding, "sd1"/"sd2" by the UNet's text width (SD_EITHER when it is
    neither's), "flux"/"sd3" by the pipeline; None when the files do not say (missing or
    unreadable: other checks name them)."""
    index = _optional_json(folder / "model_index.json")
    unet = _optional_json(folder / "unet" / "config.json")
    pipeline = str(index.get("_class_name", ""))
    if PIPELINE_FAMILIES.get(pipeline):
        return PIPELINE_FAMILIES[pipeline]
    if unet.get("addition_embed_type") == "text_time":
        return "sdxl"
    width = unet.get("cross_attention_dim")
    if isinstance(width, int) and width in SD_TEXT_WIDTHS:
        return SD_TEXT_WIDTHS[width]
    return SD_EITHER if pipeline in PIPELINE_FAMILIES or unet else None


def is_refiner(folder: Path) -> bool:
    """The SDXL refiner: an img2img pipeline conditioned on an aesthetic score, with the second
    text encoder only (its model_index.json lists the first as [null, null])."""
    index = _optional_json(folder / "model_index.json")
    first_encoder = index.get("text_encoder")
    no_first_encoder = isinstance(first_encoder, list) and not any(first_encoder)
    return index.get("requires_aesthetics_score") is True or (
        index.get("_class_name") == REFINER_PIPELINE and no_first_encoder
    )


def _optional_json(path: Path) -> dict:
    try:
        return json_object(path) if path.is_file() else {}
    except (ModelFileError, OSError):
        return {}


def json_object(path: Path) -> dict:
    """A JSON file that must hold an object (a config.json)."""
    return inspected("json", path, _read_json_object)


def _read_json_object(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path.name} is not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{path.name} does not hold a JSON object")
    return data


# ---------------------------------------------------------------------------------------------
# The local Hugging Face cache, as huggingface_hub lays it out (never the network).

# A repo id as huggingface_hub validates one: "owner/name", each part ASCII letters, digits, '-',
# '_', '.', beginning and ending with a letter or digit, at most 96 characters, no "--" or "..".
_PART = r"\w(?:[\w.-]{0,94}\w)?"
_HUB_ID = re.compile(rf"(?!.*(--|\.\.)){_PART}/{_PART}", re.ASCII)
_HUB_URL = re.compile(r"https?://(?:www\.)?huggingface\.co/([^/\s]+/[^/\s]+)/?")


def hub_repo_id(text: str) -> str | None:
    """The repo id when a path setting is written as a Hugging Face repo id or its web address."""
    text = text.strip()
    url = _HUB_URL.fullmatch(text)
    if url:
        text = url.group(1)
    return text if _HUB_ID.fullmatch(text) and not text.endswith((".safetensors", ".ckpt")) else None


def hf_cache_root() -> Path:
    """huggingface_hub's cache folder, from the same variables in the same order it reads them
    (huggingface_hub/constants.py)."""
    env = os.environ
    default_home = os.path.join(os.path.expanduser("~"), ".cache")
    home = _expand(env.get("HF_HOME", os.path.join(env.get("XDG_CACHE_HOME", default_home), "huggingface")))
    return Path(_expand(env.get("HF_HUB_CACHE", env.get("HUGGINGFACE_HUB_CACHE", os.path.join(home, "hub")))))


def _expand(path: str) -> str:
    return os.path.expandvars(os.path.expanduser(path))


def hf_cached_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot of ``repo_id``'s main branch, or None: what
    ``huggingface_hub.snapshot_download(repo_id, local_files_only=True)`` returns."""
    storage = hf_cache_root() / ("models--" + repo_id.replace("/", "--"))
    try:
        commit = (storage / "refs" / "main").read_text().strip()
    except OSError:
        return None
    snapshot = storage / "snapshots" / commit
    return snapshot if commit and snapshot.is_dir() else None
