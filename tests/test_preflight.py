"""loratui.preflight and loratui.model_files: what this machine and these files allow, found
without torch, and the same answer as the libraries that will load them.

The machine is faked through NVML (tests/fake_nvml.py); the files are real ones, written here.
Where preflight mirrors a library (huggingface_hub's cache, torch's weights-only unpickler, each
optimizer's keyword arguments), the test asks that library for the truth and compares.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from loratui import model_files, optimizer_signatures, outputs, preflight
from loratui.check import check_run
from loratui.config import load_config
from loratui.errors import Problem
from loratui.model_files import ModelFileError
from loratui.preflight import Machine
from tests import fake_nvml
from tests.conftest import small_config, write_config
from tests.fake_nvml import FakeGpu

CUDA_TORCH = ("2.5.1+cu124", "12.4")


@pytest.fixture
def fresh_machine(monkeypatch):
    """Machine facts read afresh in this test, with a CUDA build of torch installed (this
    machine's torch may well be the CPU build)."""
    monkeypatch.setattr(preflight, "_machines", {})
    monkeypatch.setattr(preflight, "_torch_build", lambda: CUDA_TORCH)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)


def precision_errors(precision: str) -> list[Problem]:
    return [p for p in preflight.precision_problems(precision, preflight.this_machine()) if p.severity == "error"]


# ---------------------------------------------------------------------------------------------
# The machine


def test_compute_capability_is_read_through_nvml_and_none_when_not_supported(monkeypatch):
    from loratui.gpu.nvml import read_gpus

    mute = FakeGpu(errors={"nvmlDeviceGetCudaComputeCapability": fake_nvml.NVML_ERROR_NOT_SUPPORTED})
    fake_nvml.install(monkeypatch, [FakeGpu(compute_capability=(8, 9)), mute])
    first, second = read_gpus(with_processes=False).devices
    assert first.compute_capability == (8, 9) and second.compute_capability is None


def test_without_a_driver_fp16_and_bf16_are_refused_with_the_reason(monkeypatch, fresh_machine):
    fake_nvml.install(monkeypatch, [FakeGpu()], init_error=fake_nvml.NVML_ERROR_DRIVER_NOT_LOADED)
    for precision in ("fp16", "bf16"):
        (problem,) = precision_errors(precision)
        assert problem.where == "training.mixed_precision"
        assert "needs a CUDA GPU" in problem.message and "Driver Not Loaded" in problem.message
        assert 'mixed_precision = "no"' in problem.fix
    assert precision_errors("no") == []


@pytest.mark.parametrize(
    "capability,bf16_ok", [((8, 9), True), ((8, 0), True), ((9, 0), True), ((7, 5), False), ((6, 1), False)]
)
def test_bf16_needs_compute_capability_8(monkeypatch, fresh_machine, capability, bf16_ok):
    fake_nvml.install(monkeypatch, [FakeGpu(name="Some GPU", compute_capability=capability)])
    assert precision_errors("fp16") == []
    problems = precision_errors("bf16")
    assert (problems == []) == bf16_ok
    if not bf16_ok:
        shown = ".".join(map(str, capability))
        assert f"Some GPU is {shown}" in problems[0].message and '"fp16"' in problems[0].fix


def test_an_unknown_capability_is_a_warning_not_a_refusal(monkeypatch, fresh_machine):
    mute = FakeGpu(errors={"nvmlDeviceGetCudaComputeCapability": fake_nvml.NVML_ERROR_NOT_SUPPORTED})
    fake_nvml.install(monkeypatch, [mute])
    (problem,) = preflight.precision_problems("bf16", preflight.this_machine())
    assert problem.severity == "warning" and "does not say" in problem.message


def test_a_cpu_only_torch_build_cannot_use_the_gpu(monkeypatch, fresh_machine):
    fake_nvml.install(monkeypatch, [FakeGpu()])
    monkeypatch.setattr(preflight, "_torch_build", lambda: ("2.13.0+cpu", None))
    (problem,) = precision_errors("fp16")
    assert "PyTorch (2.13.0+cpu) is a CPU-only build" in problem.message


def test_the_torch_build_is_read_from_its_version_file_without_importing_it():
    code = (
        "import sys, loratui.preflight as p; build = p._torch_build(); "
        "print(build[0], build[1], 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    import torch

    assert out == [torch.__version__, str(torch.version.cuda), "False"]


def test_cuda_visible_devices_chooses_the_gpu_as_cuda_does(monkeypatch, fresh_machine):
    old, new = (
        FakeGpu(name="GTX 1080", uuid="GPU-1111", compute_capability=(6, 1)),
        FakeGpu(name="RTX 4090", uuid="GPU-2222", compute_capability=(8, 9)),
    )
    fake_nvml.install(monkeypatch, [old, new])
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    cases = {"0": "GTX 1080", "1": "RTX 4090", "GPU-22": "RTX 4090", "1,0": "RTX 4090", "": None, "-1": None, "7": None}
    for variable, expected in cases.items():
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", variable)
        assert preflight.this_machine().gpu == expected, variable
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert "hides every GPU" in precision_errors("fp16")[0].message
    # Without PCI_BUS_ID order CUDA puts the fastest first: the newest GPU.
    monkeypatch.delenv("CUDA_DEVICE_ORDER")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert preflight.this_machine().gpu == "RTX 4090"


def test_the_machine_is_read_once_however_often_the_wizard_checks(monkeypatch, fresh_machine, project):
    nvml = fake_nvml.install(monkeypatch, [FakeGpu()])
    cfg = load_config(write_config(project, small_config(training={"mixed_precision": "bf16"})))
    for _ in range(20):
        assert [p for p in preflight.preflight(cfg) if p.severity == "error"] == []
    assert nvml.init_calls == 1


def test_the_engine_judges_the_gpu_torch_sees_by_the_same_rule():
    import torch

    from engine.train import _torch_machine

    machine = _torch_machine()
    assert (machine.gpu is None) == (not torch.cuda.is_available())
    if machine.gpu is None:
        assert preflight.precision_problems("fp16", machine)[0].where == "training.mixed_precision"


def test_xformers_must_be_installed_and_needs_a_gpu(monkeypatch):
    gpu, cpu = Machine("RTX 4090", (8, 9)), Machine(None, no_gpu="this machine has no NVIDIA GPU")
    monkeypatch.setattr(preflight, "installed", lambda package: False)
    (problem,) = preflight.attention_problems("xformers", gpu)
    assert problem.where == "training.attention" and "not installed" in problem.message and "sdpa" in problem.fix
    monkeypatch.setattr(preflight, "installed", lambda package: True)
    assert preflight.attention_problems("xformers", gpu) == []
    assert "needs a CUDA GPU" in preflight.attention_problems("xformers", cpu)[0].message
    assert preflight.attention_problems("sdpa", cpu) == []


def test_a_blocked_import_counts_as_not_installed(monkeypatch):
    assert preflight.installed("json")
    monkeypatch.setitem(sys.modules, "json_blocked_for_test", None)
    assert not preflight.installed("json_blocked_for_test")
    assert not preflight.installed("no_such_package_anywhere")


# ---------------------------------------------------------------------------------------------
# safetensors headers


def _safetensors(path: Path, tensors: dict[str, list[int]], extra: bytes = b"", header: bytes | None = None) -> Path:
    """A safetensors file of F32 tensors of the given shapes, zero-filled."""
    entries, offset = {}, 0
    for name, shape in tensors.items():
        size = 4
        for side in shape:
            size *= side
        entries[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = header if header is not None else json.dumps(entries).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset + extra)
    return path


def test_a_safetensors_header_is_read_and_checked_like_the_library_does(tmp_path):
    from safetensors import SafetensorError, safe_open

    good = _safetensors(tmp_path / "good.safetensors", {"a": [2, 3], "b": [4]})
    assert model_files.safetensors_header(good).shapes == {"a": (2, 3), "b": (4,)}
    with safe_open(str(good), "np") as handle:  # the library agrees it is fine
        assert set(handle.keys()) == {"a", "b"}
    broken = {
        "truncated": _safetensors(tmp_path / "t.safetensors", {"a": [100]}, extra=b"").read_bytes()[:-10],
        "longer": _safetensors(tmp_path / "l.safetensors", {"a": [2]}, extra=b"junk").read_bytes(),
        "not json": struct.pack("<Q", 5) + b"{nope",
        "no tensors": struct.pack("<Q", 2) + b"{}",
        "short": b"\x01\x02",
    }
    for what, data in broken.items():
        path = tmp_path / f"{what}.safetensors"
        path.write_bytes(data)
        with pytest.raises(ModelFileError):
            model_files.safetensors_header(path)
        with pytest.raises((SafetensorError, ValueError)), safe_open(str(path), "np") as handle:
            if not list(handle.keys()):  # the library refuses each one too (no tensors: the engine does)
                raise ValueError("no tensors")


def test_a_huge_header_length_is_refused_without_reading_it(tmp_path, monkeypatch):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 2**60) + b"{}")
    reads = []
    real_open = open

    def counting_open(*args, **kwargs):
        handle = real_open(*args, **kwargs)
        real_read = handle.read
        handle.read = lambda size=-1: reads.append(size) or real_read(size)
        return handle

    monkeypatch.setattr("builtins.open", counting_open)
    with pytest.raises(ModelFileError, match="header length"):
        model_files.safetensors_header(path)
    assert reads == [8]


def test_an_unchanged_file_is_inspected_once_and_a_changed_one_again(tmp_path, monkeypatch):
    calls = []
    real = model_files._read_safetensors_header
    monkeypatch.setattr(model_files, "_read_safetensors_header", lambda path: calls.append(path) or real(path))
    path = _safetensors(tmp_path / "m.safetensors", {"a": [2]})
    for _ in range(5):
        model_files.safetensors_header(path)
    assert len(calls) == 1
    _safetensors(path, {"a": [2], "b": [3]})
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert model_files.safetensors_header(path).shapes == {"a": (2,), "b": (3,)}
    assert len(calls) == 2


# ---------------------------------------------------------------------------------------------
# .ckpt pickles


def test_the_pickle_allowlist_accepts_everything_torch_accepts_and_no_code():
    from torch._weights_only_unpickler import _get_allowed_globals

    assert all(model_files.is_safe_global(name) for name in _get_allowed_globals())
    for name in (
        "builtins.eval",
        "os.system",
        "torch.load",
        "argparse.Namespace",
        "subprocess.Popen",
        "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
        "<unknown>",
    ):
        assert not model_files.is_safe_global(name), name


def test_a_ckpt_is_judged_as_torch_load_weights_only_judges_it(tmp_path):
    import torch

    safe, unsafe = tmp_path / "safe.ckpt", tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2, 2, dtype=torch.float16)}, "step": 3}, safe)
    torch.save({"state_dict": {"w": torch.zeros(2)}, "args": argparse.Namespace(lr=1)}, unsafe)
    assert model_files.unsafe_pickle_globals(safe) == []
    torch.load(safe, weights_only=True, mmap=True)
    assert model_files.unsafe_pickle_globals(unsafe) == ["argparse.Namespace"]
    with pytest.raises(pickle.UnpicklingError):
        torch.load(unsafe, weights_only=True, mmap=True)
    old = tmp_path / "old.ckpt"
    old.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ModelFileError, match="zip format"):
        model_files.unsafe_pickle_globals(old)


def test_pickle_globals_are_found_in_every_protocol():
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        data = pickle.dumps({"x": argparse.Namespace(a=1), "y": [Path("p")]}, protocol=protocol)
        found = model_files.pickle_globals(data)
        assert "argparse.Namespace" in found, (protocol, found)


# ---------------------------------------------------------------------------------------------
# Model folders, hub ids, the Hugging Face cache


def test_folder_gaps_name_each_missing_part(tmp_path):
    from engine.tiny_model import ensure_tiny_model

    assert model_files.folder_gaps(ensure_tiny_model(), with_weights=True) == []
    assert model_files.folder_gaps(tmp_path, with_weights=False) == [
        "no unet/ folder",
        "no vae/ folder",
        "no text_encoder/ folder",
        "no scheduler/ folder",
        "no tokenizer/ folder",
    ]


def _sdxl_copy(tmp_path: Path) -> Path:
    from engine.tiny_sdxl import ensure_tiny_sdxl

    return Path(shutil.copytree(ensure_tiny_sdxl(), tmp_path / "tiny-sdxl"))


def test_an_sdxl_folder_needs_its_second_text_encoder_and_tokenizer(tmp_path):
    from engine.tiny_sdxl import ensure_tiny_sdxl

    assert model_files.folder_family(ensure_tiny_sdxl()) == "sdxl"
    assert model_files.folder_gaps(ensure_tiny_sdxl(), with_weights=True) == []
    folder = _sdxl_copy(tmp_path)
    shutil.rmtree(folder / "text_encoder_2")
    for name in ("tokenizer.json", "vocab.json"):  # transformers 5 writes only the first
        (folder / "tokenizer_2" / name).unlink(missing_ok=True)
    assert model_files.folder_gaps(folder, with_weights=True) == [
        "no text_encoder_2/ folder",
        "no tokenizer files in tokenizer_2/ (vocab.json and merges.txt, or tokenizer.json)",
    ]
    # Without model_index.json the UNet's SDXL conditioning still says what the folder is.
    (folder / "model_index.json").unlink()
    assert model_files.folder_family(folder) == "sdxl"


def test_a_folders_family_must_be_model_family(project, tmp_path):
    from engine.tiny_model import ensure_tiny_model

    sdxl = _sdxl_copy(tmp_path)
    sd = ensure_tiny_model()
    cases = [
        (sdxl, "sd1", "is an SDXL model, but model.family is 'sd1'", 'set model.family = "sdxl"'),
        (sd, "sdxl", "is an SD 1.x or 2.x model, but model.family is 'sdxl'", 'set model.family = "sd1'),
    ]
    for folder, family, says, fix in cases:
        cfg = load_config(write_config(project, small_config(model={"path": str(folder), "family": family})))
        (problem,) = [p for p in preflight.preflight(cfg) if p.severity == "error"]
        assert problem.where == "model.family" and says in problem.message and problem.fix.startswith(fix)
    cfg = load_config(write_config(project, small_config(model={"path": str(sdxl), "family": "sdxl"})))
    assert [p for p in preflight.preflight(cfg) if p.severity == "error"] == []
    # The refiner (an img2img pipeline without the first text encoder) is named as such.
    index = json.loads((sdxl / "model_index.json").read_text())
    index |= {"_class_name": "StableDiffusionXLImg2ImgPipeline", "text_encoder": [None, None]}
    (sdxl / "model_index.json").write_text(json.dumps(index))
    (problem,) = [p for p in preflight.preflight(cfg) if p.severity == "error"]
    assert problem.where == "model.path" and "is the SDXL refiner" in problem.message


def test_sdxl_ranks_are_bounded_by_the_widest_layer_trained(project, tmp_path):
    """tiny-sdxl's UNet attention is 64 wide; a second text encoder made 128 wide bounds the rank
    only while it trains."""
    folder = _sdxl_copy(tmp_path)
    config = folder / "text_encoder_2" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "hidden_size": 128}))
    sdxl = {"path": str(folder), "family": "sdxl"}

    def rank_errors(**sections) -> list[Problem]:
        cfg = load_config(write_config(project, small_config(model=sdxl, **sections)))
        return [p for p in preflight.preflight(cfg) if p.where == "network.rank"]

    assert rank_errors(network={"rank": 128, "alpha": 64.0}) == []
    (problem,) = rank_errors(network={"rank": 128, "alpha": 64.0, "train_unet_only": True})
    assert "the widest is 64" in problem.message
    (problem,) = rank_errors(network={"rank": 128, "alpha": 64.0}, optimizer={"text_encoder_2_lr": 0.0})
    assert "the widest is 64" in problem.message
    assert preflight.layer_widths({"block_out_channels": [32]}, {"hidden_size": 32}, {"hidden_size": "x"}) is None


@pytest.mark.parametrize(
    "text,repo",
    [
        ("runwayml/stable-diffusion-v1-5", "runwayml/stable-diffusion-v1-5"),
        ("https://huggingface.co/stabilityai/stable-diffusion-2-1", "stabilityai/stable-diffusion-2-1"),
        ("models/sd15", "models/sd15"),  # the shape of one; preflight also asks that models/ is no local folder
        ("/models/sd15", None),
        ("./models/sd15", None),
        ("~/sd15/x", None),
        ("a/b/c", None),
        ("sd15", None),
        ("owner/model.safetensors", None),
        ("own--er/x", None),
        ("ünï/x", None),
    ],
)
def test_a_hub_repo_id_is_recognised(text, repo):
    assert model_files.hub_repo_id(text) == repo


def test_a_missing_local_folder_is_not_taken_for_a_repo_id(project):
    (project / "models").mkdir()
    cfg = load_config(write_config(project, small_config(model={"path": "models/sd15"})))
    assert not any("repo id" in p.message for p in check_run(cfg).problems)
    cfg.model.path = "runwayml/stable-diffusion-v1-5"
    (hub,) = [p for p in check_run(cfg).problems if "repo id" in p.message]
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in hub.message  # runwayml's repo moved there
    assert f"--local-dir {project}/models/stable-diffusion-v1-5" in hub.fix


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"HF_HOME": "/h"},
        {"XDG_CACHE_HOME": "/x"},
        {"HF_HOME": "~/h", "XDG_CACHE_HOME": "/x"},
        {"HUGGINGFACE_HUB_CACHE": "/legacy"},
        {"HF_HUB_CACHE": "/new", "HUGGINGFACE_HUB_CACHE": "/legacy"},
        {"HF_HUB_CACHE": "$HOME/c"},
    ],
)
def test_the_hf_cache_folder_is_where_huggingface_hub_looks(env, monkeypatch):
    names = ("HF_HOME", "XDG_CACHE_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")
    clean = {k: v for k, v in os.environ.items() if k not in names}
    code = "import huggingface_hub.constants as c; print(c.HF_HUB_CACHE)"
    theirs = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**clean, **env}
    ).stdout.strip()
    for name in names:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert str(model_files.hf_cache_root()) == theirs


def test_a_cached_snapshot_is_found_as_snapshot_download_finds_it(tmp_path, monkeypatch):
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    repo = "someone/some-model"
    assert model_files.hf_cached_snapshot(repo) is None
    with pytest.raises(LocalEntryNotFoundError):
        snapshot_download(repo, local_files_only=True, cache_dir=tmp_path)
    storage = tmp_path / "models--someone--some-model"
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text("abc123")
    (storage / "snapshots" / "abc123").mkdir(parents=True)
    found = model_files.hf_cached_snapshot(repo)
    assert found == storage / "snapshots" / "abc123"
    assert Path(snapshot_download(repo, local_files_only=True, cache_dir=tmp_path)) == found


def test_a_single_file_checkpoint_without_configs_gets_the_engines_download_command(project, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    checkpoint = _safetensors(project / "model.safetensors", {"model.diffusion_model.x": [1]})
    for family, repo in (
        ("sd1", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
        ("sd2", "stabilityai/stable-diffusion-2-1"),
    ):
        cfg = load_config(write_config(project, small_config(model={"path": str(checkpoint), "family": family})))
        (problem,) = [p for p in check_run(cfg).errors if p.where == "model.path"]
        assert "configs and CLIP tokenizer" in problem.message
        assert f"hf download {repo} --include '*.json' '*.txt'" in problem.fix and "model.tokenizer" in problem.fix


def test_file_problems_of_a_checkpoint(tmp_path):
    lora = _safetensors(tmp_path / "x.safetensors", {"lora_unet_a.lora_down.weight": [1]})
    assert "is a LoRA" in preflight.model_location_problems(lora)[0].message
    sdxl = _safetensors(tmp_path / "xl.safetensors", {"conditioner.embedders.0.x": [1], "model.diffusion_model.y": [1]})
    assert "SDXL" in preflight.model_location_problems(sdxl)[0].message
    embedding = _safetensors(tmp_path / "e.safetensors", {"emb_params": [1]})
    assert "no UNet weights" in preflight.model_location_problems(embedding)[0].message
    (tmp_path / "empty.safetensors").write_bytes(b"")
    assert "zero bytes" in preflight.model_location_problems(tmp_path / "empty.safetensors")[0].message
    full = _safetensors(tmp_path / "sd.safetensors", {"model.diffusion_model.a": [1]})
    assert preflight.model_location_problems(full) == []


def test_builtin_models_text_encoder_layers_are_the_engines():
    from engine.reference_models import SD15_TEXT_ENCODER_CONFIG, SDXL_TEXT_ENCODER_CONFIG
    from engine.tiny_model import ensure_tiny_model
    from engine.tiny_sdxl import ensure_tiny_sdxl

    tiny = json.loads((ensure_tiny_model() / "text_encoder" / "config.json").read_text())
    tiny_sdxl = json.loads((ensure_tiny_sdxl() / "text_encoder" / "config.json").read_text())
    assert preflight.BUILTIN_TEXT_ENCODER_LAYERS == {
        "loratui:tiny-sd": tiny["num_hidden_layers"],
        "loratui:sd15-random": SD15_TEXT_ENCODER_CONFIG["num_hidden_layers"],
        "loratui:tiny-sdxl": tiny_sdxl["num_hidden_layers"],
        "loratui:sdxl-random": SDXL_TEXT_ENCODER_CONFIG["num_hidden_layers"],
    }


def test_clip_skip_up_to_the_text_encoders_layers(project):
    for skip, refused in ((1, False), (3, False), (4, True), (12, True)):
        cfg = load_config(write_config(project, small_config(model={"clip_skip": skip})))
        problems = [p for p in preflight.preflight(cfg) if p.where == "model.clip_skip"]
        assert bool(problems) == refused, skip
    assert "has 3 layers" in problems[0].message and "use 1 to 3" in problems[0].fix


# ---------------------------------------------------------------------------------------------
# Optimizer arguments


@pytest.mark.parametrize("name", sorted(optimizer_signatures.OPTIMIZER_SOURCES))
def test_each_optimizers_keywords_are_read_from_its_source_as_python_sees_them(name):
    from engine.optim import OPTIMIZERS

    signature = optimizer_signatures.optimizer_signature(name)
    assert signature is not None
    # The class the engine builds, imported here to ask Python for its real signature.
    import importlib

    package, relative, class_name = optimizer_signatures.OPTIMIZER_SOURCES[name]
    module = importlib.import_module(f"{package}.{relative[:-3].replace('/', '.')}")
    parameters = inspect.signature(getattr(module, class_name).__init__).parameters
    keywords = {
        p
        for p in parameters
        if p not in ("self", "params")
        and parameters[p].kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    }
    assert set(signature.defaults) == keywords
    assert signature.takes_any == any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    assert name in OPTIMIZERS


def test_an_argument_name_the_optimizer_does_not_take_is_refused_with_a_suggestion(project):
    cfg = load_config(write_config(project, small_config(optimizer={"args": ["weight_decy=0.1", "betas=0.9,0.99"]})))
    (problem,) = [p for p in preflight.preflight(cfg) if p.where == "optimizer.args"]
    assert "AdamW takes no argument 'weight_decy'" in problem.message
    assert "did you mean weight_decay?" in problem.fix


def test_a_missing_optimizer_package_is_refused(project, monkeypatch):
    monkeypatch.setitem(sys.modules, "prodigyopt", None)
    cfg = load_config(
        write_config(project, small_config(optimizer={"name": "Prodigy", "unet_lr": 1.0, "text_encoder_lr": 1.0}))
    )
    (problem,) = [p for p in preflight.preflight(cfg) if p.severity == "error"]
    assert problem.where == "optimizer.name" and "prodigyopt" in problem.message


# ---------------------------------------------------------------------------------------------
# Resuming


def _state(folder: Path, network: dict, fmt: int = 1, files=("lora.safetensors", "training.pt")) -> Path:
    """A state folder as a run saves it at step 0: LoRA halves for network's module counts, a
    training.pt in torch's zip format (the check reads no further)."""
    folder.mkdir()
    progress = {"run_id": "r", "step": 0, "epoch": 0, "batches_in_epoch": 0, "elapsed_s": 0.0, "loss_history": []}
    (folder / "progress.json").write_text(json.dumps({"format": fmt, **progress, "network": network}))
    if "lora.safetensors" in files:
        counts = {key.removesuffix("_modules"): value for key, value in network.items() if key.endswith("_modules")}
        modules = [f"{part}.m{i}" for part, count in counts.items() for i in range(count)]
        shapes = {f"{m}.lora_down.weight": [network["rank"], 4] for m in modules}
        shapes |= {f"{m}.lora_up.weight": [4, network["rank"]] for m in modules}
        _safetensors(folder / "lora.safetensors", shapes)
    if "training.pt" in files:
        with zipfile.ZipFile(folder / "training.pt", "w") as archive:
            archive.writestr("training/data.pkl", pickle.dumps({}))
    return folder


def test_state_format_is_the_engines():
    from engine.state import STATE_FORMAT

    assert preflight.STATE_FORMAT == STATE_FORMAT


def test_a_resume_state_must_fit_the_config(project):
    network = {"rank": 8, "alpha": 2.0, "conv_rank": 0, "conv_alpha": 1.0, "unet_modules": 10, "te_modules": 6}
    cases = {
        "fits": (_state(project / "s1", network), {}, None),
        "rank": (_state(project / "s2", {**network, "rank": 16}), {}, "rank 16"),
        "frozen": (_state(project / "s3", network), {"optimizer": {"text_encoder_lr": 0.0}}, "text encoder trained"),
        "format": (_state(project / "s4", network, fmt=2), {}, "another version"),
        "files": (_state(project / "s5", network, files=("lora.safetensors",)), {}, "no training.pt"),
    }
    for what, (state, changes, needle) in cases.items():
        data = small_config(**changes)
        data["training"]["resume_from"] = str(state)
        problems = [
            p
            for p in preflight.preflight(load_config(write_config(project, data)))
            if p.where == "training.resume_from"
        ]
        assert (needle is None) == (problems == []), what
        if needle:
            assert needle in problems[0].message, (what, problems[0].message)


def test_an_sdxl_resume_state_has_a_part_per_text_encoder(project):
    shape = {"rank": 8, "alpha": 2.0, "conv_rank": 0, "conv_alpha": 1.0}
    sdxl = {**shape, "unet_modules": 10, "te1_modules": 6, "te2_modules": 6}
    unet_only = {**shape, "unet_modules": 10, "te1_modules": 0, "te2_modules": 0}
    model = {"path": "loratui:tiny-sdxl", "family": "sdxl"}
    cases = {
        "fits": (_state(project / "s1", sdxl), {"model": model}, None),
        "unet-only-fits": (
            _state(project / "s2", unet_only),
            {"model": model, "network": {"train_unet_only": True}},
            None,
        ),
        "te2-frozen": (
            _state(project / "s3", sdxl),
            {"model": model, "optimizer": {"text_encoder_2_lr": 0.0}},
            "(text encoder 2 trained); this config has text encoder 2 frozen",
        ),
        "sd-config": (
            _state(project / "s4", sdxl),
            {},
            "was saved by a run on an SDXL model; this config trains an SD 1.x",
        ),
        "sd-state": (
            _state(project / "s5", {**shape, "unet_modules": 10, "te_modules": 6}),
            {"model": model},
            "was saved by a run on an SD 1.x or SD 2.x model",
        ),
        "mixed-parts": (
            _state(project / "s6", {**sdxl, "te_modules": 6}),
            {"model": model},
            "its network is",
        ),
    }
    for what, (state, changes, needle) in cases.items():
        data = small_config(**changes)
        data["training"]["resume_from"] = str(state)
        problems = [
            p
            for p in preflight.preflight(load_config(write_config(project, data)))
            if p.where == "training.resume_from"
        ]
        assert (needle is None) == (problems == []), (what, problems)
        if needle:
            assert needle in problems[0].message, (what, problems[0].message)


# ---------------------------------------------------------------------------------------------
# Output names


def test_output_name_length_counts_every_name_the_engine_writes():
    from loratui.atomic import TEMP_NAME

    names = outputs.engine_file_names("ohwx")
    assert "ohwx-step00000001.safetensors" in names and "ohwx-000001-state" in names
    assert any(TEMP_NAME.match(name) for name in names) and ".ohwx-state.old" in names
    assert outputs.output_name_problems("n" * 212) == []
    assert outputs.output_name_problems("n" * 213)[0].fix == "shorten the name to 212 bytes or less"
    # Bytes, not characters: "é" is two in UTF-8.
    assert outputs.output_name_problems("é" * 106) == [] and outputs.output_name_problems("é" * 107)


@pytest.mark.parametrize(
    "name,needle", [(".", "no file name"), ("..", "no file name"), (".lora", "hidden"), ("-lora", "options")]
)
def test_unsafe_output_names(name, needle):
    (problem,) = outputs.output_name_problems(name)
    assert problem.where == "output.name" and needle in problem.message


def test_the_engine_really_cannot_write_a_name_over_the_limit(tmp_path):
    from loratui.atomic import write_bytes_atomic

    write_bytes_atomic(tmp_path / ("n" * 212 + "-step00000001.safetensors"), b"x")
    with pytest.raises(OSError):
        write_bytes_atomic(tmp_path / ("n" * 213 + "-step00000001.safetensors"), b"x")


# ---------------------------------------------------------------------------------------------
# Wiring


def test_preflight_skips_settings_validation_already_refused(project):
    cfg = load_config(write_config(project, small_config(model={"clip_skip": 40})))  # out of 1..12
    errors = check_run(cfg).errors
    assert [p.where for p in errors] == ["model.clip_skip"]  # validation's range, not also preflight's layers
    assert "text encoder" not in errors[0].message


def test_a_negative_max_train_steps_is_one_problem_not_a_traceback(project):
    data = small_config()
    data["training"]["max_train_steps"] = -5
    config = write_config(project, data)
    result = check_run(load_config(config))
    assert [p.where for p in result.errors] == ["training.max_train_steps"] and result.schedule is None
    cli = subprocess.run(
        [sys.executable, "-m", "loratui.cli", "check", str(config)], capture_output=True, text=True, check=False
    )
    assert cli.returncode == 1 and "Traceback" not in cli.stderr + cli.stdout
    assert "max_train_steps" in cli.stdout + cli.stderr


def test_preflight_and_model_files_never_import_torch():
    code = "import sys, loratui.preflight, loratui.model_files; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_a_zip_without_a_pickle_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "x.ckpt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hi")
    with pytest.raises(ModelFileError, match="data.pkl"):
        model_files.unsafe_pickle_globals(path)


@pytest.mark.usefixtures("private_tui_settings")  # the wizard's machine: no GPU, on every test machine
def test_the_wizard_shows_a_machine_problem_at_its_field_and_review_refuses(project):
    import asyncio

    from textual.widgets import Static

    from loratui.tui import make_edit_app
    from loratui.tui.wizard.steps import STEP_IDS
    from tests.conftest import workers_done

    app = make_edit_app(write_config(project, small_config(training={"mixed_precision": "fp16"})))

    async def settle(pilot) -> None:
        for _ in range(2):
            await pilot.pause(0.3)
            await workers_done(app)

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            await pilot.press("pagedown", "pagedown")  # the Training step
            await settle(pilot)
            box = app.screen.query_one("#row-f-training-mixed-precision").query_one(".field-problem", Static)
            shown = str(box.content.plain if hasattr(box.content, "plain") else box.content)
            assert box.display and "fp16 mixed precision needs a CUDA GPU" in shown
            assert 'mixed_precision = "no"' in shown
            for _ in range(STEP_IDS.index("review") - STEP_IDS.index("training")):
                await pilot.press("pagedown")  # on to Review, whose check runs what the engine runs
            await settle(pilot)
            status = app.screen.query_one("#review-status", Static)
            assert "1 error" in str(status.content.plain if hasattr(status.content, "plain") else status.content)

    asyncio.run(scenario())
