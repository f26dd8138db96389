"""The ``loratui`` command. Start-up must stay fast: nothing here imports torch, and the heavier
terminal-side modules are imported inside the command that needs them."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from loratui import __version__
from loratui.errors import UserError

EXIT_OK, EXIT_TRAINING_FAILED, EXIT_USER_ERROR, EXIT_STOPPED = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loratui", description="Train LoRA adapters for diffusion image models from a terminal.")
    parser.add_argument("--version", action="version", version=f"loratui {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = commands.add_parser("check", help="validate a config and scan its dataset; exit 1 if training would fail")
    check.add_argument("config", type=Path, help="the run's TOML config (e.g. loratui.toml)")

    train = commands.add_parser("train", help="train a LoRA from a config")
    train.add_argument("config", type=Path, help="the run's TOML config (e.g. loratui.toml)")
    train.add_argument("--no-tui", action="store_true", help="print plain progress instead of the dashboard")
    train.add_argument("--resume", metavar="STATE_DIR", help="continue from a saved '<name>-...-state' folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    try:
        if args.command == "check":
            return cmd_check(args.config)
        return cmd_train(args.config, resume=args.resume)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


def _load(path: Path):
    from loratui.config import load_config

    return load_config(path)


def cmd_check(config_path: Path) -> int:
    from loratui.check import check_run
    from loratui.report import print_check_report

    cfg = _load(config_path)
    result = check_run(cfg)
    print_check_report(config_path, result, sys.stdout)
    return EXIT_OK if result.ok else 1


def cmd_train(config_path: Path, resume: str | None) -> int:
    from loratui.check import check_run
    from loratui.follow import follow
    from loratui.launch import start_run
    from loratui.plain_progress import PlainProgress
    from loratui.report import print_problems

    cfg = _load(config_path)
    if resume:
        cfg.training.resume_from = resume
    result = check_run(cfg)
    if not result.ok:
        print_problems(result.problems, sys.stderr)
        print(f"\n{len(result.errors)} error(s): fix them, then run `loratui check {config_path}` again.", file=sys.stderr)
        return EXIT_USER_ERROR
    # The dashboard (TUI) is not part of this version yet: every run prints plain progress.
    run = start_run(config_path, cfg, resume=resume)
    print(f"Run {run.run_id}: engine pid {run.process.pid}, events {run.events_path}, log {run.log_path}")
    progress = PlainProgress(sys.stdout)
    final: dict | None = None
    interrupted = False

    def ask_to_stop(*_: object) -> None:
        nonlocal interrupted
        if interrupted:  # second Ctrl+C: stop watching; the engine still saves and exits by itself
            raise KeyboardInterrupt
        interrupted = True
        print("\nStopping: the engine finishes this step and saves a resumable state (Ctrl+C again to stop watching).",
              file=sys.stderr)
        os.kill(run.process.pid, signal.SIGTERM)

    previous = signal.signal(signal.SIGINT, ask_to_stop)
    try:
        for event in follow(run.events_path, lambda: run.process.poll() is None):
            progress.handle(event)
            final = event
    except KeyboardInterrupt:
        print(f"Stopped watching; the engine (pid {run.process.pid}) is saving and will exit. Log: {run.log_path}",
              file=sys.stderr)
        return EXIT_STOPPED
    finally:
        signal.signal(signal.SIGINT, previous)
    return _exit_code(final, run)


def _exit_code(final: dict | None, run) -> int:
    kind = final.get("type") if final else None
    if kind == "finished":
        return EXIT_OK
    if kind == "stopped":
        return EXIT_STOPPED
    if kind == "failed":
        return EXIT_USER_ERROR if run.process.wait() == EXIT_USER_ERROR else EXIT_TRAINING_FAILED
    code = run.process.wait()
    print(f"error: the engine exited (status {code}) without finishing; see {run.log_path}", file=sys.stderr)
    return EXIT_TRAINING_FAILED


if __name__ == "__main__":
    sys.exit(main())
