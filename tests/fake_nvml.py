"""A stand-in for the ``pynvml`` module (nvidia-ml-py), to test loratui.gpu without a GPU.

It copies what the real module (nvidia-ml-py 13) does at the edges loratui touches:
- errors: ``NVMLError(code)`` turns itself into the subclass for the code
  (``NVMLError_NotSupported``...), ``str()`` gives NVML's text; ``NVMLLibraryMismatchError`` is a
  separate Exception, raised by the unversioned process queries on old drivers;
- calls before ``nvmlInit`` (or after ``nvmlShutdown``) raise ``NVMLError_Uninitialized``;
- names, UUIDs and the driver version are ``str``; memory info has ``total``, ``free``, ``used``
  in bytes; power is in milliwatts; temperature in °C; utilization has ``gpu`` and ``memory``;
- processes are objects with ``pid`` and ``usedGpuMemory`` (None under Windows WDDM);
- the compute capability is a ``(major, minor)`` tuple of ints.

Build one per test with :func:`make_module` and put it in ``sys.modules["pynvml"]``
(:func:`install` does that with monkeypatch).
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_UNKNOWN = 999
NVML_TEMPERATURE_GPU = 0

_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


class NVMLLibraryMismatchError(Exception):
    pass


class NVMLError(Exception):
    _valClassMapping: dict[int, type] = {}

    def __new__(cls, value: int = NVML_ERROR_UNKNOWN):
        if cls is NVMLError:
            cls = NVMLError._valClassMapping.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, f"NVML Error with code {self.value}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NVMLError) and self.value == other.value

    __hash__ = Exception.__hash__


def _error_class(name: str, code: int) -> type:
    # As pynvml's _extractNVMLErrorsAsClasses: NVML_ERROR_NOT_SUPPORTED -> NVMLError_NotSupported.
    def new(cls, *args):
        return NVMLError.__new__(cls, code)

    cls = type(name, (NVMLError,), {"__new__": new})
    NVMLError._valClassMapping[code] = cls
    return cls


NVMLError_Uninitialized = _error_class("NVMLError_Uninitialized", NVML_ERROR_UNINITIALIZED)
NVMLError_InvalidArgument = _error_class("NVMLError_InvalidArgument", NVML_ERROR_INVALID_ARGUMENT)
NVMLError_NotSupported = _error_class("NVMLError_NotSupported", NVML_ERROR_NOT_SUPPORTED)
NVMLError_NoPermission = _error_class("NVMLError_NoPermission", NVML_ERROR_NO_PERMISSION)
NVMLError_DriverNotLoaded = _error_class("NVMLError_DriverNotLoaded", NVML_ERROR_DRIVER_NOT_LOADED)
NVMLError_LibraryNotFound = _error_class("NVMLError_LibraryNotFound", NVML_ERROR_LIBRARY_NOT_FOUND)
NVMLError_FunctionNotFound = _error_class("NVMLError_FunctionNotFound", NVML_ERROR_FUNCTION_NOT_FOUND)
NVMLError_GpuIsLost = _error_class("NVMLError_GpuIsLost", NVML_ERROR_GPU_IS_LOST)
NVMLError_Unknown = _error_class("NVMLError_Unknown", NVML_ERROR_UNKNOWN)

GIB = 1024**3


@dataclass
class FakeGpu:
    name: str = "NVIDIA GeForce RTX 4090"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    total: int = 24 * GIB  # bytes
    used: int = 2 * GIB  # bytes; free = total - used
    utilization: int = 0  # percent
    temperature: int = 40  # °C
    power_mw: int = 30_000  # milliwatts, as NVML reports them
    power_limit_mw: int = 450_000
    compute_capability: tuple[int, int] = (8, 9)  # (major, minor): an RTX 4090 is 8.9
    compute: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, bytes or None)
    graphics: list[tuple[int, int | None]] = field(default_factory=list)
    # Function name -> NVML error code that call raises for this GPU (e.g. NOT_SUPPORTED).
    errors: dict[str, int] = field(default_factory=dict)


class _Handle:
    """Opaque, like pynvml's c_nvmlDevice_t."""

    def __init__(self, gpu: FakeGpu) -> None:
        self.gpu = gpu


def make_module(
    gpus: list[FakeGpu],
    *,
    driver_version: str = "550.54.14",
    init_error: int | None = None,
    process_mismatch: bool = False,
) -> types.ModuleType:
    """A fresh fake ``pynvml``. ``init_error``: the code nvmlInit fails with (no driver...).

    ``process_mismatch``: the unversioned process queries raise NVMLLibraryMismatchError, as
    nvidia-ml-py does on a driver without the _v3 functions; the _v2 ones still work.
    The module counts ``init_calls`` and ``shutdown_calls``.
    """
    mod = types.ModuleType("pynvml")
    state = {"initialized": False}
    mod.init_calls = 0
    mod.shutdown_calls = 0

    def require_init() -> None:
        if not state["initialized"]:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    def gpu_call(name: str, handle: _Handle) -> FakeGpu:
        require_init()
        code = handle.gpu.errors.get(name)
        if code is not None:
            raise NVMLError(code)
        return handle.gpu

    def nvmlInit() -> None:
        mod.init_calls += 1
        if init_error is not None:
            raise NVMLError(init_error)
        state["initialized"] = True

    def nvmlShutdown() -> None:
        require_init()
        mod.shutdown_calls += 1
        state["initialized"] = False

    def nvmlSystemGetDriverVersion() -> str:
        require_init()
        return driver_version

    def nvmlDeviceGetCount() -> int:
        require_init()
        return len(gpus)

    def nvmlDeviceGetHandleByIndex(index: int) -> _Handle:
        require_init()
        if not 0 <= index < len(gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        handle = _Handle(gpus[index])
        gpu_call("nvmlDeviceGetHandleByIndex", handle)
        return handle

    def nvmlDeviceGetName(handle: _Handle) -> str:
        return gpu_call("nvmlDeviceGetName", handle).name

    def nvmlDeviceGetUUID(handle: _Handle) -> str:
        return gpu_call("nvmlDeviceGetUUID", handle).uuid

    def nvmlDeviceGetMemoryInfo(handle: _Handle, version: int | None = None) -> types.SimpleNamespace:
        gpu = gpu_call("nvmlDeviceGetMemoryInfo", handle)
        return types.SimpleNamespace(total=gpu.total, free=gpu.total - gpu.used, used=gpu.used)

    def nvmlDeviceGetUtilizationRates(handle: _Handle) -> types.SimpleNamespace:
        gpu = gpu_call("nvmlDeviceGetUtilizationRates", handle)
        return types.SimpleNamespace(gpu=gpu.utilization, memory=0)

    def nvmlDeviceGetTemperature(handle: _Handle, sensor: int) -> int:
        if sensor != NVML_TEMPERATURE_GPU:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return gpu_call("nvmlDeviceGetTemperature", handle).temperature

    def nvmlDeviceGetPowerUsage(handle: _Handle) -> int:
        return gpu_call("nvmlDeviceGetPowerUsage", handle).power_mw

    def nvmlDeviceGetEnforcedPowerLimit(handle: _Handle) -> int:
        return gpu_call("nvmlDeviceGetEnforcedPowerLimit", handle).power_limit_mw

    def nvmlDeviceGetCudaComputeCapability(handle: _Handle) -> tuple[int, int]:
        return gpu_call("nvmlDeviceGetCudaComputeCapability", handle).compute_capability

    def processes(entries: list[tuple[int, int | None]]) -> list[types.SimpleNamespace]:
        return [
            types.SimpleNamespace(pid=pid, usedGpuMemory=used, gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF)
            for pid, used in entries
        ]

    def nvmlDeviceGetComputeRunningProcesses_v2(handle: _Handle) -> list[types.SimpleNamespace]:
        return processes(gpu_call("nvmlDeviceGetComputeRunningProcesses", handle).compute)

    def nvmlDeviceGetGraphicsRunningProcesses_v2(handle: _Handle) -> list[types.SimpleNamespace]:
        return processes(gpu_call("nvmlDeviceGetGraphicsRunningProcesses", handle).graphics)

    def unversioned(v2):
        def call(handle: _Handle) -> list[types.SimpleNamespace]:
            if process_mismatch:
                raise NVMLLibraryMismatchError(
                    "Unversioned function called and the pyNVML version does not match the NVML lib version."
                )
            return v2(handle)

        return call

    for name, value in list(locals().items()):
        if name.startswith("nvml"):
            setattr(mod, name, value)
    mod.nvmlDeviceGetComputeRunningProcesses = unversioned(nvmlDeviceGetComputeRunningProcesses_v2)
    mod.nvmlDeviceGetGraphicsRunningProcesses = unversioned(nvmlDeviceGetGraphicsRunningProcesses_v2)
    for name, value in globals().items():
        if name.startswith(("NVML", "NVMLError")):
            setattr(mod, name, value)
    return mod


def install(monkeypatch, gpus: list[FakeGpu], **options) -> types.ModuleType:
    """Put a fake pynvml in sys.modules for this test only; returns it."""
    import sys

    mod = make_module(gpus, **options)
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    return mod
