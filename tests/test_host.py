"""CPU and RAM telemetry from /proc (loratui.host), on a fake /proc tree whose counters the test sets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from loratui.host import NOT_LINUX, HostTelemetry

GIB = 1024**3


def fake_proc(
    root: Path,
    *,
    total: int,
    idle: int,
    cpus: int = 4,
    pid: int | None = None,
    process_ticks: int = 0,
    rss_kib: int = 3 * 1024 * 1024,
    comm: str = "python",
) -> Path:
    """A /proc with the counters given: ``total`` ticks of all CPUs of which ``idle`` idle."""
    root.mkdir(exist_ok=True)
    if pid is not None:  # first: a reader that sees the new CPU counters sees the process's too
        folder = root / str(pid)
        folder.mkdir(exist_ok=True)
        utime, stime = process_ticks - process_ticks // 3, process_ticks // 3
        rest = " ".join(["S", "1", "1", "1", "0", "-1", "0", "0", "0", "0", "0", str(utime), str(stime)] + ["0"] * 38)
        _write(folder / "stat", f"{pid} ({comm}) {rest}\n")
        _write(folder / "status", f"Name:\t{comm}\nVmPeak:\t 9999999 kB\nVmRSS:\t {rss_kib} kB\nThreads:\t8\n")
    user = total - idle
    # user nice system idle iowait irq softirq steal guest guest_nice: idle is split over idle + iowait
    lines = [f"cpu  {user} 0 0 {idle - 10} 10 0 0 0 0 0"]
    lines += [f"cpu{n} 1 0 0 1 0 0 0 0 0 0" for n in range(cpus)]
    _write(
        root / "meminfo",
        f"MemTotal:       {16 * 1024 * 1024} kB\nMemFree:         1024 kB\n"
        f"MemAvailable:    {4 * 1024 * 1024} kB\nHugePages_Total:       0\n",
    )
    _write(root / "stat", "\n".join(lines + ["intr 1 2 3", "ctxt 42"]) + "\n")
    return root


def _write(path: Path, text: str) -> None:
    """Whole or not at all, as the kernel serves /proc: a reader in another thread never sees half."""
    partial = path.with_name(path.name + ".new")
    partial.write_text(text)
    partial.replace(path)


def test_machine_and_process_use_between_two_readings(tmp_path):
    proc = fake_proc(tmp_path / "proc", total=10_000, idle=6_000, pid=4242, process_ticks=1_000)
    telemetry = HostTelemetry(4242, proc=proc)
    first = telemetry.read()
    assert first.supported and first.cpus == 4
    assert first.cpu_busy is None and first.process_cpu is None  # a rate needs two readings
    assert first.memory_total == 16 * GIB and first.memory_used == 12 * GIB and first.process_rss == 3 * GIB
    # 400 ticks of 4 CPUs pass (100 ticks of wall time): 100 of them idle, 150 spent by the process
    fake_proc(proc, total=10_400, idle=6_100, pid=4242, process_ticks=1_150)
    second = telemetry.read()
    assert second.cpu_busy == 0.75 and second.process_cpu == 1.5
    # read again before a tick has passed: the rates stand, they do not vanish
    assert telemetry.read().cpu_busy == 0.75


def test_a_command_name_with_spaces_and_parentheses_is_read_right(tmp_path):
    proc = fake_proc(tmp_path / "proc", total=1_000, idle=500, pid=7, process_ticks=10, comm="py (x) y")
    telemetry = HostTelemetry(7, proc=proc)
    telemetry.read()
    fake_proc(proc, total=1_400, idle=500, pid=7, process_ticks=60, comm="py (x) y")
    assert telemetry.read().process_cpu == 0.5


def test_a_process_that_exited_has_no_figures_and_the_machine_still_does(tmp_path):
    proc = fake_proc(tmp_path / "proc", total=1_000, idle=500)
    reading = HostTelemetry(999_999, proc=proc).read()
    assert reading.process_rss is None and reading.process_cpu is None
    assert reading.memory_total == 16 * GIB


def test_without_proc_every_figure_is_missing_and_the_reason_is_given(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    reading = HostTelemetry(1, proc=tmp_path / "nothing").read()
    assert not reading.supported and reading.reason == NOT_LINUX
    assert reading.memory_total is None and reading.cpu_busy is None


def test_the_real_proc_of_this_machine(tmp_path):
    if not Path("/proc/stat").is_file():
        pytest.skip("not Linux: the test above covers a system without /proc")
    reading = HostTelemetry(os.getpid()).read()
    assert reading.supported and reading.cpus and reading.cpus >= 1
    assert reading.memory_total and reading.memory_available is not None
    assert reading.process_rss and reading.process_rss > 1024 * 1024  # this Python holds more than a MiB


def test_host_telemetry_imports_no_textual():
    code = "import sys, loratui.host\nassert 'textual' not in sys.modules\nprint('ok')"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_a_reading_that_fails_does_not_lose_the_rates_to_come(tmp_path):
    proc = fake_proc(tmp_path / "proc", total=10_000, idle=6_000)
    telemetry = HostTelemetry(None, proc=proc)
    telemetry.read()
    (proc / "stat").write_text("")  # caught half-written, or unreadable for a moment
    assert telemetry.read().cpu_busy is None
    fake_proc(proc, total=10_400, idle=6_100)
    assert telemetry.read().cpu_busy == 0.75  # compared with the last good reading
