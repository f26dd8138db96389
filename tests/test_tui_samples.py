"""Sample images in the terminal: the dashboard's samples panel, the gallery (i), "sample now" (n),
and how the terminal is asked which graphics it draws (textual-image).

Runs are recorded event streams (tests/event_log.py) with ``sample`` events naming real PNG files
made here with Pillow; the dashboard reads them with its own workers. Pictures are forced to
half-blocks (what a terminal without Kitty graphics or Sixel shows), so the SVG snapshots are the
same everywhere: after an intended change of the look, review the diff and run
``pytest tests/test_tui_samples.py --snapshot-update``.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from loratui.tui import images
from loratui.tui.dashboard.gallery import GalleryScreen
from loratui.tui.dashboard.samples_panel import SamplesPanel, SampleTile, newest_per_prompt
from loratui.tui.images import Graphics, ImageView

from . import fake_nvml
from .event_log import EventLog
from .fake_nvml import GIB, FakeGpu
from .test_tui_dashboard import (
    JOB_ID,
    RUN_CONFIG,
    FakeEngine,
    append,
    footer_keys,
    loaded,
    make_app,
    notices,
    run,
    run_folder,
    screen_text,
    shows,
    started,
    wait_for,
)

REPO = Path(__file__).resolve().parent.parent
PROMPTS = ["ohwx woman, portrait, studio light", "ohwx woman on a beach at sunset", "a photo of a woman"]
HALF_BLOCKS = Graphics("halfblock", "the terminal answered no Kitty or Sixel query")


@pytest.fixture(autouse=True)
def _private(tmp_path, monkeypatch):
    """Own settings and job registry, no NVML, and half-block pictures (what the snapshots show)."""
    monkeypatch.setenv("LORATUI_CONFIG_DIR", str(tmp_path / "user-config"))
    monkeypatch.setenv("LORATUI_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("LORATUI_THEMES_DIR", raising=False)
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setattr(images, "_chosen", HALF_BLOCKS)
    images._load_library()  # at once: the app imports it in a worker when the first picture comes


# ---------------------------------------------------------------------------------- helpers


def sampling_run(total_steps: int = 200, steps_per_epoch: int = 40, sample: dict | None = None) -> EventLog:
    """A started run whose config has sample prompts (every 20 steps) unless ``sample`` says otherwise."""
    config = dict(RUN_CONFIG, sample={"prompts": PROMPTS, "every_n_steps": 20} if sample is None else sample)
    return started(total_steps, steps_per_epoch, config)


def make_png(path: Path, index: int, step: int, size: int = 64) -> Path:
    """A picture that differs by prompt (its colour) and by step (how much of it is filled)."""
    colours = [(220, 60, 40), (40, 160, 220), (90, 200, 80), (230, 200, 40)]
    image = Image.new("RGB", (size, size), (16, 16, 24))
    filled = max(1, size * min(step, 100) // 100)
    image.paste(colours[index % len(colours)], (0, size - filled, size, size))
    image.paste((250, 250, 250), (size // 4, size // 4, size // 2, size // 2))
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}.part")  # another test run may read it meanwhile
    image.save(part, format="PNG")
    os.replace(part, path)
    return path


def add_samples(log: EventLog, folder: Path, step: int, prompts: list[str] = PROMPTS, make: bool = True) -> None:
    """The ``sample`` events of one round (every prompt), with their PNGs (unless ``make`` is False)."""
    for index, prompt in enumerate(prompts):
        path = folder / f"sample-{step:06d}-{index:02d}.png"
        if make:
            make_png(path, index, step)
        log.t += 1.0
        log.add(
            "sample",
            step=step,
            epoch=step // log.steps_per_epoch,
            path=str(path),
            index=index,
            prompt=prompt,
            negative_prompt="",
            seed=1000 + index,
            width=512,
            height=512,
            steps=30,
            cfg_scale=7.5,
            guidance=None,
            sampler="euler_a",
            trigger="steps",
            seconds=1.0,
        )


def panel(app) -> SamplesPanel:
    return app.dashboard().query_one(SamplesPanel)


def tile_captions(app) -> list[str]:
    return [str(tile.query_one(".sample-caption").render()) for tile in panel(app).query(SampleTile) if tile.display]


async def panel_in_view(pilot) -> str:
    pilot.app.dashboard().query_one("#dash-samples").scroll_visible(animate=False, top=True)
    await pilot.pause(0.2)
    return screen_text(pilot.app)


# ---------------------------------------------------------------------------------- the panel


def test_the_panel_shows_the_newest_sample_of_each_prompt_with_its_step_and_prompt(tmp_path):
    samples = tmp_path / "samples"
    log = sampling_run()
    log.steps(1, 20)
    add_samples(log, samples, 20)
    log.steps(21, 40)
    add_samples(log, samples, 40)
    record = run_folder(tmp_path, log)
    written = len(log.lines)

    async def scenario():
        async with make_app(record, log).run_test(size=(80, 24)) as pilot:
            await loaded(pilot)
            text = await panel_in_view(pilot)
            assert "Samples · half-blocks: the terminal answered no Kitty or Sixel query" in text
            assert "newest of 6 · i: all samples" in text
            assert "step 40 · #1" in text and "step 40 · #2" in text and "step 40 · #3" in text
            assert "step 20" not in text
            assert "ohwx woman, portrait, s" not in text  # cut to the tile, with an ellipsis
            assert "ohwx woman, portrait,…" in text
            # three tiles at 80 columns, each a picture drawn in half-blocks from its file
            views = [tile.query_one(ImageView) for tile in panel(pilot.app).query(SampleTile) if tile.display]
            assert [view.path for view in views] == [str(samples / f"sample-000040-{k:02d}.png") for k in range(3)]
            assert all(view.problem is None for view in views)
            assert text.count("▀") > 3 * 50
            # the next round replaces them, live
            log.steps(41, 60)
            add_samples(log, samples, 60)
            append(record, log, written)
            await wait_for(pilot, lambda: "step 60 · #3" in "\n".join(tile_captions(pilot.app)), what="step 60")
            assert "newest of 9" in await panel_in_view(pilot)

    run(scenario())


def test_a_run_without_sample_prompts_has_no_panel_and_one_with_them_says_when_they_come(tmp_path):
    async def panel_text(log: EventLog, folder: Path) -> tuple[bool, str]:
        record = run_folder(folder, log)
        async with make_app(record, log).run_test(size=(80, 24)) as pilot:
            await loaded(pilot)
            shown = panel(pilot.app).display
            return shown, (await panel_in_view(pilot)) if shown else ""

    without = sampling_run(sample={})
    without.steps(1, 10)
    shown, _ = run(panel_text(without, tmp_path / "a"))
    assert not shown

    waiting = sampling_run(sample={"prompts": PROMPTS, "every_n_epochs": 1, "at_start": True})
    waiting.steps(1, 10)
    shown, text = run(panel_text(waiting, tmp_path / "b"))
    assert shown and "none yet; rendered at the start, every epoch" in text


def test_newest_per_prompt_keeps_the_most_recent_prompts_in_prompt_order():
    from loratui.core.summary import SampleImage

    def sample(index, step):
        return SampleImage(f"/s/{step}-{index}.png", step, 1, index, f"p{index}", 1, 8, 8, "steps", float(step))

    samples = [sample(0, 10), sample(1, 10), sample(2, 10), sample(3, 10), sample(0, 20), sample(1, 20)]
    assert [(s.index, s.step) for s in newest_per_prompt(samples, 3)] == [(0, 20), (1, 20), (3, 10)]
    assert [(s.index, s.step) for s in newest_per_prompt(samples, 9)] == [(0, 20), (1, 20), (2, 10), (3, 10)]


# ---------------------------------------------------------------------------------- missing files


def test_a_missing_or_broken_image_is_a_placeholder_that_says_so(tmp_path):
    samples = tmp_path / "samples"
    log = sampling_run()
    log.steps(1, 20)
    add_samples(log, samples, 20, make=False)  # the files were deleted since (or are on another machine)
    (samples).mkdir()
    (samples / "sample-000020-01.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    make_png(samples / "sample-000020-02.png", 2, 20)
    record = run_folder(tmp_path, log)

    async def scenario():
        async with make_app(record, log).run_test(size=(80, 24)) as pilot:
            await loaded(pilot)
            text = await panel_in_view(pilot)
            views = [tile.query_one(ImageView) for tile in panel(pilot.app).query(SampleTile) if tile.display]
            assert views[0].problem.startswith("image missing\n")
            assert views[1].problem.startswith("not an image")
            assert views[2].problem is None
            assert "image missing" in text and "not an image" in text
            assert "step 20 · #3" in text
            await pilot.press("i")
            await shows(pilot, "prompt 3 of 3")
            await pilot.press("up", "up")
            text = await shows(pilot, "prompt 1 of 3")
            assert "image missing" in text
            assert f"file {samples}/sample-000020-00.png" in str(pilot.app.screen.query_one("#gallery-facts").render())

    run(scenario())


def test_image_view_draws_a_file_and_says_why_it_cannot(tmp_path):
    from textual.app import App

    good = make_png(tmp_path / "good.png", 0, 50, size=200)
    locked = make_png(tmp_path / "locked.png", 1, 50)
    locked.chmod(0)
    odd = tmp_path / "bad\x1b]0;title\x07.png"

    class One(App):
        CSS = "ImageView { width: 30; height: 8; }"

        def compose(self):
            yield ImageView(str(good), id="good")
            yield ImageView(str(odd), id="odd")
            yield ImageView(str(locked), id="locked")

    async def scenario():
        async with One().run_test(size=(60, 30)) as pilot:
            await pilot.pause(0.1)
            good_view = pilot.app.query_one("#good", ImageView)
            await wait_for(pilot, lambda: good_view.drawn and good_view.children[-1].size.width > 0, what="drawn")
            assert good_view.problem is None
            assert good_view.children[-1].size == (16, 8)  # a square picture 8 rows high: 16 half-block columns
            odd_view = pilot.app.query_one("#odd", ImageView)
            assert odd_view.problem == f"image missing\n{tmp_path}/bad\\x1b]0;title\\x07.png"
            if os.geteuid() != 0:  # root reads any file
                assert pilot.app.query_one("#locked", ImageView).problem.startswith("image not readable")
            # a file that appears later is drawn when shown again
            make_png(odd, 2, 80)
            odd_view.show(str(odd))
            assert odd_view.problem is None

    run(scenario())


# ---------------------------------------------------------------------------------- the gallery


def test_the_gallery_steps_through_prompts_and_steps(tmp_path):
    samples = tmp_path / "samples"
    log = sampling_run()
    for step in (20, 40, 60):
        log.steps(step - 19, step)
        add_samples(log, samples, step)
    record = run_folder(tmp_path, log)
    written = len(log.lines)

    async def scenario():
        async with make_app(record, log).run_test(size=(80, 24)) as pilot:
            await loaded(pilot)
            assert "show_samples" in footer_keys(pilot.app)
            await pilot.press("i")
            text = await shows(pilot, f"Samples of {JOB_ID} · prompt 3 of 3 · step 60 (3 of 3)")
            assert "prompt #3: a photo of a woman" in text
            gallery = pilot.app.screen
            assert isinstance(gallery, GalleryScreen)
            facts = str(gallery.query_one("#gallery-facts").render())
            assert "step 60 · 1 epoch done · seed 1002 · 512x512 · on its step schedule" in facts
            assert f"file {samples}/sample-000060-02.png" in facts
            assert "▀" in text
            await pilot.press("left")
            await shows(pilot, "prompt 3 of 3 · step 40 (2 of 3)")
            await pilot.press("up")  # another prompt, at the same step
            await shows(pilot, "prompt 2 of 3 · step 40 (2 of 3)")
            facts = str(gallery.query_one("#gallery-facts").render())
            assert "seed 1001" in facts and "sample-000040-01.png" in facts
            await pilot.press("left", "left", "left")  # stops at the first
            await shows(pilot, "prompt 2 of 3 · step 20 (1 of 3)")
            await pilot.press("end")
            await shows(pilot, "step 60 (3 of 3)")
            await pilot.press("down", "down")  # wraps round
            await shows(pilot, "prompt 1 of 3 · step 60")
            assert gallery.current.path == str(samples / "sample-000060-00.png")
            # a new round while it is open: the newest one is followed
            log.steps(61, 80)
            add_samples(log, samples, 80)
            append(record, log, written)
            await shows(pilot, "prompt 1 of 3 · step 80 (4 of 4)")
            await pilot.press("escape")
            await wait_for(pilot, lambda: pilot.app.screen is pilot.app.dashboard(), what="the dashboard")

    run(scenario())


def test_the_gallery_of_a_finished_run_after_re_attaching(tmp_path):
    samples = tmp_path / "samples"
    log = sampling_run(total_steps=40)
    log.steps(1, 20)
    add_samples(log, samples, 20, prompts=PROMPTS[:2])
    log.steps(21, 40)
    add_samples(log, samples, 40, prompts=PROMPTS[:2])
    log.add("finished", step=40, epoch=1, path="/p/model/ohwx.safetensors", elapsed_s=20.0)
    record = run_folder(tmp_path, log, alive=False)

    async def scenario():
        async with make_app(record, log).run_test(size=(80, 24)) as pilot:
            await loaded(pilot)
            await shows(pilot, "FINISHED")
            keys = footer_keys(pilot.app)
            assert "show_samples" in keys and "sample" not in keys  # nothing left to sample with
            await pilot.press("i")
            await shows(pilot, "prompt 2 of 2 · step 40 (2 of 2)")
            await pilot.press("left", "up")
            text = await shows(pilot, "prompt 1 of 2 · step 20 (1 of 2)")
            assert "ohwx woman, portrait, studio light" in text

    run(scenario())


# ---------------------------------------------------------------------------------- sample now


class SamplingEngine(FakeEngine):
    """Answers ``sample`` the way the engine does: refused, or rendered (one event per prompt)."""

    def __init__(self, record, log, samples: Path | None) -> None:
        super().__init__(record, log)
        self.samples = samples  # None: "not available"

    def _answer(self, command: dict) -> None:
        if command["cmd"] != "sample":
            return super()._answer(command)
        if self.samples is None:
            self._emit("control", command="sample", id=command["id"], ok=False, message="not available")
            return
        round_log = EventLog(t0=time.time())
        round_log.steps_per_epoch = 40
        add_samples(round_log, self.samples, self._step, prompts=PROMPTS[:1])
        with open(self.record.events_path, "a") as handle:
            handle.write("".join(round_log.lines).replace('"trigger":"steps"', '"trigger":"request"'))
        self._emit("control", command="sample", id=command["id"], ok=True, message="rendered 1 sample")


@pytest.mark.parametrize("available", [False, True], ids=["refused", "rendered"])
def test_sample_now_sends_the_command_and_shows_the_answer(tmp_path, available):
    samples = tmp_path / "samples"
    log = sampling_run()
    log.steps(1, 57)
    record = run_folder(tmp_path, log)

    async def scenario():
        with SamplingEngine(record, log, samples if available else None) as engine:
            async with make_app(record, log).run_test(size=(80, 24)) as pilot:
                await loaded(pilot)
                assert "sample" in footer_keys(pilot.app) and "show_samples" not in footer_keys(pilot.app)
                await pilot.press("n")
                expected = "rendered 1 sample" if available else "refused: not available"
                await wait_for(pilot, lambda: expected in notices(pilot.app), what=expected)
                assert engine.commands == ["sample"]
                if available:
                    await wait_for(pilot, lambda: tile_captions(pilot.app) != [], what="the sample")
                    assert tile_captions(pilot.app) == ["step 57 · #1\nohwx woman, portrait,…"]
                    await wait_for(pilot, lambda: "show_samples" in footer_keys(pilot.app), what="the gallery key")
                    await pilot.press("i")
                    await shows(pilot, "sample now")

    run(scenario())


# ---------------------------------------------------------------------------------- snapshots


# The gallery shows a sample's path: the snapshot's files are in a folder of a fixed name.
SNAPSHOT_SAMPLES = Path("/tmp/loratui-test-samples")


def _snapshot_run(tmp_path: Path, monkeypatch):
    """Four prompts at step 100 (three tiles fit: the newest three prompts), on a fake GPU (the machine's own
    CPU and RAM would change the picture)."""
    fake_nvml.install(monkeypatch, [FakeGpu(name="NVIDIA GeForce RTX 4090", total=24 * GIB, used=int(17.2 * GIB))])
    samples = SNAPSHOT_SAMPLES
    log = sampling_run(total_steps=400, steps_per_epoch=100)
    log.steps(1, 100, seconds=0.8)
    add_samples(log, samples, 100, prompts=[*PROMPTS, "ohwx woman, oil painting"])
    log.steps(101, 120, seconds=0.8)
    record = run_folder(tmp_path, log)
    return make_app(record, log, later_s=0.4)


async def _samples_in_view(pilot) -> None:
    await loaded(pilot)
    await panel_in_view(pilot)


async def _gallery(pilot) -> None:
    await loaded(pilot)
    await pilot.press("i")
    await pilot.press("up")
    await pilot.pause(0.3)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_samples_panel_snapshot(snap_compare, tmp_path, monkeypatch, size):
    assert snap_compare(_snapshot_run(tmp_path, monkeypatch), terminal_size=size, run_before=_samples_in_view)


def test_gallery_snapshot_at_80x24(snap_compare, tmp_path, monkeypatch):
    assert snap_compare(_snapshot_run(tmp_path, monkeypatch), terminal_size=(80, 24), run_before=_gallery)


# ---------------------------------------------------------------------------------- asking the terminal


ASK = "from loratui.tui.images import prepare_graphics; g = prepare_graphics(); print('GOT', g.mode, '|', g.note)"


def _in_a_terminal(answer: bytes | None, env: dict | None = None, timeout_s: float = 20.0, code: str = ASK) -> str:
    """Run ``code`` (by default ``prepare_graphics()``) in a child on a pseudo-terminal; ``answer``:
    what the terminal answers to the first query it sees (None: nothing, as a terminal without the
    feature). Returns what it printed from GOT on; ``_in_a_terminal.raw`` is all it wrote."""
    master, slave = pty.openpty()
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=REPO,
        env={**os.environ, "TERM": "xterm-256color", **(env or {})},
        close_fds=True,
    )
    os.close(slave)
    output, answered = b"", False
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the child closed its side
                    break
                if not chunk:
                    break
                output += chunk
                if answer is not None and not answered and b"\x1b[c" in output:
                    os.write(master, answer)
                    answered = True
            elif child.poll() is not None:
                break
        assert child.wait(timeout=5) == 0, output
    finally:
        if child.poll() is None:
            child.kill()
        os.close(master)
    _in_a_terminal.raw = output
    text = output.decode(errors="replace")
    assert "GOT" in text, text
    return text[text.index("GOT") :].strip()


def test_a_terminal_that_answers_no_graphics_query_gets_half_blocks_and_a_reason():
    result = _in_a_terminal(answer=None)
    assert result == "GOT halfblock | half-blocks: the terminal answered no graphics query"


def test_a_terminal_without_graphics_gets_half_blocks_and_a_reason():
    # xterm's answer to "which features" (DA1) without Sixel, and nothing to Kitty's query
    result = _in_a_terminal(answer=b"\x1b[?64;1;2;6;9;15;18;21;22c")
    assert result == "GOT halfblock | half-blocks: the terminal has neither Kitty graphics nor Sixel"


def test_a_terminal_that_says_it_has_sixel_gets_sixel():
    # a VT340-like terminal: 4 is Sixel
    assert _in_a_terminal(answer=b"\x1b[?63;1;4c") == "GOT sixel | Sixel"


def test_kitty_gets_kitty_graphics():
    # Kitty answers its graphics query, then DA1 (without Sixel)
    assert _in_a_terminal(answer=b"\x1b_Gi=31;OK\x1b\\\x1b[?62;c") == "GOT kitty | Kitty graphics"


def test_the_choice_can_be_set_and_a_wrong_setting_says_so():
    assert _in_a_terminal(answer=None, env={"LORATUI_IMAGES": "halfblock"}) == (
        "GOT halfblock | half-blocks: set by LORATUI_IMAGES"
    )
    assert _in_a_terminal(answer=None, env={"LORATUI_IMAGES": "ascii"}) == (
        "GOT halfblock | half-blocks: LORATUI_IMAGES=ascii is not one of auto, kitty, sixel, halfblock"
    )


def test_without_a_terminal_nothing_is_asked(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", "from loratui.tui.images import prepare_graphics; print(prepare_graphics().note)"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        cwd=REPO,
        timeout=60,
        text=True,
    )
    assert out.returncode == 0 and out.stdout == "half-blocks: not a terminal\n" and out.stderr == ""


def test_help_does_not_import_the_image_library():
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from loratui.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass\n"
            "print('textual_image' in sys.modules)",
        ],
        capture_output=True,
        cwd=REPO,
        timeout=60,
        text=True,
    )
    assert out.stdout.strip().endswith("False"), out


def test_the_library_is_imported_with_the_first_picture_and_never_asks_the_terminal(tmp_path):
    """After the app started the terminal's answers would go to Textual: textual-image, imported
    then (in a worker), must not ask, even on a terminal."""
    png = make_png(tmp_path / "a.png", 0, 50)
    code = f"""
import asyncio, sys
from textual.app import App
import loratui.tui.dashboard
from loratui.tui.images import Graphics, ImageView
assert "textual_image" not in sys.modules, "imported with the dashboard"

class One(App):
    def compose(self):
        yield ImageView({str(png)!r}, graphics=Graphics("halfblock", "test"))

async def main():
    async with One().run_test() as pilot:
        view = pilot.app.query_one(ImageView)
        for _ in range(400):
            if view.drawn:
                break
            await pilot.pause(0.05)
        print("GOT", view.drawn, "textual_image.widget" in sys.modules)

asyncio.run(main())
"""
    assert _in_a_terminal(answer=b"\x1b[?62;4c", code=code) == "GOT True True"
    assert b"\x1b[c" not in _in_a_terminal.raw and b"\x1b_G" not in _in_a_terminal.raw
