"""Hostile datasets and model folders (issue 9, items 8-10, 12, 13 and the first part of 21).

- Names that drive the terminal: escape sequences in file and folder names reach `check`, `logs`
  and the dashboard only as visible escapes (and a command to paste quotes them as ``$'...'``);
  names that are not UTF-8 print, travel in events and key the latent cache, and a concept folder
  named so (its name would be a caption and metadata) is an error.
- Captions that are links leading outside the dataset are refused unread: their text is never
  trained or written into ``ss_tag_frequency``.
- A diffusers folder with pickle (.bin) weights is refused by the check, naming the file.
- A PNG or JPEG cut short fails the check, named, and the engine names it too.
- Absurd shapes and repeats are bounded: a 60000x1 strip, ``img/1000000000_x``; the check counts
  an epoch's items without listing them.
- A caption path that is a folder is called a folder, not "missing".
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

from loratui.cli import main
from loratui.core.protocol import decode, encode, make_event
from loratui.core.terminal_text import escape_controls
from loratui.dataset import MAX_REPEATS, ConceptReport, DatasetReport, ImageEntry, scan_dataset
from loratui.errors import Problem, UserError
from loratui.shell import quote
from tests.conftest import small_config, write_config

TITLE = "\x1b]0;PWNED\x07"  # sets the terminal's title
CLIPBOARD = "\x1b]52;c;aGk=\x07"  # writes the clipboard (OSC 52)
CLEAR = "\x1b[2J"  # clears the screen
CSI = "\x9b2J"  # the same as a one-byte C1 control
# What must never reach the terminal from a name: an OSC's start (Rich's own output has none), the
# screen clear, a C1 control, BEL, a bidirectional override (Rich strips BEL itself, not the rest).
HOSTILE = ("\x1b]", CLEAR, "\x9b", "\x07", "\u202e")


def assert_terminal_safe(text: str) -> None:
    """Nothing in ``text`` that a terminal would act on came from a name."""
    for sequence in HOSTILE:
        assert sequence not in text, f"{sequence!r} reached the terminal:\n{text}"
    text.encode("utf-8")  # a name that is not UTF-8 (a lone surrogate) cannot even be written


def png(path: Path, size=(128, 128), caption: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.effect_noise(size, 40).convert("RGB").save(path)  # noise: the data is long enough to cut
    if caption is not None:
        path.with_suffix(".txt").write_text(caption)
    return path


def scan(image_dir: Path, **settings) -> DatasetReport:
    return scan_dataset(image_dir, resolution=128, min_bucket_reso=64, max_bucket_reso=256, **settings)


def where(report: DatasetReport, path: Path, severity: str) -> list[Problem]:
    return [p for p in report.problems if p.where == str(path) and p.severity == severity]


@pytest.fixture
def check(project, capsys):
    """``loratui check`` on the project: (exit code, what it printed)."""

    def run() -> tuple[int, str]:
        config = write_config(project, small_config())
        code = main(["check", str(config)])
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    return run


# --------------------------------------------------------------------------------------------
# Item 8: names reach the terminal escaped


def test_check_prints_every_hostile_name_escaped(project, check):
    concept = project / "img" / "10_ohwx shape"
    png(concept / f"evil{TITLE}{CLEAR}.png")
    (concept / f"x{CLIPBOARD}.gif").write_bytes(b"GIF89a")
    (project / "img" / f"5_\x1b[5mblink{CSI}").mkdir()
    (project / "img" / f"5_\x1b[5mblink{CSI}" / "broken\u202egnp.png").write_bytes(b"not an image")
    (project / "img" / f"nope{CLEAR}").mkdir()
    png(Path(os.fsdecode(os.fsencode(concept) + b"/bad\xff.png")))  # a name that is not UTF-8

    code, out = check()

    assert code == 1  # the broken image and the folder without repeats are errors
    assert_terminal_safe(out)
    assert "evil\\x1b]0;PWNED\\x07\\x1b[2J.png" in out
    assert "x\\x1b]52;c;aGk=\\x07.gif" in out
    assert "5_\\x1b[5mblink\\x9b2J" in out  # in the concept table and in the problems
    assert "broken\\u202egnp.png" in out  # the bidirectional override that would show "broken.png"
    assert "nope\\x1b[2J" in out
    assert "bad\\xff.png" in out  # the byte the name holds


def test_a_concept_folder_whose_name_is_not_utf8_is_an_error_before_the_engine_tokenizes_it(project):
    folder = Path(os.fsdecode(os.fsencode(project / "img") + b"/5_caf\xe9"))  # Latin-1, from an old archive
    png(folder / "a.png")
    report = scan(project / "img")
    (problem,) = where(report, folder, "error")
    assert "not UTF-8" in problem.message
    assert all(concept.folder != folder for concept in report.concepts)  # never a caption, never metadata


def test_the_latent_cache_on_disk_takes_an_image_whose_name_is_not_utf8(tmp_path):
    from engine.data import LatentCache

    image = png(Path(os.fsdecode(os.fsencode(tmp_path) + b"/photo\xff.png")))
    entry = ImageEntry(image, 128, 128, "x", "file", (128, 128), "1_x", False)
    cached = LatentCache("disk", tmp_path / "cache", "vae")._file_for(entry)
    assert cached.parent == tmp_path / "cache" and cached.suffix == ".safetensors"


def test_problems_and_user_errors_render_escaped_but_keep_their_fields():
    problem = Problem(f"/d/a{TITLE}.png", f"cannot be used{CLEAR}", f"delete a{CLIPBOARD}.png")
    assert_terminal_safe(str(problem))
    assert problem.where == f"/d/a{TITLE}.png"  # the data stays exact; only its rendering is escaped
    error = UserError(f"no such folder{CSI}", f"/x{TITLE}", "fix it")
    assert_terminal_safe(str(error))
    assert str(error) == "/x\\x1b]0;PWNED\\x07: no such folder\\x9b2J (fix: fix it)"


def test_escaping_leaves_ordinary_names_alone():
    for name in ("ohwx woman", "日本語の写真.png", "café, smiling", "a\\b [draft] (1).png", ""):
        assert escape_controls(name) == name


@pytest.mark.parametrize(
    "word",
    [f"/p/x{TITLE}y", f"it's {CLIPBOARD}", "tab\tnew\nline", "r\u202el", os.fsdecode(b"/p/bad\xff\x1b")],
    ids=["osc-title", "quote-and-osc52", "tab-newline", "bidi", "not-utf8"],
)
def test_a_printed_command_is_terminal_safe_and_pastes_the_exact_name(word):
    quoted = quote(word)
    assert_terminal_safe(quoted)
    pasted = subprocess.run(["bash", "-c", f"printf %s {quoted}"], capture_output=True, check=True).stdout
    assert pasted == os.fsencode(word)


def test_event_lines_hold_no_control_characters_and_decode_to_the_exact_name():
    name = os.fsdecode(b"/p/a\xff") + TITLE + CSI + "\u202e"
    line = encode(make_event("warning", code="check", message=f"{name}: no caption", hint=""))
    assert_terminal_safe(line)  # `loratui logs --json` copies the file as it is
    assert decode(line)["message"] == f"{name}: no caption"


def test_logs_prints_the_names_in_events_escaped(tmp_path, monkeypatch, capsys):
    from tests.test_jobs import STARTED, fake_record

    monkeypatch.setenv("LORATUI_STATE_DIR", str(tmp_path / "state"))
    out_dir = f"/p/model{TITLE}"
    state = f"{out_dir}/x-step00000010-state"
    events = [
        STARTED,
        make_event("warning", code="check", message=f"img/10_x: a{CLIPBOARD}.png has no caption", hint=f"add{CLEAR}"),
        make_event("checkpoint", path=f"{out_dir}/x-step00000010.safetensors", bytes=10, epoch=1, step=10, kind="stop"),
        make_event("checkpoint", path=state, bytes=10, epoch=1, step=10, kind="state"),
        make_event(
            "stopped",
            step=10,
            epoch=1,
            path=f"{out_dir}/x-step00000010.safetensors",
            state=state,
            reason="request",
            elapsed_s=3.0,
        ),
    ]
    config = str(tmp_path / f"proj{CSI}" / "loratui.toml")
    record = fake_record(tmp_path, events, config=config)

    assert main(["logs", record.job_id]) == 0
    out = capsys.readouterr().out
    assert_terminal_safe(out)
    assert "a\\x1b]52;c;aGk=\\x07.png has no caption" in out
    assert "saved LoRA /p/model\\x1b]0;PWNED\\x07/x-step00000010.safetensors" in out
    resume = next(line for line in out.splitlines() if line.startswith("Resume with: "))
    # the resume command, pasted, gives the engine the exact folders
    argv = subprocess.run(
        ["bash", "-c", 'printf "%s\\0" ' + resume.removeprefix("Resume with: loratui ")],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")[:-1]
    assert argv == [b"train", os.fsencode(config), b"--resume", os.fsencode(state)]


# ---- the app


def terminal_output(app) -> str:
    """What the app sends to the terminal for the screen now: text and Rich's own styling codes."""
    width, height = app.size
    console = Console(
        width=width, height=height, file=io.StringIO(), force_terminal=True, color_system="truecolor", safe_box=False
    )
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.file.getvalue()


def test_the_dashboard_draws_hostile_names_escaped(tmp_path, monkeypatch):
    from tests.test_tui_dashboard import loaded, make_app, run_folder, started

    monkeypatch.setenv("LORATUI_CONFIG_DIR", str(tmp_path / "user-config"))
    monkeypatch.setenv("LORATUI_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setitem(sys.modules, "pynvml", None)
    log = started()
    log.steps(1, 12)
    folder = f"/p/out{TITLE}"
    log.add("warning", code="check", message=f"img/10_x: a{CLIPBOARD}.png has no caption", hint=f"add one{CLEAR}")
    log.add("checkpoint", path=f"{folder}/x-step00000012.safetensors", bytes=10, epoch=1, step=12, kind="stop")
    log.add("checkpoint", path=f"{folder}/x-step00000012-state", bytes=10, epoch=1, step=12, kind="state")
    log.add(
        "stopped",
        step=12,
        epoch=1,
        path=f"{folder}/x-step00000012.safetensors",
        state=f"{folder}/x-step00000012-state",
        reason="request",
        elapsed_s=6.0,
    )
    record = run_folder(tmp_path, log, alive=False)

    async def scenario():
        app = make_app(record, log)
        async with app.run_test(size=(120, 50)) as pilot:
            await loaded(pilot, gpu=False)
            return terminal_output(app)

    out = asyncio.run(scenario())
    assert_terminal_safe(out)
    assert "\\x1b]52;c;aGk=\\x07.png has no caption" in out
    assert "/p/out\\x1b]0;PWNED\\x07" in out
    assert "--resume $'/p/out\\x1b]0;PWNED\\x07/x-step00000012-state'" in out


def test_home_lists_a_project_in_a_hostile_folder_escaped_and_not_as_markup(tmp_path, monkeypatch):
    from loratui.tui import make_home_app
    from tests.conftest import workers_done
    from tests.test_jobs import FINISHED, STARTED, fake_record

    monkeypatch.setenv("LORATUI_CONFIG_DIR", str(tmp_path / "user-config"))
    monkeypatch.setenv("LORATUI_STATE_DIR", str(tmp_path / "state"))
    project = tmp_path / f"proj{TITLE}[red]x[bold]"
    project.mkdir()
    config = write_config(project, small_config())
    fake_record(tmp_path, [STARTED, FINISHED], config=str(config))

    async def scenario():
        app = make_home_app(folder=project, dashboard_options={"read_gpus": False})
        async with app.run_test(size=(120, 30)) as pilot:
            await pilot.pause(0.2)
            await workers_done(app)
            await pilot.pause(0.2)
            return terminal_output(app)

    out = asyncio.run(scenario())
    assert_terminal_safe(out)
    assert "proj\\x1b]0;PWNED\\x07[red]x[bold]" in out  # in "Project here" and the recent projects


def test_the_wizard_shows_problems_with_hostile_names_escaped():
    from loratui.tui.wizard.field_row import problem_text

    shown = problem_text(Problem(f"/p/img/a{TITLE}", f"x{CLIPBOARD}", f"y{CLEAR}", "warning"), with_where=True)
    assert_terminal_safe(shown.plain)


# --------------------------------------------------------------------------------------------
# Item 9: captions and images that are links leading outside the dataset


def test_a_caption_linking_outside_the_dataset_is_refused_unread(project, tmp_path, check):
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-TOKEN-123, hunter2")
    concept = project / "img" / "10_ohwx shape"
    caption = concept / "shape_01.txt"
    caption.unlink()
    caption.symlink_to(secret)

    report = scan(project / "img")
    (problem,) = where(report, concept, "error")
    assert "shape_01.txt" in problem.message and "outside the dataset folders" in problem.message
    assert "SECRET" not in json.dumps(report.tag_frequency())  # ss_tag_frequency, as the engine writes it
    assert all("SECRET" not in entry.caption for entry in report.concepts[0].images)
    code, out = check()
    assert code == 1 and "shape_01.txt" in out and "SECRET" not in out


def test_links_inside_the_dataset_are_read_and_images_from_elsewhere_are_a_warning(project, tmp_path):
    concept = project / "img" / "10_ohwx shape"
    shared = project / "img" / "shared.txt"  # a caption kept once for two images, inside img/
    shared.write_text("ohwx shape, shared")
    for name in ("shape_01.txt", "shape_02.txt"):
        (concept / name).unlink()
        (concept / name).symlink_to(shared)
    outside_image = png(tmp_path / "library" / "lib.png")
    (concept / "lib.png").symlink_to(outside_image)

    report = scan(project / "img")
    assert not report.has_errors, report.problems
    assert report.concepts[0].tag_frequency["shared"] == 2
    (warning,) = [p for p in where(report, concept, "warning") if "link" in p.message]
    assert "lib.png" in warning.message and str(outside_image) in warning.message


def test_a_concept_folder_linked_from_elsewhere_is_a_warning_and_its_captions_are_read(project, tmp_path):
    elsewhere = tmp_path / "volume" / "ohwx"
    png(elsewhere / "a.png", caption="ohwx, from the volume")
    link = project / "img" / "5_linked"
    link.symlink_to(elsewhere, target_is_directory=True)

    report = scan(project / "img")
    assert not report.has_errors, report.problems
    (warning,) = where(report, link, "warning")
    assert str(elsewhere) in warning.message
    linked = next(c for c in report.concepts if c.folder == link)
    assert linked.tag_frequency == {"ohwx": 1, "from the volume": 1}


# --------------------------------------------------------------------------------------------
# Item 10: pickle weights in a diffusers folder


def test_a_diffusers_folder_with_pickle_weights_is_refused_naming_the_file(project, capsys):
    from engine.tiny_model import ensure_tiny_model

    model = project / "model-bin"
    shutil.copytree(ensure_tiny_model(), model)
    (model / "text_encoder" / "model.safetensors").unlink()
    (model / "text_encoder" / "pytorch_model.bin").write_bytes(b"a pickle would be here")
    config = write_config(project, small_config(model={"path": str(model)}))

    assert main(["check", str(config)]) == 1
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "model.path" in line)
    assert "text_encoder/" in line and "pytorch_model.bin" in line and "pickle" in line
    assert "weights_only" not in out


# --------------------------------------------------------------------------------------------
# Item 12: images cut short


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_an_image_cut_in_half_fails_the_check_by_name(project, check, ext):
    concept = project / "img" / "10_ohwx shape"
    whole = png(project / f"whole{ext}")
    data = whole.read_bytes()
    cut = concept / f"cut{ext}"
    cut.write_bytes(data[: len(data) // 2])

    code, out = check()
    assert code == 1
    line = next(line for line in out.splitlines() if f"cut{ext}" in line)
    assert line.lstrip().startswith("error") and str(cut) in line and "cut short" in line


def test_an_image_damaged_after_a_check_is_decoded_again(project, check):
    """What the check found is kept between runs, but never for a file that changed since."""
    concept = project / "img" / "10_ohwx shape"
    image = png(concept / "later.png")
    assert check()[0] == 0
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])  # the same file, cut short
    code, out = check()
    assert code == 1 and "later.png" in out and "cut short" in out
    image.write_bytes(data[: len(data) // 2] + b"\0" * (len(data) - len(data) // 2))  # the old size again
    code, out = check()
    assert code == 1 and "later.png" in out


def test_the_engine_names_an_image_it_cannot_decode(tmp_path):
    from engine.data import load_pixels

    whole = png(tmp_path / "whole.png")
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[:2000])
    entry = ImageEntry(cut, 128, 128, "x", "file", (128, 128), "1_x", False)
    with pytest.raises(UserError) as raised:
        load_pixels(entry)  # the image was cut after the check
    assert raised.value.where == str(cut) and raised.value.kind == "dataset"


# --------------------------------------------------------------------------------------------
# Item 13: shapes and repeats


def test_a_60000x1_strip_is_refused_by_the_check_and_by_the_engine(project, check):
    from engine.data import load_pixels

    strip = project / "img" / "10_ohwx shape" / "strip.png"
    Image.new("RGB", (60000, 1)).save(strip)  # a few hundred bytes
    code, out = check()
    assert code == 1
    line = next(line for line in out.splitlines() if "strip.png" in line)
    assert "60000x1" in line and "crop it to at most 8:1" in line
    # the engine refuses it too (the file replaced after the check), before the resize asks for 12 GB
    with pytest.raises(UserError, match="60000x1"):
        load_pixels(ImageEntry(strip, 60000, 1, "x", "file", (256, 64), "10_x", False))


def test_more_repeats_than_the_maximum_is_an_error_at_the_folder(project, check):
    folder = project / "img" / f"{MAX_REPEATS + 1}_typo"
    png(folder / "a.png")
    report = scan(project / "img")
    (problem,) = where(report, folder, "error")
    assert f"{MAX_REPEATS:,}" in problem.message
    assert all(concept.folder != folder for concept in report.concepts)
    png(project / "img" / "1000000000_x" / "a.png")
    code, out = check()  # counted, never listed: this returns at once instead of building 8e9 items
    assert code == 1 and "1000000000 repeats" in out


def _synthetic(images_per_concept: list[tuple[int, int]], reg: list[tuple[int, int]], seed: int = 0) -> DatasetReport:
    """A scan result without files: (images, repeats) per concept, images spread over buckets."""
    rng = random.Random(seed)
    buckets = [(64, 256), (128, 128), (192, 64), (256, 64)]

    def concepts(spec, is_reg):
        found = []
        for index, (images, repeats) in enumerate(spec):
            folder = Path(f"/d/{'reg' if is_reg else 'img'}/{repeats}_c{index}")
            entries = tuple(
                ImageEntry(folder / f"{n:05d}.png", 128, 128, "c", "file", rng.choice(buckets), folder.name, is_reg)
                for n in range(images)
            )
            found.append(ConceptReport(folder, f"c{index}", repeats, is_reg, entries, (), (), (), (), {}, {}))
        return tuple(found)

    train, regs = concepts(images_per_concept, False), concepts(reg, True)
    return DatasetReport(Path("/d/img"), None, 128, tuple(buckets), train, regs, ())


def test_the_check_counts_an_epoch_without_listing_each_repeat():
    report = _synthetic([(1000, MAX_REPEATS)], [(50, 3)])  # 10 million items per epoch
    tracemalloc.start()
    try:
        steps = report.steps_per_epoch(4)
        info = report.bucket_info()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2_000_000, f"{peak} bytes: the items were listed"  # listing them takes 80 MB and more
    assert sum(bucket["count"] for bucket in info["buckets"].values()) == 2 * 1000 * MAX_REPEATS
    assert steps >= 2 * 1000 * MAX_REPEATS // 4


@pytest.mark.parametrize("seed", range(12))
def test_the_counted_steps_are_the_batches_the_engine_trains(seed):
    rng = random.Random(seed)
    train = [(rng.randint(1, 9), rng.randint(1, 7)) for _ in range(rng.randint(1, 3))]
    reg = [(rng.randint(1, 9), rng.randint(1, 7)) for _ in range(rng.randint(0, 3))]
    report = _synthetic(train, reg, seed)
    batch = rng.randint(1, 5)
    batches = report.epoch_batches(batch, seed=seed, epoch=0)
    assert report.steps_per_epoch(batch) == len(batches)
    counted = {tuple(b["resolution"]): b["count"] for b in report.bucket_info()["buckets"].values()}
    listed: dict[tuple[int, int], int] = {}
    for items in batches:
        listed[items[0].bucket] = listed.get(items[0].bucket, 0) + len(items)
    assert counted == listed


# --------------------------------------------------------------------------------------------
# Item 21 (first part): a caption path that is a folder


def test_a_caption_path_that_is_a_folder_is_called_a_folder(project):
    concept = project / "img" / "10_ohwx shape"
    (concept / "shape_03.txt").unlink()
    (concept / "shape_03.txt").mkdir()

    report = scan(project / "img")
    (problem,) = [p for p in where(report, concept, "warning") if "shape_03" in p.message]
    assert "shape_03.txt is a folder" in problem.message
    assert "no .txt caption" not in problem.message
    assert report.concepts[0].captioned == 7
