"""``python -m engine CONFIG``: the training engine, JSON-lines events on stdout.

Exit status: 0 finished, 3 stopped on request (resumable), 2 a problem the user can fix (an
``error`` event says which), 1 a bug in loratui (the traceback is in the log on stderr).
SIGTERM and SIGINT ask for a graceful stop: the engine finishes the step, saves a LoRA file and a
resumable state, emits ``stopped`` and exits. SIGHUP is ignored: a closed terminal never stops a run.
A save the disk refuses never ends the run: it pauses until the save succeeds (engine/train.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import traceback
import warnings
from pathlib import Path

from loratui.core.exit_codes import ExitCode

# The libraries whose notices are chatter in a training log (see quiet_libraries).
LIBRARY_VERBOSITY = ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY")
QUIET_LOGGERS = ("bitsandbytes", "diffusers", "transformers", "accelerate", "huggingface_hub", "peft")
QUIET_WARNING_MODULES = r"(bitsandbytes|diffusers|transformers|accelerate|huggingface_hub|peft)(\.|$)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engine", description="loratui's training engine (JSON lines on stdout)"
    )
    parser.add_argument("config", help="the run's TOML config")
    parser.add_argument("--run-id", help="id for this run (default: a new random one)")
    parser.add_argument(
        "--resume", metavar="STATE_DIR", help="continue from a saved state folder (overrides training.resume_from)"
    )
    parser.add_argument(
        "--control", metavar="FIFO", help="read control commands (stop, save, pause, resume) from this FIFO"
    )
    parser.add_argument(
        "--summary", metavar="JSON", help="keep a snapshot of the run's summary here (when stdout is a file)"
    )
    parser.add_argument(
        "--end-file",
        metavar="FILE",
        help="keep the final event here too, in room taken at the start (read when the events disk is full)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="let this run replace files an earlier run saved under the same output.name",
    )
    args = parser.parse_args(argv)

    from engine.events import claim_stdout

    events = claim_stdout(Path(args.end_file) if args.end_file else None)
    _keep_summary_snapshots(events, args.summary)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_libraries()  # before the libraries are imported: some read their verbosity once, on import
    from engine.train import StopFlag

    stop = StopFlag()
    events.on_broken = lambda: stop.request("disk")  # events cannot be written: save what we can and stop
    signal.signal(signal.SIGTERM, lambda *_: stop.request("signal"))
    signal.signal(signal.SIGINT, lambda *_: stop.request("signal"))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    step = 0
    try:
        from loratui.config import load_config

        cfg = load_config(args.config)
        _log_to_tensorboard(events, cfg, args.run_id)
        if args.resume:  # typed on the command line: from the current folder, not the config's
            cfg.training.resume_from = os.path.abspath(os.path.expanduser(args.resume))
        from engine.control import ControlChannel
        from engine.train import Trainer

        control = ControlChannel(Path(args.control) if args.control else None)
        trainer = Trainer(cfg, events, stop, run_id=args.run_id, control=control, overwrite=args.overwrite)
        try:
            trainer.run()
        finally:
            step = _steps_done(trainer)
        return ExitCode.STOPPED if trainer.outcome == "stopped" else ExitCode.OK
    except Exception as exc:
        return report_failure(events, exc, step)


def report_failure(events, exc: Exception, step: int) -> ExitCode:
    """How a job that raised ends (training or a grid): an ``error`` event and the final ``failed``.
    A UserError says where and what to do; anything else is a bug: its traceback goes to the log and
    the watcher gets its first line."""
    from loratui.errors import UserError

    if isinstance(exc, UserError):
        where = f"{exc.where}: " if exc.where else ""
        logging.getLogger("engine").error("%s%s", where, exc.message)
        events.emit("error", kind=exc.kind, message=where + exc.message, hint=exc.fix)
        events.emit("failed", step=step, message=where + exc.message)
        return ExitCode.USER_ERROR
    traceback.print_exception(exc)
    message = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
    events.emit(
        "error",
        kind="internal",
        message=message,
        hint="this is a bug in loratui; the traceback is in the engine log (stderr)",
    )
    events.emit("failed", step=step, message=message)
    return ExitCode.FAILED


def _steps_done(trainer) -> int:
    """The step the run got to, for its final event: 0 when it never started training. Whatever
    went wrong, the final event must be one the protocol accepts, or the run would end without one."""
    step = getattr(getattr(trainer, "progress", None), "step", 0)
    return step if type(step) is int and step >= 0 else 0


def quiet_libraries() -> None:
    """Keep the libraries' passing remarks out of ``engine.log``; keep their errors.

    Loading a model makes bitsandbytes, diffusers, transformers and accelerate log notices (kernels
    not found, dtype casts, unexpected config keys) and Python print FutureWarnings: dozens of lines
    that bury the engine's own. Their loggers are set to ERROR and those warning categories are
    ignored, unless the user asked otherwise: ``TRANSFORMERS_VERBOSITY`` / ``DIFFUSERS_VERBOSITY``
    set in the environment, or ``PYTHONWARNINGS`` / ``-W`` for warnings, win. Exceptions and
    tracebacks are not logging: they always reach the log.
    """
    for variable in LIBRARY_VERBOSITY:
        os.environ.setdefault(variable, "error")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    if not sys.warnoptions:
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=QUIET_WARNING_MODULES)


def _keep_summary_snapshots(events, path: str | None) -> None:
    from engine.events import events_fd
    from loratui.core.snapshot import SnapshotWriter

    fd = events_fd(events)
    if path and fd is not None:
        events.add_observer(SnapshotWriter(Path(path), fd).observe, "the summary snapshot")


def _log_to_tensorboard(events, cfg, job_id: str | None) -> None:
    """TensorBoard logs of this run, written from its events (output.log_with = "tensorboard")."""
    from engine.tensorboard_log import tensorboard_log

    observer = tensorboard_log(cfg, events, job_id)
    if observer is not None:
        events.add_observer(observer.observe, "TensorBoard logging")


if __name__ == "__main__":
    sys.exit(main())
