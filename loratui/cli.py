"""The ``loratui`` command. Start-up must stay fast: nothing here imports torch, and the heavier
terminal-side modules are imported inside the command that needs them."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from loratui import __version__
from loratui.core.exit_codes import ExitCode, exit_code_of_run
from loratui.core.protocol import FINAL_EVENTS, answer_timeout
from loratui.core.terminal_text import escape_controls
from loratui.errors import UserError
from loratui.quantities import count
from loratui.streams import OutputLost, fill_missing_descriptors, guarded_stdout

CONTROL_COMMANDS = ("stop", "pause", "resume", "save", "sample")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loratui", description="Train LoRA adapters for diffusion image models from a terminal."
    )
    parser.add_argument("--version", action="version", version=f"loratui {__version__}")
    parser.add_argument(
        "--theme",
        help="TUI theme for this run (loratui-dark, loratui-light, loratui-high-contrast, "
        "loratui-256; the command palette's choice is remembered)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    tui = argparse.ArgumentParser(add_help=False)  # options of the commands that open the app
    tui.add_argument("--theme", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    new = commands.add_parser(
        "new", parents=[tui], help="the setup wizard for a new project folder (creates img/, model/, log/, reg/)"
    )
    new.add_argument("dir", nargs="?", default=".", type=Path, help="the project folder (default: this one)")
    new.add_argument("--import-kohya", metavar="JSON", type=Path, help="start from a kohya_ss GUI config")

    edit = commands.add_parser("edit", parents=[tui], help="the setup wizard on an existing config")
    edit.add_argument("config", type=Path, help="the run's TOML config")
    edit.add_argument("--import-kohya", metavar="JSON", type=Path, help="import a kohya_ss GUI config over it")

    check = commands.add_parser("check", help="validate a config and scan its dataset; exit 1 if training would fail")
    check.add_argument("config", type=Path, help="the run's TOML config (e.g. loratui.toml)")
    check.add_argument("--overwrite", action="store_true", help="check as `loratui train --overwrite` will run")
    check.add_argument(
        "--memory", action="store_true", help="estimate the GPU memory the run needs even without a GPU to compare"
    )

    train = commands.add_parser(
        "train", parents=[tui], help="start a training job from a config and open its dashboard"
    )
    train.add_argument("config", type=Path, help="the run's TOML config (e.g. loratui.toml)")
    mode = train.add_mutually_exclusive_group()
    mode.add_argument(
        "--no-tui", action="store_true", help="follow the job with plain progress lines (Ctrl+C detaches)"
    )
    mode.add_argument("--detach", action="store_true", help="start the job, print its id and return at once")
    train.add_argument("--resume", metavar="STATE_DIR", help="continue from a saved '<name>-...-state' folder")
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="let this run replace the LoRA files and states an earlier run saved under its output.name",
    )
    train.add_argument(
        "--force",
        action="store_true",
        help="start even while a job of this config (or writing the same files) is running",
    )

    jobs = commands.add_parser("jobs", help="list your jobs (from any folder) with their state")
    jobs.add_argument("--json", action="store_true", help="one JSON object per job, for scripts")

    attach = commands.add_parser(
        "attach", parents=[tui], help="open a job's dashboard again: its whole history, then live"
    )
    attach.add_argument("job", nargs="?", help="job id or unique prefix (default: the one running job)")
    attach.add_argument("--no-tui", action="store_true", help="plain progress lines instead of the dashboard")

    logs = commands.add_parser("logs", help="print a job's events (plain text, or raw JSON lines)")
    logs.add_argument("job", nargs="?", help="job id or unique prefix (default: the one running job)")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    logs.add_argument("--json", action="store_true", help="the raw JSON-lines events (see docs/protocol.md)")

    for name, text in (
        ("stop", "stop a job: it finishes the step, saves a LoRA and a resumable state, and exits"),
        ("pause", "pause a job after the current step (it keeps its GPU memory)"),
        ("resume", "go on with a paused job"),
        ("save", "save a LoRA and a resumable state now, and go on training"),
        ("sample", "render the run's sample prompts now with the LoRA as trained so far, and go on training"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("job", nargs="?", help="job id or unique prefix (default: the one running job)")
        timeout = answer_timeout(name, 60.0)
        command.add_argument("--timeout", type=float, default=timeout, help="seconds to wait for the engine's answer")
        if name == "stop":
            command.add_argument("--wait", action="store_true", help="return only when the job has saved and exited")
        if name == "save":
            command.add_argument(
                "--output-dir",
                metavar="FOLDER",
                help="save in FOLDER, now and for the rest of the run (after a save failed for a full or "
                "read-only disk: the job saves there and goes on)",
            )

    commands.add_parser("gpu", help="show the NVIDIA GPUs: memory, utilisation, temperature, power, processes")
    _add_grid_parsers(commands)
    _add_import_parser(commands)
    return parser


def _add_grid_parsers(commands) -> None:
    """``loratui grid`` (the checkpoint x weight grid, as a job) and ``loratui pick`` (its rows only)."""
    grid = commands.add_parser(
        "grid", help="render a checkpoint x LoRA weight grid of a run (or of LoRA files) as one PNG, as a job"
    )
    grid.add_argument(
        "inputs", nargs="+", metavar="RUN_OR_FILES", help="a run folder or job id, or LoRA .safetensors files"
    )
    grid.add_argument(
        "--weights", default="0.4,0.6,0.8,1.0", help="the columns: LoRA weights (default 0.4,0.6,0.8,1.0)"
    )
    grid.add_argument(
        "--prompt",
        help="the prompt; kohya options such as --s 20 --w 768 may end it (default: the run's first sample prompt)",
    )
    grid.add_argument(
        "--seed", type=int, help="the seed of every cell (default: --d in the prompt, else training.seed)"
    )
    grid.add_argument("--output", metavar="FILE.png", help="where to write the grid (default: beside the LoRA files)")
    grid.add_argument("--model", metavar="PATH", help="the base model of LoRA files (a file does not name it)")
    grid.add_argument("--config", metavar="TOML", help="the run config of LoRA files (its model, precision, clip skip)")
    grid.add_argument("--detach", action="store_true", help="start the job, print its id and return at once")
    pick = commands.add_parser("pick", help="list a run's checkpoints with their validation loss, the best marked")
    pick.add_argument("inputs", nargs=1, metavar="RUN", help="a run folder or job id")


def _add_import_parser(commands) -> None:
    """``loratui import-kohya``: a kohya_ss GUI config made into a run config, without the app."""
    command = commands.add_parser(
        "import-kohya",
        help="make DIR/loratui.toml from a kohya_ss GUI config (.json) and print where every key went",
        description="Write DIR/loratui.toml from a kohya_ss GUI config and print the import report (the same "
        "as the wizard's Ctrl+O). Paths: a folder of the file (train_data_dir, reg_data_dir, output_dir, "
        "logging_dir) that exists on this machine is kept; one that does not (a placeholder, another machine's "
        "folder, a folder relative to where kohya_ss ran) is replaced by DIR's own (img, no reg folder, model, "
        "log); "
        "the base model and FLUX.1 file paths are kept as written. --keep-paths writes every path as in the file.",
    )
    command.add_argument("json", metavar="JSON", type=Path, help="the .json file the kohya_ss GUI saved")
    command.add_argument(
        "dir", metavar="DIR", nargs="?", default=Path("."), type=Path, help="the project folder (default: this one)"
    )
    command.add_argument(
        "--keep-paths", action="store_true", help="write every path as it is in the file (default: see above)"
    )
    command.add_argument("--force", action="store_true", help="replace a loratui.toml already in DIR")


def main(argv: list[str] | None = None) -> int:
    fill_missing_descriptors()
    try:
        with guarded_stdout():
            return _run_command(argv)
    except KeyboardInterrupt:  # Ctrl+C before a command's own handling began: no traceback
        _say_on_stderr("interrupted")
        return ExitCode.INTERRUPTED
    except OutputLost as exc:
        _say_on_stderr(f"error: cannot write to standard output: {exc} (the exit status still tells the result)")
        return ExitCode.FAILED


def _say_on_stderr(line: str) -> None:
    try:
        print(line, file=sys.stderr)
    except OSError:  # standard error is gone too; the exit status is all that is left
        pass


def _run_command(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None and not _interactive():
        parser.print_help()
        return ExitCode.OK
    try:
        handler = {
            None: cmd_home,
            "new": cmd_new,
            "edit": cmd_edit,
            "check": cmd_check,
            "train": cmd_train,
            "jobs": cmd_jobs,
            "attach": cmd_attach,
            "logs": cmd_logs,
            "gpu": cmd_gpu,
            "grid": cmd_grid,
            "pick": cmd_pick,
            "import-kohya": cmd_import_kohya,
        }.get(args.command, cmd_control)
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
    from loratui.memory_check import add_memory_check

    result = add_memory_check(check_run(cfg, overwrite=args.overwrite), force=getattr(args, "memory", False))
    print_check_report(args.config, result, sys.stdout)
    return ExitCode.OK if result.ok else ExitCode.FAILED


def cmd_train(args) -> int:
    from loratui.check import check_run
    from loratui.jobs.launch import refuse_a_second_run, start_job
    from loratui.report import print_problems
    from loratui.shell import absolute, attach_command, loratui_command, stop_command, train_command

    cfg = _load(args.config)
    force, overwrite = getattr(args, "force", False), getattr(args, "overwrite", False)
    if not force:  # first: a running job explains the files it writes better than "they exist"
        refuse_a_second_run(args.config, cfg)
    resume = absolute(args.resume) if args.resume else None  # as typed, from here; the engine runs elsewhere
    if resume:
        cfg.training.resume_from = resume
    from loratui.memory_check import add_memory_check

    result = add_memory_check(check_run(cfg, overwrite=overwrite))  # "ready" includes "fits the GPU"
    if not result.ok:
        print_problems(result.problems, sys.stderr)
        flags = ["--overwrite"] if overwrite else []
        # `check` has no --resume: a resumed run is checked by running the same command again.
        again = (
            train_command(args.config, "--resume", resume, *flags)
            if resume
            else loratui_command("check", absolute(args.config), *flags)
        )
        errors = len(result.errors)
        print(
            f"\n{count(errors, 'error')}: fix {'it' if errors == 1 else 'them'}, then run `{again}` again.",
            file=sys.stderr,
        )
        return ExitCode.USER_ERROR
    dashboard = not args.detach and not args.no_tui and _interactive()
    if dashboard:
        from loratui.tui.themes import check_theme_name

        check_theme_name(args.theme)  # before the job starts, not once it runs
    job = start_job(args.config, cfg, resume=resume, force=force, overwrite=overwrite)
    if args.detach:
        print(job.job_id)
        print(
            f"Started job {job.job_id} (engine pid {job.record.pid}); it runs on when you log out.\n"
            f"  follow it:  {attach_command(job.job_id)}     stop it: {stop_command(job.job_id)}\n"
            f"  events:     {job.events_path}\n  log:        {job.log_path}",
            file=sys.stderr,
        )
        return ExitCode.OK
    if dashboard:
        return _open_dashboard(job.record, args)
    print(
        escape_controls(f"Job {job.job_id}: engine pid {job.record.pid}, events {job.events_path}, log {job.log_path}")
    )
    return _follow_plain(job.record, rebuild_first=False)


def _follow_plain(record, rebuild_first: bool) -> int:
    """Print a job's progress until it ends. Ctrl+C detaches: the job goes on."""
    from loratui.jobs.follow import follow_to_end
    from loratui.plain_progress import PlainProgress

    progress = PlainProgress(sys.stdout, job_id=record.job_id, config=record.config)
    offset = 0
    if rebuild_first:
        from loratui.jobs.rebuild import rebuild
        from loratui.jobs.status import ACTIVE_STATES, job_status

        status = job_status(record)  # first: whatever a dead engine wrote is then all in the file
        summary, offset = rebuild(record.events_path)
        # Its events stop short of an end (killed, crashed, or its end only in the end file: a full
        # disk): say how it is now, not "running, ETA ...".
        unseen_end = status if not summary.ended and status.state not in ACTIVE_STATES else None
        _print_summary(record, summary, unseen_end)
        progress.prime(summary)
        if summary.ended:
            return _exit_code(summary.final, record, summary.error)
        if unseen_end is not None:
            return exit_code_of_run(status.final)  # FAILED when there is no end at all
    from loratui.shell import attach_command, stop_command

    detached = (
        f"Detached; job {record.job_id} goes on. Re-attach: {attach_command(record.job_id)}   "
        f"stop it: {stop_command(record.job_id)}"
    )
    ended = follow_to_end(record, progress.handle, detached, offset)
    if ended is None:
        return ExitCode.OK
    final, error = ended
    return _exit_code(final, record, error)


def _print_summary(record, summary, unseen_end=None) -> None:
    """The rebuilt summary in a line or few. ``unseen_end``: the JobStatus of a job that ended
    without a final event; its state and reason replace the events' last word, and there is no ETA."""
    from loratui.plain_progress import format_duration

    total = summary.total_steps or "?"
    eta = None if unseen_end else summary.eta_s()
    state = f"{unseen_end.state} ({unseen_end.reason})" if unseen_end else summary.state
    epochs = summary.total_epochs or "?"
    parts = [f"Job {record.job_id}: {state}, step {summary.step}/{total}, epoch {summary.epoch}/{epochs}"]
    if summary.loss_last is not None:
        parts.append(
            f"loss {summary.loss_last:.4f} (smoothed {summary.loss_smoothed:.4f}, min {summary.loss_min:.4f} "
            f"at step {summary.history.min_step})"
        )
    parts.append(f"elapsed {format_duration(summary.elapsed_s)}" + (f", ETA {format_duration(eta)}" if eta else ""))
    print("; ".join(parts))
    for checkpoint in summary.checkpoints[-3:]:
        print(escape_controls(f"  saved {checkpoint.path} (step {checkpoint.step})"))
    if summary.spill_warning:
        print(escape_controls(f"  warning: {summary.spill_warning['message']}"))


def _exit_code(final: dict | None, record, error: dict | None = None) -> int:
    if final is None:
        print(f"error: {_why_no_end(record)}", file=sys.stderr)
    return exit_code_of_run(final, error)


def _why_no_end(record) -> str:
    """Why following a job ended without its final event."""
    from loratui.jobs.status import require_event_log

    try:
        require_event_log(record)  # its run folder or event log went away under us
    except UserError as exc:
        return str(exc)
    return f"the engine ended without finishing (killed or crashed); see {record.log_path}"


# --------------------------------------------------------------------------------- jobs
def cmd_jobs(args) -> int:
    from loratui.jobs.listing import read_jobs

    listing = read_jobs()
    rows = listing.rows
    for skipped in listing.skipped:  # one line each; the other jobs are listed all the same
        print(f"warning: skipped a damaged job record: {skipped} (fix: delete that file)", file=sys.stderr)
    if args.json:
        for row in rows:
            record, status = row.record, row.status
            print(
                json.dumps(
                    {
                        "id": record.job_id,
                        "state": status.state,
                        "reason": status.reason,
                        "step": status.step,
                        "total_steps": status.total_steps,
                        "epoch": status.epoch,
                        "pid": record.pid,
                        "host": record.host,
                        "config": record.config,
                        "run_folder": record.run_folder,
                        "started_at": record.started_at,
                        "kind": record.kind,  # train, or grid (loratui grid)
                    }
                )
            )
        return ExitCode.OK
    if not rows:
        print("No jobs yet. Start one with: loratui train CONFIG --detach")
        return ExitCode.OK
    width = max(len(row.job_id) for row in rows)
    print(f"{'JOB':<{width}}  {'STATE':<8}  {'STEP':>13}  {'STARTED':<16}  CONFIG")
    for row in rows:
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(row.record.started_at))
        config = escape_controls(row.record.config)  # a folder's name may hold terminal escapes
        print(f"{row.job_id:<{width}}  {row.status.state:<8}  {row.steps:>13}  {started:<16}  {config}")
    return ExitCode.OK


def cmd_attach(args) -> int:
    from loratui.jobs.registry import find_job
    from loratui.jobs.status import require_event_log

    record = find_job(args.job, running_only_default=False)
    require_event_log(record)  # a removed run folder or event log: say so, never wait on "starting"
    if record.kind == "grid":  # its progress and its PNG; the training dashboard has nothing to show of it
        from loratui.grid_job import follow_grid

        return follow_grid(record)
    if not args.no_tui and _interactive():
        return _open_dashboard(record, args)
    return _follow_plain(record, rebuild_first=True)


# ----------------------------------------------------------------------------- the app
# One app, opened on the screen the command asks for; leaving it prints what it has to say
# (loratui.tui.outcome) and the command returns its exit code.
def _open_dashboard(record, args) -> int:
    from loratui.tui import run_dashboard

    return run_dashboard(record, theme=args.theme)


def cmd_new(args) -> int:
    from loratui.tui import run_new

    return run_new(args.dir, theme=args.theme, kohya_json=args.import_kohya)


def cmd_edit(args) -> int:
    from loratui.tui import run_edit

    return run_edit(args.config, theme=args.theme, kohya_json=args.import_kohya)


def cmd_home(args) -> int:
    from loratui.tui import run_home

    return run_home(theme=args.theme)


def cmd_logs(args) -> int:
    from loratui.core.terminal_text import json_escaped
    from loratui.jobs.follow import EventFileReader, follow_job, open_events
    from loratui.jobs.registry import find_job
    from loratui.jobs.status import require_event_log
    from loratui.plain_progress import PlainProgress

    record = find_job(args.job, running_only_default=False)
    require_event_log(record)  # missing, a folder, or gone with its run folder: one line, not a traceback
    if args.json:
        if args.follow:
            for event in follow_job(record):
                # as the engine writes them: control characters and undecodable bytes as \u escapes
                print(json_escaped(json.dumps(event, separators=(",", ":"), ensure_ascii=False)), flush=True)
        else:
            with open_events(record.events_path) as handle:  # a FIFO or /dev/zero there: refused
                shutil.copyfileobj(handle, sys.stdout.buffer)  # in pieces: a long run's log is 100s of MB
        return ExitCode.OK
    progress = PlainProgress(sys.stdout, interactive=False, job_id=record.job_id, config=record.config)
    if record.kind == "grid":
        from loratui.grid_job import GridProgress

        progress = GridProgress(sys.stdout, interactive=False)
    try:
        if args.follow:
            for event in follow_job(record):
                progress.handle(event)
        else:
            for event in EventFileReader(record.events_path).read_all():
                progress.handle(event)
    except KeyboardInterrupt:
        return ExitCode.OK
    return ExitCode.OK


def cmd_control(args) -> int:
    from loratui.jobs.control import NoAnswer, send_command
    from loratui.jobs.registry import find_job
    from loratui.shell import logs_command

    record = find_job(args.job)
    sent_at = time.time()
    try:
        answer = send_command(record, args.command, timeout_s=args.timeout, **_command_args(args))
    except NoAnswer as exc:  # the engine is gone or suspended: the command was not carried out
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.FAILED
    if answer is None:  # not carried out yet: a script must not take it as done
        print(
            f"error: sent {args.command} to job {record.job_id}, but no answer came within {args.timeout:.0f} s. "
            f"Its engine is alive and acts on commands between steps (and after loading the model): "
            f"`{logs_command(record.job_id)}` shows when.",
            file=sys.stderr,
        )
        return ExitCode.FAILED
    if not answer.ok:
        print(escape_controls(f"error: job {record.job_id} refused {args.command}: {answer.message}"), file=sys.stderr)
        return ExitCode.FAILED
    print(escape_controls(f"{record.job_id}: {answer.message}"))  # the engine's words may name a file
    if args.command == "stop" and getattr(args, "wait", False):
        return _wait_for_end(record, sent_at)
    return ExitCode.OK


def _command_args(args) -> dict[str, str]:
    """The command's own arguments; a folder is made absolute here, where the user typed it."""
    from loratui.shell import absolute

    folder = getattr(args, "output_dir", None)
    return {"output_dir": absolute(folder)} if folder else {}


def _wait_for_end(record, sent_at: float) -> int:
    from loratui.jobs.follow import follow_job
    from loratui.shell import resume_command

    if not record.folder.is_dir():
        return _wait_without_events(record, sent_at)
    final = None
    for event in follow_job(record):
        if event.get("type") in FINAL_EVENTS:
            final = event
    if final and final["type"] == "stopped" and final.get("state"):  # (a grid job has no state to resume)
        print(f"Stopped at step {final['step']}; resume with: {resume_command(record.config, final['state'])}")
    return _exit_code(final, record)


def _wait_without_events(record, sent_at: float) -> int:
    """``stop --wait`` for a job whose run folder was removed: its events are gone, so wait for its
    engine to exit and say what it saved in its output folder since the stop was sent."""
    from loratui.jobs.orphan import saved_since, wait_for_exit
    from loratui.shell import resume_command

    wait_for_exit(record)
    saved = saved_since(record, sent_at - 1.0)  # a second's slack for coarse file times
    if not saved:
        where = escape_controls(record.output_dir) if record.output_dir else "its output folder"
        print(
            f"error: the engine of job {record.job_id} has exited without saving anything in {where}; "
            "its log went with its run folder",
            file=sys.stderr,
        )
        return ExitCode.FAILED
    print(f"The engine of job {record.job_id} has exited. It saved:")
    for path in saved:
        print(f"  {escape_controls(str(path))}")
    state = next((path for path in reversed(saved) if path.is_dir() and path.name.endswith("-state")), None)
    if state is not None:
        print(f"Resume with: {resume_command(record.config, state)}")
    return ExitCode.STOPPED


# --------------------------------------------------------------------------------- grid
def cmd_grid(args) -> int:
    from loratui.grid_job import follow_grid, grid_job_name, grid_line, grid_log_dir, pick_lines
    from loratui.grid_spec import GridRequest, resolve_grid
    from loratui.jobs.launch import start_grid_job
    from loratui.shell import attach_command, quote

    request = GridRequest(args.inputs, args.weights, args.prompt, args.seed, args.output, args.model, args.config)
    spec, run = resolve_grid(request)
    for line in [*pick_lines(spec.rows, spec.validation_losses, spec.best_row), grid_line(spec)]:
        print(line, file=sys.stderr if args.detach else sys.stdout)  # --detach: the job id alone on stdout
    job = start_grid_job(spec.to_json(), grid_log_dir(run, args.config), grid_job_name(spec))
    if args.detach:
        print(job.job_id)
        print(
            f"Started grid job {job.job_id} ({spec.cells} images); it runs on when you log out.\n"
            f"  follow it:  {attach_command(job.job_id)}     the grid: {quote(spec.output)}",
            file=sys.stderr,
        )
        return ExitCode.OK
    print(escape_controls(f"Grid job {job.job_id}: {spec.cells} images, log {job.log_path}"))
    return follow_grid(job.record)


def cmd_pick(args) -> int:
    from loratui.grid_job import pick_lines
    from loratui.grid_spec import best_row, row_losses, run_checkpoints, run_folder_of

    run = run_checkpoints(run_folder_of(args.inputs[0]))
    for line in pick_lines(run.rows, row_losses(run), best_row(run)):
        print(line)
    return ExitCode.OK


def cmd_import_kohya(args) -> int:
    from loratui.config import save_config
    from loratui.kohya_import import apply_import, load_kohya_json
    from loratui.shell import loratui_command
    from loratui.tui.entry import CONFIG_NAME, new_project_config, prepare_new_project

    result = load_kohya_json(args.json)  # a missing or broken file: one line, nothing written
    folder = args.dir.expanduser().absolute()
    config_path = folder / CONFIG_NAME
    if config_path.exists() and not args.force:
        raise UserError(
            f"{CONFIG_NAME} is already there and was left as it is",
            str(config_path),
            "pass --force to replace it, or give another folder",
        )
    if not config_path.exists():
        prepare_new_project(folder)  # the img/, model/, log/ and reg/ folders, as `loratui new` makes them
    keep = "--keep-paths writes every path as in the file."
    cfg = apply_import(result, new_project_config(config_path), keep_paths=args.keep_paths, how_to_keep=keep)
    save_config(cfg, config_path)
    for line in result.report.lines():
        print(escape_controls(line))
    print()
    print(f"Wrote {escape_controls(str(config_path))}")
    print(f"Next: {loratui_command('check', config_path)}")
    return ExitCode.OK


def cmd_gpu(args) -> int:
    from loratui.gpu import describe, read_gpus

    for line in describe(read_gpus()):
        print(line)
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
