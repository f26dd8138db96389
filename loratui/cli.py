"""The ``loratui`` command. Start-up must stay fast: nothing here imports torch, and the heavier
terminal-side modules are imported inside the command that needs them."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from loratui import __version__
from loratui.errors import UserError
from loratui.core.protocol import FINAL_EVENTS

from loratui.core.exit_codes import ExitCode, exit_code_of_run

CONTROL_COMMANDS = ("stop", "pause", "resume", "save")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loratui", description="Train LoRA adapters for diffusion image models from a terminal.")
    parser.add_argument("--version", action="version", version=f"loratui {__version__}")
    parser.add_argument("--theme", help="TUI theme for this run (loratui-dark, loratui-light, loratui-high-contrast, "
                                        "loratui-256; the command palette's choice is remembered)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    tui = argparse.ArgumentParser(add_help=False)  # options of the commands that open the app
    tui.add_argument("--theme", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    new = commands.add_parser("new", parents=[tui], help="the setup wizard for a new project folder (creates img/, model/, log/, reg/)")
    new.add_argument("dir", nargs="?", default=".", type=Path, help="the project folder (default: this one)")
    new.add_argument("--import-kohya", metavar="JSON", type=Path, help="start from a kohya_ss GUI config")

    edit = commands.add_parser("edit", parents=[tui], help="the setup wizard on an existing config")
    edit.add_argument("config", type=Path, help="the run's TOML config")
    edit.add_argument("--import-kohya", metavar="JSON", type=Path, help="import a kohya_ss GUI config over it")

    check = commands.add_parser("check", help="validate a config and scan its dataset; exit 1 if training would fail")
    check.add_argument("config", type=Path, help="the run's TOML config (e.g. loratui.toml)")

    train = commands.add_parser("train", parents=[tui], help="start a training job from a config and open its dashboard")
    train.add_argument("config", type=Path, help="the run's TOML config (e.g. loratui.toml)")
    mode = train.add_mutually_exclusive_group()
    mode.add_argument("--no-tui", action="store_true", help="follow the job with plain progress lines (Ctrl+C detaches)")
    mode.add_argument("--detach", action="store_true", help="start the job, print its id and return at once")
    train.add_argument("--resume", metavar="STATE_DIR", help="continue from a saved '<name>-...-state' folder")

    jobs = commands.add_parser("jobs", help="list your jobs (from any folder) with their state")
    jobs.add_argument("--json", action="store_true", help="one JSON object per job, for scripts")

    attach = commands.add_parser("attach", parents=[tui], help="open a job's dashboard again: its whole history, then live")
    attach.add_argument("job", nargs="?", help="job id or unique prefix (default: the one running job)")
    attach.add_argument("--no-tui", action="store_true", help="plain progress lines instead of the dashboard")

    logs = commands.add_parser("logs", help="print a job's events (plain text, or raw JSON lines)")
    logs.add_argument("job", nargs="?", help="job id or unique prefix (default: the one running job)")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    logs.add_argument("--json", action="store_true", help="the raw JSON-lines events (see docs/protocol.md)")

    for name, text in (("stop", "stop a job: it finishes the step, saves a LoRA and a resumable state, and exits"),
                       ("pause", "pause a job after the current step (it keeps its GPU memory)"),
                       ("resume", "go on with a paused job"),
                       ("save", "save a LoRA and a resumable state now, and go on training")):
        command = commands.add_parser(name, help=text)
        command.add_argument("job", nargs="?", help="job id or unique prefix (default: the one running job)")
        command.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the engine's answer")
        if name == "stop":
            command.add_argument("--wait", action="store_true", help="return only when the job has saved and exited")

    commands.add_parser("gpu", help="show the NVIDIA GPUs: memory, utilisation, temperature, power, processes")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None and not _interactive():
        parser.print_help()
        return ExitCode.OK
    try:
        handler = {None: cmd_home, "new": cmd_new, "edit": cmd_edit, "check": cmd_check, "train": cmd_train,
                   "jobs": cmd_jobs, "attach": cmd_attach, "logs": cmd_logs, "gpu": cmd_gpu}.get(args.command, cmd_control)
        return handler(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USER_ERROR
    except BrokenPipeError:  # `loratui logs JOB | head`: the reader left, which is fine
        return ExitCode.OK


def _interactive() -> bool:
    """The app needs a terminal on both ends; scripts and pipes get plain text."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def _load(path: Path):
    from loratui.config import load_config

    return load_config(path)


# ------------------------------------------------------------------------- check and train
def cmd_check(args) -> int:
    from loratui.check import check_run
    from loratui.report import print_check_report

    cfg = _load(args.config)
    result = check_run(cfg)
    print_check_report(args.config, result, sys.stdout)
    return ExitCode.OK if result.ok else ExitCode.FAILED


def cmd_train(args) -> int:
    from loratui.check import check_run
    from loratui.jobs.launch import start_job
    from loratui.report import print_problems

    cfg = _load(args.config)
    if args.resume:
        cfg.training.resume_from = args.resume
    result = check_run(cfg)
    if not result.ok:
        print_problems(result.problems, sys.stderr)
        print(f"\n{len(result.errors)} error(s): fix them, then run `loratui check {args.config}` again.", file=sys.stderr)
        return ExitCode.USER_ERROR
    job = start_job(args.config, cfg, resume=args.resume)
    if args.detach:
        print(job.job_id)
        print(f"Started job {job.job_id} (engine pid {job.record.pid}); it runs on when you log out.\n"
              f"  follow it:  loratui attach {job.job_id}     stop it: loratui stop {job.job_id}\n"
              f"  events:     {job.events_path}\n  log:        {job.log_path}", file=sys.stderr)
        return ExitCode.OK
    if not args.no_tui and _interactive():
        return _open_dashboard(job.record, args)
    print(f"Job {job.job_id}: engine pid {job.record.pid}, events {job.events_path}, log {job.log_path}")
    return _follow_plain(job.record, rebuild_first=False)


def _follow_plain(record, rebuild_first: bool) -> int:
    """Print a job's progress until it ends. Ctrl+C detaches: the job goes on."""
    from loratui.jobs.follow import follow
    from loratui.jobs.process import is_running
    from loratui.plain_progress import PlainProgress

    progress = PlainProgress(sys.stdout)
    offset = 0
    if rebuild_first:
        from loratui.jobs.rebuild import rebuild

        summary, offset = rebuild(record.events_path)
        _print_summary(record, summary)
        progress.prime(summary)
        if summary.ended:
            return _exit_code(summary.final, record, summary.error)
    final = error = None
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for event in follow(record.events_path, lambda: is_running(record.identity), offset=offset):
            progress.handle(event)
            if event.get("type") in FINAL_EVENTS:
                final = event
            elif event.get("type") == "error":
                error = event
    except KeyboardInterrupt:
        print(f"\nDetached; job {record.job_id} goes on. Re-attach: loratui attach {record.job_id}   "
              f"stop it: loratui stop {record.job_id}", file=sys.stderr)
        return ExitCode.OK
    finally:
        signal.signal(signal.SIGINT, previous)
    return _exit_code(final, record, error)


def _print_summary(record, summary) -> None:
    from loratui.plain_progress import format_duration

    total = summary.total_steps or "?"
    eta = summary.eta_s()
    parts = [f"Job {record.job_id}: {summary.state}, step {summary.step}/{total}, epoch {summary.epoch}/{summary.total_epochs or '?'}"]
    if summary.loss_last is not None:
        parts.append(f"loss {summary.loss_last:.4f} (smoothed {summary.loss_smoothed:.4f}, min {summary.loss_min:.4f} "
                     f"at step {summary.history.min_step})")
    parts.append(f"elapsed {format_duration(summary.elapsed_s)}" + (f", ETA {format_duration(eta)}" if eta else ""))
    print("; ".join(parts))
    for checkpoint in summary.checkpoints[-3:]:
        print(f"  saved {checkpoint.path} (step {checkpoint.step})")
    if summary.spill_warning:
        print(f"  warning: {summary.spill_warning['message']}")


def _exit_code(final: dict | None, record, error: dict | None = None) -> int:
    if final is None:
        print(f"error: the engine ended without finishing (killed or crashed); see {record.log_path}", file=sys.stderr)
    return exit_code_of_run(final, error)


# --------------------------------------------------------------------------------- jobs
def cmd_jobs(args) -> int:
    from loratui.jobs.registry import all_records
    from loratui.jobs.status import job_status

    rows = [(record, job_status(record)) for record in all_records()]
    if args.json:
        for record, status in rows:
            print(json.dumps({"id": record.job_id, "state": status.state, "reason": status.reason, "step": status.step,
                              "total_steps": status.total_steps, "epoch": status.epoch, "pid": record.pid,
                              "host": record.host, "config": record.config, "run_folder": record.run_folder,
                              "started_at": record.started_at}))
        return ExitCode.OK
    if not rows:
        print("No jobs yet. Start one with: loratui train CONFIG --detach")
        return ExitCode.OK
    width = max(len(record.job_id) for record, _ in rows)
    print(f"{'JOB':<{width}}  {'STATE':<8}  {'STEP':>13}  {'STARTED':<16}  CONFIG")
    for record, status in rows:
        steps = f"{status.step}/{status.total_steps}" if status.total_steps else str(status.step)
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.started_at))
        print(f"{record.job_id:<{width}}  {status.state:<8}  {steps:>13}  {started:<16}  {record.config}")
    return ExitCode.OK


def cmd_attach(args) -> int:
    from loratui.jobs.registry import find_job

    record = find_job(args.job, running_only_default=False)
    if not args.no_tui and _interactive():
        return _open_dashboard(record, args)
    return _follow_plain(record, rebuild_first=True)


# ----------------------------------------------------------------------------- the app
def _open_dashboard(record, args) -> int:
    from loratui.tui.dashboard import run_dashboard

    return run_dashboard(record, theme=getattr(args, "theme", None))


def _launch_for_wizard(config_path: Path) -> str:
    """The wizard's Launch: check the saved config and start its job (UserError: shown in the wizard)."""
    from loratui.check import check_run
    from loratui.jobs.launch import start_job

    cfg = _load(config_path)
    result = check_run(cfg)
    if not result.ok:
        first = result.errors[0]
        raise UserError(first.message, first.where, first.fix)
    return start_job(config_path, cfg).job_id


def _after_wizard(result, args) -> int:
    from loratui.jobs.registry import find_job

    if result.job_id:
        return _open_dashboard(find_job(result.job_id), args)
    if result.config_path:
        print(f"Saved {result.config_path}. Train it with: loratui train {result.config_path}")
    return ExitCode.OK


def cmd_new(args) -> int:
    from loratui.tui import run_new

    result = run_new(args.dir, theme=getattr(args, "theme", None), on_launch=_launch_for_wizard,
                     kohya_json=args.import_kohya)
    return _after_wizard(result, args)


def cmd_edit(args) -> int:
    from loratui.tui import run_edit

    result = run_edit(args.config, theme=getattr(args, "theme", None), on_launch=_launch_for_wizard,
                      kohya_json=args.import_kohya)
    return _after_wizard(result, args)


def cmd_home(args) -> int:
    from loratui.jobs.registry import find_job
    from loratui.tui import run_home

    choice = run_home(theme=args.theme)
    if choice is None:
        return ExitCode.OK
    if choice.action == "attach":
        return _open_dashboard(find_job(choice.job_id), args)
    if choice.action == "new":
        return cmd_new(argparse.Namespace(dir=choice.path, theme=args.theme, import_kohya=None))
    if choice.action == "edit":
        return cmd_edit(argparse.Namespace(config=choice.path, theme=args.theme, import_kohya=None))
    return cmd_train(argparse.Namespace(config=choice.path, theme=args.theme, resume=None, detach=False, no_tui=False))


def cmd_logs(args) -> int:
    from loratui.jobs.follow import EventFileReader, follow
    from loratui.jobs.process import is_running
    from loratui.jobs.registry import find_job
    from loratui.plain_progress import PlainProgress

    record = find_job(args.job, running_only_default=False)
    if args.json:
        if args.follow:
            for event in follow(record.events_path, lambda: is_running(record.identity)):
                print(json.dumps(event, separators=(",", ":"), ensure_ascii=False), flush=True)
        else:
            with open(record.events_path, "rb") as handle:
                sys.stdout.buffer.write(handle.read())
        return ExitCode.OK
    progress = PlainProgress(sys.stdout, interactive=False)
    try:
        if args.follow:
            for event in follow(record.events_path, lambda: is_running(record.identity)):
                progress.handle(event)
        else:
            for event in EventFileReader(record.events_path).read_new():
                progress.handle(event)
    except KeyboardInterrupt:
        return ExitCode.OK
    return ExitCode.OK


def cmd_control(args) -> int:
    from loratui.jobs.control import send_command
    from loratui.jobs.registry import find_job

    record = find_job(args.job)
    answer = send_command(record, args.command, timeout_s=args.timeout)
    if answer is None:
        print(f"Sent {args.command} to job {record.job_id}; no answer within {args.timeout:.0f} s. The engine acts on "
              f"commands between steps (and after loading the model): `loratui logs {record.job_id}` shows when.")
        return ExitCode.OK
    if not answer.ok:
        print(f"error: job {record.job_id} refused {args.command}: {answer.message}", file=sys.stderr)
        return ExitCode.FAILED
    print(f"{record.job_id}: {answer.message}")
    if args.command == "stop" and getattr(args, "wait", False):
        return _wait_for_end(record)
    return ExitCode.OK


def _wait_for_end(record) -> int:
    from loratui.jobs.follow import follow
    from loratui.jobs.process import is_running

    final = None
    for event in follow(record.events_path, lambda: is_running(record.identity)):
        if event.get("type") in FINAL_EVENTS:
            final = event
    if final and final["type"] == "stopped":
        print(f"Stopped at step {final['step']}; resume with: loratui train {record.config} --resume \"{final['state']}\"")
    return _exit_code(final, record)


def cmd_gpu(args) -> int:
    from loratui.gpu import describe, read_gpus

    for line in describe(read_gpus()):
        print(line)
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
