"""The configs and tokenizers an SDXL single-file checkpoint is loaded with, found offline.

A checkpoint file (``sd_xl_base_1.0.safetensors`` and the fine-tunes in its layout) holds weights
only: diffusers' ``StableDiffusionXLPipeline.from_single_file(path, config=folder)`` takes every
component's layout, and both CLIP tokenizers, from one diffusers-style folder. loratui ships the
layouts: SDXL base 1.0's component configs, written from the published ones of
stabilityai/stable-diffusion-xl-base-1.0 (``loratui/model_configs/sdxl_base/``; every SDXL
fine-tune shares them). The tokenizers' vocabularies are not loratui's to ship; they come from
``model.tokenizer`` (a folder with ``tokenizer/`` and ``tokenizer_2/``, such as a diffusers SDXL
model) or from the local Hugging Face cache of that repo.

The folder diffusers reads is then one of:
- the tokenizer folder itself, when it is a complete diffusers SDXL folder (its own configs);
- the shipped configs and its two tokenizers, copied together once into loratui's cache folder
  (``model_configs/sdxl-<digest of the tokenizers>``), renamed into place whole so that a killed
  copy never leaves half a folder, and found again by the same digest.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
from importlib import resources
from pathlib import Path

from loratui import model_files
from loratui.atomic import temp_path_for
from loratui.errors import Problem, error
from loratui.paths import cache_dir

SDXL_REPO = "stabilityai/stable-diffusion-xl-base-1.0"
SHIPPED_SDXL = "sdxl_base"
# The files of a diffusers SDXL folder that from_single_file reads, beside the tokenizers.
SDXL_CONFIG_FILES = (
    "model_index.json",
    "unet/config.json",
    "vae/config.json",
    "text_encoder/config.json",
    "text_encoder_2/config.json",
    "scheduler/scheduler_config.json",
)
SDXL_TOKENIZERS = ("tokenizer", "tokenizer_2")
# Bump when the shipped configs change: assembled folders are found by a digest that includes it.
_SHIPPED_VERSION = "1"


def shipped_configs(name: str = SHIPPED_SDXL) -> Path:
    """The folder of configs shipped in the package (``loratui/model_configs/<name>``)."""
    return Path(str(resources.files("loratui").joinpath("model_configs", name)))


def tokenizer_download_command() -> str:
    """What fetches SDXL's two tokenizers into the Hugging Face cache, where they are then found."""
    return shlex.join(["hf", "download", SDXL_REPO, "--include", "tokenizer/*", "tokenizer_2/*"])


def sdxl_single_file_configs(tokenizer_dir: Path | None) -> Path | Problem:
    """The folder an SDXL checkpoint loads with, or the problem (see the module's docstring)."""
    fix = (
        "set model.tokenizer to a folder with tokenizer/ and tokenizer_2/ (a local SDXL diffusers model), "
        f"or fetch SDXL's tokenizers once with network: {tokenizer_download_command()}"
    )
    if tokenizer_dir is not None:
        root = tokenizer_dir.parent if tokenizer_dir.name in SDXL_TOKENIZERS else tokenizer_dir
        where = "model.tokenizer"
    else:
        root = model_files.hf_cached_snapshot(SDXL_REPO)
        where = "model.path"
        if root is None:
            message = (
                "an SDXL single-file checkpoint needs SDXL's two CLIP tokenizers beside the configs loratui "
                "ships, and none are on this machine"
            )
            return error(where, message, fix)
    if not config_gaps(root) and not tokenizer_gaps(root):
        return root
    gaps = tokenizer_gaps(root)
    if gaps:
        return error(where, f"{root} lacks what an SDXL checkpoint needs beside it: {'; '.join(gaps)}", fix)
    try:
        return assembled_folder(root)
    except OSError as exc:
        message = f"cannot write the SDXL configs and tokenizers into {_assembly_parent()}: {exc.strerror or exc}"
        return error(where, message, "set LORATUI_CACHE_DIR to a writable folder")


def config_gaps(folder: Path) -> list[str]:
    """The config files of a diffusers SDXL folder that ``folder`` lacks."""
    return [f"no {name}" for name in SDXL_CONFIG_FILES if not (folder / name).is_file()]


def tokenizer_gaps(folder: Path) -> list[str]:
    """What ``folder`` lacks of SDXL's two tokenizers, one phrase each."""
    gaps = []
    for name in SDXL_TOKENIZERS:
        if not (folder / name).is_dir():
            gaps.append(f"no {name}/ folder")
        elif not model_files.tokenizer_files_present(folder / name):
            gaps.append(f"no tokenizer files in {name}/ (vocab.json and merges.txt, or tokenizer.json)")
    return gaps


# (tokenizer files with their sizes and times) -> the assembled folder: the check runs on every
# keystroke of the wizard, and the tokenizers need not be read and hashed each time.
_assembled: dict[tuple, Path] = {}


def assembled_folder(root: Path) -> Path:
    """The shipped SDXL configs with the tokenizers of ``root``, as one folder under the cache dir.

    Raises OSError when it cannot be read or written."""
    files = _tokenizer_files(root)
    signature = tuple((str(path), path.stat().st_size, path.stat().st_mtime_ns) for path in files)
    known = _assembled.get(signature)
    if known is not None and (known / SDXL_CONFIG_FILES[0]).is_file():
        return known
    digest = hashlib.sha256(f"loratui sdxl configs v{_SHIPPED_VERSION}\n".encode())
    for path in files:
        digest.update(f"{path.relative_to(root)}\n{path.stat().st_size}\n".encode())
        digest.update(path.read_bytes())
    target = _assembly_parent() / f"sdxl-{digest.hexdigest()[:16]}"
    if not (target / SDXL_CONFIG_FILES[0]).is_file():
        _assemble(root, files, target)
    _assembled[signature] = target
    return target


def _assembly_parent() -> Path:
    return cache_dir() / "model_configs"


def _tokenizer_files(root: Path) -> list[Path]:
    return sorted(path for name in SDXL_TOKENIZERS for path in (root / name).iterdir() if path.is_file())


def _assemble(root: Path, files: list[Path], target: Path) -> None:
    """Copy the shipped configs and the tokenizer files into a temp folder beside ``target``, then
    rename it into place: readers see the whole folder or none. model_index.json is written last, so
    a folder with one is complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = temp_path_for(target)
    staging.mkdir()
    try:
        shipped = shipped_configs()
        for name in SDXL_CONFIG_FILES[1:]:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shipped / name, staging / name)
        for path in files:
            (staging / path.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, staging / path.relative_to(root))
        shutil.copyfile(shipped / SDXL_CONFIG_FILES[0], staging / SDXL_CONFIG_FILES[0])
        try:
            os.replace(staging, target)
        except OSError:
            if not (target / SDXL_CONFIG_FILES[0]).is_file():  # not another process's identical copy
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
