"""CPU and RAM use of the machine and of one process (the engine), read from Linux's ``/proc``.

What a dashboard shows when there is no NVIDIA GPU to watch: a run on the CPU is bound by its
cores and its memory. No dependency: ``/proc/stat``, ``/proc/meminfo`` and ``/proc/PID/stat`` /
``status`` are plain text. CPU use is a rate, so it takes two readings: :class:`HostTelemetry`
keeps the previous counters and the first reading has no CPU figures yet. Time is measured in
the kernel's own CPU ticks (the ``cpu`` line of ``/proc/stat``), not with a clock, so a reading
depends on the counters only. Elsewhere than Linux every figure is None ("N/A").

No UI code here (the dashboard imports it; so could a plain command).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")  # tests point this at a fake tree
NOT_LINUX = "CPU and RAM figures are read from Linux's /proc; this system has none"


@dataclass(frozen=True)
class HostReading:
    reason: str | None = None  # why there are no figures at all (not Linux)
    cpus: int | None = None  # logical CPUs
    cpu_busy: float | None = None  # fraction of all CPUs busy since the previous reading
    memory_total: int | None = None  # bytes
    memory_available: int | None = None  # bytes the kernel could give without swapping
    process_cpu: float | None = None  # cores the process kept busy since the previous reading (2.0: two cores)
    process_rss: int | None = None  # bytes of RAM the process holds

    @property
    def supported(self) -> bool:
        return self.reason is None

    @property
    def memory_used(self) -> int | None:
        if self.memory_total is None or self.memory_available is None:
            return None
        return max(0, self.memory_total - self.memory_available)


@dataclass(frozen=True)
class _Counters:
    total_ticks: int  # all CPUs, all states
    idle_ticks: int  # idle and waiting for I/O
    process_ticks: int | None  # the process's user + system time


class HostTelemetry:
    """Readings of the machine and of process ``pid`` (None: the machine only)."""

    def __init__(self, pid: int | None = None, proc: Path | None = None) -> None:
        self.pid = pid
        self.proc = proc if proc is not None else PROC
        self._previous: _Counters | None = None
        self._rates: tuple[float | None, float | None] = (None, None)  # the last (cpu_busy, process_cpu)

    def read(self) -> HostReading:
        if not (self.proc / "stat").is_file():
            return HostReading(reason=NOT_LINUX if sys.platform != "linux" else f"{self.proc}/stat cannot be read")
        cpu = _cpu_counters(self.proc / "stat")
        memory = _meminfo(self.proc / "meminfo")
        process_ticks = _process_ticks(self.proc, self.pid) if self.pid else None
        cpus, total, idle = cpu if cpu else (None, None, None)
        counters = _Counters(total, idle, process_ticks) if total is not None else None
        previous = self._previous
        if counters is not None and (previous is None or counters.total_ticks > previous.total_ticks):
            self._previous, self._rates = counters, _rates(previous, counters, cpus)
        # else: no tick has passed since the last reading (read twice at once): its rates stand;
        # or /proc/stat could not be read this time: no figures now, the next reading compares
        # with the last good one
        busy, process = self._rates if counters is not None else (None, None)
        if process_ticks is None:
            process = None  # the process has exited
        return HostReading(
            cpus=cpus,
            cpu_busy=busy,
            memory_total=memory.get("MemTotal"),
            memory_available=memory.get("MemAvailable"),
            process_cpu=process,
            process_rss=_process_rss(self.proc, self.pid) if self.pid else None,
        )


def _rates(previous: _Counters | None, now: _Counters, cpus: int | None) -> tuple[float | None, float | None]:
    """(fraction of the machine busy, cores the process used) between two readings."""
    if previous is None:
        return None, None
    elapsed = now.total_ticks - previous.total_ticks
    busy = min(1.0, max(0.0, 1 - (now.idle_ticks - previous.idle_ticks) / elapsed))
    process = None
    if now.process_ticks is not None and previous.process_ticks is not None and cpus:
        wall = elapsed / cpus  # the ticks of one CPU that passed between the readings: wall time, in ticks
        process = max(0.0, (now.process_ticks - previous.process_ticks) / wall)
    return busy, process


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None


def _cpu_counters(path: Path) -> tuple[int, int, int] | None:
    """(CPUs, total ticks, idle ticks) from /proc/stat."""
    text = _read(path)
    if text is None:
        return None
    total = idle = None
    cpus = 0
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if name == "cpu":
            # user nice system idle iowait irq softirq steal (guest time is already in user)
            values = [int(v) for v in rest.split()[:8]]
            if len(values) < 5:
                return None
            total, idle = sum(values), values[3] + values[4]
        elif name.startswith("cpu") and name[3:].isdigit():
            cpus += 1
    if total is None:
        return None
    return cpus or (os.cpu_count() or 1), total, idle


def _meminfo(path: Path) -> dict[str, int]:
    """Bytes per field of /proc/meminfo (the file says kB and means KiB)."""
    text = _read(path) or ""
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[name] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def _process_ticks(proc: Path, pid: int) -> int | None:
    text = _read(proc / str(pid) / "stat")
    if not text or ")" not in text:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: count fields after it.
    fields = text.rsplit(")", 1)[1].split()
    try:
        return int(fields[11]) + int(fields[12])  # utime and stime, fields 14 and 15
    except (IndexError, ValueError):
        return None


def _process_rss(proc: Path, pid: int) -> int | None:
    text = _read(proc / str(pid) / "status")
    for line in (text or "").splitlines():
        if line.startswith("VmRSS:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024
    return None
