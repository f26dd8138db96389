"""The live view of one job: :class:`DashboardScreen`.

On mount a worker folds the run's whole history (:func:`loratui.jobs.rebuild.rebuild`: instant
with the engine's snapshot, a fast fold without), and the screen shows it at once. Then:

- a *follow* worker polls ``events.jsonl`` (from the offset the rebuild returned) and the tail of
  ``engine.log`` every :data:`POLL_S` and posts everything new as one message per poll;
- a *GPU* worker reads NVML every :data:`GPU_S`;
- a *control* worker per command sends it through the run's FIFO and posts the engine's answer.

The screen applies events to its :class:`~loratui.core.summary.RunSummary` on the UI thread and
redraws at most every :data:`MIN_REDRAW_S`, and each panel repaints only when its text changed;
a one-second tick moves the ETA and the elapsed time between events.

Keys: q quit (the job runs on), x stop (asks first), p pause / resume, s save now, n sample now,
i the gallery of sample images (:mod:`.gallery`), d dismiss the VRAM warning, w every warning with
its fix, c copy the resume command (after a stop); arrows and PageUp/PageDown scroll. The screen is
self-contained (its CSS, workers and dialogs come with it), so any app can push it; it dismisses itself with a
:class:`~loratui.tui.dashboard.result.DashboardResult`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer
from textual.worker import get_current_worker

from loratui.core.protocol import FINAL_EVENTS, answer_timeout
from loratui.core.summary import RunSummary
from loratui.core.terminal_text import escape_controls
from loratui.errors import UserError
from loratui.gpu import Telemetry, read_shared_usage
from loratui.host import HostTelemetry
from loratui.jobs.control import send_command
from loratui.jobs.follow import EventFileReader
from loratui.jobs.process import host_name, is_running
from loratui.jobs.rebuild import rebuild
from loratui.jobs.record import JobRecord, read_end_file
from loratui.tui.dashboard.banner import SpillBanner
from loratui.tui.dashboard.checkpoints_panel import CheckpointsPanel
from loratui.tui.dashboard.confirm import ConfirmStopScreen
from loratui.tui.dashboard.engine_log import EngineLog
from loratui.tui.dashboard.gallery import GalleryScreen
from loratui.tui.dashboard.gpu_panel import GpuPanel
from loratui.tui.dashboard.log_reader import LogTail
from loratui.tui.dashboard.loss_panel import LossPanel
from loratui.tui.dashboard.messages import CommandAnswered, GpuRead, GpuReading, HistoryLoaded, NewEvents
from loratui.tui.dashboard.outcome import OutcomePanel, resume_command, resume_state
from loratui.tui.dashboard.params_panel import ParamsPanel
from loratui.tui.dashboard.progress_panel import ProgressPanel
from loratui.tui.dashboard.result import DashboardResult, make_result
from loratui.tui.dashboard.samples_panel import SamplesPanel
from loratui.tui.dashboard.status_line import StatusLine
from loratui.tui.dashboard.view import View
from loratui.tui.dashboard.warnings_panel import WarningsPanel, WarningsScreen

POLL_S = 0.25  # events and log lines
GPU_S = 2.0  # NVML
MIN_REDRAW_S = 0.25  # at most 4 redraws a second, however fast events come
TICK_S = 1.0  # ETA and elapsed move between events
COMMAND_TIMEOUT_S = 30.0
LOG_LINES = 500
WIDE = 120  # columns from which the panels stand in two columns


class DashboardScreen(Screen[DashboardResult]):
    CSS_PATH = ["dashboard.tcss", "samples.tcss"]
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (WIDE, "-wide")]
    AUTO_FOCUS = "#dash-body"
    BINDINGS = [
        Binding("q", "detach", "Quit", tooltip="Close the dashboard; the job runs on"),
        Binding("ctrl+c", "detach", "Quit", show=False, priority=True),
        Binding("x", "stop", "Stop", tooltip="Stop the job: it saves a LoRA and a resumable state (asks first)"),
        Binding("p", "pause", "Pause", tooltip="Pause after the current step (GPU memory stays allocated)"),
        Binding("p", "resume", "Resume", tooltip="Go on training"),
        Binding("s", "save", "Save now", tooltip="Save a LoRA and a resumable state now, and go on"),
        Binding("n", "sample", "Sample now", tooltip="Render the run's sample prompts now, between two steps"),
        Binding("i", "show_samples", "Gallery", tooltip="Every sample image, by prompt and by step"),
        Binding("d", "dismiss_warning", "Dismiss warning"),
        Binding("w", "show_warnings", "Warnings", tooltip="Every warning of the run, with its fix"),
        Binding("c", "copy_resume", "Copy resume command", tooltip="Copy it to the clipboard (OSC 52)"),
        Binding("g", "grid", "Grid", tooltip="Render the checkpoints x LoRA weights grid of this run, as a job"),
    ]

    def __init__(
        self,
        record: JobRecord,
        *,
        now: Callable[[], float] = time.time,
        poll_s: float = POLL_S,
        gpu_s: float = GPU_S,
        read_gpus: bool = True,
        command_timeout_s: float = COMMAND_TIMEOUT_S,
    ) -> None:
        """``now``: the clock the ETA and durations are computed with (tests pass a fixed one);
        ``read_gpus``: False leaves NVML alone (the panel then shows only the engine's figures)."""
        super().__init__(id="dashboard")
        self.record = record
        self.now = now
        self.poll_s = poll_s
        self.gpu_s = gpu_s
        self.read_gpus = read_gpus
        self.command_timeout_s = command_timeout_s
        self.view = View(record, RunSummary(), now())
        self.follow_offset: int | None = None
        self._stopping = threading.Event()
        self._redraw_timer = None
        self._last_redraw = 0.0
        self._bindings_key: tuple | None = None
        self.redraws = 0  # how many times a panel was repainted (tests and the bench read it)
        self.panels: list = []  # what _redraw hands the view to (set on mount)

    # -- layout -------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield StatusLine(id="dash-status")
        yield SpillBanner(id="dash-banner")
        with VerticalScroll(id="dash-body"):
            yield OutcomePanel(id="dash-outcome", classes="dash-panel")
            with Vertical(id="dash-columns"):
                with Vertical(id="dash-left"):
                    yield ProgressPanel(id="dash-progress", classes="dash-panel", title="Progress")
                    loss = LossPanel(id="dash-loss", classes="dash-panel")
                    loss.border_title = "Loss"
                    yield loss
                    yield SamplesPanel(id="dash-samples", classes="dash-panel")
                    yield WarningsPanel(id="dash-warnings", classes="dash-panel", title="Warning")
                with Vertical(id="dash-right"):
                    yield GpuPanel(id="dash-gpu", classes="dash-panel", title="GPU")
                    yield CheckpointsPanel(id="dash-checkpoints", classes="dash-panel", title="Saved files")
                    yield ParamsPanel(id="dash-params", classes="dash-panel", title="Run settings")
                    with Vertical(id="dash-log-panel", classes="dash-panel") as log_panel:
                        log_panel.border_title = "Engine log"
                        yield EngineLog(LOG_LINES, id="dash-log")
        yield Footer()

    def on_mount(self) -> None:
        self.panels = [
            self.query_one(selector)
            for selector in (
                "#dash-status",
                "#dash-banner",
                "#dash-outcome",
                "#dash-progress",
                "#dash-loss",
                "#dash-samples",
                "#dash-gpu",
                "#dash-checkpoints",
                "#dash-params",
                "#dash-warnings",
            )
        ]
        self._redraw()
        self._load_history()
        if self.read_gpus:
            self._watch_gpus()
        self.set_interval(TICK_S, self._tick)

    def on_unmount(self) -> None:
        self._stopping.set()  # the worker threads wake from their waits and end

    # -- workers (threads: they only read and post) ---------------------------------------------

    @work(thread=True, name="history", group="dashboard")
    def _load_history(self) -> None:
        log = LogTail(self.record.log_path)
        try:
            summary, offset = rebuild(self.record.events_path)
        except UserError as exc:  # not the file loratui writes (a FIFO, a symlink): nothing to follow
            notice = escape_controls(str(exc))  # a path may hold [brackets] and control characters
            self.app.call_from_thread(self.notify, notice, title="Job", severity="error", timeout=10, markup=False)
            self.post_message(HistoryLoaded(RunSummary(), 0, log.read_new()))
            return
        except OSError as exc:
            self.app.call_from_thread(
                self.notify,
                f"cannot read {self.record.events_path}: {exc.strerror or exc}",
                title="Job",
                severity="error",
                timeout=10,
            )
            summary, offset = RunSummary(), 0
        self.post_message(HistoryLoaded(summary, offset, log.read_new()))
        if not summary.ended:
            self._follow(offset, log)

    def _follow(self, offset: int, log: LogTail) -> None:
        """Runs on in the history worker's thread: poll until a final event, or the engine's end."""
        worker = get_current_worker()
        reader = EventFileReader(self.record.events_path, offset=offset)
        identity = self.record.identity
        local = identity.host == host_name()  # elsewhere (a shared folder) its process cannot be seen
        while not worker.is_cancelled and not self._stopping.is_set():
            alive = not local or is_running(identity)  # before reading: what it wrote before dying is in the file
            events = reader.read_new()
            lines = log.read_new()
            gone = not events and not alive
            if gone:  # the events disk was full: the engine kept its final event in its end file
                events = [end for end in [read_end_file(self.record.end_path)] if end is not None]
                gone = not events
            if events or lines or gone:
                self.post_message(NewEvents(events, lines, engine_gone=gone))
            if gone or any(event.get("type") in FINAL_EVENTS for event in events):
                break
            self._stopping.wait(self.poll_s)
        self.follow_offset = reader.offset
        # after the end: a few more polls for the traceback the engine writes as it exits
        for _ in range(4):
            if self._stopping.wait(self.poll_s):
                return
            lines = log.read_new()
            if lines:
                self.post_message(NewEvents([], lines))

    @work(thread=True, name="gpu", group="dashboard")
    def _watch_gpus(self) -> None:
        worker = get_current_worker()
        telemetry = Telemetry()
        # the engine's own CPU and RAM can be read only on its machine (a shared folder shows others' jobs)
        host = HostTelemetry(self.record.pid if self.record.identity.host == host_name() else None)
        try:
            while not worker.is_cancelled and not self._stopping.is_set():
                snapshot = telemetry.read()
                shared = read_shared_usage(self.record.pid)
                self.post_message(GpuRead(GpuReading(snapshot, shared, host.read())))
                if self._stopping.wait(self.gpu_s):
                    break
        finally:
            telemetry.close()

    @work(thread=True, group="control")
    def _send(self, command: str) -> None:
        """``send_command`` waits up to ``command_timeout_s`` for the answer and cannot be
        interrupted; it runs in a daemon thread of its own, so that quitting the dashboard while a
        command waits for its answer is not held up (the command has been sent by then)."""
        worker = get_current_worker()
        done = threading.Event()

        def send() -> None:
            try:
                answer = send_command(self.record, command, timeout_s=answer_timeout(command, self.command_timeout_s))
            except UserError as err:
                self.post_message(CommandAnswered(command, None, err))
            else:
                self.post_message(CommandAnswered(command, answer))
            finally:
                done.set()

        threading.Thread(target=send, name=f"loratui-{command}", daemon=True).start()
        while not done.wait(0.1):
            if worker.is_cancelled or self._stopping.is_set():
                return

    # -- messages from the workers --------------------------------------------------------------

    @on(HistoryLoaded)
    def _history_loaded(self, message: HistoryLoaded) -> None:
        self.view.summary = message.summary
        self.view.loaded = True
        self.follow_offset = message.offset
        if message.log_lines:
            self.query_one("#dash-log", EngineLog).add_lines(message.log_lines)
        self._redraw()

    @on(NewEvents)
    def _new_events(self, message: NewEvents) -> None:
        summary = self.view.summary
        for event in message.events:
            summary.apply(event)
        if message.engine_gone and not summary.ended:
            self.view.engine_gone = True
        if message.log_lines:
            self.query_one("#dash-log", EngineLog).add_lines(message.log_lines)
        if message.events or message.engine_gone:
            self._schedule_redraw()

    @on(GpuRead)
    def _gpu_read(self, message: GpuRead) -> None:
        self.view.gpu = message.reading
        self._schedule_redraw()

    @on(CommandAnswered)
    def _command_answered(self, message: CommandAnswered) -> None:
        title = message.command.capitalize()
        if message.error is not None:
            error = message.error
            text = error.message + (f"\n{error.fix}" if error.fix else "")
            # names in the text are text, not markup, and their control characters are escaped
            self.notify(escape_controls(text, keep="\n"), title=title, severity="error", timeout=10, markup=False)
        elif message.answer is None:
            self.notify(
                f"no answer within {answer_timeout(message.command, self.command_timeout_s):.0f} s; the engine acts "
                "on commands between steps "
                "and will still carry it out",
                title=title,
                severity="warning",
                timeout=10,
            )
        elif message.answer.ok:
            self.notify(escape_controls(message.answer.message), title=title, timeout=6, markup=False)
        else:
            refused = f"refused: {escape_controls(message.answer.message)}"
            self.notify(refused, title=title, severity="warning", timeout=10, markup=False)

    # -- drawing -------------------------------------------------------------------------------

    def _schedule_redraw(self) -> None:
        if self._redraw_timer is not None:
            return
        wait = self._last_redraw + MIN_REDRAW_S - time.monotonic()
        # (a timer of 0 s is refused by Textual: the earliest redraw is in a hundredth of a second)
        self._redraw_timer = self.set_timer(max(0.01, wait), self._redraw_due)

    def _redraw_due(self) -> None:
        self._redraw_timer = None
        self._redraw()

    def _tick(self) -> None:
        if self.view.loaded and not self.view.ended:
            self._schedule_redraw()

    def _redraw(self) -> None:
        if self._redraw_timer is not None:  # drawn now (a key, the history): no need to draw again
            self._redraw_timer.stop()
            self._redraw_timer = None
        self._last_redraw = time.monotonic()
        self.view.now = self.now()
        for panel in self.panels:
            if panel.show(self.view):
                self.redraws += 1
        banner = self.query_one(SpillBanner)
        summary = self.view.summary
        key = (self.view.loaded, self.view.state, banner.display, summary.warning_count > 0, bool(summary.samples))
        if key != self._bindings_key:
            self._bindings_key = key
            self.refresh_bindings()

    # -- actions -------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        view = self.view
        if action in ("stop", "save", "pause", "resume", "sample"):
            if not view.loaded or view.ended:
                return False
            if action == "pause":
                return view.summary.state != "paused"
            if action == "resume":
                return view.summary.state == "paused"
        if action == "dismiss_warning":
            return self.query_one(SpillBanner).display
        if action == "show_warnings":
            return view.summary.warning_count > 0
        if action == "show_samples":
            return bool(view.summary.samples)
        if action == "copy_resume":
            return view.ended and resume_state(view.summary, view.engine_gone) is not None
        if action == "grid":
            from loratui.grid_job import lora_checkpoint_count

            return view.ended and lora_checkpoint_count(view.summary) > 1
        return True

    def result(self, reason: str = "quit") -> DashboardResult:
        return make_result(self.record, self.view.summary, self.view.state, self.view.engine_gone, reason)

    def action_detach(self) -> None:
        self._stopping.set()
        self.dismiss(self.result())

    def action_stop(self) -> None:
        def answered(stop: bool | None) -> None:
            if stop:
                self._command("stop")

        self.app.push_screen(ConfirmStopScreen(self.record.job_id), answered)

    def action_pause(self) -> None:
        self._command("pause")

    def action_resume(self) -> None:
        self._command("resume")

    def action_save(self) -> None:
        self._command("save")

    def action_sample(self) -> None:
        self._command("sample")

    def action_show_samples(self) -> None:
        self.app.push_screen(GalleryScreen(lambda: self.view.summary.samples, self.record.job_id))

    def action_dismiss_warning(self) -> None:
        if self.query_one(SpillBanner).dismiss_current(self.view):
            self._redraw()

    def action_show_warnings(self) -> None:
        summary = self.view.summary
        self.app.push_screen(WarningsScreen(list(summary.warnings), summary.warning_count, self.record.job_id))

    def action_copy_resume(self) -> None:
        state = resume_state(self.view.summary, self.view.engine_gone)
        if state is None:
            return
        command = resume_command(self.record, state)
        self.app.copy_to_clipboard(command)
        self.notify(
            f"{command}\n(through the terminal: over SSH it needs a terminal that allows OSC 52)",
            title="Copied",
            timeout=6,
            markup=False,  # a path may hold [brackets]
        )

    def action_grid(self) -> None:
        from loratui.grid_job import start_run_grid
        from loratui.shell import attach_command

        try:
            job, spec = start_run_grid(self.record.folder)
        except UserError as exc:
            self.notify(str(exc), title="No grid", severity="error", timeout=8, markup=False)
            return
        self.notify(
            f"{spec.cells} images, as job {job.job_id}; follow it: {attach_command(job.job_id)}",
            title="Grid started",
            timeout=8,
            markup=False,
        )

    def _command(self, command: str) -> None:
        self.notify("sent to the engine; it acts after the current step", title=command.capitalize(), timeout=3)
        self._send(command)
