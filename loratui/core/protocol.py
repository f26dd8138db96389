"""The JSON-lines protocol between the training engine and everything that watches it.

The engine writes one JSON object per line on its stdout and nothing else there. Every object
has ``v`` (the protocol version), ``type`` (one of :data:`EVENTS`) and ``t`` (unix time, seconds,
when it was written), plus the fields listed for its type. ``docs/protocol.md`` is the
human-readable version of this module; a test keeps the two in step.

Versioning: adding an event type or an optional field keeps the version; removing or changing
the meaning of a field bumps it. Readers accept events of a newer version but should say so, and
skip event types they do not know.

This module is torch-free: the engine and the terminal side both import it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

from loratui.core.terminal_text import json_escaped

PROTOCOL_VERSION = 1

# Field types, as Python types. ``None`` in a tuple means the field may be null.
Int = (int,)
Float = (int, float)
Str = (str,)
Dict = (dict,)
List = (list,)
OptInt = (int, type(None))
OptFloat = (int, float, type(None))
OptStr = (str, type(None))
Bool = (bool,)


@dataclass(frozen=True)
class Field:
    types: tuple[type, ...]
    doc: str
    required: bool = True


EVENTS: dict[str, dict[str, Field]] = {
    "run_started": {
        "run_id": Field(Str, "unique id of this run (stable across resumes of the same run)"),
        "config": Field(Dict, "the configuration as in the TOML file (relative paths are relative to config_dir)"),
        "config_dir": Field(
            Str, "absolute folder of the config file, against which its relative paths resolve", required=False
        ),
        "dataset": Field(Dict, "dataset summary: images, reg_images, items_per_epoch, concepts, buckets"),
        "total_steps": Field(Int, "optimizer steps the run will take in all"),
        "total_epochs": Field(Int, "epochs the run will take in all (the last may be partial)"),
        "steps_per_epoch": Field(Int, "optimizer steps per epoch"),
        "start_step": Field(Int, "steps already done (non-zero when resuming)"),
        "start_epoch": Field(Int, "epochs already completed"),
        "device": Field(Str, "torch device the run trains on: cuda, cpu, mps"),
        "device_name": Field(Str, "a person-readable device name"),
        "mixed_precision": Field(Str, "no | fp16 | bf16"),
        "pid": Field(Int, "process id of the engine"),
        "resumed_from": Field(OptStr, "the state folder this run resumed from, or null"),
        "elapsed_s": Field(Float, "training seconds already spent before this start (resume)"),
        "loss_history": Field(List, "per-step losses of the steps already done (resume), else []"),
    },
    "status": {
        "phase": Field(
            Str,
            "loading_model | caching_latents | caching_text | training | saving | sampling | paused | rendering (grid)",
        ),
        "message": Field(Str, "what the engine is doing, for people"),
        "current": Field(OptInt, "progress within the phase, when known", required=False),
        "total": Field(OptInt, "size of the phase, when known", required=False),
    },
    "step": {
        "step": Field(Int, "optimizer steps done, counting from 1"),
        "epoch": Field(Int, "the epoch this step belongs to, counting from 1"),
        "loss": Field(Float, "this step's loss (mean over its batches)"),
        "loss_avg": Field(Float, "running mean of the loss over the current epoch"),
        "lr": Field(Dict, "learning rate per parameter group: {'unet': x, 'text_encoder': y}"),
        "s_per_step": Field(Float, "wall seconds this step took"),
        "samples_per_s": Field(Float, "images per second over this step"),
        "elapsed_s": Field(Float, "training seconds so far, without time spent saving"),
    },
    "epoch_end": {
        "epoch": Field(Int, "the epoch that ended, counting from 1"),
        "step": Field(Int, "optimizer steps done"),
        "loss_avg": Field(Float, "mean loss over the epoch"),
        "elapsed_s": Field(Float, "training seconds so far"),
    },
    "eval": {
        "step": Field(Int, "optimizer steps done when measured (0 = before training)"),
        "epoch": Field(Int, "epochs completed when measured"),
        "loss": Field(
            Float,
            "loss on a fixed set of training images, timesteps and noise; "
            "unlike the training loss it is comparable from one measurement to the next",
        ),
    },
    "validation": {
        "step": Field(Int, "optimizer steps done when measured (0 = before training)"),
        "epoch": Field(Int, "epochs completed when measured"),
        "loss": Field(
            Float,
            "loss on the held-out images (dataset.validation_split or validation_dir), never trained on, at "
            "fixed timesteps and noise: it rises when the LoRA starts to overfit",
        ),
        "images": Field(Int, "held-out images measured"),
    },
    "sample": {
        "step": Field(Int, "optimizer steps done when rendered (0 = before training: the base model)"),
        "epoch": Field(Int, "epochs completed when rendered"),
        "path": Field(Str, "absolute path of the PNG written (its text chunks hold the same facts)"),
        "index": Field(Int, "the prompt's number in the run's prompt list, counting from 0"),
        "prompt": Field(Str, "the prompt, without its options"),
        "negative_prompt": Field(Str, "the negative prompt (--n), or an empty string"),
        "seed": Field(Int, "the seed the image was rendered with (--d, else training.seed + index)"),
        "width": Field(Int, "pixels"),
        "height": Field(Int, "pixels"),
        "steps": Field(Int, "sampling steps (--s)"),
        "cfg_scale": Field(Float, "classifier-free guidance scale (--l)"),
        "guidance": Field(OptFloat, "FLUX.1 dev's embedded guidance (--g), null for other models", required=False),
        "sampler": Field(Str, "the scheduler it was rendered with (flow_euler for FLUX.1)"),
        "trigger": Field(Str, "why it was rendered: start | steps | epoch | request (sample now)"),
        "seconds": Field(Float, "wall seconds the rendering took (not counted in elapsed_s)"),
    },
    "checkpoint": {
        "path": Field(Str, "absolute path of the file (or state folder) written"),
        "bytes": Field(Int, "its size"),
        "epoch": Field(Int, "epochs completed when it was written"),
        "step": Field(Int, "steps done when it was written"),
        "kind": Field(Str, "epoch | step | final | stop | manual (a save command) | state"),
    },
    "checkpoint_removed": {
        "path": Field(Str, "absolute path of a file (or state folder) this run saved and has now deleted"),
        "step": Field(Int, "steps done when it was removed"),
        "reason": Field(Str, "why: the setting that keeps only the newest files (output.save_last_n_epochs, ...)"),
    },
    "memory": {
        "device": Field(Str, "torch device"),
        "allocated": Field(OptInt, "bytes held by tensors (null off CUDA)"),
        "reserved": Field(OptInt, "bytes reserved by the caching allocator (null off CUDA)"),
        "peak_allocated": Field(OptInt, "peak bytes held by tensors so far (null off CUDA)"),
        "total": Field(OptInt, "device memory in all (null off CUDA)"),
    },
    "control": {
        "command": Field(Str, "the command received: stop | save | pause | resume | sample"),
        "id": Field(Str, "the id the client gave the command, so it can find this answer"),
        "ok": Field(Bool, "true when the engine carries it out, false when it refuses it"),
        "message": Field(Str, "what the engine does about it, or why it refuses, for people"),
    },
    "paused": {
        "step": Field(Int, "steps done when the run paused"),
        "epoch": Field(Int, "the epoch it paused in, counting from 1"),
        "reason": Field(Str, "why: one of PAUSE_REASONS (request, or a save that failed)", required=False),
    },
    "resumed": {
        "step": Field(Int, "steps done (unchanged since the pause)"),
        "paused_s": Field(Float, "wall seconds the pause lasted (not counted in elapsed_s or the ETA)"),
    },
    "warning": {
        "code": Field(
            Str,
            "stable short name: check | vram_spill | save_failed | sample_failed | tensorboard_missing | observer_failed",
        ),
        "message": Field(Str, "what is wrong"),
        "hint": Field(Str, "what to do about it"),
    },
    "error": {
        "kind": Field(Str, "config | dataset | model | output | runtime | internal"),
        "message": Field(Str, "what went wrong"),
        "hint": Field(Str, "how to fix it"),
    },
    "finished": {
        "step": Field(Int, "steps done"),
        "epoch": Field(Int, "epochs done"),
        "path": Field(Str, "the final LoRA file"),
        "elapsed_s": Field(Float, "training seconds in all"),
    },
    "stopped": {
        "step": Field(Int, "steps done"),
        "epoch": Field(Int, "epoch the run stopped in"),
        "path": Field(OptStr, "the LoRA file saved on stopping, or null"),
        "state": Field(OptStr, "the state folder to resume from, or null"),
        "reason": Field(
            Str, "why: signal (SIGTERM/SIGINT), request (a stop command), disk (events could not be written)"
        ),
        "elapsed_s": Field(Float, "training seconds in all"),
    },
    "failed": {
        "step": Field(Int, "steps done before the failure"),
        "message": Field(Str, "what went wrong (the error event before it has the details)"),
    },
}

# A run ends with exactly one of these, and nothing follows it.
FINAL_EVENTS = frozenset({"finished", "stopped", "failed"})

# Why a run is paused (``paused.reason``). A save that fails for a reason outside the engine never
# ends the run: the engine keeps the trained weights in memory, pauses itself with one of the
# reasons after "request", and saves again on ``resume`` or ``save`` (see COMMANDS).
PAUSE_REASONS = {
    "request": "a pause command",
    "disk": "a save failed: no room (disk full, quota, file size limit)",
    "permission": "a save failed: the folder is not writable (permissions, a read-only file system)",
    "name": "a save failed: the file name or path is too long or not allowed there",
    "folder": "a save failed: the output folder is gone or is not a folder",
    "io": "a save failed: another input/output error (a failing disk, a lost network mount)",
}

# The end file (``python -m engine --end-file PATH``): the final event again, one line, in a file
# the engine creates with END_FILE_BYTES of room when it starts. When the events file cannot be
# written (a full disk), the end file still tells readers how the run ended; it needs no new room.
END_FILE_BYTES = 16 * 1024


def decode_end_file(data: bytes) -> dict[str, Any] | None:
    """The final event an end file holds, or None while it holds none (the engine has not ended,
    or ended without a word) or holds something else."""
    text = data.rstrip(b"\0").strip()  # the room taken at the start reads as NUL bytes or spaces
    if not text:
        return None
    try:
        event = decode(text.decode("utf-8"))
    except (ProtocolError, UnicodeDecodeError):
        return None
    return event if event.get("type") in FINAL_EVENTS else None


class ProtocolError(ValueError):
    """A line that is not a valid event of this protocol."""


def make_event(event_type: str, **fields: Any) -> dict[str, Any]:
    """Build and check one event. Raises ProtocolError on a wrong type or field."""
    event = {"v": PROTOCOL_VERSION, "type": event_type, "t": round(time.time(), 3), **fields}
    validate_event(event)
    return event


def encode(event: dict[str, Any]) -> str:
    """One line of JSON (no newline inside). Non-finite floats are not valid JSON: refuse them."""
    try:
        # json_escaped: file names in messages may hold lone surrogates (not UTF-8) or characters
        # a terminal acts on; as \u escapes the line stays UTF-8 and safe to show as it is.
        return json_escaped(json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False))
    except ValueError as exc:
        raise ProtocolError(f"{event.get('type')}: {exc}") from exc


def decode(line: str) -> dict[str, Any]:
    """Parse and check one line. Unknown event types of a newer version pass unchecked."""
    try:
        event = json.loads(line, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # bad JSON, NaN/Infinity, absurd numbers or nesting
        raise ProtocolError(f"not JSON: {str(exc)[:200]}") from exc
    validate_event(event)
    return event


def _refuse_constant(name: str) -> float:
    # Python's json accepts NaN and Infinity, which are not JSON and which encode() never writes.
    raise ValueError(f"{name} is not a JSON number")


def validate_event(event: Any) -> None:
    if not isinstance(event, dict):
        raise ProtocolError("an event must be a JSON object")
    version, event_type, stamp = event.get("v"), event.get("type"), event.get("t")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ProtocolError(f"bad protocol version {version!r}")
    if not isinstance(event_type, str):
        raise ProtocolError(f"'type' must be a string, got {event_type!r}")
    if not isinstance(stamp, (int, float)) or isinstance(stamp, bool) or not math.isfinite(stamp):
        raise ProtocolError(f"{event_type}: 't' must be a finite number")
    if event_type not in EVENTS:
        if version > PROTOCOL_VERSION:
            return  # a newer engine's event: readers skip it
        raise ProtocolError(f"unknown event type {event_type!r}")
    fields = EVENTS[event_type]
    for name, field in fields.items():
        if name not in event:
            if field.required:
                raise ProtocolError(f"{event_type}: missing field {name!r}")
            continue
        value = event[name]
        if (isinstance(value, bool) and bool not in field.types) or not isinstance(value, field.types):
            raise ProtocolError(f"{event_type}.{name}: expected {_type_names(field.types)}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ProtocolError(f"{event_type}.{name}: not a finite number")
    if version == PROTOCOL_VERSION:
        extra = set(event) - set(fields) - {"v", "type", "t"}
        if extra:
            raise ProtocolError(f"{event_type}: unknown field(s) {sorted(extra)}")


def _type_names(types: tuple[type, ...]) -> str:
    names = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        dict: "object",
        list: "array",
        type(None): "null",
    }
    return " or ".join(dict.fromkeys(names[t] for t in types))


# ---------------------------------------------------------------------------------------------
# Control commands: client -> engine, one JSON object per line written to the run's control FIFO.

COMMANDS = {
    "stop": "finish the step, save a LoRA file and a resumable state, emit `stopped`, exit",
    "save": "save a LoRA file and a resumable state now, then go on training; in a run paused by a failed save: "
    "that save again (in `output_dir` when given), then go on",
    "pause": "stop training after the current step until `resume` (the process stays, memory stays allocated)",
    "resume": "go on after a pause; in a run paused by a failed save: that save again first",
    "sample": "render the run's sample prompts now, between two steps, with the LoRA as trained so far "
    "(refused when the run has no prompts); one `sample` event per image",
}

# The engine answers `sample` once every image is rendered, a second or more per image on a GPU and
# far more on a CPU: clients (the CLI, the dashboard) wait this long for that answer.
SAMPLE_ANSWER_S = 600.0


def answer_timeout(name: str, default_s: float) -> float:
    """How long to wait for the answer to the command ``name``."""
    return max(default_s, SAMPLE_ANSWER_S) if name == "sample" else default_s


# A FIFO write of at most PIPE_BUF bytes (4096 on Linux, 512 by POSIX) is atomic, so commands from
# several clients never interleave. Commands are far shorter than that.
MAX_COMMAND_BYTES = 512


# Optional arguments of a command, each a string: name -> meaning.
COMMAND_ARGS: dict[str, dict[str, str]] = {
    "save": {
        "output_dir": "the folder to save in, now and for every later save of the run (an absolute path); "
        "the way on after a save failed for a full or read-only disk",
    },
}


def make_command(name: str, command_id: str, **args: str) -> dict[str, Any]:
    if name not in COMMANDS:
        raise ProtocolError(f"unknown command {name!r}; known: {', '.join(COMMANDS)}")
    unknown = set(args) - set(COMMAND_ARGS.get(name, {}))
    if unknown:
        raise ProtocolError(f"{name} takes no argument {sorted(unknown)[0]!r}")
    command = {"v": PROTOCOL_VERSION, "cmd": name, "id": command_id, "t": round(time.time(), 3), **args}
    _check_command_args(command)
    return command


def encode_command(command: dict[str, Any]) -> bytes:
    data = (json.dumps(command, separators=(",", ":")) + "\n").encode("utf-8")
    if len(data) > MAX_COMMAND_BYTES:
        raise ProtocolError(f"command longer than {MAX_COMMAND_BYTES} bytes")
    return data


def decode_command(line: str | bytes) -> dict[str, Any]:
    try:
        command = json.loads(line, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"not JSON: {str(exc)[:200]}") from exc
    if not isinstance(command, dict):
        raise ProtocolError("a command must be a JSON object")
    name = command.get("cmd")
    # Checked for its type first: a list or an object is no command name (and cannot be looked up).
    if not isinstance(name, str) or name not in COMMANDS:
        raise ProtocolError(f"unknown command {str(name)[:100]!r}")
    command_id = command.get("id")
    if not isinstance(command_id, str) or not command_id or len(command_id) > MAX_COMMAND_BYTES:
        raise ProtocolError("a command needs a non-empty string 'id'")
    _check_command_args(command)
    return command


def _check_command_args(command: dict[str, Any]) -> None:
    """The command's own arguments, when given, are non-empty strings without NUL bytes (a path
    with one can be neither opened nor shown). Other keys are ignored, as before."""
    for arg in COMMAND_ARGS.get(command["cmd"], {}):
        value = command.get(arg)
        if value is not None and (not isinstance(value, str) or not value or "\0" in value):
            raise ProtocolError(f"{command['cmd']}: {arg!r} must be a non-empty string without NUL bytes")
