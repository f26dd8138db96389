"""`loratui check` is a promise: a corpus of broken configs, each run through the check and the engine.

Each case is a small change to a valid config of the tiny model over the sample images. For every
case the check and the engine must agree (100 %): where the check says ready, the engine reaches
its first step; where the check refuses, the engine refuses, at the same setting. The engine runs
in one helper process that imports it once (tests/engine_probe.py).

A second run, "engine alone", takes loratui.preflight's early refusals away (its rules in the
check, and the model pre-check the loader asks) and lets diffusers, torch and the optimizers
decide: it shows each of those refusals is a real one (the same setting refused later, after
minutes of loading on a real model, or a crash), not a false alarm. Where a refusal is loratui's
policy (an output name that would hide the files) the engine alone trains, and the case says so.

The cases cover every problem loratui.preflight finds and every refusal the engine makes before
its first step (engine/*.py: each UserError raised before the loop).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from loratui.check import check_run
from loratui.config import load_config
from loratui.preflight import installed, this_machine
from tests.conftest import REPO, SAMPLE, small_config, write_config

HF_SD1 = "models--stable-diffusion-v1-5--stable-diffusion-v1-5"
HF_SD2 = "models--stabilityai--stable-diffusion-2-1"


@dataclass(frozen=True)
class Case:
    id: str
    changes: Callable[[Files], dict]  # section -> settings to change in the valid config
    # The setting the check refuses first (for a dataset problem, the folder: Files -> path);
    # None: ready to train.
    refused: str | Callable[[Files], str] | None
    # Without preflight: "same" (the engine refuses the same setting by itself), "ready" (it
    # trains: the refusal is loratui's policy), another setting (refused there, later), or None
    # (not run: validation refuses it anyway, with or without preflight).
    alone: str | None = "same"
    env: Callable[[Files], dict] = lambda files: {}
    block: tuple[str, ...] = ()  # packages made unimportable for this case
    resume: str | None = None  # resume cases: how the base run's state folder is changed


@dataclass
class Files:
    root: Path
    paths: dict[str, Path] = field(default_factory=dict)

    def __getattr__(self, name: str) -> str:  # files.tiny: the path, as a config value
        return str(self.paths[name])


def _no_gpu_setting(setting: str, allowed: bool) -> str | None:
    return None if allowed else setting


MACHINE = this_machine()
XFORMERS_RUNS = installed("xformers") and MACHINE.gpu is not None
BF16_RUNS = MACHINE.gpu is not None and (MACHINE.capability or (0, 0)) >= (8, 0)

CASES = [
    # ---- ready: each of the ways to give a model, at the edges of what is allowed
    Case("ready-builtin-model", lambda f: {}, None, alone=None),
    Case("ready-diffusers-folder", lambda f: {"model": {"path": f.tiny}}, None, alone=None),
    Case(
        "ready-single-file-with-tokenizer",
        lambda f: {"model": {"path": f.ldm, "tokenizer": f.configs_tokenizer}},
        None,
        alone=None,
    ),
    Case("ready-single-file-from-hf-cache", lambda f: {"model": {"path": f.ldm}}, None, alone=None),
    Case(
        "ready-ckpt-that-loads-without-pickle",
        lambda f: {"model": {"path": f.ldm_ckpt, "tokenizer": f.configs_tokenizer}},
        None,
        alone=None,
    ),
    Case("ready-clip-skip-at-the-last-layer", lambda f: {"model": {"clip_skip": 3}}, None, alone=None),
    # ---- the machine
    Case(
        "fp16",
        lambda f: {"training": {"mixed_precision": "fp16"}},
        _no_gpu_setting("training.mixed_precision", MACHINE.gpu is not None),
    ),
    Case(
        "bf16",
        lambda f: {"training": {"mixed_precision": "bf16"}},
        _no_gpu_setting("training.mixed_precision", BF16_RUNS),
    ),
    Case(
        "xformers",
        lambda f: {"training": {"attention": "xformers"}},
        _no_gpu_setting("training.attention", XFORMERS_RUNS),
    ),
    # ---- the model: folders
    Case("hub-repo-id", lambda f: {"model": {"path": "runwayml/stable-diffusion-v1-5"}}, "model.path", alone=None),
    Case("folder-that-is-no-model", lambda f: {"model": {"path": f.not_a_model}}, "model.path"),
    Case("folder-without-unet-config", lambda f: {"model": {"path": f.no_unet_config}}, "model.path"),
    Case("folder-with-truncated-unet-weights", lambda f: {"model": {"path": f.truncated_unet}}, "model.path"),
    # .bin weights are pickles: refused by the check and, alone, by the loader (use_safetensors=True)
    Case("folder-with-only-bin-weights", lambda f: {"model": {"path": f.tiny_bin}}, "model.path"),
    Case("nul-byte-in-model-path", lambda f: {"model": {"path": f.tiny + "\0x"}}, "model.path", alone=None),
    # ---- the model: one file
    Case("zero-byte-checkpoint", lambda f: {"model": {"path": f.zero}}, "model.path"),
    Case("safetensors-header-not-json", lambda f: {"model": {"path": f.garbage}}, "model.path"),
    Case(
        "safetensors-truncated-download",
        lambda f: {"model": {"path": f.truncated, "tokenizer": f.configs_tokenizer}},
        "model.path",
    ),
    Case("neither-safetensors-nor-ckpt", lambda f: {"model": {"path": f.weights_bin}}, "model.path", alone=None),
    Case(
        "ckpt-that-runs-code",
        lambda f: {"model": {"path": f.evil_ckpt, "tokenizer": f.configs_tokenizer}},
        "model.path",
    ),
    Case(
        "ckpt-with-a-foreign-class",
        lambda f: {"model": {"path": f.unsafe_ckpt, "tokenizer": f.configs_tokenizer}},
        "model.path",
    ),
    Case(
        "lora-instead-of-base-model",
        lambda f: {"model": {"path": f.lora_file, "tokenizer": f.configs_tokenizer}},
        "model.path",
    ),
    Case("vae-only-file", lambda f: {"model": {"path": f.vae_only, "tokenizer": f.configs_tokenizer}}, "model.path"),
    Case(
        "single-file-without-configs-anywhere",
        lambda f: {"model": {"path": f.ldm}},
        "model.path",
        env=lambda f: {"HF_HUB_CACHE": f.hf_empty},
    ),
    Case("single-file-hf-cache-incomplete", lambda f: {"model": {"path": f.ldm, "family": "sd2"}}, "model.path"),
    Case(
        "tokenizer-outside-a-model-folder",
        lambda f: {"model": {"path": f.ldm, "tokenizer": f.lone_tokenizer}},
        "model.tokenizer",
    ),
    Case(
        "checkpoint-of-another-text-width",
        lambda f: {"model": {"path": f.ldm, "tokenizer": f.wide_tokenizer}},
        "model.path",
    ),
    Case("clip-skip-beyond-the-text-encoder", lambda f: {"model": {"clip_skip": 5}}, "model.clip_skip"),
    # ---- the optimizer
    Case("optimizer-argument-it-does-not-take", lambda f: {"optimizer": {"args": ["foo=1"]}}, "optimizer.args"),
    Case("optimizer-betas-not-a-pair", lambda f: {"optimizer": {"args": ["betas=0.9"]}}, "optimizer.args"),
    Case("optimizer-number-written-as-text", lambda f: {"optimizer": {"args": ["weight_decay=abc"]}}, "optimizer.args"),
    Case("optimizer-params-argument", lambda f: {"optimizer": {"args": ["params=1"]}}, "optimizer.args"),
    Case(
        "adafactor-warmup-without-relative-step",
        # relative_step is on by default (sd-scripts'): warmup_init=True alone is fine; turned off, it contradicts
        lambda f: {"optimizer": {"name": "Adafactor", "args": ["warmup_init=True", "relative_step=False"]}},
        "optimizer.args",
    ),
    Case(
        "optimizer-package-not-installed",
        lambda f: {"optimizer": {"name": "Prodigy", "unet_lr": 1.0, "text_encoder_lr": 1.0}},
        "optimizer.name",
        block=("prodigyopt",),
    ),
    # ---- the output
    Case(
        "output-name-too-long-for-the-temp-file",
        lambda f: {"output": {"name": "n" * 220}},
        "output.name",
        alone="output.name",
    ),  # the engine alone trains, then cannot write its first save
    Case("output-name-hidden", lambda f: {"output": {"name": ".lora"}}, "output.name", alone="ready"),
    Case("output-name-like-an-option", lambda f: {"output": {"name": "-lora"}}, "output.name", alone="ready"),
    Case("output-name-dots", lambda f: {"output": {"name": ".."}}, "output.name", alone="ready"),
    Case("nul-byte-in-output-dir", lambda f: {"output": {"output_dir": "model\0x"}}, "output.output_dir", alone=None),
    # ---- length and dataset (the engine's check_run refuses these)
    Case(
        "max-train-steps-negative",
        lambda f: {"training": {"max_train_steps": -5}},
        "training.max_train_steps",
        alone=None,
    ),
    Case(
        "image-folder-missing",
        lambda f: {"dataset": {"image_dir": str(f.root / "no-such-img")}},
        lambda f: str(f.root / "no-such-img"),
        alone=None,
    ),
    Case(
        "batch-larger-than-the-dataset", lambda f: {"training": {"batch_size": 500}}, "training.batch_size", alone=None
    ),
]

RESUME_CASES = [
    Case("resume-ready", lambda f: {}, None, alone=None, resume="as saved"),
    Case("resume-another-network", lambda f: {"network": {"rank": 4}}, "training.resume_from", resume="as saved"),
    Case(
        "resume-text-encoder-now-frozen",
        lambda f: {"optimizer": {"text_encoder_lr": 0.0}},
        "training.resume_from",
        resume="as saved",
    ),
    Case("resume-without-training-pt", lambda f: {}, "training.resume_from", resume="no training.pt"),
    Case("resume-from-another-version", lambda f: {}, "training.resume_from", resume="format 99"),
    Case("resume-from-a-folder-that-is-no-state", lambda f: {}, "training.resume_from", resume="empty"),
]


# ---------------------------------------------------------------------------------------------
# The files the cases point at, built once.


class _Evil:
    def __reduce__(self):
        return (print, ("this ran while unpickling",))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Files:
    import torch
    from safetensors.torch import load_file, save_file

    from engine.tiny_model import ensure_tiny_model
    from tests.ldm_checkpoint import write_ldm_checkpoint, write_model_configs

    root = tmp_path_factory.mktemp("corpus-files")
    tiny = ensure_tiny_model()
    f = Files(root)
    p = f.paths
    p["img"] = root / "img"
    shutil.copytree(SAMPLE / "img", p["img"])
    p["tiny"] = _copy(tiny, root / "tiny")
    p["tiny_bin"] = _copy(tiny, root / "tiny-bin")
    for weights in sorted(p["tiny_bin"].rglob("*.safetensors")):
        bin_name = "pytorch_model.bin" if weights.parent.name == "text_encoder" else "diffusion_pytorch_model.bin"
        torch.save(load_file(weights), weights.with_name(bin_name))
        weights.unlink()
    p["not_a_model"] = root / "not-a-model"
    p["not_a_model"].mkdir()
    p["no_unet_config"] = _copy(tiny, root / "no-unet-config")
    (p["no_unet_config"] / "unet" / "config.json").unlink()
    p["truncated_unet"] = _copy(tiny, root / "truncated-unet")
    _truncate(p["truncated_unet"] / "unet" / "diffusion_pytorch_model.safetensors", 100)

    p["configs"] = write_model_configs(tiny, root / "sd-configs")
    p["configs_tokenizer"] = p["configs"] / "tokenizer"
    wide = _copy(p["configs"], root / "wide-configs")
    unet_config = json.loads((wide / "unet" / "config.json").read_text())
    (wide / "unet" / "config.json").write_text(json.dumps({**unet_config, "cross_attention_dim": 64}))
    p["wide_tokenizer"] = wide / "tokenizer"
    p["lone_tokenizer"] = _copy(p["configs"] / "tokenizer", root / "just-a-tokenizer")
    p["hf"] = root / "hf-cache"
    _cache_snapshot(p["hf"] / HF_SD1, p["configs"])
    incomplete = _cache_snapshot(p["hf"] / HF_SD2, p["configs"])
    (incomplete / "unet" / "config.json").unlink()
    p["hf_empty"] = root / "hf-empty"
    p["hf_empty"].mkdir()

    p["ldm"] = root / "tiny-sd1.safetensors"
    write_ldm_checkpoint(tiny, p["ldm"])
    tensors = load_file(p["ldm"])
    p["ldm_ckpt"] = root / "tiny-sd1.ckpt"
    torch.save({"state_dict": tensors}, p["ldm_ckpt"])
    p["evil_ckpt"] = root / "evil.ckpt"
    p["evil_ckpt"].write_bytes(pickle.dumps({"state_dict": _Evil()}))
    p["unsafe_ckpt"] = root / "lightning.ckpt"
    torch.save({"state_dict": tensors, "hyper_parameters": argparse.Namespace(lr=1e-4)}, p["unsafe_ckpt"])
    p["zero"] = root / "zero.safetensors"
    p["zero"].write_bytes(b"")
    p["garbage"] = root / "garbage.safetensors"
    p["garbage"].write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    p["truncated"] = _copy(p["ldm"], root / "truncated.safetensors")
    _truncate(p["truncated"], 1000)
    p["weights_bin"] = root / "model.bin"
    p["weights_bin"].write_bytes(b"\0" * 64)
    p["lora_file"] = root / "a-lora.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32)}, p["lora_file"])
    p["vae_only"] = root / "vae-only.safetensors"
    save_file({k: v for k, v in tensors.items() if k.startswith("first_stage_model.")}, p["vae_only"])
    return f


def _copy(source: Path, target: Path) -> Path:
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy(source, target)
    return target


def _truncate(path: Path, cut: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:-cut])


def _cache_snapshot(storage: Path, configs: Path) -> Path:
    """A repo in the Hugging Face cache layout: refs/main names the commit of snapshots/<commit>."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text(commit)
    return _copy(configs, storage / "snapshots" / commit)


# ---------------------------------------------------------------------------------------------
# Writing a case's config and running the check and the engine on it.


def case_env(case: Case, files: Files) -> dict[str, str]:
    # Every case looks for single-file configs in the test's own Hugging Face cache, never the user's.
    return {"HF_HOME": str(files.root / "hf-home"), "HF_HUB_CACHE": files.hf, **case.env(files)}


def write_case(case: Case, files: Files, folder: Path, state: Path | None = None) -> Path:
    folder.mkdir(parents=True)
    data = small_config(dataset={"image_dir": files.img})
    for section, values in case.changes(files).items():
        data[section].update(values)
    if state is not None:
        data["training"]["resume_from"] = str(state)
    return write_config(folder, data)


def check_verdict(config: Path, case: Case, files: Files, monkeypatch) -> str | None:
    """The first setting `loratui check` refuses, or None when it says ready."""
    with monkeypatch.context() as patch:
        for name, value in case_env(case, files).items():
            patch.setenv(name, value)
        for package in case.block:
            patch.setitem(sys.modules, package, None)
        errors = check_run(load_config(config)).errors
    return errors[0].where if errors else None


def run_engine(jobs: list[dict], folder: Path) -> list[dict]:
    jobs_file = folder / f"jobs-{len(list(folder.glob('jobs-*.json')))}.json"
    jobs_file.write_text(json.dumps(jobs))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "engine_probe.py"), str(jobs_file)],
        capture_output=True,
        text=True,
        cwd=folder,
        env=env,
        timeout=1800,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{"probe":')]
    assert len(outcomes) == len(jobs), result.stderr[-3000:]
    return outcomes


def expected(case: Case, files: Files) -> str | None:
    return case.refused(files) if callable(case.refused) else case.refused


def engine_verdict(outcome: dict) -> str | None:
    assert outcome["crash"] is None, f"the engine crashed: {outcome['crash']}"
    if outcome["refused"] is None:
        assert outcome["stepped"], "the engine neither refused nor reached a step"
        return None
    return outcome["refused"]


def _prepare_state(state: Path, how: str, target: Path) -> Path:
    if how == "empty":
        target.mkdir()
        return target
    shutil.copytree(state, target)
    if how == "no training.pt":
        (target / "training.pt").unlink()
    elif how == "format 99":
        progress = json.loads((target / "progress.json").read_text())
        (target / "progress.json").write_text(json.dumps({**progress, "format": 99}))
    return target


# ---------------------------------------------------------------------------------------------
# The check alone (fast): each case is refused at its setting, or ready.


def test_the_corpus_covers_thirty_broken_configs_and_the_ready_edges():
    broken = [case for case in CASES + RESUME_CASES if not case.id.startswith("ready") and case.id != "resume-ready"]
    assert len(broken) >= 30
    assert len({case.id for case in CASES + RESUME_CASES}) == len(CASES + RESUME_CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_check_refuses_each_broken_config_at_its_setting(case, files, tmp_path, monkeypatch):
    config = write_case(case, files, tmp_path / case.id)
    assert check_verdict(config, case, files, monkeypatch) == expected(case, files)


def test_the_check_messages_say_what_to_do(files, tmp_path, monkeypatch):
    """A few messages a user reads, with the commands they can paste."""
    by_id = {case.id: case for case in CASES}

    def errors(case_id: str):
        case = by_id[case_id]
        config = write_case(case, files, tmp_path / case_id)
        with monkeypatch.context() as patch:
            for name, value in case_env(case, files).items():
                patch.setenv(name, value)
            return check_run(load_config(config)).errors

    no_configs = errors("single-file-without-configs-anywhere")[0]
    assert "hf download stable-diffusion-v1-5/stable-diffusion-v1-5 --include '*.json' '*.txt'" in no_configs.fix
    hub = next(e for e in errors("hub-repo-id") if "repo id" in e.message)
    assert "loratui never downloads" in hub.message and "hf download stable-diffusion-v1-5/" in hub.fix
    long_name = errors("output-name-too-long-for-the-temp-file")[0]
    assert "255" in long_name.message and "212 bytes or less" in long_name.fix
    assert "LoRA, not a base model" in errors("lora-instead-of-base-model")[0].message


# ---------------------------------------------------------------------------------------------
# The check and the engine (slow): one helper process runs every case through the engine.


@pytest.fixture(scope="module")
def verdicts(files, tmp_path_factory) -> dict[str, dict]:
    """For each case: the check's verdict, the engine's and the engine alone's, as
    {"check": ..., "engine": outcome, "alone": outcome or None}."""
    root = tmp_path_factory.mktemp("corpus")
    monkeypatch = pytest.MonkeyPatch()
    try:
        found = _run_cases(CASES, files, root, monkeypatch)
        # The resume cases continue the state the ready built-in run saved when it stopped.
        state = root / "ready-builtin-model" / "engine" / "model" / "test_lora-step00000001-state"
        assert (state / "progress.json").is_file(), "the ready run saved no state to resume"
        states = {case.id: _prepare_state(state, case.resume or "", root / "states" / case.id) for case in RESUME_CASES}
        found |= _run_cases(RESUME_CASES, files, root, monkeypatch, states)
    finally:
        monkeypatch.undo()
    (root / "verdicts.json").write_text(json.dumps(found, indent=1))  # to read when a case fails
    return found


def _run_cases(
    cases: list[Case], files: Files, root: Path, monkeypatch, states: dict[str, Path] | None = None
) -> dict[str, dict]:
    (root / "states").mkdir(exist_ok=True)
    found: dict[str, dict] = {}
    jobs = []
    for case in cases:
        state = states[case.id] if states else None
        config = write_case(case, files, root / case.id / "engine", state)
        found[case.id] = {"check": check_verdict(config, case, files, monkeypatch)}
        jobs.append({"config": str(config), "env": case_env(case, files), "block": list(case.block)})
        if case.alone is not None:
            alone = write_case(case, files, root / case.id / "alone", state)
            jobs.append({"config": str(alone), "env": case_env(case, files), "block": list(case.block), "alone": True})
    outcomes = iter(run_engine(jobs, root))
    for case in cases:
        found[case.id]["engine"] = next(outcomes)
        found[case.id]["alone"] = next(outcomes) if case.alone is not None else None
    return found


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES + RESUME_CASES, ids=lambda case: case.id)
def test_check_and_engine_agree(case, verdicts, files):
    found = verdicts[case.id]
    assert found["check"] == expected(case, files)
    assert engine_verdict(found["engine"]) == found["check"], found["engine"]["message"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "case", [case for case in CASES + RESUME_CASES if case.alone is not None], ids=lambda case: case.id
)
def test_without_preflight_the_engine_refuses_too(case, verdicts, files):
    """Each preflight refusal is a real one: without it, the engine (diffusers, torch, the
    optimizer) refuses the same setting by itself, only later."""
    alone = verdicts[case.id]["alone"]
    if case.alone == "same":
        assert engine_verdict(alone) == expected(case, files), alone["message"]
    elif case.alone == "ready":
        assert engine_verdict(alone) is None
    else:
        assert alone["stepped"] and engine_verdict(alone) == case.alone, alone
