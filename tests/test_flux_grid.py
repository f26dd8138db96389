"""The checkpoint x weight grid on FLUX.1: a real grid of a real Flux run.

diffusers' kohya FLUX.1 LoRA loader only takes FLUX.1's own layer widths (see tests/test_flux_roundtrip.py),
so this trains the FLUX.1-wide variant built there (``loratui:tiny-flux`` with a 3072-wide transformer) for two
epochs of one step each, a LoRA file saved after each, and renders its 2 x 2 grid at 64 px with 2 steps:
weight 0 is the base model in every row, weight 1 is what each file learned. The built-in tiny Flux's files
fail to load there, and the grid says why in one line.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loratui.core.protocol import encode
from loratui.grid_spec import GridRequest, resolve_grid
from tests.conftest import SAMPLE, train_in_process, write_config
from tests.test_flux_engine import flux_config
from tests.test_flux_roundtrip import wide_flux_folder
from tests.test_grid import _cell

pytestmark = pytest.mark.slow


def flux_run(tmp_path: Path, model_path: str) -> Path:
    """``model_path`` trained 2 epochs of one step (2 images, batch 2), a LoRA file after each: its run folder."""
    project = tmp_path / "project"
    images = project / "img" / "1_ohwx shape"
    images.mkdir(parents=True)
    for name in ("shape_01.png", "shape_01.txt", "shape_02.png", "shape_02.txt"):
        shutil.copy(SAMPLE / "img" / "10_ohwx shape" / name, images / name)
    data = flux_config(
        model={"path": model_path, "t5xxl_max_token_length": 8},
        training={"epochs": 2, "batch_size": 2},
        optimizer={"unet_lr": 3e-2, "text_encoder_lr": 1e-2},  # so that epoch 1's one step shows in the image
        output={"save_precision": "float"},
    )
    recorder, _ = train_in_process(write_config(project, data))
    # An in-process run's events went to the recorder: keep them as its run folder, as a job's are.
    run_folder = project / "log" / "flux-20261201-000000"
    run_folder.mkdir(parents=True)
    (run_folder / "events.jsonl").write_text("".join(encode(event) + "\n" for event in recorder.events))
    return run_folder


def test_flux_grid_weight_zero_is_the_base_model_in_every_row_and_weight_one_is_not(tmp_path):
    from engine.events import EventWriter
    from engine.grid import GridRender

    run_folder = flux_run(tmp_path, str(wide_flux_folder(tmp_path / "wide-flux")))
    output = tmp_path / "grid.png"
    request = GridRequest([str(run_folder)], "0,1", "ohwx shape, red circle --s 2", seed=11, output=str(output))
    spec, _ = resolve_grid(request)
    assert spec.family == "flux" and [row.label for row in spec.rows] == ["epoch 1", "epoch 2"]
    events = io.StringIO()
    GridRender(spec, EventWriter(events)).run()

    grid = Image.open(output)
    layout = json.loads(grid.text["loratui.grid"])["layout"]
    assert (layout["cell_width"], layout["cell_height"], layout["rows"], layout["columns"]) == (64, 64, 2, 2)
    assert json.loads(grid.text["loratui.grid.columns"]) == [0.0, 1.0]
    base = _cell(grid, layout, 0, 0)
    assert (np.abs(_cell(grid, layout, 1, 0) - base) <= 1).all()  # weight 0: the same base model in each row
    for row in range(2):
        assert np.abs(_cell(grid, layout, row, 1) - base).mean() > 1  # weight 1: what the file learned
    assert np.abs(_cell(grid, layout, 1, 1) - _cell(grid, layout, 0, 1)).mean() > 1  # each row its own file


def test_the_tiny_flux_model_cannot_be_gridded_and_says_so_plainly(tmp_path):
    from engine.events import EventWriter
    from engine.grid import GridRender
    from loratui.errors import UserError

    run_folder = flux_run(tmp_path, "loratui:tiny-flux")
    spec, _ = resolve_grid(GridRequest([str(run_folder)], "0,1", "ohwx shape --s 2", output=str(tmp_path / "g.png")))
    with pytest.raises(UserError) as caught:
        GridRender(spec, EventWriter(io.StringIO())).run()
    error = caught.value
    assert "diffusers' FLUX.1 LoRA loader only takes FLUX.1's real layer widths (3072)" in error.message
    assert "cannot be gridded" in error.message and error.where == "loratui:tiny-flux"
    assert not (tmp_path / "g.png").exists()
