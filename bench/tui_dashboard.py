"""The dashboard in a real terminal: start-up, CPU and terminal traffic. Run: ``python bench/tui_dashboard.py``
(``--quick`` for a smoke run).

Each program runs in a pseudo-terminal of 100x30 with TERM=xterm-256color (no COLORTERM: the
usual SSH case), its output read from the pty master by this script, as a terminal would:

1. **First paint**: from starting the process to the first bytes of screen content (the job id,
   drawn in the first frame) and to the first frame that shows the run's history (the step
   count: after the re-attach fold). The job has 20,000 steps of history and no summary snapshot,
   so the fold is the slow path. Baseline: ``loratui attach JOB --no-tui`` (plain lines) to its
   summary line. Also ``loratui`` itself: the home screen's first frame, and the frame that
   shows the job list (read in a worker).
2. **CPU while following** a job that writes 20 events a second (engine-shaped step lines, a
   ``memory`` event every 20th): the process's user+system time (``/proc/PID/stat``, the same
   counters as its rusage) over ``--seconds`` of wall time once it has settled. Baseline: the
   plain-text follower ``loratui logs JOB --follow`` on the same stream.
3. **Bytes written to the terminal per second** over the same window, counted at the master.

The dashboard is started as a user does, ``python -m loratui.cli attach JOB`` (on a terminal it
opens the dashboard: ``run_dashboard``); it is closed with ``q`` and must print the re-attach
hint, and the job must still run. Exit status is always 0: a measurement, not a test.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

JOB_ID = "bench-20261122-101500"
COLUMNS, ROWS = 100, 30
HISTORY_STEPS = 20_000
EVENTS_PER_S = 20
CLK_TCK = os.sysconf("SC_CLK_TCK")

CONFIG = {
    "model": {"path": "/models/sd15.safetensors", "family": "sd1"},
    "dataset": {"resolution": 512, "enable_buckets": True},
    "network": {"rank": 32, "alpha": 16.0},
    "training": {"batch_size": 4, "mixed_precision": "bf16"},
    "optimizer": {"name": "AdamW8bit", "unet_lr": 1e-4, "text_encoder_lr": 5e-5, "scheduler": "cosine"},
}

# The "engine": appends 20 events a second to events.jsonl (and a line to engine.log every 5 s)
# until killed. It is the process the job record names, so the job counts as running.
WRITER = r"""
import json, sys, time
events, log, first_step = sys.argv[1], sys.argv[2], int(sys.argv[3])
rate = float(sys.argv[4])
step, n = first_step, 0
start = time.monotonic()
with open(events, "a") as out, open(log, "a") as err:
    while True:
        n += 1
        t = round(time.time(), 3)
        if n % 20 == 0:
            line = {"v": 1, "type": "memory", "t": t, "device": "cuda", "allocated": 12 << 30, "reserved": 14 << 30,
                    "peak_allocated": 13 << 30, "total": 24 << 30}
        else:
            step += 1
            line = {"v": 1, "type": "step", "t": t, "step": step, "epoch": step // 5000 + 1,
                    "loss": 0.1 + 1 / (1 + step / 500) + (step * 7919 % 1000) / 1e4, "loss_avg": 0.2,
                    "lr": {"unet": 0.0001, "text_encoder": 5e-05}, "s_per_step": 0.05, "samples_per_s": 80.0,
                    "elapsed_s": round(step * 0.05, 3)}
        out.write(json.dumps(line, separators=(",", ":")) + "\n")
        out.flush()
        if n % (5 * int(rate)) == 0:
            err.write(f"INFO step {step}: all well\n")
            err.flush()
        time.sleep(max(0.0, start + n / rate - time.monotonic()))
"""


def write_history(folder: Path, steps: int) -> None:
    """A run's first ``steps`` steps in the engine's layout, with a memory event every 20 steps and
    an epoch's end, eval and checkpoint every 5,000."""
    t0 = time.time() - steps * 0.05 - 60
    total = steps * 3
    with open(folder / "events.jsonl", "w") as out:

        def put(event: dict) -> None:
            out.write(json.dumps({"v": 1, **event}, separators=(",", ":")) + "\n")

        put({"type": "status", "t": t0, "phase": "loading_model", "message": "loading the model"})
        put(
            {
                "type": "run_started",
                "t": t0,
                "run_id": "bench",
                "config": CONFIG,
                "config_dir": "/p",
                "dataset": {"images": 20, "reg_images": 0, "items_per_epoch": 20_000, "concepts": [], "buckets": {}},
                "total_steps": total,
                "total_epochs": total // 5000,
                "steps_per_epoch": 5000,
                "start_step": 0,
                "start_epoch": 0,
                "device": "cuda",
                "device_name": "bench GPU",
                "mixed_precision": "bf16",
                "pid": 1,
                "resumed_from": None,
                "elapsed_s": 0.0,
                "loss_history": [],
            }
        )
        put({"type": "status", "t": t0, "phase": "training", "message": "training"})
        for step in range(1, steps + 1):
            t = round(t0 + step * 0.05, 3)
            put(
                {
                    "type": "step",
                    "t": t,
                    "step": step,
                    "epoch": step // 5000 + 1,
                    "loss": 0.1 + 1 / (1 + step / 500) + (step * 7919 % 1000) / 1e4,
                    "loss_avg": 0.2,
                    "lr": {"unet": 0.0001, "text_encoder": 5e-05},
                    "s_per_step": 0.05,
                    "samples_per_s": 80.0,
                    "elapsed_s": round(step * 0.05, 3),
                }
            )
            if step % 20 == 0:
                put(
                    {
                        "type": "memory",
                        "t": t,
                        "device": "cuda",
                        "allocated": 12 << 30,
                        "reserved": 14 << 30,
                        "peak_allocated": 13 << 30,
                        "total": 24 << 30,
                    }
                )
            if step % 5000 == 0:
                epoch = step // 5000
                put(
                    {
                        "type": "epoch_end",
                        "t": t,
                        "epoch": epoch,
                        "step": step,
                        "loss_avg": 0.3,
                        "elapsed_s": step * 0.05,
                    }
                )
                put({"type": "eval", "t": t, "step": step, "epoch": epoch, "loss": 0.25})
                put(
                    {
                        "type": "checkpoint",
                        "t": t,
                        "path": f"/p/model/bench-{epoch:06d}.safetensors",
                        "bytes": 151_000_000,
                        "epoch": epoch,
                        "step": step,
                        "kind": "epoch",
                    }
                )
    (folder / "engine.log").write_text("INFO loading model\nINFO caching latents\n")


def start_job(root: Path, env: dict) -> subprocess.Popen:
    from loratui.jobs import registry
    from loratui.jobs.process import boot_id, host_name, start_time
    from loratui.jobs.record import JobRecord, write_record

    folder = root / "log" / JOB_ID
    folder.mkdir(parents=True)
    write_history(folder, HISTORY_STEPS)
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            WRITER,
            str(folder / "events.jsonl"),
            str(folder / "engine.log"),
            str(HISTORY_STEPS),
            str(EVENTS_PER_S),
        ],
        start_new_session=True,
    )
    record = JobRecord(
        job_id=JOB_ID,
        run_folder=str(folder),
        config=str(root / "loratui.toml"),
        pid=writer.pid,
        start_time=start_time(writer.pid),
        boot_id=boot_id(),
        host=host_name(),
        started_at=time.time(),
    )
    write_record(record, folder / "job.json")
    os.environ["LORATUI_STATE_DIR"] = env["LORATUI_STATE_DIR"]
    registry.register(record)
    return writer


class PtyRun:
    """One program in a pseudo-terminal; everything it writes is read and timed here."""

    def __init__(self, argv: list[str], env: dict) -> None:
        self.started = time.monotonic()
        self.pid, self.master = pty.fork()
        if self.pid == 0:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
            os.execvpe(argv[0], argv, env)
        self.chunks: list[tuple[float, int]] = []  # (seconds since start, bytes)
        self.data = bytearray()
        self.found: dict[str, float] = {}
        self.status: int | None = None
        self.rusage = None

    def pump(self, seconds: float, until: dict[str, bytes] | None = None) -> None:
        """Read for ``seconds`` or until every pattern in ``until`` has been seen."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if until and all(name in self.found for name in until):
                return
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # the program exited and closed its end
                return
            if not chunk:
                return
            now = time.monotonic() - self.started
            self.chunks.append((now, len(chunk)))
            self.data += chunk
            if b"\x1b[c" in chunk:  # "which features" (DA1), asked before the app starts: answer as xterm does
                os.write(self.master, b"\x1b[?64;1;2;6;9;15;18;21;22c")
            for name, pattern in (until or {}).items():
                if name not in self.found and re.search(pattern, self.data[-70000:]):
                    self.found[name] = now

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime

    def window(self, seconds: float) -> tuple[float, float, float]:
        """(CPU seconds per second, bytes per second, wall seconds) over the next ``seconds``."""
        cpu0, t0 = self.cpu_s(), time.monotonic()
        start = t0 - self.started
        self.pump(seconds)
        cpu1, t1 = self.cpu_s(), time.monotonic()
        wall = t1 - t0
        written = sum(n for t, n in self.chunks if t >= start)
        return (cpu1 - cpu0) / wall, written / wall, wall

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def finish(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(0.1)
            done, status, rusage = os.wait4(self.pid, os.WNOHANG)
            if done:
                self.status, self.rusage = status, rusage
                self.pump(0.2)
                break
        else:
            os.kill(self.pid, signal.SIGKILL)
            _, self.status, self.rusage = os.wait4(self.pid, 0)
        try:
            os.close(self.master)
        except OSError:
            pass

    def text(self) -> str:
        return re.sub(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][A-Z0-9]|\x1b[=>]", "", self.data.decode("utf-8", "replace"))


def run(args) -> None:
    root = Path(tempfile.mkdtemp(prefix="loratui-bench-dash-"))
    env = {k: v for k, v in os.environ.items() if k not in ("COLORTERM", "TEXTUAL_COLOR_SYSTEM", "NO_COLOR")}
    env.update(
        TERM="xterm-256color",
        LORATUI_STATE_DIR=str(root / "state"),
        LORATUI_CONFIG_DIR=str(root / "config"),
        PYTHONPATH=str(REPO),
        COLUMNS=str(COLUMNS),
        LINES=str(ROWS),
    )
    print(
        f"loratui dashboard bench: a job with {HISTORY_STEPS:,} steps of history (no summary snapshot), "
        f"writing {EVENTS_PER_S} events/s; terminal {COLUMNS}x{ROWS}, TERM=xterm-256color; {os.cpu_count()} CPUs"
    )
    writer = start_job(root, env)
    results: dict[str, dict] = {}
    try:
        time.sleep(0.5)
        # -- the dashboard
        dash = PtyRun([sys.executable, "-m", "loratui.cli", "attach", JOB_ID], env)
        dash.pump(30, until={"first_paint": JOB_ID.encode(), "history": rb"Step\s+\d{2},\d{3} / "})
        dash.pump(args.settle)
        cpu, rate, wall = dash.window(args.seconds)
        truecolor = b"\x1b[38;2;" in dash.data or b";38;2;" in dash.data
        dash.send(b"q")
        dash.finish()
        results["dashboard"] = {
            "first_paint": dash.found.get("first_paint"),
            "ready": dash.found.get("history"),
            "cpu": cpu,
            "bytes_s": rate,
            "wall": wall,
            "exit": os.waitstatus_to_exitcode(dash.status),
            "hint": f"loratui attach {JOB_ID}" in dash.text(),
            "truecolor": truecolor,
            "total_cpu": dash.rusage.ru_utime + dash.rusage.ru_stime,
        }
        # -- baselines: the plain-text follower, and the plain attach's start
        plain = PtyRun([sys.executable, "-m", "loratui.cli", "logs", JOB_ID, "--follow"], env)
        plain.pump(30, until={"first_paint": rb"Training on"})
        plain.pump(args.settle)
        cpu, rate, wall = plain.window(args.seconds)
        plain.send(b"\x03")
        plain.finish()
        results["logs --follow"] = {
            "first_paint": plain.found.get("first_paint"),
            "cpu": cpu,
            "bytes_s": rate,
            "wall": wall,
        }
        attach = PtyRun([sys.executable, "-m", "loratui.cli", "attach", JOB_ID, "--no-tui"], env)
        attach.pump(30, until={"ready": rb"Job " + JOB_ID.encode() + rb": running"})
        attach.send(b"\x03")
        attach.finish()
        results["attach --no-tui"] = {"ready": attach.found.get("ready")}
        # -- `loratui` itself: the home screen, first frame with its job list read
        home = PtyRun([sys.executable, "-m", "loratui.cli"], env)
        home.pump(30, until={"first_paint": rb"loratui", "jobs": JOB_ID.encode()})
        home.send(b"q")
        home.finish()
        results["home"] = {"first_paint": home.found.get("first_paint"), "ready": home.found.get("jobs")}
        job_alive = writer.poll() is None
    finally:
        writer.kill()
        writer.wait()
    report(results, job_alive)


def report(results: dict, job_alive: bool) -> None:
    dash, plain, attach = results["dashboard"], results["logs --follow"], results["attach --no-tui"]

    def ms(value):
        return "n/a" if value is None else f"{value * 1000:.0f} ms"

    def ratio(a, b):
        return "n/a" if not a or not b else f"{a / b:.1f}x"

    print()
    print("(a) start-up, from exec to:")
    home = results["home"]
    print(f"    loratui (home screen), first frame            {ms(home['first_paint'])}")
    print(f"    loratui (home screen), job list shown         {ms(home['ready'])}")
    print(f"    dashboard, first frame (job id on screen)     {ms(dash['first_paint'])}")
    print(f"    dashboard, history shown (step count)         {ms(dash['ready'])}")
    print(
        f"    baseline: attach --no-tui, summary line       {ms(attach['ready'])}   "
        f"(dashboard/baseline: {ratio(dash['ready'], attach['ready'])})"
    )
    print(f"    baseline: logs --follow, first line           {ms(plain['first_paint'])}")
    print(f"(b) CPU while following {EVENTS_PER_S} events/s (user+system / wall, over {dash['wall']:.1f} s):")
    print(f"    dashboard                                     {dash['cpu'] * 100:.1f}% of one core")
    print(
        f"    baseline: logs --follow                       {plain['cpu'] * 100:.1f}% of one core   "
        f"(dashboard/baseline: {ratio(dash['cpu'], plain['cpu'])})"
    )
    print("(c) bytes written to the terminal at steady state:")
    print(f"    dashboard                                     {dash['bytes_s'] / 1024:.1f} KiB/s")
    print(
        f"    baseline: logs --follow                       {plain['bytes_s'] / 1024:.2f} KiB/s   "
        f"(dashboard/baseline: {ratio(dash['bytes_s'], plain['bytes_s'])})"
    )
    print()
    print(
        f"dashboard: closed with q, exit code {dash['exit']}; re-attach hint printed: {dash['hint']}; "
        f"job still running after it closed: {job_alive}; colours: {'24-bit' if dash['truecolor'] else '256-colour'} "
        f"escape codes; its whole life took {dash['total_cpu']:.2f} s of CPU (rusage)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the steady-state window")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after the first full frame before measuring")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (3 s windows)")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.settle = 3.0, 1.0
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
