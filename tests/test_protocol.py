"""Tests for loratui.core.protocol (the engine's JSON-lines events) and its reference, docs/protocol.md."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loratui.core.protocol import (
    EVENTS,
    FINAL_EVENTS,
    PROTOCOL_VERSION,
    ProtocolError,
    decode,
    encode,
    make_event,
    validate_event,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"

# One valid, complete example of every event type (optional fields included).
EXAMPLES: dict[str, dict] = {
    "run_started": {
        "run_id": "ohwx_shape-20261122-040925",
        "config": {"model": {"path": "loratui:tiny-sd"}, "training": {"batch_size": 4, "epochs": 2}},
        "config_dir": "/home/ana/loras/ohwx_shape",
        "dataset": {
            "images": 8,
            "reg_images": 4,
            "items_per_epoch": 160,
            "concepts": [{"folder": "10_ohwx shape", "repeats": 10, "images": 8}],
            "buckets": {"128x128": 8},
        },
        "total_steps": 80,
        "total_epochs": 2,
        "steps_per_epoch": 40,
        "start_step": 3,
        "start_epoch": 0,
        "device": "cuda",
        "device_name": "NVIDIA H100 80GB HBM3",
        "mixed_precision": "bf16",
        "pid": 4565,
        "resumed_from": "/home/ana/model/ohwx_shape-step00000003-state",
        "elapsed_s": 0.52,
        "loss_history": [1.095733, 1.123361, 1.159658],
    },
    "status": {"phase": "caching_latents", "message": "caching latents 4/12", "current": 4, "total": 12},
    "step": {
        "step": 4,
        "epoch": 1,
        "loss": 1.1596579551696777,
        "loss_avg": 1.12625,
        "lr": {"unet": 0.0004, "text_encoder": 0.0002},
        "s_per_step": 0.15,
        "samples_per_s": 26.6,
        "elapsed_s": 0.67,
    },
    "epoch_end": {"epoch": 1, "step": 40, "loss_avg": 1.035, "elapsed_s": 20.7},
    "eval": {"step": 0, "epoch": 0, "loss": 1.147},
    "validation": {"step": 40, "epoch": 1, "loss": 0.9817, "images": 2},
    "sample": {
        "step": 40,
        "epoch": 1,
        "path": "/home/ana/model/sample/ohwx_shape-000040-0.png",
        "index": 0,
        "prompt": "ohwx shape, red",
        "negative_prompt": "",
        "seed": 42,
        "width": 64,
        "height": 64,
        "steps": 4,
        "cfg_scale": 7.5,
        "guidance": None,
        "sampler": "euler_a",
        "trigger": "epoch",
        "seconds": 0.8,
    },
    "checkpoint": {
        "path": "/home/ana/model/ohwx_shape-000001.safetensors",
        "bytes": 252868,
        "epoch": 1,
        "step": 40,
        "kind": "epoch",
    },
    "checkpoint_removed": {
        "path": "/home/ana/model/ohwx_shape-000001.safetensors",
        "step": 120,
        "reason": "output.save_last_n_epochs = 2",
    },
    "memory": {
        "device": "cuda",
        "allocated": 2914033664,
        "reserved": 4418699264,
        "peak_allocated": 3820978176,
        "total": 85017755648,
    },
    "control": {"command": "pause", "id": "c0ffee12", "ok": True, "message": "pausing after step 12"},
    "paused": {"step": 12, "epoch": 1, "reason": "request"},
    "resumed": {"step": 12, "paused_s": 95.25},
    "warning": {
        "code": "check",
        "message": "optimizer.warmup_steps: warmup lasts the whole run",
        "hint": "set it to 8",
    },
    "error": {"kind": "runtime", "message": "the loss became nan at step 58\nsecond line", "hint": ""},
    "finished": {"step": 80, "epoch": 2, "path": "/home/ana/model/ohwx_shape.safetensors", "elapsed_s": 38.58},
    "stopped": {
        "step": 57,
        "epoch": 2,
        "path": None,
        "state": "/home/ana/model/ohwx_shape-step00000057-state",
        "reason": "signal",
        "elapsed_s": 27,
    },
    "failed": {"step": 57, "message": "the loss became nan at step 58 — ünïcode \u2028 too"},
}


def example(event_type: str, **changes) -> dict:
    """A valid event of event_type as decode would return it, with fields changed (or removed with ...)."""
    event = {"v": PROTOCOL_VERSION, "type": event_type, "t": 1795320571.801, **EXAMPLES[event_type]}
    for name, value in changes.items():
        if value is ...:
            event.pop(name, None)
        else:
            event[name] = value
    return event


def line_of(event: dict) -> str:
    """The line as a writer that does not validate would send it (NaN left in on purpose)."""
    return json.dumps(event)


# ------------------------------------------------------------------------ the schema itself


def test_examples_cover_every_event_type_and_field():
    assert set(EXAMPLES) == set(EVENTS)
    for event_type, fields in EXAMPLES.items():
        assert set(fields) == set(EVENTS[event_type]), event_type


def test_final_events_are_exactly_the_three_endings():
    assert FINAL_EVENTS == {"finished", "stopped", "failed"}
    assert FINAL_EVENTS <= set(EVENTS)


def test_protocol_version_is_a_positive_integer():
    assert isinstance(PROTOCOL_VERSION, int) and not isinstance(PROTOCOL_VERSION, bool)
    assert PROTOCOL_VERSION >= 1


@pytest.mark.parametrize("event_type", sorted(EVENTS))
def test_round_trip_every_event_type(event_type):
    event = make_event(event_type, **EXAMPLES[event_type])
    assert event["v"] == PROTOCOL_VERSION and event["type"] == event_type
    assert isinstance(event["t"], float) and event["t"] > 1.6e9  # unix seconds, not ms
    line = encode(event)
    assert "\n" not in line and "\r" not in line  # exactly one line, whatever the strings hold
    assert json.loads(line) == event  # plain JSON, readable by any parser
    decoded = decode(line)
    assert decoded == event
    assert decode(line + "\n") == event  # the newline a writer adds is harmless


def test_encode_is_compact_and_keeps_unicode_readable():
    event = make_event("failed", **EXAMPLES["failed"])
    line = encode(event)
    assert line.startswith(f'{{"v":{PROTOCOL_VERSION},"type":"failed","t":')
    assert "ünïcode" in line  # not \\u-escaped
    assert decode(line.encode("utf-8").decode("utf-8"))["message"] == EXAMPLES["failed"]["message"]


def test_newlines_inside_strings_are_escaped():
    event = make_event("error", **EXAMPLES["error"])
    line = encode(event)
    assert "\n" in event["message"] and "\n" not in line and "\\n" in line
    assert decode(line)["message"] == event["message"]


# ------------------------------------------------------------------------------- rejections

REQUIRED = [(t, name) for t, fields in sorted(EVENTS.items()) for name, field in fields.items() if field.required]


@pytest.mark.parametrize("event_type,name", REQUIRED)
def test_missing_required_field_is_refused(event_type, name):
    fields = {k: v for k, v in EXAMPLES[event_type].items() if k != name}
    with pytest.raises(ProtocolError, match=name):
        make_event(event_type, **fields)
    with pytest.raises(ProtocolError, match=name):
        decode(line_of(example(event_type, **{name: ...})))


@pytest.mark.parametrize(
    "event_type,name,value",
    [
        ("step", "step", "3"),  # string for int
        ("step", "step", True),  # bool for int
        ("step", "step", 3.0),  # float for int
        ("run_started", "total_steps", 80.5),
        ("checkpoint", "bytes", False),
        ("eval", "loss", "1.0"),  # string for number
        ("eval", "loss", True),  # bool for number
        ("step", "lr", 0.001),  # number for object
        ("run_started", "loss_history", {}),  # object for array
        ("run_started", "config", []),  # array for object
        ("status", "message", None),  # null where it is not allowed
        ("checkpoint", "path", None),
        ("status", "current", "3"),  # optional fields are still checked when present
        ("status", "total", 12.0),
        ("memory", "allocated", 1.5),  # nullable int is still an int
        ("stopped", "path", 3),
        ("control", "ok", 1),  # a number is not a boolean
        ("control", "ok", "true"),
        ("resumed", "paused_s", True),  # and a boolean is not a number
    ],
)
def test_wrong_type_is_refused(event_type, name, value):
    with pytest.raises(ProtocolError, match=name):
        make_event(event_type, **{**EXAMPLES[event_type], name: value})
    with pytest.raises(ProtocolError, match=name):
        decode(line_of(example(event_type, **{name: value})))


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(value):
    # by validation, for a number field ...
    with pytest.raises(ProtocolError, match="loss"):
        make_event("eval", **{**EXAMPLES["eval"], "loss": value})
    # ... by encode, wherever they hide (the validator does not look inside objects) ...
    event = make_event("step", **{**EXAMPLES["step"], "lr": {"unet": value}})
    with pytest.raises(ProtocolError):
        encode(event)
    with pytest.raises(ProtocolError):
        encode(example("eval", loss=value))
    # ... and by decode, when a careless writer sent them anyway.
    with pytest.raises(ProtocolError):
        decode(line_of(example("eval", loss=value)))


def test_unknown_event_type_at_current_version_is_refused():
    with pytest.raises(ProtocolError, match="unknown event type"):
        make_event("lr_changed", lr=0.1)
    with pytest.raises(ProtocolError, match="unknown event type"):
        decode(json.dumps({"v": PROTOCOL_VERSION, "type": "lr_changed", "t": 1.0}))
    with pytest.raises(ProtocolError):
        decode(json.dumps({"v": PROTOCOL_VERSION, "t": 1.0}))  # no type at all


def test_unknown_field_at_current_version_is_refused():
    with pytest.raises(ProtocolError, match="colour"):
        make_event("eval", **EXAMPLES["eval"], colour="red")
    with pytest.raises(ProtocolError, match="colour"):
        decode(line_of(example("eval", colour="red")))


@pytest.mark.parametrize("text", ["[1, 2]", "1", '"step"', "null", "true", "[]"])
def test_json_that_is_not_an_object_is_refused(text):
    with pytest.raises(ProtocolError, match="object"):
        decode(text)


@pytest.mark.parametrize("text", ["", "   ", "{", "not json", "{'v': 1}", '{"v":1,"type":"eval"', "\x00"])
def test_text_that_is_not_json_is_refused(text):
    with pytest.raises(ProtocolError, match="not JSON"):
        decode(text)


@pytest.mark.parametrize(
    "changes",
    [
        {"v": ...},
        {"v": 0},
        {"v": -1},
        {"v": "1"},
        {"v": 1.0},
        {"v": None},
        {"t": ...},
        {"t": "1795320571.801"},
        {"t": None},
        {"t": True},
    ],
)
def test_bad_common_fields_are_refused(changes):
    with pytest.raises(ProtocolError):
        decode(line_of(example("eval", **changes)))


def test_validate_event_refuses_non_dicts():
    for value in (None, [], "x", 1):
        with pytest.raises(ProtocolError):
            validate_event(value)


def test_protocol_error_is_a_value_error():
    assert issubclass(ProtocolError, ValueError)


# ----------------------------------------------------------- what must pass (compatibility)


def test_unknown_event_type_of_a_newer_version_passes():
    line = json.dumps({"v": PROTOCOL_VERSION + 1, "type": "lr_changed", "t": 1.0, "lr": 0.1, "anything": [1]})
    event = decode(line)
    assert event["type"] == "lr_changed" and event["lr"] == 0.1


def test_known_event_of_a_newer_version_may_carry_new_fields_but_is_still_checked():
    newer = PROTOCOL_VERSION + 1
    assert decode(line_of(example("eval", v=newer, colour="red")))["colour"] == "red"
    with pytest.raises(ProtocolError, match="loss"):
        decode(line_of(example("eval", v=newer, loss="low")))
    with pytest.raises(ProtocolError, match="step"):
        decode(line_of(example("eval", v=newer, step=...)))


def test_optional_fields_may_be_omitted_or_null():
    for event in (
        make_event("status", phase="training", message="training"),
        make_event("status", phase="caching_latents", message="caching", current=None, total=None),
    ):
        assert decode(encode(event)) == event
    assert "current" not in make_event("status", phase="training", message="training")
    assert not EVENTS["status"]["current"].required and not EVENTS["status"]["total"].required


def test_nullable_fields_accept_null():
    memory = make_event("memory", device="cpu", allocated=None, reserved=None, peak_allocated=None, total=None)
    assert decode(encode(memory)) == memory
    stopped = make_event("stopped", **{**EXAMPLES["stopped"], "path": None, "state": None})
    assert decode(encode(stopped))["state"] is None
    started = make_event("run_started", **{**EXAMPLES["run_started"], "resumed_from": None})
    assert decode(encode(started))["resumed_from"] is None


def test_integers_are_accepted_where_numbers_are_expected():
    event = make_event("epoch_end", epoch=1, step=40, loss_avg=1, elapsed_s=0)
    assert decode(encode(event)) == event


# ------------------------------------------------------- known gaps (see the report, below)


@pytest.mark.parametrize("bad_type", [[], {}])
def test_non_string_type_is_a_protocol_error(bad_type):
    with pytest.raises(ProtocolError):
        decode(json.dumps({"v": PROTOCOL_VERSION, "type": bad_type, "t": 1.0}))


@pytest.mark.parametrize(
    "text", ['{"v":1,"type":"eval","t":1,"step":' + "1" * 5000 + "}", "[" * 100_000], ids=["huge_int", "deep_nesting"]
)
def test_pathological_json_is_a_protocol_error(text):
    with pytest.raises(ProtocolError):
        decode(text)


@pytest.mark.parametrize("changes", [{"t": math.nan}, {"t": math.inf}, {"lr": {"unet": math.nan}}])
def test_decode_refuses_non_finite_numbers_anywhere(changes):
    with pytest.raises(ProtocolError):
        decode(line_of(example("step", **changes)))


# ------------------------------------------------------------------- docs/protocol.md


def _event_sections(markdown: str) -> dict[str, str]:
    """Map each `### \\`name\\`` heading to the text under it (up to the next heading)."""
    sections: dict[str, str] = {}
    current = None
    for line in markdown.splitlines():
        if line.startswith("#"):
            match = re.fullmatch(r"###\s+`([^`]+)`\s*", line)
            current = match.group(1) if match else None
            if current is not None:
                assert current not in sections, f"two sections for {current}"
                sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    return sections


def _table(section: str) -> dict[str, list[str]]:
    """The rows of the first table in a section: field name -> the other cells."""
    rows: dict[str, list[str]] = {}
    lines = [line.strip() for line in section.splitlines()]
    start = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    if start is None:
        return rows
    for line in lines[start + 2 :]:  # skip the header and the |---| line
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1:]
    return rows


def _examples(section: str) -> list[str]:
    return [
        line
        for block in re.findall(r"```json\n(.*?)```", section, flags=re.S)
        for line in block.splitlines()
        if line.strip()
    ]


TYPE_NAMES = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    dict: "object",
    list: "array",
    type(None): "null",
}


def _expected_type(field) -> str:
    names = [TYPE_NAMES[t] for t in field.types]
    if "number" in names:  # (int, float) is "number": JSON integers are numbers
        names.remove("integer")
    return " or ".join(names) + ("" if field.required else ", optional")


@pytest.fixture(scope="module")
def doc_sections() -> dict[str, str]:
    return _event_sections(DOC.read_text(encoding="utf-8"))


def test_doc_has_a_section_for_every_event_type_and_no_other(doc_sections):
    assert set(doc_sections) == set(EVENTS)


@pytest.mark.parametrize("event_type", sorted(EVENTS))
def test_doc_table_lists_exactly_the_fields_with_their_types(doc_sections, event_type):
    table = _table(doc_sections.get(event_type, ""))
    assert set(table) == set(EVENTS[event_type]), f"fields of {event_type} in docs/protocol.md"
    for name, field in EVENTS[event_type].items():
        type_cell, meaning = table[name][0], table[name][1]
        assert type_cell == _expected_type(field), f"{event_type}.{name}"
        assert meaning, f"{event_type}.{name} has no meaning in the docs"


@pytest.mark.parametrize("event_type", sorted(EVENTS))
def test_doc_examples_are_valid_single_line_events(doc_sections, event_type):
    lines = _examples(doc_sections.get(event_type, ""))
    assert lines, f"no example for {event_type}"
    for line in lines:
        event = decode(line)
        assert event["type"] == event_type
        assert event["v"] == PROTOCOL_VERSION
        assert set(event) - {"v", "type", "t"} >= {n for n, f in EVENTS[event_type].items() if f.required}


def test_doc_states_the_current_version():
    text = DOC.read_text(encoding="utf-8")
    assert re.search(r"current version is \*\*(\d+)\*\*", text).group(1) == str(PROTOCOL_VERSION)


def test_doc_section_parser_sees_through_other_headings():
    """The doc checks above rely on the parser; make sure it can tell a stale section apart."""
    text = (
        "## Events\n\n### `step`\n\n| Field | Type | Meaning |\n|---|---|---|\n| `step` | integer | x |\n\n"
        "### `gone`\n\n| Field | Type | Meaning |\n|---|---|---|\n| `a` | string | y |\n\n## Other\n\n| `b` | c |\n"
    )
    sections = _event_sections(text)
    assert set(sections) == {"step", "gone"}
    assert set(_table(sections["step"])) == {"step"}
    assert set(_table(sections["gone"])) == {"a"}


# ------------------------------------------------------------------------- control commands


def test_command_round_trip_and_size():
    from loratui.core.protocol import COMMANDS, MAX_COMMAND_BYTES, decode_command, encode_command, make_command

    for name in COMMANDS:
        data = encode_command(make_command(name, "abc123"))
        assert data.endswith(b"\n") and data.count(b"\n") == 1 and len(data) <= MAX_COMMAND_BYTES
        assert decode_command(data)["cmd"] == name


@pytest.mark.parametrize(
    "line",
    [
        '{"cmd":"explode","id":"x"}',
        '{"cmd":"stop"}',
        '{"cmd":"stop","id":""}',
        "[1]",
        "stop",
        '{"cmd":["stop"],"id":"x"}',  # used to reach the loop as "unhashable type: 'list'" and kill the run
        '{"cmd":{"a":1},"id":"x"}',
        '{"cmd":"stop","id":["x"]}',
        '{"cmd":"stop","id":7}',
        b'{"cmd":"st\xffop","id":"x"}',
    ],
)
def test_bad_commands_are_refused(line):
    from loratui.core.protocol import decode_command

    with pytest.raises(ProtocolError):
        decode_command(line)


def test_doc_lists_every_command():
    from loratui.core.protocol import COMMANDS

    text = DOC.read_text(encoding="utf-8")
    control = text.split("## Control commands", 1)[1]
    assert set(re.findall(r"^\| `(\w+)` \|", control, flags=re.M)) == set(COMMANDS)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
        lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
        max_leaves=10,
    ),
    st.sampled_from(["cmd", "id", "v", "x"]),
)
def test_a_control_line_of_any_shape_is_a_command_or_a_protocol_error(value, key):
    """The engine reads control lines in its training loop; anything but a ProtocolError there
    would end the run. So every JSON shape, in every field, is a command or refused."""
    import json

    from loratui.core.protocol import COMMANDS, decode_command

    for shape in ({"cmd": "stop", "id": "a", key: value}, value):
        try:
            line = json.dumps(shape)
        except ValueError:
            continue  # NaN and infinities are not JSON
        try:
            command = decode_command(line)
        except ProtocolError:
            continue
        assert command["cmd"] in COMMANDS and isinstance(command["id"], str)


def test_the_engine_control_channel_skips_malformed_lines_and_keeps_the_good_ones(tmp_path):
    import os

    from engine.control import ControlChannel  # torch-free: the FIFO reader of the engine's loop
    from loratui.core.protocol import encode_command, make_command

    fifo = tmp_path / "control"
    os.mkfifo(fifo, 0o600)
    channel = ControlChannel(fifo)
    try:
        writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        for line in (b'{"cmd":["stop"],"id":"x"}\n', b"\xff\xfe\n", b'{"cmd":"pause","id":{}}\n'):
            os.write(writer, line)
        os.write(writer, encode_command(make_command("pause", "good")))
        os.close(writer)
        assert [command["id"] for command in channel.poll()] == ["good"]
    finally:
        channel.close()
