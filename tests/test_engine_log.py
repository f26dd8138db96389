"""The engine's log stays readable: libraries' passing remarks are quieted at the source (the
engine's logging and warnings set-up) and dimmed on the dashboard when they come through anyway;
errors always get through and stand out."""

from __future__ import annotations

import os
import subprocess
import sys

from loratui.tui.dashboard.engine_log import is_chatter, is_error

from .conftest import REPO

QUIETED = """
import logging, sys, warnings
from engine.__main__ import quiet_libraries
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
quiet_libraries()
logging.getLogger("bitsandbytes.backends.cpu.ops").warning("kernels not found")
logging.getLogger("accelerate.utils").info("a remark")
logging.getLogger("diffusers.models").error("a real error from diffusers")
logging.getLogger("engine.train").info("the engine's own line")
warnings.warn("this will change in a future version", FutureWarning)
warnings.warn_explicit("a library remark", UserWarning, "x.py", 1, module="transformers.modeling_utils")
warnings.warn("a warning of ours", UserWarning)
import os
print("verbosity", os.environ["TRANSFORMERS_VERBOSITY"], os.environ["DIFFUSERS_VERBOSITY"], file=sys.stderr)
"""


def run_quieted(**env) -> str:
    out = subprocess.run(
        [sys.executable, "-c", QUIETED],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
    )
    assert out.returncode == 0, out.stderr
    return out.stderr


def test_the_engine_quiets_library_chatter_and_keeps_errors():
    stderr = run_quieted()
    assert "kernels not found" not in stderr and "a remark" not in stderr
    assert "future version" not in stderr and "a library remark" not in stderr
    assert "ERROR diffusers.models: a real error from diffusers" in stderr
    assert "INFO engine.train: the engine's own line" in stderr
    assert "a warning of ours" in stderr  # only the libraries' UserWarnings are quieted
    assert "verbosity error error" in stderr


def test_what_the_user_asked_for_wins():
    stderr = run_quieted(TRANSFORMERS_VERBOSITY="info", PYTHONWARNINGS="default")
    assert "verbosity info error" in stderr
    assert "future version" in stderr  # -W / PYTHONWARNINGS: the engine adds no filters of its own


def test_library_chatter_is_told_from_the_engines_lines_and_from_errors():
    chatter = [
        "2026-12-01 15:20:19,457 WARNING bitsandbytes.backends.cpu.ops: Failed to load CPU gemm_4bit_forward",
        "2026-12-01 15:20:19,457 INFO accelerate.utils.modeling: device_map",
        "/venv/site-packages/diffusers/models/attention.py:12: FutureWarning: `foo` is deprecated",
        "There are modules in UNet2DConditionModel that should be kept in float32: []. Casting directly ...",
        "Loading weights: 100%|██████████| 52/52 [00:00<00:00, 11075.19it/s]",
    ]
    for line in chatter:
        assert is_chatter(line), line
        assert not is_error(line), line
    assert is_chatter("  warnings.warn(", after_warning=True)
    assert not is_chatter('  File "/x/engine/train.py", line 3, in run')  # a traceback's lines are not chatter
    own = "2026-12-01 15:20:20,001 INFO engine.train: cached the latents of 12 images"
    assert not is_chatter(own) and not is_error(own)
    for line in (
        "Traceback (most recent call last):",
        "torch.OutOfMemoryError: CUDA out of memory.",
        "RuntimeError: expected scalar type Half",
        "2026-12-01 15:20:19,457 ERROR engine: image_dir: missing",
        "2026-12-01 15:20:19,457 ERROR diffusers.models: a real error",
    ):
        assert is_error(line) and not is_chatter(line), line
