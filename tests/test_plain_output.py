"""What loratui prints as plain text: counts in the right number, sizes in binary units everywhere,
and commands a person can paste (the job's real id, config and state folder, shell-quoted)."""

from __future__ import annotations

import io
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loratui.core.protocol import encode, make_event
from loratui.jobs import registry
from loratui.jobs.process import boot_id, host_name
from loratui.jobs.record import JobRecord, write_record
from loratui.plain_progress import PlainProgress, format_bytes
from loratui.quantities import count, size
from loratui.tui.dashboard import format as fmt

from .conftest import REPO, SAMPLE, small_config, write_config

GIB = 1024**3


def test_counts_take_the_form_their_number_needs():
    assert count(1, "epoch") == "1 epoch" and count(2, "epoch") == "2 epochs" and count(0, "image") == "0 images"
    assert count(1200, "step") == "1,200 steps"
    assert count(2, "batch", "batches") == "2 batches"


def test_sizes_are_binary_units_the_same_everywhere():
    assert size(1000) == "1000 B"
    assert size(1536) == "1.5 KiB" and size(151_000) == "147 KiB"
    assert size(151_000_000) == "144 MiB" and size(int(23.6 * GIB)) == "23.6 GiB"
    for value in (512, 1536, 151_000, 151_000_000, 8 * GIB):
        assert format_bytes(value) == fmt.size(value) == size(value)  # plain progress and the dashboard agree
    assert "KB" not in format_bytes(151_000) and "MB" not in format_bytes(151_000_000)


def progress_of(*events: dict, **options) -> str:
    out = io.StringIO()
    progress = PlainProgress(out, interactive=False, **options)
    for event in events:
        progress.handle(event)
    return out.getvalue()


STARTED = make_event(
    "run_started",
    run_id="r",
    config={},
    config_dir="/p",
    dataset={"images": 1, "items_per_epoch": 10},
    total_steps=10,
    total_epochs=1,
    steps_per_epoch=10,
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


def test_plain_progress_counts_in_the_right_number():
    text = progress_of(STARTED, make_event("finished", step=10, epoch=1, path="/p/x.safetensors", elapsed_s=5.0))
    assert "10 steps, 1 epoch of 10 steps; 1 image, 10 items per epoch" in text
    assert "(10 steps, 1 epoch, 0:05 of training)" in text
    assert "1 epochs" not in text and "1 images" not in text


def test_plain_progress_prints_the_validation_loss_and_the_lowest_so_far():
    text = progress_of(
        make_event("validation", step=0, epoch=0, loss=0.4, images=2),
        make_event("validation", step=5, epoch=0, loss=0.3, images=2),
        make_event("validation", step=10, epoch=1, loss=0.35, images=1),
    )
    assert text.splitlines() == [
        "validation loss before training: 0.4000 on 2 held-out images",
        "validation loss at step 5: 0.3000 on 2 held-out images (the lowest so far)",
        "validation loss at step 10: 0.3500 on 1 held-out image (lowest 0.3000 at step 5)",
    ]


def test_plain_progress_sizes_are_binary_units():
    text = progress_of(
        make_event("checkpoint", path="/p/x.safetensors", bytes=151_000_000, epoch=1, step=10, kind="epoch"),
        make_event(
            "memory", device="cuda", allocated=int(1.5 * GIB), reserved=2 * GIB, peak_allocated=2 * GIB, total=24 * GIB
        ),
    )
    assert "saved LoRA /p/x.safetensors (144 MiB)" in text
    assert "GPU memory: 1.5 GiB allocated, 2.0 GiB reserved of 24.0 GiB" in text


def test_plain_progress_prints_the_real_commands_shell_quoted():
    state = "/home/me/my lora/model/x-step00000007-state"
    text = progress_of(
        make_event("paused", step=7, epoch=1),
        make_event(
            "stopped",
            step=7,
            epoch=1,
            path="/home/me/my lora/model/x-step00000007.safetensors",
            state=state,
            reason="request",
            elapsed_s=3.0,
        ),
        job_id="x-20261122-101500",
        config="/home/me/my lora/loratui.toml",
    )
    assert "paused after step 7 (resume: loratui resume x-20261122-101500)" in text
    line = next(line for line in text.splitlines() if line.startswith("Resume with: "))
    assert shlex.split(line.removeprefix("Resume with: ")) == [
        "loratui",
        "train",
        "/home/me/my lora/loratui.toml",
        "--resume",
        state,
    ]
    assert "JOB" not in text and "CONFIG" not in text


def test_loratui_logs_prints_the_jobs_real_commands(tmp_path, monkeypatch):
    monkeypatch.setenv("LORATUI_STATE_DIR", str(tmp_path / "state"))
    project = tmp_path / "my lora"
    folder = project / "log" / "ohwx-20261122-101500"
    folder.mkdir(parents=True)
    state = str(project / "model" / "ohwx-step00000007-state")
    events = [
        STARTED,
        make_event("paused", step=7, epoch=1),
        make_event("resumed", step=7, paused_s=4.0),
        make_event(
            "stopped",
            step=7,
            epoch=1,
            path=str(project / "model" / "ohwx-step00000007.safetensors"),
            state=state,
            reason="request",
            elapsed_s=3.0,
        ),
    ]
    (folder / "events.jsonl").write_text("".join(encode(event) + "\n" for event in events))
    record = JobRecord(
        job_id=folder.name,
        run_folder=str(folder),
        config=str(project / "loratui.toml"),
        pid=999_999_999,
        start_time=1,
        boot_id=boot_id(),
        host=host_name(),
        started_at=time.time(),
    )
    write_record(record, folder / "job.json")
    registry.register(record)
    out = subprocess.run(
        [sys.executable, "-m", "loratui.cli", "logs", "ohwx"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert out.returncode == 0, out.stderr
    assert "(resume: loratui resume ohwx-20261122-101500)" in out.stdout
    line = next(line for line in out.stdout.splitlines() if line.startswith("Resume with: "))
    assert shlex.split(line.removeprefix("Resume with: ")) == ["loratui", "train", record.config, "--resume", state]
    assert "JOB" not in out.stdout and "CONFIG" not in out.stdout and "..." not in out.stdout


@pytest.fixture
def one_epoch_project(tmp_path) -> Path:
    import shutil

    shutil.copytree(SAMPLE / "img", tmp_path / "img")
    data = small_config(training={"epochs": 1}, output={"save_every_n_epochs": 1})
    write_config(tmp_path, data)
    return tmp_path / "loratui.toml"


def test_check_report_counts_in_the_right_number(one_epoch_project):
    out = subprocess.run(
        [sys.executable, "-m", "loratui.cli", "check", str(one_epoch_project)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert "-> 20 steps per epoch x 1 epoch = 20 steps" in out.stdout, out.stdout
    assert "test_lora.safetensors, every epoch" in out.stdout
    assert "(s)" not in out.stdout and "1 epochs" not in out.stdout
    one_error = small_config(training={"epochs": 1}, network={"rank": 0})
    write_config(one_epoch_project.parent, one_error)
    out = subprocess.run(
        [sys.executable, "-m", "loratui.cli", "check", str(one_epoch_project)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert "1 error: training would fail. Fix it and run `loratui check` again." in out.stdout, out.stdout
