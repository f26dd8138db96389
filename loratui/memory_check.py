"""The VRAM pre-flight on the terminal side: will the run fit in the GPU's free memory?

The estimate needs torch, so it runs in a helper process (``python -m engine.memory_estimate``,
which prints one JSON object); the free memory comes from NVML through :mod:`loratui.gpu`. The
result is one line for the check's report and, when the run will not fit, an error naming the
settings under which it would (the helper finds them by estimating the alternatives).

An estimate takes seconds to a minute (a full-size SDXL step on fake tensors); it is kept under
the cache dir by everything it depends on (the settings, the model's files, the estimator's code
and the libraries' versions), so the check, the wizard and the launch pay for it once.

Without a CUDA GPU to train on (no driver, a CPU-only PyTorch, every GPU hidden) the estimate is
skipped unless asked for (``loratui check --memory``): the run would train on the CPU, there is
nothing to compare it with, and the helper costs seconds that every check would otherwise pay.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from loratui import preflight
from loratui.atomic import write_text_atomic
from loratui.check import CheckResult
from loratui.config import RunConfig, config_to_dict, save_config
from loratui.errors import Problem
from loratui.paths import cache_dir

GIB = 1024**3
LABEL = "VRAM     "  # the report's column of labels ("Config   ", "Model    ", ...)
HELPER_TIMEOUT_S = 600  # a full-size SDXL or Flux estimate with its alternatives on a slow CPU
# Within this fraction of the free memory the estimate's unknowns (allocator fragmentation, kernel
# workspaces) may make the difference: a warning, not an error.
CLOSE_FRACTION = 0.92


@dataclass
class MemoryCheck:
    lines: list[str] = field(default_factory=list)  # for the report, each ready to print
    problems: list[Problem] = field(default_factory=list)
    result: dict | None = None  # the helper's JSON object, when it ran


@dataclass(frozen=True)
class FreeMemory:
    gpu: str  # its name
    free: int  # bytes


def gib(size: int) -> str:
    """``9.84 GiB``, ``23.5 GiB``: a tenth of a GiB matters on a small card, less so above 10."""
    return f"{size / GIB:.2f} GiB" if size < 10 * GIB else f"{size / GIB:.1f} GiB"


def free_memory() -> FreeMemory | str:
    """The free memory of the GPU a run would train on (the first CUDA sees), or why there is none."""
    machine = preflight.this_machine()
    if machine.gpu is None:
        return machine.no_gpu or "no CUDA GPU"
    from loratui.gpu import read_gpus

    snapshot = read_gpus(with_processes=False)
    if not snapshot.available:
        return snapshot.reason or "no NVIDIA GPU"
    import os

    visible = preflight._visible_devices(snapshot.devices, os.environ.get("CUDA_VISIBLE_DEVICES"))
    if not visible or visible[0].memory_free is None:
        return "NVML does not report the GPU's free memory"
    device = visible[0]
    return FreeMemory(device.name or f"GPU {device.index}", device.memory_free)


def run_helper(cfg: RunConfig, budget: int | None) -> dict:
    """The helper's JSON object for ``cfg`` (saved to a temp file; its paths resolve against the
    config's own folder). ``{"error": {...}}`` when it refused the config or failed."""
    with tempfile.TemporaryDirectory(prefix="loratui-memory-") as folder:
        path = Path(folder) / "run.toml"
        save_config(cfg, path)
        command = [sys.executable, "-m", "engine.memory_estimate", str(path), "--base-dir", str(cfg.base_dir)]
        if budget is not None:
            command += ["--budget", str(budget)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=HELPER_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return {"error": {"message": f"the memory estimate did not finish: {exc}", "where": "", "fix": ""}}
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": {"message": f"the memory estimate failed: {last}", "where": "", "fix": ""}}


def add_memory_check(result: CheckResult, force: bool = False) -> CheckResult:
    """``result`` with the VRAM pre-flight's line and problems, when the rest of the check passed (a
    config that fails it cannot be estimated either). `loratui check`, `loratui train` and the
    wizard's Review and launch all take it from here."""
    if result.ok:
        memory = memory_check(result.config, force)
        result.problems += memory.problems
        result.memory = memory.lines
    return result


def memory_check(cfg: RunConfig, force: bool = False) -> MemoryCheck:
    """The check's VRAM line and problems. ``force``: estimate even without a GPU to compare with."""
    free = free_memory()
    if isinstance(free, str) and not force:
        return MemoryCheck([f"{LABEL}N/A ({free}; `loratui check --memory` estimates it anyway)"])
    budget = free.free if isinstance(free, FreeMemory) else None
    return judge(estimate_for(cfg, budget), free)


def estimate_for(cfg: RunConfig, budget: int | None) -> dict:
    """The helper's result for ``cfg``: from the cache when it is known and fits ``budget`` (the
    alternatives of one that does not depend on the budget: the helper runs again for them)."""
    path = _cache_path(cfg)
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = None
    if isinstance(known, dict) and "total" in known and (budget is None or known["total"] <= budget):
        return {"estimate": known, "budget": budget, "fits": None if budget is None else True, "alternatives": []}
    result = run_helper(cfg, budget)
    if "estimate" in result:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, json.dumps(result["estimate"]))
        except OSError:
            pass  # a cache that cannot be written costs only time
    return result


_LIBRARIES = ("torch", "diffusers", "transformers", "peft", "accelerate")


def _cache_path(cfg: RunConfig) -> Path:
    """The cache file of ``cfg``'s estimate: named by a digest of all it depends on."""
    settings = config_to_dict(cfg)
    facts = {
        "settings": {name: settings[name] for name in ("model", "network", "training", "optimizer")},
        "dataset": {k: settings["dataset"][k] for k in ("resolution", "cache_latents", "cache_text_encoder_outputs")},
        "model_files": _model_stamp(cfg),
        "versions": [_version(name) for name in _LIBRARIES],
        "code": _estimator_digest(),
    }
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return cache_dir() / "memory-estimates" / f"{digest}.json"


def _model_stamp(cfg: RunConfig) -> list:
    """Where the model's configs are, with their sizes and times (a replaced model is another)."""
    if cfg.model.is_builtin:
        return [cfg.model.path]
    stamps = []
    for name in (cfg.model.path, cfg.model.tokenizer):
        if not name:
            continue
        path = cfg.resolve(name)
        files = sorted(path.glob("*/config.json")) if path.is_dir() else [path]
        for file in files:
            try:
                stat = file.stat()
            except OSError:
                continue
            stamps.append([str(file), stat.st_size, stat.st_mtime_ns])
    return stamps


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _estimator_digest() -> str:
    """The estimator's own code, found without importing the engine (it imports torch)."""
    digest = hashlib.sha256()
    spec = importlib.util.find_spec("engine")  # a top-level name: found, not imported
    if spec is None or not spec.origin:
        return ""
    for name in ("memory_estimate.py", "lora.py"):
        try:
            digest.update((Path(spec.origin).parent / name).read_bytes())
        except OSError:
            pass
    return digest.hexdigest()


def judge(result: dict, free: FreeMemory | str) -> MemoryCheck:
    """The line and problems of a helper's result against the free memory."""
    check = MemoryCheck(result=result)
    if "error" in result:
        error = result["error"]
        check.lines.append(f"{LABEL}not estimated: {error['message']}")
        fix = error.get("fix") or "the run may still fit; watch the dashboard's memory"
        check.problems.append(
            Problem(error.get("where") or "model.path", f"no memory estimate: {error['message']}", fix, "warning")
        )
        return check
    total = result["estimate"]["total"]
    if not isinstance(free, FreeMemory):
        check.lines.append(f"{LABEL}est. {gib(total)} (no GPU to compare with: {free})")
        return check
    check.lines.append(f"{LABEL}est. {gib(total)} of {gib(free.free)} free on {free.gpu}")
    if total > free.free:
        check.problems.append(_refusal(result, free))
    elif total > CLOSE_FRACTION * free.free:
        check.problems.append(
            Problem(
                "training.batch_size",
                f"the run needs about {gib(total)} of the {gib(free.free)} free on {free.gpu}: close to the limit, "
                "where fragmentation or another program can push it over (and slow it hundreds of times on Windows)",
                "close other programs using the GPU, or turn on gradient checkpointing",
                "warning",
            )
        )
    return check


def _refusal(result: dict, free: FreeMemory) -> Problem:
    total = result["estimate"]["total"]
    message = f"the run needs about {gib(total)} of GPU memory; {free.gpu} has {gib(free.free)} free"
    alternatives = result.get("alternatives") or []
    if not alternatives:
        return Problem(
            "training.batch_size",
            message + ", and no setting loratui tried brings it under that",
            "free the GPU of other programs, or train on a GPU with more memory",
        )
    ways = [f"{_changes(a['changes'])} (est. {gib(a['total'])})" for a in alternatives]
    first = next(iter(alternatives[0]["changes"]))
    return Problem(first, message, "set " + "; or ".join(ways))


def _changes(changes: dict[str, object]) -> str:
    return ", ".join(f"{name} = {_toml(value)}" for name, value in changes.items() if name != "optimizer.args")


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)
