"""The job dashboard, driven through Textual's Pilot at 80x24 (a default SSH terminal) and 120x40.

Every state comes from a recorded event stream (tests/event_log.py) in a fake run folder, read by
the dashboard's own workers exactly as a real run's would be. The control keys go through the
real ``send_command`` path to a fake engine that reads the run's ``control`` FIFO and answers in
``events.jsonl``. Assertions are on the text on screen. SVG snapshots: after an intended change
of the look, review the diff and run ``pytest tests/test_tui_dashboard.py --snapshot-update``.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import pty
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from loratui.core.protocol import decode_command, encode, make_event
from loratui.errors import UserError
from loratui.gpu.shared_memory import LINUX_REASON
from loratui.jobs.process import identity_of
from loratui.jobs.record import JobRecord, write_record
from loratui.tui import AppResult, make_dashboard_app
from loratui.tui.app import LoratuiApp
from loratui.tui.dashboard import DashboardResult, DashboardScreen, chart
from loratui.tui.dashboard import format as fmt
from loratui.tui.dashboard.log_reader import LogTail
from loratui.tui.dashboard.loss_panel import LossChart

from . import fake_nvml
from .event_log import EventLog
from .fake_nvml import GIB, FakeGpu

REPO = Path(__file__).resolve().parent.parent
JOB_ID = "ohwx-20261122-101500"
CONFIG = "/home/me/ohwx/loratui.toml"
ENGINE_LOG = "INFO loading model /models/sd15.safetensors\nINFO caching latents\ncaching: 50%|#####     | 6/12\rcaching: 100%|##########| 12/12\n"
RUN_CONFIG = {
    "model": {"path": "/models/sd15.safetensors", "family": "sd1"},
    "dataset": {"resolution": 512, "enable_buckets": True},
    "network": {"rank": 32, "alpha": 16.0},
    "training": {"batch_size": 4, "mixed_precision": "bf16", "gradient_accumulation_steps": 1},
    "optimizer": {"name": "AdamW8bit", "unet_lr": 1e-4, "text_encoder_lr": 5e-5, "scheduler": "cosine"},
}


@pytest.fixture(autouse=True)
def _private(tmp_path, monkeypatch):
    """Own settings and job registry; no real NVML (a test that wants GPUs installs a fake one)."""
    monkeypatch.setenv("LORATUI_CONFIG_DIR", str(tmp_path / "user-config"))
    monkeypatch.setenv("LORATUI_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("LORATUI_THEMES_DIR", raising=False)
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` fails: "no NVIDIA GPU"


# ---------------------------------------------------------------------------------- helpers


def started(total_steps: int = 200, steps_per_epoch: int = 40, config: dict | None = None) -> EventLog:
    log = EventLog()
    log.add("status", phase="loading_model", message="loading the model")
    log.add(
        "run_started",
        run_id="r1",
        config=RUN_CONFIG if config is None else config,
        config_dir="/home/me/ohwx",
        dataset={"images": 20, "reg_images": 0},
        total_steps=total_steps,
        total_epochs=-(-total_steps // steps_per_epoch),
        steps_per_epoch=steps_per_epoch,
        start_step=0,
        start_epoch=0,
        device="cuda",
        device_name="NVIDIA GeForce RTX 4090",
        mixed_precision="bf16",
        pid=4242,
        resumed_from=None,
        elapsed_s=0.0,
        loss_history=[],
    )
    log.add("status", phase="training", message="training")
    log.elapsed, log.steps_per_epoch = 0.0, steps_per_epoch
    return log


def run_folder(tmp_path: Path, log: EventLog, *, alive: bool = True, engine_log: str = ENGINE_LOG) -> JobRecord:
    """A run folder as the launcher makes it, and its record. ``alive``: the record names a live
    process (this test process), so the job counts as running; else a pid that has just been freed."""
    folder = tmp_path / "log" / JOB_ID
    folder.mkdir(parents=True)
    log.write(folder / "events.jsonl")
    (folder / "engine.log").write_text(engine_log)
    if alive:
        me = identity_of(os.getpid())
        pid, start = me.pid, me.start_time
    else:
        gone = subprocess.Popen(["true"])
        gone.wait()
        pid, start = gone.pid, 1
    me = identity_of(os.getpid())
    record = JobRecord(
        job_id=JOB_ID,
        run_folder=str(folder),
        config=CONFIG,
        pid=pid,
        start_time=start,
        boot_id=me.boot_id,
        host=me.host,
        started_at=1_795_000_000.0,
    )
    write_record(record, folder / "job.json")
    return record


def append(record: JobRecord, log: EventLog, first_line: int) -> int:
    """Append the lines ``log`` has built since ``first_line``; returns the new count."""
    with open(record.events_path, "a") as handle:
        handle.write("".join(log.lines[first_line:]))
    return len(log.lines)


def make_app(record: JobRecord, log: EventLog, *, later_s: float = 1.0, **options) -> LoratuiApp:
    """The app opened on the job's dashboard (``loratui attach``), with a clock fixed at
    ``later_s`` after the last event (ETA and elapsed do not depend on the wall clock), polling fast."""
    now = log.t + later_s
    options.setdefault("poll_s", 0.05)
    return make_dashboard_app(record, theme="loratui-dark", dashboard_options=dict(now=lambda: now, **options))


def left_from(app: LoratuiApp) -> DashboardResult:
    """The dashboard the app was left from (q on the dashboard it opened on quits the app)."""
    result = app.return_value
    assert isinstance(result, AppResult) and result.dashboard is not None, result
    return result.dashboard


def screen_text(app) -> str:
    """What the terminal shows, as plain text."""
    width, height = app.size
    console = Console(
        width=width,
        height=height,
        file=io.StringIO(),
        force_terminal=True,
        color_system="truecolor",
        record=True,
        legacy_windows=False,
        safe_box=False,
    )
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


def dashboard(app) -> DashboardScreen:
    screen = app.dashboard()
    assert screen is not None
    return screen


async def wait_for(pilot, predicate, timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}:\n{screen_text(pilot.app)}")
        await pilot.pause(0.02)


async def shows(pilot, text: str, timeout: float = 5.0) -> str:
    """Wait until ``text`` is on screen; return the screen."""
    await wait_for(pilot, lambda: text in screen_text(pilot.app), timeout, repr(text))
    return screen_text(pilot.app)


async def loaded(pilot, gpu: bool = True) -> DashboardScreen:
    """The history is shown (and a GPU reading, unless there is none to wait for)."""
    await wait_for(
        pilot, lambda: pilot.app.dashboard() is not None and pilot.app.dashboard().view.loaded, what="history"
    )
    screen = dashboard(pilot.app)
    if gpu:
        await wait_for(pilot, lambda: screen.view.gpu is not None, what="a GPU reading")
    await pilot.pause(0.3)  # the redraw after the last message (at most every 0.25 s)
    return screen


def run(coro):
    return asyncio.run(coro)


def footer_keys(app) -> set[str]:
    """The actions the footer offers now."""
    return {
        binding.action
        for (_node, binding, enabled, _tooltip) in app.screen.active_bindings.values()
        if binding.show and enabled
    }


# ---------------------------------------------------------------------------------- states


def test_starting_job_shows_what_the_engine_is_doing(tmp_path):
    log = EventLog()
    log.add("status", phase="loading_model", message="loading the model")
    log.add("status", phase="caching_latents", message="caching latents 6/12", current=6, total=12)
    record = run_folder(tmp_path, log)

    async def scenario():
        async with make_app(record, log).run_test(size=(80, 24)) as pilot:
            await loaded(pilot)
            text = screen_text(pilot.app)
            assert "STARTING" in text and JOB_ID in text
            assert "caching latents 6/12" in text
            assert "50.0%" in text  # the phase's own bar
            assert "no loss yet" in text
            assert "stop" in footer_keys(pilot.app)  # a starting job can be stopped already

    run(scenario())


def test_running_job_shows_step_loss_eta_lr_and_the_y_range(tmp_path):
    log = started(total_steps=200, steps_per_epoch=40)
    log.steps(1, 57, seconds=0.5)
    record = run_folder(tmp_path, log)
    steps = [json.loads(line) for line in log.lines if '"type":"step"' in line]
    losses = [e["loss"] for e in steps]
    best = min(range(len(losses)), key=losses.__getitem__)

    async def scenario():
        async with make_app(record, log, later_s=1.0).run_test(size=(80, 24)) as pilot:
            screen = await loaded(pilot)
            text = screen_text(pilot.app)
            assert "RUNNING" in text and "NVIDIA GeForce RTX 4090, bf16" in text
            assert "Step  57 / 200" in text and "28.5%" in text
            assert "Epoch    2 / 5" in text  # and 17 of the epoch's 40 steps: 42.5%
            assert "42.5%" in text
            # 143 steps left at 0.5 s, half a step of it already spent since the last one; the
            # elapsed time is the wall time since the launch (the record's start, here the first
            # event): 57 steps of 0.5 s, 3 s saving after epoch 1, 1 s since the last step
            assert "ETA 1:11" in text and "elapsed 0:32" in text
            assert "speed 2.00 it/s" in text and "samples/s 8.0" in text
            assert "LR unet 1e-4 · text_encoder 5e-5" in text
            assert f"loss {losses[-1]:.4f}" in text
            assert f"min {losses[best]:.4f} (step {best + 1})" in text
            # the chart says the range it draws, and that range is the data's
            low, high = screen.query_one(LossChart).y_range
            assert f"{fmt.axis(high, high - low)}┤" in text and f"{fmt.axis(low, high - low)}┤" in text
            assert low <= min(losses) and high >= max(losses) * 0.95
            assert "step 1" in text and "▆ raw  ─ smoothed" in text
            params = screen.query_one("#dash-params").shown_text  # further down at 80x24: the CPU panel is above
            assert "network rank 32 / alpha 16" in params and "optimizer AdamW8bit" in params
            assert {"detach", "stop", "pause", "save"} <= footer_keys(pilot.app)
            assert "resume" not in footer_keys(pilot.app)

    run(scenario())


def test_the_rest_of_the_panels_at_80x24_scroll_into_view(tmp_path):
    log = started()
    log.steps(1, 80)  # two epochs: two saved files
    record = run_folder(tmp_path, log)

    async def scenario():
        async with make_app(record, log).run_test(size=(80, 24)) as pilot:
            await loaded(pilot)
            await pilot.press("end")
            await pilot.pause(0.2)
            text = screen_text(pilot.app)
            assert "x-000002.safetensors" in text and "in /p/model" in text
            assert (
                "lr unet 1e-4 · te 5e-5" in text and "scheduler cosine" in text and "resolution 512 (buckets)" in text
            )
            assert "caching: 100%|##########| 12/12" in text  # the log's last redraw of the progress bar
            assert "caching: 50%" not in text

    run(scenario())


def test_paused_job_says_since_when_and_offers_resume(tmp_path):
    log = started()
    log.steps(1, 30)
    log.add("control", command="pause", id="a1", ok=True, message="paused after step 30")
    log.add("paused", step=30, epoch=1)
    log.add("status", phase="paused", message="paused after step 30")
    record = run_folder(tmp_path, log)

    async def scenario():
        async with make_app(record, log, later_s=42.0).run_test(size=(80, 24)) as pilot:
            await loaded(pilot)
            text = screen_text(pilot.app)
            assert "PAUSED" in text and "paused for 0:42" in text
            assert "(paused)" in text  # the ETA does not count down while paused
            keys = footer_keys(pilot.app)
            assert "resume" in keys and "pause" not in keys
            # The footer redraws on its own after the bindings change: on a busy machine later
            # than the 0.3 s loaded() waits (seen once in CI), so wait for it rather than assume it.
            await wait_for(pilot, lambda: "Resume" in screen_text(pilot.app), what="the footer's Resume")

    run(scenario())


def test_spill_warning_banner_stays_until_dismissed(tmp_path):
    log = started()
    log.steps(1, 30)
    log.add(
        "warning",
        code="vram_spill",
        message="VRAM 97% full and steps 4.1x slower than before",
        hint="use less VRAM: a smaller training.batch_size",
    )
    record = run_folder(tmp_path, log)

    async def scenario():
        async with make_app(record, log).run_test(size=(80, 24)) as pilot:
            await loaded(pilot)
            text = screen_text(pilot.app)
            assert "VRAM spill-over: VRAM 97% full and steps 4.1x slower than before" in text
            assert "fix: use less VRAM: a smaller training.batch_size" in text
            assert "dismiss_warning" in footer_keys(pilot.app)
            # it stays while the run goes on
            written = len(log.lines)
            log.steps(31, 35)
            written = append(record, log, written)
            await shows(pilot, "Step  35 / 200")
            assert "VRAM spill-over" in screen_text(pilot.app)
            await pilot.press("d")
            await pilot.pause(0.1)
            assert "VRAM spill-over" not in screen_text(pilot.app)
            assert "dismiss_warning" not in footer_keys(pilot.app)
            # a new warning from the engine brings it back
            log.t += 60
            log.add("warning", code="vram_spill", message="VRAM full again", hint="lower network.rank")
            append(record, log, written)
            await shows(pilot, "VRAM spill-over: VRAM full again")

    run(scenario())


def test_finished_job_shows_where_the_lora_is_and_quitting_prints_it(tmp_path):
    log = started(total_steps=80)
    log.steps(1, 80)
    log.add(
        "checkpoint", path="/home/me/ohwx/model/ohwx.safetensors", bytes=151_000_000, epoch=2, step=80, kind="final"
    )
    log.add("finished", step=80, epoch=2, path="/home/me/ohwx/model/ohwx.safetensors", elapsed_s=40.0)
    record = run_folder(tmp_path, log, alive=False)

    async def scenario():
        app = make_app(record, log)
        async with app.run_test(size=(80, 24)) as pilot:
            await loaded(pilot)
            text = screen_text(pilot.app)
            assert "FINISHED" in text
            assert "Finished at step 80/80, epoch 2/2, after 0:40 of training." in text
            assert "LoRA: /home/me/ohwx/model/ohwx.safetensors" in text
            assert "ETA done" in text
            # nothing left to control; its 3 LoRA files make a checkpoint x weight grid (g)
            assert footer_keys(pilot.app) == {"detach", "grid"}
            await pilot.press("q")
        return left_from(app)

    result = run(scenario())
    assert isinstance(result, DashboardResult) and result.ended and result.exit_code == 0
    assert "LoRA: /home/me/ohwx/model/ohwx.safetensors" in result.farewell()


def test_stopped_job_shows_the_exact_resume_command(tmp_path):
    log = started()
    log.steps(1, 57)
    state = "/home/me/ohwx/model/ohwx-step00000057-state"
    log.add("control", command="stop", id="b2", ok=True, message="stopping after step 57")
    log.add(
        "checkpoint", path="/home/me/ohwx/model/ohwx-step00000057.safetensors", bytes=10, epoch=1, step=57, kind="stop"
    )
    log.add("checkpoint", path=state, bytes=10, epoch=1, step=57, kind="state")
    log.add(
        "stopped",
        step=57,
        epoch=2,
        path="/home/me/ohwx/model/ohwx-step00000057.safetensors",
        state=state,
        reason="request",
        elapsed_s=28.5,
    )
    record = run_folder(tmp_path, log, alive=False)

    async def scenario():
        app = make_app(record, log)
        async with app.run_test(size=(80, 24)) as pilot:
            await loaded(pilot)
            text = screen_text(pilot.app)
            assert "STOPPED" in text and "Stopped on request at step 57/200." in text
            assert "LoRA so far: /home/me/ohwx/model/ohwx-step00000057.safetensors" in text
            assert "Resume with:" in text and f"loratui train {CONFIG} --resume" in text  # wraps at 80 columns
            outcome = pilot.app.screen.query_one("#dash-outcome")
            assert f"  loratui train {CONFIG} --resume {state}" in outcome.shown_text.splitlines()
            assert "copy_resume" in footer_keys(pilot.app)
            await pilot.press("c")
            assert pilot.app.clipboard == f"loratui train {CONFIG} --resume {state}"
            await pilot.press("q")
        return left_from(app)

    result = run(scenario())
    assert result.exit_code == 3
    assert f"  loratui train {CONFIG} --resume {state}" in result.farewell()


def test_failed_job_shows_the_error_and_its_fix(tmp_path):
    log = started()
    log.steps(1, 12)
    log.add(
        "error",
        kind="runtime",
        message="CUDA out of memory while training",
        hint="lower training.batch_size or network.rank, or set training.gradient_checkpointing = true",
    )
    log.add("failed", step=12, message="CUDA out of memory while training")
    record = run_folder(tmp_path, log, alive=False)

    async def scenario():
        app = make_app(record, log)
        async with app.run_test(size=(80, 24)) as pilot:
            await loaded(pilot)
            text = screen_text(pilot.app)
            assert "FAILED" in text and "Failed at step 12/200: CUDA out of memory while training" in text
            assert "Fix: lower training.batch_size or network.rank" in text
            assert "Engine log:" in text
            await pilot.press("q")
        return left_from(app)

    result = run(scenario())
    assert result.exit_code == 2  # a runtime error the user can fix, like the CLI's


def test_an_engine_that_died_without_a_word_is_reported_with_its_last_state(tmp_path):
    log = started()
    log.steps(1, 45)  # an epoch's checkpoint at 40; add a state with it
    log.add("checkpoint", path="/p/model/x-000001-state", bytes=10, epoch=1, step=40, kind="state")
    record = run_folder(tmp_path, log, alive=False)

    async def scenario():
        async with make_app(record, log).run_test(size=(80, 24)) as pilot:
            await loaded(pilot)
            await shows(pilot, "GONE")
            outcome = pilot.app.screen.query_one("#dash-outcome").shown_text
            assert "The engine ended without a final event at step 45/200" in outcome
            assert f"loratui train {CONFIG} --resume /p/model/x-000001-state" in outcome

    run(scenario())


# ------------------------------------------------------------------------- live and re-attach


def test_live_follow_shows_new_steps_and_log_lines(tmp_path):
    log = started()
    log.steps(1, 10)
    record = run_folder(tmp_path, log)

    async def scenario():
        async with make_app(record, log).run_test(size=(80, 24)) as pilot:
            screen = await loaded(pilot)
            assert "Step  10 / 200" in screen_text(pilot.app)
            written, done = len(log.lines), 10
            for last in (11, 25, 41):
                log.steps(done + 1, last)
                written, done = append(record, log, written), last
                await shows(pilot, f"Step  {last} / 200")
            with open(record.log_path, "a") as handle:
                handle.write("WARNING something the engine logged\n")
            await pilot.press("end")
            await shows(pilot, "WARNING something the engine logged")
            assert "x-000001.safetensors" in screen_text(pilot.app)  # the epoch's checkpoint arrived too
            assert screen.view.summary.step == 41

    run(scenario())


def test_events_are_batched_and_redraws_are_throttled(tmp_path):
    log = started(total_steps=5000)
    log.steps(1, 5)
    record = run_folder(tmp_path, log)

    async def scenario():
        async with make_app(record, log).run_test(size=(80, 24)) as pilot:
            screen = await loaded(pilot)
            before = screen.redraws
            written = len(log.lines)
            start = time.monotonic()
            for step in range(6, 206, 10):  # 200 steps over ~1 s: 20 writes
                log.steps(step, step + 9)
                written = append(record, log, written)
                await pilot.pause(0.05)
            await shows(pilot, "Step  205 / 5,000")
            seconds = time.monotonic() - start
            repaints = screen.redraws - before
            # at most 4 redraws a second; each repaints only the panels whose text changed (< 8)
            assert repaints <= (seconds / 0.25 + 2) * 6, (repaints, seconds)

    run(scenario())


def test_reattach_to_a_20000_step_run_shows_its_whole_history(tmp_path):
    log = started(total_steps=25_000, steps_per_epoch=5_000)
    log.steps(1, 20_000, seconds=0.05)
    record = run_folder(tmp_path, log)
    losses = [json.loads(line)["loss"] for line in log.lines if '"type":"step"' in line]
    best = min(range(len(losses)), key=losses.__getitem__)

    async def scenario():
        async with make_app(record, log).run_test(size=(80, 24)) as pilot:
            start = time.monotonic()
            screen = await loaded(pilot)
            took = time.monotonic() - start
            text = screen_text(pilot.app)
            assert "Step  20,000 / 25,000" in text
            assert f"min {losses[best]:.4f} (step {best + 1:,})" in text
            chart_widget = screen.query_one(LossChart)
            assert chart_widget.steps_shown == (1, 20_000)
            assert "step 1" in text and "20.0k" in text  # the chart's axis: the whole run
            assert screen.view.summary.history.count == 20_000
            assert took < 10, took
            # the curve from its start to now: each column is the mean of ~290 steps
            low, high = chart_widget.y_range
            first, last = losses[:400], losses[-400:]
            assert high >= sum(first) / len(first) and low <= sum(last) / len(last)

    run(scenario())


# ------------------------------------------------------------------------------ control keys


class FakeEngine:
    """Reads commands from the run's control FIFO as the engine does, answers in events.jsonl
    (``control``, then ``paused``/``resumed``/``checkpoint``/``stopped``) and records them."""

    def __init__(self, record: JobRecord, log: EventLog) -> None:
        self.record, self.log = record, log
        self.commands: list[str] = []
        os.mkfifo(record.control_path, 0o600)
        self._fd = os.open(record.control_path, os.O_RDONLY | os.O_NONBLOCK)
        self._keepalive = os.open(record.control_path, os.O_WRONLY | os.O_NONBLOCK)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._step = 57
        self._paused_at = 0.0

    def __enter__(self) -> FakeEngine:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join(5)
        os.close(self._fd)
        os.close(self._keepalive)

    def _emit(self, event_type: str, **fields) -> None:
        event = make_event(event_type, **fields)
        with open(self.record.events_path, "a") as handle:
            handle.write(encode(event) + "\n")

    def _serve(self) -> None:
        partial = b""
        while not self._done.is_set():
            ready, _, _ = select.select([self._fd], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(self._fd, 4096)
            except BlockingIOError:
                continue
            *lines, partial = (partial + data).split(b"\n")
            for line in lines:
                if line.strip():
                    command = decode_command(line)
                    self.commands.append(command["cmd"])
                    self._answer(command)

    def _answer(self, command: dict) -> None:
        name, cid, step = command["cmd"], command["id"], self._step
        if name == "pause":
            self._emit("control", command=name, id=cid, ok=True, message=f"paused after step {step}")
            self._emit("paused", step=step, epoch=2)
            self._emit("status", phase="paused", message=f"paused after step {step}")
        elif name == "resume":
            self._emit("control", command=name, id=cid, ok=True, message=f"resuming at step {step + 1}")
            self._emit("resumed", step=step, paused_s=3.0)
            self._emit("status", phase="training", message="training")
        elif name == "save":
            path = f"/p/model/ohwx-step{step:08d}.safetensors"
            self._emit("checkpoint", path=path, bytes=1000, epoch=1, step=step, kind="manual")
            self._emit(
                "control", command=name, id=cid, ok=True, message=f"saved {path} and its resumable state at step {step}"
            )
        elif name == "stop":
            self._emit("control", command=name, id=cid, ok=True, message=f"stopping after step {step}")
            state = f"/p/model/ohwx-step{step:08d}-state"
            self._emit(
                "stopped",
                step=step,
                epoch=2,
                path=f"/p/model/ohwx-step{step:08d}.safetensors",
                state=state,
                reason="request",
                elapsed_s=28.5,
            )


def notices(app) -> str:
    return "\n".join(str(notification.message) for notification in app._notifications)


def test_control_keys_reach_the_engine_and_show_its_answers(tmp_path):
    log = started()
    log.steps(1, 57)
    record = run_folder(tmp_path, log)

    async def scenario():
        with FakeEngine(record, log) as engine:
            async with make_app(record, log).run_test(size=(80, 24)) as pilot:
                await loaded(pilot)
                await pilot.press("p")
                await shows(pilot, "PAUSED")
                assert engine.commands == ["pause"]
                await wait_for(pilot, lambda: "paused after step 57" in notices(pilot.app), what="the answer")
                assert "resume" in footer_keys(pilot.app)
                await pilot.press("p")  # the same key resumes
                await shows(pilot, "RUNNING")
                assert engine.commands == ["pause", "resume"]
                await pilot.press("s")
                await wait_for(pilot, lambda: "saved /p/model/ohwx-step00000057.safetensors" in notices(pilot.app))
                assert engine.commands == ["pause", "resume", "save"]
        return True

    assert run(scenario())


def test_stop_asks_first(tmp_path):
    log = started()
    log.steps(1, 57)
    record = run_folder(tmp_path, log)

    async def scenario():
        with FakeEngine(record, log) as engine:
            app = make_app(record, log)
            async with app.run_test(size=(80, 24)) as pilot:
                await loaded(pilot)
                await pilot.press("x")
                text = await shows(pilot, f"Stop job {JOB_ID}?")
                assert "saves a LoRA file and" in text and "a resumable state, then exits" in text
                await pilot.press("escape")  # changed my mind
                await pilot.pause(0.3)
                assert engine.commands == [] and "Stop job" not in screen_text(pilot.app)
                await pilot.press("x")
                await shows(pilot, f"Stop job {JOB_ID}?")
                await pilot.press("enter")  # Enter is on "Keep training": stopping needs y
                await pilot.pause(0.3)
                assert engine.commands == []
                await pilot.press("x")
                await shows(pilot, f"Stop job {JOB_ID}?")
                await pilot.press("y")
                await shows(pilot, "STOPPED")
                assert engine.commands == ["stop"]
                outcome = pilot.app.screen.query_one("#dash-outcome").shown_text
                assert "--resume /p/model/ohwx-step00000057-state" in outcome
                await wait_for(pilot, lambda: "stopping after step 57" in notices(pilot.app))
                await pilot.press("q")
            return left_from(app)

    result = run(scenario())
    assert result.state == "stopped" and result.exit_code == 3


def test_a_command_to_a_job_without_an_engine_says_why(tmp_path):
    """The engine died between two polls: the key is refused with the control layer's message."""
    log = started()
    log.steps(1, 20)
    record = run_folder(tmp_path, log)  # alive (this process), but nobody reads the FIFO
    os.mkfifo(record.control_path, 0o600)

    async def scenario():
        async with make_app(record, log).run_test(size=(80, 24)) as pilot:
            await loaded(pilot)
            await pilot.press("s")
            await wait_for(pilot, lambda: "is not listening" in notices(pilot.app), what="the refusal")

    run(scenario())


# ------------------------------------------------------------------------------------ GPUs


def test_gpu_gauges_from_nvml_with_a_near_full_gpu(tmp_path, monkeypatch):
    fake_nvml.install(
        monkeypatch,
        [
            FakeGpu(
                name="NVIDIA GeForce RTX 4090",
                total=24 * GIB,
                used=int(23.6 * GIB),
                utilization=99,
                temperature=78,
                power_mw=431_000,
                power_limit_mw=450_000,
                compute=[(os.getpid(), int(22.5 * GIB))],
            ),
        ],
    )
    log = started()
    log.steps(1, 20)
    record = run_folder(tmp_path, log)

    async def scenario():
        async with make_app(record, log).run_test(size=(80, 24)) as pilot:
            screen = await loaded(pilot)
            text = screen_text(pilot.app)
            assert "GPU 0 NVIDIA GeForce RTX 4090  load 99%  temp 78 °C  power 431/450 W" in text
            assert "23.6/24.0 GiB  98% · engine 22.5 GiB" in text  # and what the engine's own process holds
            gpu = screen.query_one("#dash-gpu")
            assert f"shared {LINUX_REASON}" in gpu.shown_text  # a sentence, not an empty gauge
            assert "shared Linux has no shared GPU memory" in text
            near_full = gpu._shown.plain.index("23.6/24.0 GiB")
            styles = [span.style for span in gpu._shown.spans if span.start <= near_full < span.end]
            assert any("$error" in str(style) for style in styles)  # drawn in the error colour

    run(scenario())


def test_two_gpus_each_get_a_gauge(tmp_path, monkeypatch):
    fake_nvml.install(monkeypatch, [FakeGpu(name="GPU A", used=4 * GIB), FakeGpu(name="GPU B", used=12 * GIB)])
    log = started()
    record = run_folder(tmp_path, log)

    async def scenario():
        async with make_app(record, log).run_test(size=(120, 40)) as pilot:
            await loaded(pilot)
            # Drawn at the next refresh after the reading: waited for, not assumed 0.3 s later (a loaded CI).
            await wait_for(pilot, lambda: "GPU 1 GPU B" in screen_text(pilot.app), what="the second GPU's gauge")
            text = screen_text(pilot.app)
            assert "GPU 0 GPU A" in text and "GPU 1 GPU B" in text
            assert "4.0/24.0 GiB  17%" in text and "12.0/24.0 GiB  50%" in text

    run(scenario())


def test_without_an_nvidia_gpu_it_says_so_and_shows_the_engines_own_memory(tmp_path):
    log = started()
    log.steps(1, 19)
    log.add(
        "memory",
        device="cuda",
        allocated=int(1.5 * GIB),
        reserved=2 * GIB,
        peak_allocated=int(1.8 * GIB),
        total=8 * GIB,
    )
    record = run_folder(tmp_path, log)

    async def scenario():
        async with make_app(record, log).run_test(size=(80, 24)) as pilot:
            await loaded(pilot)
            text = screen_text(pilot.app)
            assert "no NVIDIA GPU: the nvidia-ml-py package is not installed" in text
            assert "torch  1.5 GiB allocated · 2.0 GiB reserved of 8.0 GiB · peak 1.8 GiB" in text

    run(scenario())


# ------------------------------------------------------------------------------------ layout


def test_two_columns_from_120_columns_one_below_80(tmp_path):
    log = started()
    log.steps(1, 30)
    record = run_folder(tmp_path, log)

    async def layout(size):
        async with make_app(record, log).run_test(size=size) as pilot:
            screen = await loaded(pilot)
            progress, gpu = screen.query_one("#dash-progress").region, screen.query_one("#dash-gpu").region
            return progress, gpu

    progress, gpu = run(layout((120, 40)))
    assert gpu.x > progress.right - 1 and gpu.y == progress.y  # side by side
    progress, gpu = run(layout((80, 24)))
    assert gpu.x == progress.x and gpu.y > progress.y  # stacked


def test_quitting_a_running_job_leaves_it_running_and_says_how_to_reattach(tmp_path):
    log = started()
    log.steps(1, 5)
    record = run_folder(tmp_path, log)

    async def scenario():
        app = make_app(record, log)
        async with app.run_test(size=(80, 24)) as pilot:
            await loaded(pilot)
            await pilot.press("q")
        return left_from(app)

    result = run(scenario())
    assert not result.ended and result.exit_code == 0 and result.state == "running"
    assert result.farewell() == [
        f"Detached; job {JOB_ID} runs on. Re-attach: loratui attach {JOB_ID}   stop it: loratui stop {JOB_ID}"
    ]


# ---------------------------------------------------------------------------- the terminal


CHILD = """
import sys
from loratui.jobs.record import read_record
from pathlib import Path
from loratui.tui import run_dashboard
sys.exit(run_dashboard(read_record(Path(sys.argv[1]))))
"""


def _job_process(tmp_path: Path) -> tuple[subprocess.Popen, JobRecord]:
    """A stand-in engine (a sleeping process) and the record that names it."""
    log = started()
    log.steps(1, 10)
    engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    record = run_folder(tmp_path, log)
    ident = identity_of(engine.pid)
    record.pid, record.start_time = ident.pid, ident.start_time
    write_record(record, record.folder / "job.json")
    return engine, record


def test_closing_the_terminal_closes_the_dashboard_and_not_the_job(tmp_path):
    engine, record = _job_process(tmp_path)
    env = dict(os.environ, TERM="xterm-256color", PYTHONPATH=str(REPO))
    pid, master = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal
        import fcntl
        import struct
        import termios

        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        os.execvpe(sys.executable, [sys.executable, "-c", CHILD, str(record.folder / "job.json")], env)
    try:
        seen, deadline = b"", time.monotonic() + 20
        while b"Step" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break
        assert b"Step" in seen, seen[-2000:]
        os.close(master)  # the SSH connection drops: the kernel hangs the terminal up (SIGHUP)
        deadline = time.monotonic() + 10
        status = None
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("the dashboard did not close when its terminal went away")
        assert os.waitstatus_to_exitcode(status) == 0  # closed by the hang-up, not by a crash
        assert engine.poll() is None  # the job runs on
    finally:
        engine.kill()
        engine.wait()


def test_without_a_terminal_it_refuses_and_names_the_plain_ways(tmp_path):
    engine, record = _job_process(tmp_path)
    try:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(record.folder / "job.json")],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )
        assert out.returncode == 2
        assert "needs a terminal" in out.stderr and f"loratui attach {JOB_ID} --no-tui" in out.stderr
        assert engine.poll() is None
    finally:
        engine.kill()
        engine.wait()


def test_an_unknown_theme_is_refused_with_the_names_there_are(tmp_path):
    record = run_folder(tmp_path, started())
    with pytest.raises(UserError) as caught:
        make_dashboard_app(record, theme="no-such-theme")
    assert caught.value.where == "--theme" and "loratui-256" in caught.value.fix


def test_the_dashboard_imports_no_torch():
    code = (
        "import sys\nimport loratui.tui.dashboard, loratui.tui.dashboard.screen, loratui.tui.app\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\nprint('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# ------------------------------------------------------------------------------- pure parts


def test_chart_covers_every_point_and_keeps_a_minimum_y_span():
    points = [1.0 + 0.0001 * (k % 3) for k in range(1000)]  # a flat curve with tiny noise
    series = chart.columns(points, [1 + k for k in range(1000)], 1000, 70)
    assert len(series.raw) == 70 and series.first_step == 1 and series.last_step == 1000
    assert abs(sum(series.raw) / 70 - sum(points) / 1000) < 1e-3
    low, high = chart.y_range(series)
    assert high - low >= 0.1 * 0.999  # noise of 0.01% is drawn as what it is: flat
    rows = chart.cells(series, low, high, 5)
    assert len(rows) == 5 and all(len(row) == 70 for row in rows)
    short = chart.columns([0.5, 0.4, 0.3], [1, 2, 3], 3, 70)
    assert len(short.raw) == 3  # a short run is drawn from the left, not stretched


def test_numbers_are_written_the_way_people_read_them():
    assert fmt.lr(1e-4) == "1e-4" and fmt.lr(5e-5) == "5e-5" and fmt.lr(2.31e-5) == "2.31e-5" and fmt.lr(1.0) == "1"
    assert fmt.speed(0.5) == "2.00 it/s" and fmt.speed(4.0) == "4.00 s/it"
    assert fmt.size(512 * 1024**2) == "512 MiB" and fmt.size(int(23.6 * GIB)) == "23.6 GiB"
    assert fmt.size(1000) == "1000 B" and fmt.size(151_000) == "147 KiB"
    assert fmt.bar(0.5, 10).plain == "━━━━━─────"
    assert fmt.quote("/a b/c") == "'/a b/c'"


def test_log_tail_keeps_the_last_lines_and_survives_truncation(tmp_path):
    path = tmp_path / "engine.log"
    path.write_bytes(b"".join(b"line %d\n" % k for k in range(5000)) + b"bar 10%\rbar 100%\n\x1b[31mred\x1b[0m\npart")
    tail = LogTail(path, initial_lines=3)
    assert tail.read_new() == ["line 4999", "bar 100%", "red"]
    with open(path, "ab") as handle:
        handle.write(b"ial\nnext\n")
    assert tail.read_new() == ["partial", "next"]
    path.write_bytes(b"fresh\n")  # rotated
    assert tail.read_new() == ["fresh"]


# ------------------------------------------------------------------------------- snapshots


def _snapshot_app(tmp_path: Path, monkeypatch, finished: bool) -> LoratuiApp:
    fake_nvml.install(
        monkeypatch,
        [
            FakeGpu(
                name="NVIDIA GeForce RTX 4090",
                total=24 * GIB,
                used=int(17.2 * GIB),
                utilization=97,
                temperature=71,
                power_mw=402_000,
                power_limit_mw=450_000,
            )
        ],
    )
    log = started(total_steps=400, steps_per_epoch=100)
    log.add("eval", step=0, epoch=0, loss=0.31)
    log.steps(1, 400 if finished else 233, seconds=0.8)
    if finished:
        log.add("checkpoint", path="/p/model/ohwx.safetensors", bytes=151_000_000, epoch=4, step=400, kind="final")
        log.add("finished", step=400, epoch=4, path="/p/model/ohwx.safetensors", elapsed_s=320.0)
    return make_app(run_folder(tmp_path, log, alive=not finished), log, later_s=0.4)


async def _settled(pilot) -> None:
    await loaded(pilot)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
@pytest.mark.parametrize("state", ["running", "finished"])
def test_dashboard_snapshot(snap_compare, tmp_path, monkeypatch, state, size):
    app = _snapshot_app(tmp_path, monkeypatch, finished=state == "finished")
    assert snap_compare(app, terminal_size=size, run_before=_settled)


# ------------------------------------------------------- warnings, engine log, elapsed time, CPU


def test_warnings_are_readable_without_a_key_and_all_of_them_with_w(tmp_path):
    log = started()
    log.add(
        "warning",
        code="check",
        message="optimizer.warmup_steps: warmup (500 steps) lasts the whole run (200 steps)",
        hint="set it to about 5-10% of the run, e.g. 20",
    )
    log.add(
        "warning",
        code="check",
        message="img/10_ohwx woman: 1 of 8 images have no .txt caption",
        hint="add a same-named .txt file next to each image",
    )
    log.steps(1, 10)
    record = run_folder(tmp_path, log)

    async def scenario():
        async with make_app(record, log).run_test(size=(80, 24)) as pilot:
            screen = await loaded(pilot)
            text = screen_text(pilot.app)
            assert "2 warnings" in text  # the status line counts them...
            # ...and the latest one is there to read, with its fix, without a key
            assert "Latest of 2 warnings (w lists them)" in text
            assert "⚠ img/10_ohwx woman: 1 of 8 images have no .txt caption" in text
            assert "fix: add a same-named .txt file next to each image" in text
            assert "warmup (500 steps)" not in text
            assert "show_warnings" in footer_keys(pilot.app)
            # w lists them all, newest first, each with its fix
            await pilot.press("w")
            listing = await shows(pilot, "Warnings: 2")
            assert listing.index("1 of 8 images have no .txt caption") < listing.index("warmup (500 steps) lasts")
            assert "fix: set it to about 5-10% of the run, e.g. 20" in listing
            await pilot.press("escape")
            await wait_for(pilot, lambda: "Warnings: 2" not in screen_text(pilot.app), what="the list to close")
            # a spill warning is on the banner: the panel does not repeat it until it is dismissed
            log.t += 10
            log.add(
                "warning", code="vram_spill", message="VRAM 97% full and steps 4.1x slower", hint="lower network.rank"
            )
            append(record, log, len(log.lines) - 1)
            await shows(pilot, "VRAM spill-over: VRAM 97% full")
            panel = screen.query_one("#dash-warnings")
            assert "1 of 8 images" in panel.shown_text and "VRAM" not in panel.shown_text
            await pilot.press("d")
            await wait_for(
                pilot, lambda: "VRAM 97% full" in panel.shown_text, what="the dismissed warning in the panel"
            )
            assert "Latest of 3 warnings" in screen_text(pilot.app)

    run(scenario())


def test_a_run_without_warnings_has_no_warnings_panel_or_key(tmp_path):
    log = started()
    log.steps(1, 10)
    record = run_folder(tmp_path, log)

    async def scenario():
        async with make_app(record, log).run_test(size=(80, 24)) as pilot:
            screen = await loaded(pilot)
            assert not screen.query_one("#dash-warnings").display
            assert "show_warnings" not in footer_keys(pilot.app)

    run(scenario())


NOISY_LOG = (
    "\n".join(
        [
            "2026-12-01 15:20:19,457 WARNING bitsandbytes.backends.cpu.ops: Failed to load CPU gemm_4bit_forward",
            "/venv/lib/python3.11/site-packages/diffusers/models/attention.py:12: FutureWarning: `foo` is deprecated",
            "  warnings.warn(",
            "There are modules in AutoencoderKL that should be kept in float32: []. Casting directly with `to()` can lead to",
            "2026-12-01 15:20:20,001 INFO engine.train: cached the latents of 12 images in "
            "/home/me/projects/a/rather/long/folder/name/that/goes/on/and/on/cache/latents, the last word is END-OF-LINE-42",
            "Traceback (most recent call last):",
            '  File "/app/engine/train.py", line 3, in run',
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
        ]
    )
    + "\n"
)


def test_engine_log_wraps_long_lines_and_dims_library_chatter(tmp_path):
    log = started()
    log.steps(1, 10)
    record = run_folder(tmp_path, log, engine_log=NOISY_LOG)

    async def scenario():
        async with make_app(record, log).run_test(size=(80, 24)) as pilot:
            screen = await loaded(pilot)
            engine_log = screen.query_one("#dash-log")
            await pilot.press("end")
            await pilot.pause(0.2)
            assert "END-OF-LINE-42" in screen_text(pilot.app)  # wrapped onto the next row, not cut off
            width = engine_log.scrollable_content_region.width
            assert max(strip.cell_length for strip in engine_log.lines) <= width
            kinds = [kind for _line, kind in engine_log.kinds()]
            assert kinds == ["chatter", "chatter", "chatter", "chatter", "", "error", "error", "error"]
            # drawn in the colours of their kind: chatter muted, errors in the error colour
            chatter = engine_log.get_component_rich_style("engine-log--chatter", partial=True).color
            error = engine_log.get_component_rich_style("engine-log--error", partial=True).color
            colours = {
                segment.text.strip(): segment.style.color
                for strip in engine_log.lines
                for segment in strip
                if segment.text.strip() and segment.style
            }
            assert colours["warnings.warn("] == chatter
            assert colours["Traceback (most recent call last):"] == error
            assert all(colour != chatter for text, colour in colours.items() if "engine.train" in text)
            rows_at_80 = len(engine_log.lines)
            # in two columns the log is narrower: the lines are wrapped again to the new width
            await pilot.resize_terminal(120, 40)
            await pilot.pause(0.3)
            assert engine_log.scrollable_content_region.width < width
            assert len(engine_log.lines) > rows_at_80
            assert max(strip.cell_length for strip in engine_log.lines) <= engine_log.scrollable_content_region.width

    run(scenario())


def test_elapsed_time_counts_from_the_launch(tmp_path):
    log = started()
    launched = log.t - 45  # the engine took 45 s to load before its first event here
    log.steps(1, 10, seconds=0.5)  # then 5 s of training
    record = run_folder(tmp_path, log)
    record.started_at = launched

    async def scenario(record, log, later_s=1.0):
        async with make_app(record, log, later_s=later_s).run_test(size=(80, 24)) as pilot:
            await loaded(pilot)
            return screen_text(pilot.app)

    assert "elapsed 0:51" in run(scenario(record, log))  # 45 s loading + 5 s of steps + 1 s since the last step
    # before the first step too: the panel says what the engine does, and for how long it has been at it
    loading = EventLog()
    loading.add("status", phase="loading_model", message="loading the model")
    record = run_folder(tmp_path / "loading", loading)
    record.started_at = loading.t - 20
    text = run(scenario(record, loading))
    assert "loading the model" in text and "elapsed 0:21" in text
    # after the end the time stops at the final event
    ended = started(total_steps=10)
    ended.steps(1, 10)
    ended.add("finished", step=10, epoch=1, path="/p/model/x.safetensors", elapsed_s=5.0)
    record = run_folder(tmp_path / "ended", ended, alive=False)
    assert "elapsed 0:05" in run(scenario(record, ended, later_s=3600.0))


def test_without_a_gpu_the_panel_shows_the_cpu_and_ram_of_the_engine_and_the_machine(tmp_path, monkeypatch):
    from loratui import host

    from .test_host import fake_proc

    log = started()
    log.steps(1, 10)
    record = run_folder(tmp_path, log)
    proc = fake_proc(tmp_path / "proc", total=10_000, idle=6_000, pid=record.pid, process_ticks=1_000)
    monkeypatch.setattr(host, "PROC", proc)

    async def scenario():
        async with make_app(record, log, gpu_s=0.05).run_test(size=(80, 24)) as pilot:
            screen = await loaded(pilot)
            # The panel's first reading comes from a worker: on a loaded machine it lands after the first paint.
            text = await shows(pilot, "CPU and RAM (no NVIDIA GPU)")
            assert "no NVIDIA GPU: the nvidia-ml-py package is not installed" in text
            assert "RAM" in text and "engine 3.0 GiB · machine 12.0/16.0 GiB 75%" in text
            assert "measuring… (4 cores)" in text  # one reading: no rate yet
            # 100 ticks of wall time pass on 4 CPUs: 300 busy, 150 of them the engine's
            fake_proc(proc, total=10_400, idle=6_100, pid=record.pid, process_ticks=1_150)
            gpu = screen.query_one("#dash-gpu")
            await wait_for(pilot, lambda: "engine 1.5 of 4 cores · machine 75%" in gpu.shown_text, what="CPU figures")
            assert "engine 1.5 of 4 cores · machine 75%" in screen_text(pilot.app)

    run(scenario())


def test_dashboard_snapshot_with_a_warning_and_no_gpu(snap_compare, tmp_path, monkeypatch):
    """At 80x24: the latest warning with its fix under the chart, the CPU and RAM instead of a GPU."""
    from loratui import host

    from .test_host import fake_proc

    log = started(total_steps=400, steps_per_epoch=100)
    log.add(
        "warning",
        code="check",
        message="img/10_ohwx woman: 1 of 8 images have no .txt caption",
        hint="add a same-named .txt file next to each image",
    )
    log.steps(1, 57, seconds=0.8)
    record = run_folder(tmp_path, log)
    monkeypatch.setattr(host, "PROC", fake_proc(tmp_path / "proc", total=10_000, idle=6_000, pid=record.pid))
    app = make_app(record, log, later_s=0.4)
    assert snap_compare(app, terminal_size=(80, 24), run_before=_settled)
