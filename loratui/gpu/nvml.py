"""A typed, crash-free view of the NVIDIA GPUs through NVML (the library behind nvidia-smi).

Every value a query can fail to give is ``None`` (shown as ``N/A``): consumer cards refuse some
queries (NotSupported), containers refuse others (NoPermission), a GPU can fall off the bus
mid-run (GpuIsLost). None of that may crash the terminal that shows the training progress.
Without a driver, or without the nvidia-ml-py package, the snapshot says so in ``reason``.

``pynvml`` is imported only when a reading is taken, so ``import loratui.gpu`` stays cheap and
works on machines without it. Units are the raw ones a caller can compute with: bytes, percent,
degrees Celsius, watts. Formatting is the caller's job, except for :func:`describe`, which gives
the plain lines of ``loratui gpu``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypeVar

T = TypeVar("T")

NO_GPU = "no NVIDIA GPU"
NA = "N/A"
MIB = 1024**2
GIB = 1024**3
# NVML's "not available" for 64-bit values (NVML_VALUE_NOT_AVAILABLE_ulonglong). nvidia-ml-py 12+
# already turns a process's usedGpuMemory into None on WDDM; older releases passed it through.
_NOT_AVAILABLE_U64 = 2**64 - 1


@dataclass(frozen=True)
class GpuProcess:
    """A process with a CUDA or graphics context on one GPU."""

    pid: int
    # Bytes of this GPU's memory the process holds. None under Windows WDDM, where the OS, not
    # the NVIDIA driver, manages GPU memory and NVML cannot attribute it to processes.
    used_memory: int | None


@dataclass(frozen=True)
class GpuDevice:
    index: int
    name: str | None
    uuid: str | None
    memory_total: int | None  # bytes
    memory_used: int | None  # bytes (total - free: what other allocations cannot have)
    memory_free: int | None  # bytes
    utilization_gpu: int | None  # percent of the last sample period a kernel was running
    temperature_c: int | None
    power_w: float | None
    power_limit_w: float | None
    processes: list[GpuProcess] = field(default_factory=list)
    # CUDA compute capability (major, minor): what the GPU can compute in hardware, e.g. bf16
    # from 8.0 (Ampere) on. None when the driver will not say.
    compute_capability: tuple[int, int] | None = None

    @property
    def memory_fraction(self) -> float | None:
        """Used / total, or None when either is unknown."""
        if self.memory_used is None or not self.memory_total:
            return None
        return self.memory_used / self.memory_total


@dataclass(frozen=True)
class GpuSnapshot:
    available: bool
    reason: str | None  # why there is nothing to show, e.g. "no NVIDIA GPU: Driver Not Loaded"
    driver_version: str | None
    devices: list[GpuDevice]
    taken_at: float  # time.time() of the reading


class Telemetry:
    """Reads the GPUs again and again with one NVML session: init once, then cheap queries.

    The first :meth:`read` starts NVML. When that fails (no driver, no package) the failure is
    kept and every read returns it at once instead of retrying the slow library search each
    second. :meth:`close` ends the session; a later read starts a new one.
    """

    def __init__(self, *, with_processes: bool = True) -> None:
        self.with_processes = with_processes
        self._nvml: ModuleType | None = None
        self._failure: str | None = None
        self._handles: list[Any] = []
        self._driver_version: str | None = None

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def read(self) -> GpuSnapshot:
        if self._nvml is None and self._failure is None:
            self._start()
        if self._nvml is None:
            return GpuSnapshot(False, self._failure, None, [], time.time())
        nvml = self._nvml
        devices = [self._read_device(nvml, index, handle) for index, handle in enumerate(self._handles)]
        return GpuSnapshot(True, None, self._driver_version, devices, time.time())

    def close(self) -> None:
        nvml, self._nvml = self._nvml, None
        self._failure = None
        self._handles = []
        if nvml is not None:
            _query(nvml, nvml.nvmlShutdown)

    def _start(self) -> None:
        try:
            import pynvml as nvml
        except ImportError:
            self._failure = f"{NO_GPU}: the nvidia-ml-py package is not installed"
            return
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            self._failure = f"{NO_GPU}: {exc}"
            return
        count = _query(nvml, nvml.nvmlDeviceGetCount)
        if not count:
            _query(nvml, nvml.nvmlShutdown)
            self._failure = f"{NO_GPU}: the NVIDIA driver sees no devices"
            return
        self._nvml = nvml
        self._driver_version = _text(_query(nvml, nvml.nvmlSystemGetDriverVersion))
        # Handles stay valid for the whole session. A device whose handle cannot be had (e.g. one
        # the container may not see) is still listed, with every value N/A, so indices match
        # nvidia-smi's.
        self._handles = [_query(nvml, nvml.nvmlDeviceGetHandleByIndex, index) for index in range(count)]

    def _read_device(self, nvml: ModuleType, index: int, handle: Any) -> GpuDevice:
        if handle is None:
            return GpuDevice(index, None, None, None, None, None, None, None, None, None, [])
        memory = _query(nvml, nvml.nvmlDeviceGetMemoryInfo, handle)
        utilization = _query(nvml, nvml.nvmlDeviceGetUtilizationRates, handle)
        power_mw = _query(nvml, nvml.nvmlDeviceGetPowerUsage, handle)
        limit_mw = _query(nvml, nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
        return GpuDevice(
            index=index,
            name=_text(_query(nvml, nvml.nvmlDeviceGetName, handle)),
            uuid=_text(_query(nvml, nvml.nvmlDeviceGetUUID, handle)),
            # The v1 memory info: its "used" is total - free, reserved memory included. That is
            # the figure that tells how close the next allocation is to failing or spilling.
            memory_total=_int(getattr(memory, "total", None)),
            memory_used=_int(getattr(memory, "used", None)),
            memory_free=_int(getattr(memory, "free", None)),
            utilization_gpu=_int(getattr(utilization, "gpu", None)),
            temperature_c=_int(_query(nvml, nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)),
            power_w=None if power_mw is None else power_mw / 1000.0,  # NVML reports milliwatts
            power_limit_w=None if limit_mw is None else limit_mw / 1000.0,
            processes=_processes(nvml, handle) if self.with_processes else [],
            compute_capability=_compute_capability(nvml, handle),
        )


def read_gpus(*, with_processes: bool = True) -> GpuSnapshot:
    """One reading with its own NVML session, for one-off callers like ``loratui gpu``."""
    with Telemetry(with_processes=with_processes) as telemetry:
        return telemetry.read()


def process_memory(snapshot: GpuSnapshot, pid: int) -> int | None:
    """Bytes of GPU memory ``pid`` holds, summed over all GPUs.

    None when NVML does not list the pid or cannot tell its usage (Windows WDDM). Inside a
    container NVML lists host pids, so the engine's own pid is usually absent there: callers
    then fall back to the device's used memory.
    """
    known = [
        proc.used_memory
        for device in snapshot.devices
        for proc in device.processes
        if proc.pid == pid and proc.used_memory is not None
    ]
    return sum(known) if known else None


def describe(snapshot: GpuSnapshot) -> list[str]:
    """Plain lines in the spirit of nvidia-smi, N/A for every value the driver would not give."""
    if not snapshot.available:
        return [snapshot.reason or NO_GPU]
    count = len(snapshot.devices)
    lines = [f"NVIDIA driver {snapshot.driver_version or NA}, {count} GPU{'s' if count != 1 else ''}"]
    for dev in snapshot.devices:
        lines.append(f"GPU {dev.index}: {dev.name or NA}" + (f" ({dev.uuid})" if dev.uuid else ""))
        lines.append(f"  memory       {_memory_line(dev)}")
        lines.append(f"  utilization  {_or_na(dev.utilization_gpu, '{}%')}")
        lines.append(f"  temperature  {_or_na(dev.temperature_c, '{} °C')}")
        lines.append(f"  power        {_or_na(dev.power_w, '{:.0f}')} / {_or_na(dev.power_limit_w, '{:.0f} W')}")
        if not dev.processes:
            lines.append("  processes    none")
        for proc in dev.processes:
            used = NA if proc.used_memory is None else _size(proc.used_memory)
            lines.append(f"  process      pid {proc.pid}: {used}")
    return lines


def _processes(nvml: ModuleType, handle: Any) -> list[GpuProcess]:
    """Compute and graphics processes, one entry per pid.

    A process with both kinds of context is listed by both queries with the same total, so the
    two are merged, not added.
    """
    by_pid: dict[int, int | None] = {}
    for name in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        for info in _process_list(nvml, name, handle):
            pid = int(info.pid)
            used = _int(getattr(info, "usedGpuMemory", None))
            if pid not in by_pid or (used is not None and (by_pid[pid] is None or used > by_pid[pid])):
                by_pid[pid] = used
    return [GpuProcess(pid, used) for pid, used in sorted(by_pid.items())]


def _process_list(nvml: ModuleType, name: str, handle: Any) -> list[Any]:
    # The unversioned calls use the newest struct (_v3). Drivers older than the binding lack it,
    # and nvidia-ml-py then raises NVMLLibraryMismatchError (not an NVMLError): try _v2 then.
    for variant in (name, f"{name}_v2"):
        func = getattr(nvml, variant, None)
        if func is None:
            continue
        try:
            return list(func(handle))
        except _errors(nvml):
            continue
    return []


def _query(nvml: ModuleType, func: Callable[..., T], *args: Any) -> T | None:
    """Call one NVML function; any NVML failure (not supported, no permission, lost GPU) is None."""
    try:
        return func(*args)
    except _errors(nvml):
        return None


def _errors(nvml: ModuleType) -> tuple[type[BaseException], ...]:
    mismatch = getattr(nvml, "NVMLLibraryMismatchError", None)
    return (nvml.NVMLError, mismatch) if isinstance(mismatch, type) else (nvml.NVMLError,)


def _compute_capability(nvml: ModuleType, handle: Any) -> tuple[int, int] | None:
    # Old pynvml releases lack the call; NVML gives (major, minor), anything else is "not available".
    func = getattr(nvml, "nvmlDeviceGetCudaComputeCapability", None)
    value = None if func is None else _query(nvml, func, handle)
    if not isinstance(value, tuple) or len(value) != 2 or not all(isinstance(part, int) for part in value):
        return None
    major, minor = value
    return (major, minor) if major > 0 else None


def _text(value: object) -> str | None:
    # nvidia-ml-py 12+ returns str; older pynvml releases returned bytes.
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _int(value: object) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    number = int(value)  # type: ignore[call-overload]
    return None if number >= _NOT_AVAILABLE_U64 else number


def _or_na(value: float | int | None, template: str) -> str:
    return NA if value is None else template.format(value)


def _size(size: int) -> str:
    return f"{size / MIB:.0f} MiB" if size < GIB else f"{size / GIB:.1f} GiB"


def _memory_line(dev: GpuDevice) -> str:
    if dev.memory_total is None:
        return NA
    used = NA if dev.memory_used is None else f"{dev.memory_used / GIB:.1f}"
    text = f"{used} / {dev.memory_total / GIB:.1f} GiB used"
    fraction = dev.memory_fraction
    if fraction is not None:
        text += f" ({fraction:.0%})"
    if dev.memory_free is not None:
        text += f", {_size(dev.memory_free)} free"
    return text
