"""The checkpoint x weight grid (issue 12, part 3): ``loratui grid RUN_OR_FILES``.

Fast tests: the inputs a user gets wrong (one line each, non-zero, no traceback), the image's layout
and labels, the job record's kind. Slow tests train the tiny model for 2 epochs (a LoRA file each)
and render real grids: the PNG's size and text, weight 0 = the base model's image, weight 1 not,
and the grid as a detached job that ``loratui attach`` follows to its end.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loratui.core.protocol import encode, make_event
from loratui.errors import UserError
from loratui.grid_image import GridLabels, compose_grid, grid_metadata, save_grid_png
from loratui.grid_spec import GridRequest, check_output, parse_weights, resolve_grid
from tests.conftest import SAMPLE, small_config, train_in_process, write_config
from tests.test_cli import assert_clean_failure, loratui

PROMPT = "ohwx shape, red circle --s 2"


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("text", "needle"),
    [("0.4,abc", "'abc' is not a number"), ("", "not a list of weights"), ("1,,2", "not a list"), ("nan", "range")],
)
def test_weights_that_are_not_numbers_are_refused(text, needle):
    with pytest.raises(UserError) as caught:
        parse_weights(text)
    assert needle in str(caught.value) and "--weights" in str(caught.value)


def test_weights_are_read_in_order():
    assert parse_weights("0.4, 0.6,0.8,1") == [0.4, 0.6, 0.8, 1.0]


def test_an_output_that_cannot_be_written_is_refused(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        check_output(tmp_path / "nowhere" / "grid.png")
    with pytest.raises(UserError, match="not a .png"):
        check_output(tmp_path / "grid.jpg")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(UserError, match="permission denied"):
            check_output(locked / "grid.png")


def _lora_file(path: Path, architecture: str, base: str = "model.safetensors", epoch: int = 1) -> Path:
    from safetensors.numpy import save_file

    tensors = {
        "lora_unet_x.lora_down.weight": np.zeros((4, 8), np.float32),
        "lora_unet_x.lora_up.weight": np.zeros((8, 4), np.float32),
    }
    meta = {"modelspec.architecture": architecture, "ss_sd_model_name": base, "ss_epoch": str(epoch)}
    save_file(tensors, str(path), metadata=meta)
    return path


def test_lora_files_of_different_families_are_refused(tmp_path):
    sd = _lora_file(tmp_path / "a.safetensors", "stable-diffusion-v1/lora")
    xl = _lora_file(tmp_path / "b.safetensors", "stable-diffusion-xl-v1-base/lora", epoch=2)
    with pytest.raises(UserError, match="different model families") as caught:
        resolve_grid(GridRequest([str(sd), str(xl)], model="loratui:tiny-sd"))
    assert "a.safetensors is SD 1.x" in str(caught.value) and "b.safetensors is SDXL" in str(caught.value)


def test_lora_files_of_different_base_models_are_refused(tmp_path):
    one = _lora_file(tmp_path / "a.safetensors", "stable-diffusion-v1/lora", "sd15.safetensors")
    two = _lora_file(tmp_path / "b.safetensors", "stable-diffusion-v1/lora", "dreamshaper.safetensors", 2)
    with pytest.raises(UserError, match="different base models"):
        resolve_grid(GridRequest([str(one), str(two)], model="loratui:tiny-sd"))


def test_lora_files_need_a_base_model_and_must_exist(tmp_path):
    one = _lora_file(tmp_path / "a.safetensors", "stable-diffusion-v1/lora")
    two = _lora_file(tmp_path / "b.safetensors", "stable-diffusion-v1/lora", epoch=2)
    with pytest.raises(UserError, match="does not say where its base model is") as caught:
        resolve_grid(GridRequest([str(one), str(two)], prompt="a cat"))
    assert caught.value.where == "--model"
    with pytest.raises(UserError, match="does not exist"):
        resolve_grid(GridRequest([str(one), str(tmp_path / "gone.safetensors")], model="loratui:tiny-sd"))
    spec, run = resolve_grid(GridRequest([str(one), str(two)], model="loratui:tiny-sd", prompt="a cat", seed=3))
    assert run is None and spec.family == "sd1" and [row.label for row in spec.rows] == ["epoch 1", "epoch 2"]
    assert spec.prompt.seed == 3 and spec.output.endswith(".png") and Path(spec.output).parent == tmp_path


def _fake_run(tmp_path: Path, epochs: int, prompts: list[str], validation: list[float] | None = None) -> Path:
    """A run folder whose events say it trained ``epochs`` epochs and saved a LoRA file after each
    (with ``validation``: the held-out loss measured at each epoch's end)."""
    project = tmp_path / "project"
    (project / "model").mkdir(parents=True)
    folder = project / "log" / "fake-20261201-000000"
    folder.mkdir(parents=True)
    config = small_config(sample={"prompts": prompts})
    events = [
        make_event(
            "run_started",
            run_id=folder.name,
            config=config,
            config_dir=str(project),
            dataset={},
            total_steps=2 * epochs,
            total_epochs=epochs,
            steps_per_epoch=2,
            start_step=0,
            start_epoch=0,
            device="cpu",
            device_name="CPU",
            mixed_precision="no",
            pid=1,
            resumed_from=None,
            elapsed_s=0.0,
            loss_history=[],
        )
    ]
    for epoch in range(1, epochs + 1):
        name = "test_lora.safetensors" if epoch == epochs else f"test_lora-{epoch:06d}.safetensors"
        path = _lora_file(project / "model" / name, "stable-diffusion-v1/lora", epoch=epoch)
        kind = "final" if epoch == epochs else "epoch"
        if validation:
            events.append(make_event("validation", step=2 * epoch, epoch=epoch, loss=validation[epoch - 1], images=2))
        events.append(make_event("checkpoint", path=str(path), bytes=1, epoch=epoch, step=2 * epoch, kind=kind))
    events.append(make_event("finished", step=2 * epochs, epoch=epochs, path=str(path), elapsed_s=1.0))
    (folder / "events.jsonl").write_text("".join(encode(event) + "\n" for event in events))
    return folder


def test_a_run_with_one_checkpoint_is_refused(tmp_path):
    folder = _fake_run(tmp_path, 1, [PROMPT])
    result = loratui("grid", str(folder))
    assert_clean_failure(result, "a grid compares checkpoints: this run saved only one", "save_every_n_epochs")


def test_a_run_without_sample_prompts_needs_a_prompt(tmp_path):
    folder = _fake_run(tmp_path, 2, [])
    result = loratui("grid", str(folder))
    assert_clean_failure(result, "--prompt", "no prompt")


def test_a_run_resolves_to_its_checkpoints_in_order_with_its_first_prompt(tmp_path):
    folder = _fake_run(tmp_path, 3, [PROMPT, "another"])
    spec, run = resolve_grid(GridRequest([str(folder)], weights="0,1"))
    assert [row.label for row in spec.rows] == ["epoch 1", "epoch 2", "epoch 3"]
    assert spec.prompt.prompt == "ohwx shape, red circle" and spec.prompt.steps == 2
    assert spec.prompt.seed == 7  # training.seed + 0: the run's own seed for its first prompt
    assert run is not None and run.folder == folder.resolve()


def test_pick_lists_each_checkpoint_with_its_validation_loss_and_marks_the_best(tmp_path):
    folder = _fake_run(tmp_path, 3, [PROMPT], validation=[0.31, 0.22, 0.27])
    result = loratui("pick", str(folder))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    (one,) = [line for line in lines if "epoch 1" in line]
    (two,) = [line for line in lines if "epoch 2" in line]
    (three,) = [line for line in lines if "epoch 3" in line]
    assert "0.3100" in one and "0.2200" in two and "0.2700" in three
    assert "best" in two and "best" not in one + three
    spec, _ = resolve_grid(GridRequest([str(folder)]))
    assert spec.validation_losses == [0.31, 0.22, 0.27] and spec.best_row == 1


# ----------------------------------------------------------------------------- the image
def test_the_grid_image_has_labelled_axes_around_its_cells(tmp_path):
    cells = [[Image.new("RGB", (64, 48), (40 * row, 60 * column, 90)) for column in range(3)] for row in range(2)]
    labels = GridLabels(["epoch 1", "epoch 2"], [0.5, 0.75, 1.0], "ohwx shape", "seed 1", ["val 0.2", "val 0.1"], 1)
    image, layout = compose_grid(cells, labels)
    assert image.size == (layout.left + 3 * 64, layout.top + 2 * 48) and layout.left > 0 and layout.top > 0
    pixels = np.asarray(image)
    label_band = pixels[layout.top :, : layout.left]
    header_band = pixels[: layout.top, layout.left :]
    assert (label_band < 128).any() and (header_band < 128).any()  # ink on the white bands: the labels
    assert (pixels[layout.top + 48 :, layout.left + 64 : layout.left + 128] == cells[1][1]).all()  # cell (1, 1)
    path = save_grid_png(image, tmp_path / "grid.png", grid_metadata(labels, {"layout": "x"}))
    text = Image.open(tmp_path / "grid.png").text
    assert json.loads(text["loratui.grid.rows"]) == ["epoch 1", "epoch 2"] and path > 0
    assert json.loads(text["loratui.grid.columns"]) == [0.5, 0.75, 1.0]


def test_job_records_say_their_kind(tmp_path):
    from loratui.jobs.record import DamagedRecord, JobRecord

    record = JobRecord("a-grid-1", "/tmp/x", "/tmp/x/grid.json", 10, None, None, "h", 1.0, kind="grid")
    assert JobRecord.from_json(record.to_json()).kind == "grid"
    older = json.loads(record.to_json())
    del older["kind"]
    assert JobRecord.from_json(json.dumps(older)).kind == "train"  # records of earlier versions
    with pytest.raises(DamagedRecord, match="kind"):
        JobRecord.from_json(json.dumps({**older, "kind": "mine"}))


# ----------------------------------------------------------------------------- real grids (slow)
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """The tiny model trained 2 epochs at 64 px, a LoRA file saved after each: (run folder, project)."""
    project = tmp_path_factory.mktemp("grid-project")
    shutil.copytree(SAMPLE / "img" / "10_ohwx shape", project / "img" / "1_ohwx shape")  # 2 steps an epoch
    config = small_config(
        dataset={"resolution": 64, "max_bucket_reso": 128},
        network={"rank": 4, "alpha": 4.0},
        optimizer={"unet_lr": 1e-2, "text_encoder_lr": 5e-3},
        sample={"prompts": [PROMPT]},
    )
    recorder, _ = train_in_process(write_config(project, config))
    # An in-process run's events went to the recorder: keep them as its run folder, as a job's are.
    run_folder = project / "log" / "tiny-20261201-000000"
    run_folder.mkdir(parents=True)
    (run_folder / "events.jsonl").write_text("".join(encode(event) + "\n" for event in recorder.events))
    return run_folder, project


def _cell(grid: Image.Image, layout: dict, row: int, column: int) -> np.ndarray:
    x, y = layout["left"] + column * layout["cell_width"], layout["top"] + row * layout["cell_height"]
    return np.asarray(grid.crop((x, y, x + layout["cell_width"], y + layout["cell_height"]))).astype(int)


def test_grid_of_a_run_weight_zero_is_the_base_model_and_weight_one_is_not(trained_run, tmp_path):
    import torch

    from engine.events import EventWriter
    from engine.families import family_for
    from engine.grid import GridRender
    from engine.sampling import make_renderer
    from loratui.config import config_from_dict

    run_folder, _ = trained_run
    output = tmp_path / "grid.png"
    spec, _ = resolve_grid(GridRequest([str(run_folder)], weights="0,1", seed=11, output=str(output)))
    events = io.StringIO()
    GridRender(spec, EventWriter(events)).run()

    grid = Image.open(output)
    facts = json.loads(grid.text["loratui.grid"])
    layout = facts["layout"]
    assert (layout["cell_width"], layout["cell_height"], layout["rows"], layout["columns"]) == (64, 64, 2, 2)
    assert grid.size == (layout["left"] + 2 * 64, layout["top"] + 2 * 64)
    assert json.loads(grid.text["loratui.grid.rows"]) == ["epoch 1", "epoch 2"]
    assert json.loads(grid.text["loratui.grid.columns"]) == [0.0, 1.0]
    assert (np.asarray(grid)[layout["top"] :, : layout["left"]] < 128).any()  # the row labels are drawn
    progress = [json.loads(line) for line in events.getvalue().splitlines()]
    cells = [(e["current"], e["total"]) for e in progress if e["type"] == "status" and e["phase"] == "rendering"]
    assert cells == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]

    cfg = config_from_dict(spec.config, Path(spec.config_dir))
    family = family_for(cfg.model.family)
    base_model = family.load(cfg)
    base = np.asarray(
        make_renderer(family, base_model, torch.device("cpu"), torch.float32, torch.float32).render(spec.prompt)
    )
    for row in range(2):
        assert (np.abs(_cell(grid, layout, row, 0) - base) <= 1).all()  # weight 0: the base model's image
        assert np.abs(_cell(grid, layout, row, 1) - base).mean() > 2  # weight 1: what the LoRA learned


@pytest.mark.skipif(sys.platform != "linux", reason="jobs run on Linux")
def test_grid_runs_as_a_detached_job_that_attach_follows(trained_run, tmp_path):
    run_folder, project = trained_run
    output = tmp_path / "weights grid.png"  # a space: the printed path is quoted
    started = loratui("grid", str(run_folder), "--weights", "0.5,1", "--output", str(output), "--detach")
    assert started.returncode == 0, started.stderr
    (job_id,) = started.stdout.split()  # the id alone on stdout, for scripts
    assert "epoch 1" in started.stderr and "val loss" in started.stderr  # the pick view
    assert "loratui attach" in started.stderr and "'" in started.stderr
    attached = loratui("attach", job_id, timeout=600)
    assert attached.returncode == 0, attached.stdout + attached.stderr
    assert "[4/4]" in attached.stdout and f"Grid written: '{output}'" in attached.stdout
    assert Image.open(output).size[0] > 2 * 64
    jobs = loratui("jobs", "--json")
    (row,) = [json.loads(line) for line in jobs.stdout.splitlines() if json.loads(line)["id"] == job_id]
    assert row["state"] == "finished" and row["run_folder"].startswith(str(run_folder.parent))


# ----------------------------------------------------------------------------- the dashboard's key
def _finished_dashboard(tmp_path: Path, monkeypatch, epochs: int):
    """The app on a finished run of ``epochs`` epochs (a LoRA file after each), and the grid jobs it starts."""
    from loratui.jobs import launch
    from tests import test_tui_dashboard as board

    monkeypatch.setenv("LORATUI_CONFIG_DIR", str(tmp_path / "user-config"))
    monkeypatch.setenv("LORATUI_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setitem(sys.modules, "pynvml", None)
    started_jobs = []
    monkeypatch.setattr(
        launch,
        "start_grid_job",
        lambda spec_json, log_dir, name: started_jobs.append((spec_json, log_dir)) or _FakeJob(),
    )
    log = board.started(total_steps=2 * epochs, steps_per_epoch=2)
    log.steps_per_epoch = 10_000  # no made-up checkpoints at epoch ends: this test saves real files
    log.steps(1, 2 * epochs)
    for epoch in range(1, epochs + 1):
        path = _lora_file(tmp_path / f"ohwx-{epoch:06d}.safetensors", "stable-diffusion-v1/lora", epoch=epoch)
        log.add("checkpoint", path=str(path), bytes=1, epoch=epoch, step=2 * epoch, kind="epoch")
    log.add("finished", step=2 * epochs, epoch=epochs, path=str(path), elapsed_s=4.0)
    record = board.run_folder(tmp_path, log, alive=False)
    return board, board.make_app(record, log), started_jobs


class _FakeJob:
    job_id = "ohwx-grid-20261201-000000"


def test_g_on_a_finished_dashboard_starts_the_grid_of_its_run(tmp_path, monkeypatch):
    from tests import test_tui_dashboard as board

    monkeypatch.setitem(board.RUN_CONFIG, "sample", {"prompts": ["ohwx shape --s 20"]})
    board_module, app, started_jobs = _finished_dashboard(tmp_path, monkeypatch, epochs=2)

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            await board_module.loaded(pilot, gpu=False)
            assert "grid" in board_module.footer_keys(pilot.app)
            await pilot.press("g")
            await board_module.wait_for(pilot, lambda: board_module.notices(pilot.app), what="an answer")
            said = board_module.notices(pilot.app)
            assert "8 images, as job ohwx-grid-20261201-000000" in said and "loratui attach ohwx-grid" in said
            await pilot.press("q")

    board_module.run(scenario())
    ((spec_json, log_dir),) = started_jobs
    spec = json.loads(spec_json)
    assert [row["label"] for row in spec["rows"]] == ["epoch 1", "epoch 2"]
    assert spec["prompt"]["prompt"] == "ohwx shape" and spec["weights"] == [0.4, 0.6, 0.8, 1.0]
    assert log_dir == tmp_path / "log"  # beside the run's own folder


def test_no_grid_key_for_a_run_with_one_checkpoint(tmp_path, monkeypatch):
    board_module, app, _ = _finished_dashboard(tmp_path, monkeypatch, epochs=1)

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            await board_module.loaded(pilot, gpu=False)
            assert "grid" not in board_module.footer_keys(pilot.app)
            await pilot.press("q")

    board_module.run(scenario())
