"""Who may import whom. Each rule is checked in a fresh interpreter, so a module that some other
test already imported cannot hide an arrow.

- The terminal side (CLI, TUI, config, dataset, jobs, GPU telemetry) never imports torch or the
  other engine libraries: importing them costs seconds, and `loratui --help` must be instant.
- The jobs layer, the GPU telemetry and the torch-free core never import Textual (nvitop's rule:
  the data layer knows nothing of the UI).
- The engine never imports the TUI or the jobs layer: it shares only the core, the config and
  the dataset scan with the terminal side.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENGINE_LIBRARIES = ("torch", "diffusers", "transformers", "peft", "accelerate", "bitsandbytes", "safetensors.torch")


def _modules(package: str) -> list[str]:
    path = ROOT.joinpath(*package.split("."))
    names = [package]
    for info in pkgutil.walk_packages([str(path)], prefix=package + "."):
        names.append(info.name)
    return names


TERMINAL_SIDE = [name for name in _modules("loratui") if name != "loratui.__main__"]


def _loaded_after_import(modules: list[str]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def _hits(loaded: set[str], roots: tuple[str, ...]) -> list[str]:
    return sorted(name for name in loaded if any(name == root or name.startswith(root + ".") for root in roots))


def test_the_terminal_side_never_imports_torch_or_the_engine_libraries():
    loaded = _loaded_after_import(TERMINAL_SIDE)
    assert not _hits(loaded, ENGINE_LIBRARIES), _hits(loaded, ENGINE_LIBRARIES)[:10]
    assert not _hits(loaded, ("engine",))


@pytest.mark.parametrize("package", ["loratui.core", "loratui.jobs", "loratui.gpu"])
def test_the_data_layers_never_import_textual(package):
    loaded = _loaded_after_import(_modules(package))
    assert not _hits(loaded, ("textual", "loratui.tui")), _hits(loaded, ("textual", "loratui.tui"))[:10]


def _imports_in(path: Path) -> set[str]:
    """Every module a source file names in an import statement, at any depth (lazy ones too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_engine_never_imports_the_tui_or_the_jobs_layer():
    # Statically, so imports inside functions (the engine imports lazily) are seen too.
    offenders = {}
    for path in sorted((ROOT / "engine").rglob("*.py")):
        bad = _hits(_imports_in(path), ("loratui.tui", "loratui.jobs", "loratui.cli", "textual"))
        if bad:
            offenders[str(path.relative_to(ROOT))] = bad
    assert not offenders


def test_the_core_imports_only_the_standard_library_and_loratui():
    allowed_third_party: set[str] = set()
    for path in sorted((ROOT / "loratui" / "core").rglob("*.py")):
        for name in _imports_in(path):
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or top == "loratui" or top in allowed_third_party, (path, name)
            if top == "loratui":
                assert name.startswith(("loratui.core", "loratui.atomic", "loratui.errors")), (path, name)
