"""Windows "shared GPU memory": how much of the training's GPU memory lives in system RAM.

Since driver 536.40 the NVIDIA driver on Windows lets CUDA allocations that do not fit in VRAM
fall back to system memory, which the GPU reaches over PCIe. Training then keeps running, several
times slower. NVML cannot see that memory; Windows counts it in its performance counters
``\\GPU Process Memory(pid_<PID>_luid_..._phys_N)\\Shared Usage`` (per process and adapter) and
``\\GPU Adapter Memory(luid_..._phys_N)\\Shared Usage`` (per adapter), both in bytes. They are
read here through pdh.dll with ctypes, so no extra package is needed.

NOT RUN HERE: the pdh.dll calls were written from Microsoft's documentation and are exercised in
the tests only against a fake pdh.dll, on Linux. That is why the Windows path is small, and why
any failure in it becomes ``supported=False`` with the reason instead of an exception.
"""

from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass
from typing import Any

LINUX_REASON = (
    "Linux has no shared GPU memory: when VRAM is full, CUDA stops with an out-of-memory error "
    "instead of falling back to system memory, so there is nothing to measure."
)
OTHER_REASON = (
    "Shared GPU memory is a feature of the NVIDIA driver on Windows; there is nothing to measure on {platform}."
)

# English counter names (PdhAddEnglishCounterW), so the query works on any Windows language.
# Every instance is read and filtered here by name: that avoids relying on partial-wildcard
# matching of instance names such as "pid_1234_*".
PROCESS_COUNTER = "\\GPU Process Memory(*)\\Shared Usage"
ADAPTER_COUNTER = "\\GPU Adapter Memory(*)\\Shared Usage"

# From pdh.h / pdhmsg.h.
ERROR_SUCCESS = 0
PDH_FMT_LARGE = 0x00000400
PDH_CSTATUS_VALID_DATA = 0x00000000
PDH_CSTATUS_NEW_DATA = 0x00000001
PDH_MORE_DATA = 0x800007D2
PDH_NO_DATA = 0x800007D5
PDH_CSTATUS_NO_OBJECT = 0xC0000BB8
PDH_CSTATUS_NO_COUNTER = 0xC0000BB9

_KNOWN_STATUS = {
    PDH_CSTATUS_NO_OBJECT: "this Windows has no GPU performance counters (Windows 10 1709 or later has them)",
    PDH_CSTATUS_NO_COUNTER: 'this Windows has no "Shared Usage" GPU counter',
}
_LUID = re.compile(r"luid_0x[0-9a-f]+_0x[0-9a-f]+", re.IGNORECASE)


@dataclass(frozen=True)
class SharedMemoryReading:
    supported: bool
    process_shared_bytes: int | None  # the process's shared GPU memory, summed over adapters
    adapter_shared_bytes: int | None  # all processes' shared memory on the adapters it uses
    reason: str | None  # why there is no reading: a sentence the UI shows instead of a gauge


class PdhError(OSError):
    def __init__(self, function: str, status: int) -> None:
        self.status = status
        detail = _KNOWN_STATUS.get(status, f"PDH status 0x{status:08X}")
        super().__init__(f"{function}: {detail}")


def read_shared_usage(pid: int, *, platform: str | None = None) -> SharedMemoryReading:
    """Shared GPU memory of process ``pid`` (Windows only; elsewhere supported=False, with why)."""
    platform = sys.platform if platform is None else platform
    if platform.startswith("linux"):
        return SharedMemoryReading(False, None, None, LINUX_REASON)
    if not platform.startswith("win"):
        return SharedMemoryReading(False, None, None, OTHER_REASON.format(platform=platform))
    try:
        import ctypes

        pdh = ctypes.WinDLL("pdh.dll")  # type: ignore[attr-defined]  # exists on Windows only
        process_items, adapter_items = read_counter_arrays(pdh, [PROCESS_COUNTER, ADAPTER_COUNTER])
    except Exception as exc:  # noqa: BLE001 - untested native code must never crash the UI
        return SharedMemoryReading(False, None, None, f"could not read the Windows GPU memory counters: {exc}")
    return summarize(pid, process_items, adapter_items)


def summarize(
    pid: int, process_items: list[tuple[str, int]], adapter_items: list[tuple[str, int]]
) -> SharedMemoryReading:
    """Turn the counters' (instance name, bytes) pairs into the reading for ``pid``.

    A process with no instance has no GPU memory at all (yet): its shared usage is 0 and, as it
    uses no adapter, the adapter figure is unknown.
    """
    prefix = f"pid_{pid}_"  # the trailing "_" keeps pid 12 from matching pid 123
    mine = [(name, value) for name, value in process_items if name.startswith(prefix)]
    luids = {_luid(name) for name, _ in mine} - {None}
    # Only the adapters this process uses: on a laptop the integrated GPU's memory is all shared.
    adapters = [value for name, value in adapter_items if _luid(name) in luids]
    return SharedMemoryReading(
        supported=True,
        process_shared_bytes=sum(value for _, value in mine),
        adapter_shared_bytes=sum(adapters) if adapters else None,
        reason=None,
    )


def read_counter_arrays(pdh: Any, paths: list[str]) -> list[list[tuple[str, int]]]:
    """Sample the wildcard counters ``paths`` once; for each, its (instance, value) pairs.

    One query per reading, opened and closed here: a caller polling every second or two pays a
    few milliseconds and never holds a PDH handle across errors. "Shared Usage" is a raw byte
    count, so one PdhCollectQueryData is enough (rate counters would need two).
    """
    import ctypes

    _declare(pdh)
    query = ctypes.c_void_p()
    _check("PdhOpenQueryW", pdh.PdhOpenQueryW(None, 0, ctypes.pointer(query)))
    try:
        counters = []
        for path in paths:
            counter = ctypes.c_void_p()
            _check("PdhAddEnglishCounterW", pdh.PdhAddEnglishCounterW(query, path, 0, ctypes.pointer(counter)))
            counters.append(counter)
        _check("PdhCollectQueryData", pdh.PdhCollectQueryData(query))
        return [_formatted_array(pdh, counter) for counter in counters]
    finally:
        pdh.PdhCloseQuery(query)  # also frees the counters


def _formatted_array(pdh: Any, counter: Any) -> list[tuple[str, int]]:
    import ctypes

    item_type = pdh_item_type()
    # The documented two calls: ask for the size with a NULL buffer, then fill a buffer that
    # size. A process may start between them and make the buffer too small: ask again then.
    for _attempt in range(3):
        size, count = ctypes.c_uint32(0), ctypes.c_uint32(0)
        status = pdh.PdhGetFormattedCounterArrayW(
            counter, PDH_FMT_LARGE, ctypes.pointer(size), ctypes.pointer(count), None
        )
        if status in (ERROR_SUCCESS, PDH_NO_DATA):
            return []  # no instance at all
        if status != PDH_MORE_DATA:
            raise PdhError("PdhGetFormattedCounterArrayW", status)
        # The array of items comes first, their names are appended after it: one raw buffer.
        buffer = ctypes.create_string_buffer(size.value)
        items = ctypes.cast(buffer, ctypes.POINTER(item_type))
        status = pdh.PdhGetFormattedCounterArrayW(
            counter, PDH_FMT_LARGE, ctypes.pointer(size), ctypes.pointer(count), items
        )
        if status == PDH_MORE_DATA:
            continue
        _check("PdhGetFormattedCounterArrayW", status)
        # Copy names and values out while ``buffer`` is alive; skip instances without valid data.
        return [
            (items[i].szName or "", int(items[i].FmtValue.largeValue))
            for i in range(count.value)
            if items[i].FmtValue.CStatus in (PDH_CSTATUS_VALID_DATA, PDH_CSTATUS_NEW_DATA)
        ]
    raise PdhError("PdhGetFormattedCounterArrayW", PDH_MORE_DATA)


@functools.cache
def pdh_item_type() -> type:
    """PDH_FMT_COUNTERVALUE_ITEM_W, built on first use so that importing this module is cheap.

    Fixed-width types (not ctypes.wintypes) so the layout is the same where the tests run:
    DWORD is 32 bits, LONG is 32 bits, LONGLONG 64. On 64-bit Windows the value struct is 16
    bytes (DWORD, padding, 8-byte union) and the item 24 (name pointer, value).
    """
    import ctypes

    class _Value(ctypes.Union):
        _fields_ = [
            ("longValue", ctypes.c_int32),
            ("doubleValue", ctypes.c_double),
            ("largeValue", ctypes.c_int64),
            ("AnsiStringValue", ctypes.c_char_p),
            ("WideStringValue", ctypes.c_wchar_p),
        ]

    class PDH_FMT_COUNTERVALUE(ctypes.Structure):  # noqa: N801 - the Windows name
        _anonymous_ = ("_value",)
        _fields_ = [("CStatus", ctypes.c_uint32), ("_value", _Value)]

    class PDH_FMT_COUNTERVALUE_ITEM_W(ctypes.Structure):  # noqa: N801 - the Windows name
        _fields_ = [("szName", ctypes.c_wchar_p), ("FmtValue", PDH_FMT_COUNTERVALUE)]

    return PDH_FMT_COUNTERVALUE_ITEM_W


def _declare(pdh: Any) -> None:
    """Argument and result types, so ctypes passes 64-bit handles and pointers intact."""
    import ctypes

    handle, dword = ctypes.c_void_p, ctypes.c_uint32
    signatures = {
        "PdhOpenQueryW": [ctypes.c_wchar_p, ctypes.c_size_t, ctypes.POINTER(handle)],
        "PdhAddEnglishCounterW": [handle, ctypes.c_wchar_p, ctypes.c_size_t, ctypes.POINTER(handle)],
        "PdhCollectQueryData": [handle],
        "PdhGetFormattedCounterArrayW": [
            handle,
            dword,
            ctypes.POINTER(dword),
            ctypes.POINTER(dword),
            ctypes.POINTER(pdh_item_type()),
        ],
        "PdhCloseQuery": [handle],
    }
    for name, argtypes in signatures.items():
        function = getattr(pdh, name)
        function.argtypes = argtypes
        # PDH_STATUS is a LONG; read it unsigned so it compares with the 0x8000_0000+ codes.
        function.restype = ctypes.c_uint32


def _check(function: str, status: int) -> None:
    if status != ERROR_SUCCESS:
        raise PdhError(function, status)


def _luid(instance: str) -> str | None:
    match = _LUID.search(instance)
    return match.group(0).lower() if match else None
