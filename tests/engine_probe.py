"""Run the engine on many configs in one process, each until its first step: does it get there?

    python tests/engine_probe.py JOBS.json

JOBS.json is a list of jobs: ``{"config": PATH, "env": {...}, "block": [package, ...], "alone": bool}``.
Each job runs the engine's own ``Trainer`` (engine/train.py) as ``python -m engine`` would, with
``env`` set and the packages in ``block`` made unimportable for that job only, and asks it to stop
after its first step (it then saves a LoRA file and a state, as a stop does). ``alone``: the
engine without ``loratui.preflight``'s early refusals (neither the check's rules nor the model
pre-check the loader asks) and without the output-name rule (names the engine could not write
all its files under), so what would happen without them shows: diffusers, torch and the
optimizers decide alone.

One JSON line per job on stdout, in order, each starting with ``{"probe":``:
``{"probe": PATH, "alone": bool, "stepped": bool, "refused": FIELD | null, "message": str,
"crash": "TypeName: text" | null}``. Importing torch and diffusers once for all jobs is what makes
a corpus of dozens of configs affordable (a fresh ``python -m engine`` costs seconds each).
"""

from __future__ import annotations

import io
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(jobs_file: str) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for job in json.loads(Path(jobs_file).read_text()):
        with _environment(job.get("env", {}), job.get("block", [])), _without_preflight(job.get("alone", False)):
            outcome = probe(Path(job["config"]))
        print(json.dumps({"probe": job["config"], "alone": job.get("alone", False), **outcome}), flush=True)
    return 0


def probe(config: Path) -> dict:
    from accelerate.state import AcceleratorState

    from engine.events import EventWriter
    from engine.train import StopFlag, Trainer
    from loratui.config import load_config
    from loratui.errors import UserError

    # accelerate keeps one state per process; each job starts from a clean one, as a new engine would.
    AcceleratorState._reset_state(reset_partial_state=True)
    stop = StopFlag()
    events = EventWriter(io.StringIO())
    stepped = []

    def on_event(event: dict) -> None:
        if event["type"] == "step":
            stepped.append(event["step"])
            stop.request("probe")

    events.add_observer(on_event, "the probe")
    outcome = {"stepped": False, "refused": None, "message": "", "crash": None}
    try:
        # A save the disk refuses pauses a real run until someone says "save again"; here nobody
        # would, so the refusal is the outcome (the field is the name or the folder it names).
        with mock.patch.object(Trainer, "_pause_until_retry", _refuse_the_save):
            Trainer(load_config(config), events, stop).run()
    except UserError as exc:
        outcome.update(refused=exc.where, message=exc.message)
    except _SaveRefused as exc:
        field = "output.name" if exc.failure.reason == "name" else "output.output_dir"
        outcome.update(refused=field, message=exc.failure.message)
    except Exception as exc:  # noqa: BLE001 - a crash is an outcome to report, not to hide
        outcome.update(crash=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")
    outcome["stepped"] = bool(stepped)
    return outcome


class _SaveRefused(Exception):
    def __init__(self, failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def _refuse_the_save(trainer, failure):
    raise _SaveRefused(failure)


@contextmanager
def _environment(env: dict[str, str], block: list[str]):
    saved = {name: os.environ.get(name) for name in env}
    blocked = {name: sys.modules.get(name, _ABSENT) for name in block}
    os.environ.update(env)
    for name in block:
        sys.modules[name] = None  # type: ignore[assignment]  # "import name" now raises ImportError
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        for name, module in blocked.items():
            if module is _ABSENT:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


_ABSENT = object()


@contextmanager
def _without_preflight(alone: bool):
    if not alone:
        yield
        return
    import loratui.preflight
    import loratui.rules
    import loratui.validation

    with (
        mock.patch.object(loratui.validation, "preflight", lambda cfg, found=(): []),
        mock.patch.object(loratui.preflight, "model_location_problems", lambda path: []),
        mock.patch.object(loratui.rules, "output_name_problems", lambda name: []),
    ):
        yield


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
