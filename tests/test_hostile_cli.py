"""Hostile input to the ``loratui`` command itself (issue 9, item 15): files built to break a
parser, standard output closed or full, Ctrl+C at any moment. Each ends with one plain line and
an exit status, never a traceback."""

from __future__ import annotations

import importlib.abc
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loratui import cli, run
from loratui.config import load_config
from loratui.core.exit_codes import ExitCode
from loratui.errors import UserError
from loratui.kohya_import import load_kohya_json
from tests.conftest import REPO, small_config, write_config

SAMPLE_CONFIG = REPO / "sample_project" / "loratui.toml"


def _loratui_with(args: list[str], *, preexec=None, stdout=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    code = "import sys; from loratui import run; sys.exit(run())"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=preexec,
        timeout=120,
    )


# --- files built to break a parser -----------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "x = " + "[" * 2000 + "]" * 2000 + "\n",  # RecursionError inside tomllib
        "x = " + "{a = " * 2000 + "1" + "}" * 2000 + "\n",
        "[training]\nseed = " + "9" * 5000 + "\n",  # over Python's 4,300-digit limit for int()
    ],
    ids=["arrays-2000-deep", "tables-2000-deep", "integer-5000-digits"],
)
def test_a_config_built_to_break_the_parser_is_one_clear_error(tmp_path, text):
    path = tmp_path / "loratui.toml"
    path.write_text(text)
    with pytest.raises(UserError) as caught:
        load_config(path)
    assert "nested too deep or a number too long" in str(caught.value)
    assert str(path) in str(caught.value)


def test_a_400_digit_seed_is_a_range_error_that_does_not_fill_the_screen(tmp_path, capsys):
    data = small_config()
    config = write_config(tmp_path, data)
    config.write_text(config.read_text().replace("seed = 7", "seed = " + "9" * 400))
    assert cli.main(["check", str(config)]) == ExitCode.FAILED
    out = capsys.readouterr().out
    assert "training.seed: seed of 400 digits is above 4_294_967_295" in out
    assert "9" * 30 not in out


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deep or holds a number too long"),
        ('{"learning_rate": ' + "9" * 5000 + "}", "nested too deep or holds a number too long"),
    ],
    ids=["nested-100000-deep", "integer-5000-digits"],
)
def test_a_kohya_json_built_to_break_the_parser_is_one_clear_error(tmp_path, text, expected):
    path = tmp_path / "kohya.json"
    path.write_text(text)
    with pytest.raises(UserError) as caught:
        load_kohya_json(path)
    assert expected in str(caught.value)


def test_a_kohya_number_of_400_digits_is_reported_and_not_imported(tmp_path):
    path = tmp_path / "kohya.json"
    path.write_text('{"network_dim": ' + "9" * 400 + ', "learning_rate": ' + "9" * 400 + "}")
    result = load_kohya_json(path)
    config = result.to_config(tmp_path)
    assert config.network.rank == 32  # the default stays: the value could not be read
    report = result.report.text()
    assert "network_dim = (a number of 400 digits)" in report
    assert "9" * 30 not in report


# --- standard output closed, full, or cut -------------------------------------------------------


def _close_stdout() -> None:
    os.close(1)


def test_check_with_standard_output_closed_still_tells_ready_by_its_exit_status():
    result = _loratui_with(["check", str(SAMPLE_CONFIG)], preexec=_close_stdout)
    assert result.returncode == ExitCode.OK, result.stderr
    assert "Traceback" not in result.stderr


def test_check_with_standard_output_closed_still_fails_a_broken_config(tmp_path):
    config = write_config(tmp_path, small_config(training={"epochs": 0}))
    result = _loratui_with(["check", str(config)], preexec=_close_stdout)
    assert result.returncode == ExitCode.FAILED
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(not Path("/dev/full").is_char_device(), reason="this machine has no /dev/full device")
def test_check_writing_to_a_full_disk_says_so_in_one_line():
    with open("/dev/full", "w") as full:
        result = _loratui_with(["check", str(SAMPLE_CONFIG)], stdout=full)
    assert result.returncode == ExitCode.FAILED
    assert "Traceback" not in result.stderr
    assert "cannot write to standard output: No space left on device" in result.stderr


def test_a_closed_standard_output_is_never_reused_for_a_file_loratui_opens(tmp_path):
    # Were descriptor 1 left closed, the next open() would get it, and an engine started from here
    # would write its standard output into that file.
    code = (
        "from loratui.streams import fill_missing_descriptors; fill_missing_descriptors(); "
        f"import sys; f = open({str(tmp_path / 'record.json')!r}, 'w'); sys.stderr.write(str(f.fileno()))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        preexec_fn=_close_stdout,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stderr) > 2


# --- Ctrl+C at any moment -----------------------------------------------------------------------


def test_ctrl_c_inside_a_command_exits_130_without_a_traceback(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_check", interrupted)
    assert cli.main(["check", str(SAMPLE_CONFIG)]) == ExitCode.INTERRUPTED == 130
    assert capsys.readouterr().err.strip() == "interrupted"


class _InterruptImportOf(importlib.abc.MetaPathFinder):
    """Raises KeyboardInterrupt when a module is imported, as a Ctrl+C during start-up does."""

    def __init__(self, name: str) -> None:
        self.name = name

    def find_spec(self, fullname, path, target=None):
        if fullname == self.name:
            raise KeyboardInterrupt
        return None


def test_ctrl_c_while_the_command_is_still_importing_exits_130(monkeypatch):
    monkeypatch.delitem(sys.modules, "loratui.cli")
    monkeypatch.setattr(sys, "meta_path", [_InterruptImportOf("loratui.cli"), *sys.meta_path])
    assert run() == 130


def test_the_console_command_enters_through_the_guarded_entry_point():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'loratui = "loratui:run"' in pyproject


def test_help_text_is_printed_through_the_guard(capsys):
    with pytest.raises(SystemExit) as leaving:
        cli.main(["--help"])
    assert leaving.value.code == 0
    assert "Train LoRA adapters" in capsys.readouterr().out


def test_a_new_projects_log_folder_is_owner_only_whatever_the_umask(tmp_path):
    # Run folders and their control FIFOs live in log/: with `umask 000` a plain mkdir would let
    # any local user rename entries in it (issue 9, item 6).
    from loratui.tui.entry import prepare_new_project

    previous = os.umask(0)
    try:
        prepare_new_project(tmp_path / "project")
    finally:
        os.umask(previous)
    assert (tmp_path / "project" / "log").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "project" / "img").is_dir()
