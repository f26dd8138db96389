"""Property test: any value of any type in any setting gets a problem line, never a traceback.

For every declared setting, hypothesis writes values of every TOML type and range into a valid
config (the sample's images on the built-in tiny model) and feeds them through each way a value
reaches loratui: loading the TOML, `check` (validation and the dataset scan), the wizard's field
(the text typed, parsed, set and validated as the wizard does on each keystroke) and
`loratui train --no-tui`, up to the point where it would start the engine.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loratui import cli
from loratui.check import check_run
from loratui.config import load_config
from loratui.errors import UserError
from loratui.params import SETTINGS, Setting
from tests.conftest import SAMPLE, small_config

# Text of every kind: control characters, NUL, shell metacharacters, other scripts, long names.
TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=200, max_size=400),
    st.sampled_from(
        [
            "",
            " ",
            ".",
            "..",
            "-rf",
            "~nosuchuser/x",
            "a\x00b",
            "x\x1b]0;T\x07",
            "out$(touch PWNED)",
            "loratui:tiny-sd",
            "runwayml/stable-diffusion-v1-5",
            "img",
            "/",
            "/dev/null",
            "nan",
        ]
    ),
)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, -1, 7, 64, 2**31, 2**32, 2**53 + 1, 10**12]),
    st.floats(allow_nan=True, allow_infinity=True),
)
VALUES = st.one_of(
    st.booleans(),
    NUMBERS,
    TEXT,
    st.lists(st.one_of(TEXT, st.integers(), st.booleans()), max_size=4),
    st.dictionaries(st.text(min_size=1, max_size=5), st.integers(), max_size=2),
)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("property")
    shutil.copytree(SAMPLE / "img", folder / "img")
    return folder


class EngineWouldStart(Exception):
    """Raised where `train` would start the engine: the config got through every check."""


def _write(project: Path, setting: Setting, value: object) -> Path | None:
    data = small_config()
    data.setdefault(setting.section, {})[setting.key] = value
    try:
        text = tomli_w.dumps(data)
    except (TypeError, ValueError):
        return None  # not representable in TOML at all (e.g. a mixed list), so no user can write it
    path = project / "loratui.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _through_load_and_check(path: Path) -> None:
    try:
        cfg = load_config(path)
    except UserError as err:
        assert err.message and err.where
        return
    result = check_run(cfg)
    for problem in result.problems:
        assert problem.where and problem.message and problem.severity in ("error", "warning", "note")


def _through_train(path: Path, monkeypatch) -> None:
    def would_start(*args, **kwargs):
        raise EngineWouldStart

    monkeypatch.setattr("loratui.jobs.launch.start_job", would_start)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli.main(["train", str(path), "--no-tui"])
        except EngineWouldStart:
            return
    assert code != 0, "train refused without saying so"
    assert "Traceback" not in err.getvalue() and err.getvalue().strip(), err.getvalue()


def _typed_text(value: object) -> str:
    if isinstance(value, list):
        return " ".join(str(item) for item in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _through_the_wizard_field(project: Path, setting: Setting, value: object) -> None:
    from loratui.config import config_from_dict
    from loratui.tui.wizard.fields import FieldInputError, parse_value
    from loratui.validation import validate

    cfg = config_from_dict(small_config(), project)
    if setting.kind == "bool":
        typed: object = bool(value)
    elif setting.kind == "choice":
        typed = _typed_text(value)  # a Select offers only its choices; a config can hold anything
    else:
        try:
            typed = parse_value(setting, _typed_text(value))
        except FieldInputError as err:
            assert err.problem.where == setting.name and err.problem.fix
            return
    cfg.set(setting.name, typed)
    for problem in validate(cfg):
        assert problem.where and problem.message


@pytest.mark.parametrize("setting", SETTINGS, ids=[s.name for s in SETTINGS])
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(value=VALUES)
def test_any_value_gets_a_problem_line_never_a_traceback(setting, value, project, monkeypatch):
    _through_the_wizard_field(project, setting, value)
    path = _write(project, setting, value)
    if path is None:
        return
    _through_load_and_check(path)
    _through_train(path, monkeypatch)
