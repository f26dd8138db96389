"""loratui.gpu: NVML readings (through a fake pynvml), Windows shared memory, the spill warning."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

from loratui.gpu import (
    GpuSnapshot,
    SpillDetector,
    Telemetry,
    describe,
    memory_pressure,
    process_memory,
    read_gpus,
    read_shared_usage,
    shared_memory,
)
from tests import fake_nvml
from tests.fake_nvml import GIB, FakeGpu

MIB = 1024**2


# -- no GPU ---------------------------------------------------------------------------------------


def test_real_pynvml_without_a_driver_gives_a_reason_not_an_exception():
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:  # pragma: no cover - only on a machine with an NVIDIA driver
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver")
    snapshot = read_gpus()
    assert snapshot.available is False
    assert snapshot.reason.startswith("no NVIDIA GPU")
    assert snapshot.devices == []
    assert describe(snapshot) == [snapshot.reason]


def test_without_the_pynvml_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    snapshot = read_gpus()
    assert snapshot.available is False
    assert snapshot.reason == "no NVIDIA GPU: the nvidia-ml-py package is not installed"


def test_driver_not_loaded(monkeypatch):
    fake_nvml.install(monkeypatch, [FakeGpu()], init_error=fake_nvml.NVML_ERROR_DRIVER_NOT_LOADED)
    snapshot = read_gpus()
    assert (snapshot.available, snapshot.reason) == (False, "no NVIDIA GPU: Driver Not Loaded")


def test_driver_without_devices(monkeypatch):
    nvml = fake_nvml.install(monkeypatch, [])
    snapshot = read_gpus()
    assert snapshot.available is False
    assert snapshot.reason == "no NVIDIA GPU: the NVIDIA driver sees no devices"
    assert nvml.shutdown_calls == 1


# -- a machine with GPUs ----------------------------------------------------------------------------


def two_gpus() -> list[FakeGpu]:
    return [
        FakeGpu(
            name="NVIDIA GeForce RTX 4090",
            uuid="GPU-aaaa",
            total=24 * GIB,
            used=20 * GIB,
            utilization=97,
            temperature=71,
            power_mw=402_500,
            power_limit_mw=450_000,
            compute=[(4242, 18 * GIB)],
        ),
        FakeGpu(
            name="NVIDIA RTX A4000",
            uuid="GPU-bbbb",
            total=16 * GIB,
            used=512 * MIB,
            utilization=0,
            temperature=35,
            power_mw=14_000,
            power_limit_mw=140_000,
        ),
    ]


def test_two_gpus_are_read_in_bytes_watts_and_degrees(monkeypatch):
    fake_nvml.install(monkeypatch, two_gpus())
    snapshot = read_gpus()
    assert snapshot.available and snapshot.reason is None
    assert snapshot.driver_version == "550.54.14"
    first, second = snapshot.devices
    assert (first.index, first.name, first.uuid) == (0, "NVIDIA GeForce RTX 4090", "GPU-aaaa")
    assert (first.memory_total, first.memory_used, first.memory_free) == (24 * GIB, 20 * GIB, 4 * GIB)
    assert first.memory_fraction == pytest.approx(20 / 24)
    assert first.utilization_gpu == 97
    assert first.temperature_c == 71
    assert first.power_w == pytest.approx(402.5)  # NVML's milliwatts -> watts
    assert first.power_limit_w == pytest.approx(450.0)
    assert [(p.pid, p.used_memory) for p in first.processes] == [(4242, 18 * GIB)]
    assert (second.index, second.name, second.memory_used, second.processes) == (1, "NVIDIA RTX A4000", 512 * MIB, [])


def test_describe_reads_like_a_small_nvidia_smi(monkeypatch):
    fake_nvml.install(monkeypatch, two_gpus())
    lines = describe(read_gpus())
    assert lines[0] == "NVIDIA driver 550.54.14, 2 GPUs"
    assert "GPU 0: NVIDIA GeForce RTX 4090 (GPU-aaaa)" in lines
    assert "  memory       20.0 / 24.0 GiB used (83%), 4.0 GiB free" in lines
    assert "  utilization  97%" in lines
    assert "  temperature  71 °C" in lines
    assert "  power        402 / 450 W" in lines
    assert "  process      pid 4242: 18.0 GiB" in lines
    assert "  memory       0.5 / 16.0 GiB used (3%), 15.5 GiB free" in lines
    assert "  processes    none" in lines
    assert "N/A" not in "\n".join(lines)


def test_unsupported_queries_are_none_and_shown_as_na(monkeypatch):
    # A consumer card under a restricted container: no power, no temperature, no utilization.
    gpu = FakeGpu(
        errors={
            "nvmlDeviceGetPowerUsage": fake_nvml.NVML_ERROR_NOT_SUPPORTED,
            "nvmlDeviceGetEnforcedPowerLimit": fake_nvml.NVML_ERROR_NOT_SUPPORTED,
            "nvmlDeviceGetTemperature": fake_nvml.NVML_ERROR_NO_PERMISSION,
            "nvmlDeviceGetUtilizationRates": fake_nvml.NVML_ERROR_NOT_SUPPORTED,
            "nvmlDeviceGetComputeRunningProcesses": fake_nvml.NVML_ERROR_NO_PERMISSION,
        }
    )
    fake_nvml.install(monkeypatch, [gpu])
    device = read_gpus().devices[0]
    assert device.power_w is None and device.power_limit_w is None
    assert device.temperature_c is None and device.utilization_gpu is None
    assert device.memory_total == 24 * GIB  # what is supported is still read
    lines = describe(read_gpus())
    assert "  utilization  N/A" in lines
    assert "  temperature  N/A" in lines
    assert "  power        N/A / N/A" in lines


def test_a_lost_gpu_is_listed_with_every_value_na(monkeypatch):
    lost = FakeGpu(errors={"nvmlDeviceGetHandleByIndex": fake_nvml.NVML_ERROR_GPU_IS_LOST})
    fake_nvml.install(monkeypatch, [FakeGpu(), lost])
    snapshot = read_gpus()
    assert [d.index for d in snapshot.devices] == [0, 1]  # indices stay those of nvidia-smi
    gone = snapshot.devices[1]
    assert gone.name is None and gone.memory_total is None and gone.processes == []
    lines = describe(snapshot)
    assert "GPU 1: N/A" in lines and "  memory       N/A" in lines


def test_telemetry_starts_nvml_once_and_close_shuts_it_down(monkeypatch):
    nvml = fake_nvml.install(monkeypatch, two_gpus())
    telemetry = Telemetry()
    for _ in range(3):
        assert telemetry.read().available
    assert nvml.init_calls == 1
    telemetry.close()
    assert nvml.shutdown_calls == 1
    assert telemetry.read().available  # a read after close starts a new session
    assert nvml.init_calls == 2
    telemetry.close()


def test_a_failed_start_is_not_retried_on_every_read(monkeypatch):
    nvml = fake_nvml.install(monkeypatch, [FakeGpu()], init_error=fake_nvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    telemetry = Telemetry()
    reasons = {telemetry.read().reason for _ in range(5)}
    assert reasons == {"no NVIDIA GPU: NVML Shared Library Not Found"}
    assert nvml.init_calls == 1


# -- per-process memory -----------------------------------------------------------------------------


def test_process_memory_adds_up_the_pid_over_gpus_and_merges_compute_with_graphics(monkeypatch):
    gpus = [
        # pid 7 has a compute and a graphics context on GPU 0: NVML reports the same total twice.
        # pid 10: the two lists disagree (or one cannot tell): the larger known figure is kept.
        FakeGpu(
            compute=[(7, 3 * GIB), (8, 1 * GIB), (10, GIB), (11, None)],
            graphics=[(7, 3 * GIB), (9, 200 * MIB), (10, 2 * GIB), (11, 300 * MIB)],
        ),
        FakeGpu(compute=[(7, 2 * GIB)]),
    ]
    fake_nvml.install(monkeypatch, gpus)
    snapshot = read_gpus()
    assert [(p.pid, p.used_memory) for p in snapshot.devices[0].processes] == [
        (7, 3 * GIB),
        (8, 1 * GIB),
        (9, 200 * MIB),
        (10, 2 * GIB),
        (11, 300 * MIB),
    ]
    assert process_memory(snapshot, 7) == 5 * GIB
    assert process_memory(snapshot, 9) == 200 * MIB
    assert process_memory(snapshot, 12345) is None  # not on any GPU (or a container's own pid)


def test_process_memory_is_none_under_windows_wddm(monkeypatch):
    # nvidia-ml-py turns NVML_VALUE_NOT_AVAILABLE into None; older pynvml passed 2**64-1 through.
    fake_nvml.install(monkeypatch, [FakeGpu(compute=[(7, None)], graphics=[(8, 2**64 - 1)])])
    snapshot = read_gpus()
    assert [(p.pid, p.used_memory) for p in snapshot.devices[0].processes] == [(7, None), (8, None)]
    assert process_memory(snapshot, 7) is None
    assert process_memory(snapshot, 8) is None
    assert "  process      pid 7: N/A" in describe(snapshot)


def test_old_driver_without_v3_process_queries_falls_back_to_v2(monkeypatch):
    fake_nvml.install(monkeypatch, [FakeGpu(compute=[(7, GIB)])], process_mismatch=True)
    assert process_memory(read_gpus(), 7) == GIB


def test_the_fake_matches_the_real_pynvml():
    """The fake's names, constants and error texts are those of the installed nvidia-ml-py."""
    import pynvml

    fake = fake_nvml.make_module([])
    for name in dir(fake):
        if name.startswith(("nvml", "NVML")):
            assert hasattr(pynvml, name), name
        if name.startswith("NVML_"):
            assert getattr(fake, name) == getattr(pynvml, name), name
    for code in (
        fake_nvml.NVML_ERROR_NOT_SUPPORTED,
        fake_nvml.NVML_ERROR_NO_PERMISSION,
        fake_nvml.NVML_ERROR_DRIVER_NOT_LOADED,
        fake_nvml.NVML_ERROR_LIBRARY_NOT_FOUND,
    ):
        real, ours = pynvml.NVMLError(code), fake.NVMLError(code)
        assert type(real).__name__ == type(ours).__name__
        assert str(real) == str(ours)
    assert not issubclass(pynvml.NVMLLibraryMismatchError, pynvml.NVMLError)
    assert pynvml.NVML_VALUE_NOT_AVAILABLE_ulonglong.value == 2**64 - 1


# -- Windows shared GPU memory ---------------------------------------------------------------------


def test_shared_memory_on_linux_explains_why_there_is_nothing_to_measure():
    reading = read_shared_usage(1234, platform="linux")
    assert reading.supported is False
    assert reading.process_shared_bytes is None and reading.adapter_shared_bytes is None
    assert "out-of-memory" in reading.reason and "system memory" in reading.reason


def test_shared_memory_on_macos_is_unsupported():
    reading = read_shared_usage(1234, platform="darwin")
    assert reading.supported is False and "Windows" in reading.reason


GPU = "luid_0x00000000_0x0000d1b5_phys_0"
IGPU = "luid_0x00000000_0x0000a0c2_phys_0"


def test_summarize_counts_only_the_pid_and_the_adapters_it_uses():
    process_items = [
        (f"pid_123_{GPU}", 1536 * MIB),
        (f"pid_123_{IGPU}", 64 * MIB),
        (f"pid_12_{GPU}", 999 * MIB),  # pid 12 is another process, not a prefix of 123
        (f"pid_1230_{GPU}", 999 * MIB),
    ]
    adapter_items = [(GPU, 3 * GIB), (IGPU, GIB), ("luid_0x00000000_0x0000ffff_phys_0", 5 * GIB)]
    reading = shared_memory.summarize(123, process_items, adapter_items)
    assert reading.supported and reading.reason is None
    assert reading.process_shared_bytes == 1600 * MIB
    assert reading.adapter_shared_bytes == 4 * GIB


def test_summarize_for_a_process_without_gpu_memory():
    reading = shared_memory.summarize(55, [(f"pid_123_{GPU}", GIB)], [(GPU, GIB)])
    assert (reading.supported, reading.process_shared_bytes, reading.adapter_shared_bytes) == (True, 0, None)


class FakePdh:
    """pdh.dll as read_counter_arrays uses it, filling the caller's buffer as documented: the
    PDH_FMT_COUNTERVALUE_ITEM_W array first, the instance names appended after it."""

    def __init__(self, counters: dict[str, list[tuple[str, int, int]]], *, add_error: int = 0, appear: int = 0) -> None:
        self.counters = counters  # path -> [(instance, value, CStatus)]
        self.paths: list[str] = []
        self.closed = False
        self.appear = appear  # instances that appear between the size query and the read, once
        item = shared_memory.pdh_item_type()

        def PdhOpenQueryW(source, user_data, query):
            query[0] = 0x51
            return 0

        def PdhAddEnglishCounterW(query, path, user_data, counter):
            assert query.value == 0x51
            if add_error:
                return add_error
            self.paths.append(path)
            counter[0] = len(self.paths)
            return 0

        def PdhCollectQueryData(query):
            return 0

        def PdhGetFormattedCounterArrayW(counter, fmt, size, count, items):
            assert fmt == shared_memory.PDH_FMT_LARGE
            entries = self.counters[self.paths[counter.value - 1]]
            need = len(entries) * ctypes.sizeof(item) + sum(
                (len(n) + 1) * ctypes.sizeof(ctypes.c_wchar) for n, _, _ in entries
            )
            if items and self.appear:  # a process started since the size query: more data now
                self.appear = 0
                size[0] = need + 64
                return shared_memory.PDH_MORE_DATA
            if not items or size[0] < need:
                size[0] = need
                return shared_memory.PDH_MORE_DATA
            base = ctypes.addressof(items.contents)
            names = base + len(entries) * ctypes.sizeof(item)
            for i, (name, value, status) in enumerate(entries):
                text = ctypes.create_unicode_buffer(name)
                ctypes.memmove(names, text, ctypes.sizeof(text))
                items[i].szName = names
                items[i].FmtValue.CStatus = status
                items[i].FmtValue.largeValue = value
                names += ctypes.sizeof(text)
            count[0] = len(entries)
            return 0

        def PdhCloseQuery(query):
            self.closed = True
            return 0

        for function in (
            PdhOpenQueryW,
            PdhAddEnglishCounterW,
            PdhCollectQueryData,
            PdhGetFormattedCounterArrayW,
            PdhCloseQuery,
        ):
            setattr(self, function.__name__, function)


def test_pdh_structures_have_the_windows_x64_layout():
    item = shared_memory.pdh_item_type()
    value = dict(item._fields_)["FmtValue"]  # PDH_FMT_COUNTERVALUE
    assert ctypes.sizeof(value) == 16 and value.CStatus.offset == 0 and value.largeValue.offset == 8
    assert ctypes.sizeof(item) == 24 and item.szName.offset == 0 and item.FmtValue.offset == 8


def test_read_counter_arrays_copies_names_and_values_and_skips_invalid_data():
    pdh = FakePdh(
        {
            shared_memory.PROCESS_COUNTER: [(f"pid_7_{GPU}", 3 * GIB, 0), (f"pid_8_{GPU}", 5, 0xC0000BBA)],
            shared_memory.ADAPTER_COUNTER: [(GPU, 4 * GIB, 1)],
        },
        appear=1,
    )
    process_items, adapter_items = shared_memory.read_counter_arrays(
        pdh, [shared_memory.PROCESS_COUNTER, shared_memory.ADAPTER_COUNTER]
    )
    assert process_items == [(f"pid_7_{GPU}", 3 * GIB)]
    assert adapter_items == [(GPU, 4 * GIB)]
    assert pdh.closed


def test_read_shared_usage_on_windows_through_pdh(monkeypatch):
    pdh = FakePdh(
        {
            shared_memory.PROCESS_COUNTER: [(f"pid_7_{GPU}", 2 * GIB, 0)],
            shared_memory.ADAPTER_COUNTER: [(GPU, 3 * GIB, 0), (IGPU, GIB, 0)],
        }
    )
    monkeypatch.setattr(ctypes, "WinDLL", lambda name: pdh, raising=False)
    reading = read_shared_usage(7, platform="win32")
    assert (reading.supported, reading.process_shared_bytes, reading.adapter_shared_bytes) == (True, 2 * GIB, 3 * GIB)


def test_windows_without_gpu_counters_is_unsupported_with_the_reason(monkeypatch):
    pdh = FakePdh({}, add_error=shared_memory.PDH_CSTATUS_NO_OBJECT)
    monkeypatch.setattr(ctypes, "WinDLL", lambda name: pdh, raising=False)
    reading = read_shared_usage(7, platform="win32")
    assert reading.supported is False
    assert "no GPU performance counters" in reading.reason
    assert pdh.closed


# -- the spill warning -------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run_steps(detector: SpillDetector, times: list[float], start: int = 1) -> list:
    return [w for w in (detector.observe_step(start + i, t) for i, t in enumerate(times)) if w]


def test_steady_steps_never_warn_even_with_full_memory():
    detector = SpillDetector(platform="linux")
    detector.observe_memory(23 * GIB, 24 * GIB, None)
    assert run_steps(detector, [1.0, 1.1, 0.9] * 40) == []


def test_slow_warm_up_steps_do_not_warn():
    detector = SpillDetector(platform="win32")
    assert detector.observe_memory(int(23.6 * GIB), 24 * GIB, 0) is None
    # The first steps compile kernels and fill caches: 20x slower than the rest, and then steady.
    assert run_steps(detector, [30.0, 20.0, 12.0, 8.0, 5.0] + [1.0] * 30) == []


def test_a_spill_right_after_a_slow_warm_up_is_still_caught():
    detector = SpillDetector(platform="win32")
    detector.observe_memory(int(23.6 * GIB), 24 * GIB, None)
    # Had the warm-up steps counted, the median would be 3 s and 4 s steps would look normal.
    warnings = run_steps(detector, [30.0, 20.0, 12.0, 8.0, 5.0] + [1.0] * 5 + [4.0] * 3)
    assert len(warnings) == 1 and "step time 4.0 s vs 1.0 s median" in warnings[0].message


def test_one_slow_step_is_not_a_spill():
    detector = SpillDetector(platform="win32")
    detector.observe_memory(int(23.6 * GIB), 24 * GIB, 0)
    assert run_steps(detector, [1.0] * 20 + [15.0] + [1.0] * 20) == []  # e.g. a checkpoint save


def test_ten_times_slower_with_memory_at_98_percent_warns_with_the_figures():
    detector = SpillDetector(platform="win32")
    run_steps(detector, [5.0] * 5 + [1.1] * 20)
    detector.observe_memory(int(0.98 * 24 * GIB), 24 * GIB, None)
    warnings = run_steps(detector, [14.2] * 10, start=26)
    assert len(warnings) == 1
    warning = warnings[0]
    assert warning.code == "vram_spill"
    assert "spilling into system memory" in warning.message
    assert "PCIe" in warning.message
    assert "step time 14.2 s vs 1.1 s median" in warning.message
    assert "23.5 of 24.0 GiB used" in warning.message
    for fix in ("batch_size", "rank", "resolution", "gradient_checkpointing", "cache_latents", "AdamW8bit"):
        assert fix in warning.hint
    assert "Sysmem Fallback Policy" in warning.hint and "Prefer No Sysmem Fallback" in warning.hint


def test_ten_times_slower_with_memory_to_spare_is_not_a_spill():
    detector = SpillDetector(platform="win32")
    detector.observe_memory(12 * GIB, 24 * GIB, 0)
    assert run_steps(detector, [1.0] * 25 + [10.0] * 20) == []


def test_memory_reading_that_arrives_after_the_slow_steps_still_warns():
    detector = SpillDetector(platform="win32")
    run_steps(detector, [1.0] * 25 + [10.0] * 3)
    warning = detector.observe_memory(int(23.8 * GIB), 24 * GIB, None)
    assert warning is not None and "step time 10.0 s vs 1.0 s median" in warning.message


def test_growth_of_shared_memory_warns_once_not_every_step():
    detector = SpillDetector(platform="win32")
    # Some shared memory held from the start (e.g. pinned host buffers) is not a spill.
    assert detector.observe_memory(20 * GIB, 24 * GIB, 300 * MIB) is None
    assert run_steps(detector, [1.0] * 10) == []
    first = detector.observe_memory(int(23.9 * GIB), 24 * GIB, 300 * MIB + int(1.2 * GIB))
    assert first is not None and first.code == "vram_spill"
    assert "1.5 GiB in shared GPU memory, up 1.2 GiB" in first.message
    assert "Prefer No Sysmem Fallback" in first.hint
    later = [detector.observe_memory(int(23.9 * GIB), 24 * GIB, 300 * MIB + int(1.5 * GIB)) for _ in range(20)]
    later += run_steps(detector, [4.0] * 20, start=11)
    assert [w for w in later if w] == []


def test_a_long_spill_is_one_warning_and_stays_active_until_it_ends():
    clock = Clock()
    detector = SpillDetector(platform="win32", quiet_seconds=0, clock=clock)
    detector.observe_memory(int(23.9 * GIB), 24 * GIB, None)
    run_steps(detector, [1.0] * 25)
    warnings = []
    for step in range(26, 226):  # 200 steps at 14 s: more than the 50-step window
        clock.now += 14
        warnings += [w for w in [detector.observe_step(step, 14.0)] if w]
        if step > 28:
            assert detector.active, step
    assert len(warnings) == 1
    run_steps(detector, [1.0] * 3, start=226)  # batch size lowered, steps fast again
    assert not detector.active


def test_shared_memory_baseline_is_the_lowest_reading():
    detector = SpillDetector(platform="win32")
    # Loading the model stages weights in pinned memory for a moment, then releases it.
    assert detector.observe_memory(10 * GIB, 24 * GIB, GIB) is None
    assert detector.observe_memory(18 * GIB, 24 * GIB, 200 * MIB) is None
    assert detector.observe_memory(24 * GIB, 24 * GIB, 700 * MIB) is not None


def test_a_new_episode_warns_again_but_not_within_the_quiet_period():
    clock = Clock()
    detector = SpillDetector(platform="win32", quiet_seconds=600, clock=clock)
    detector.observe_memory(20 * GIB, 24 * GIB, 0)
    assert detector.observe_memory(24 * GIB, 24 * GIB, GIB) is not None
    assert detector.observe_memory(20 * GIB, 24 * GIB, 0) is None  # cleared (batch size lowered)
    clock.now += 60
    assert detector.observe_memory(24 * GIB, 24 * GIB, GIB) is None  # back, but a minute later
    assert detector.observe_memory(20 * GIB, 24 * GIB, 0) is None
    clock.now += 600
    assert detector.observe_memory(24 * GIB, 24 * GIB, GIB) is not None


def test_windows_setting_is_only_suggested_where_it_exists():
    detector = SpillDetector(platform="linux")
    detector.observe_memory(int(23.9 * GIB), 24 * GIB, None)
    warnings = run_steps(detector, [1.0] * 25 + [12.0] * 5)
    assert len(warnings) == 1
    assert "Sysmem Fallback" not in warnings[0].hint
    assert "gradient_checkpointing" in warnings[0].hint
    # Linux has no shared memory to spill into: the message must not claim a spill.
    assert "spilling" not in warnings[0].message
    assert "step time 12.0 s vs 1.0 s median" in warnings[0].message


def test_shared_memory_seen_means_windows_whatever_platform_was_assumed():
    # The TUI runs on a Mac, the engine on a rented Windows box: the counter reading proves it.
    detector = SpillDetector(platform="darwin")
    detector.observe_memory(20 * GIB, 24 * GIB, 100 * MIB)
    warning = detector.observe_memory(24 * GIB, 24 * GIB, GIB)
    assert warning is not None
    assert "spilling into system memory" in warning.message
    assert "Prefer No Sysmem Fallback" in warning.hint


def test_a_new_run_restarts_the_warm_up():
    detector = SpillDetector(platform="win32")
    detector.observe_memory(int(23.9 * GIB), 24 * GIB, None)
    run_steps(detector, [1.0] * 30, start=100)
    # Resumed from an earlier checkpoint: slow warm-up steps again, which must not warn.
    assert run_steps(detector, [12.0, 10.0, 9.0, 8.0, 6.0] + [1.0] * 10, start=50) == []


def test_memory_pressure_levels():
    assert memory_pressure(None, 24 * GIB).level == "unknown"
    assert memory_pressure(10 * GIB, 0).level == "unknown"
    assert memory_pressure(12 * GIB, 24 * GIB).level == "ok"
    assert memory_pressure(21 * GIB, 24 * GIB).level == "high"
    pressure = memory_pressure(int(23.5 * GIB), 24 * GIB)
    assert pressure.level == "critical" and pressure.fraction == pytest.approx(23.5 / 24)


# -- import cost --------------------------------------------------------------------------------------


def test_importing_loratui_gpu_loads_neither_torch_nor_pynvml():
    code = (
        "import sys, loratui.gpu, loratui.gpu.nvml, loratui.gpu.shared_memory, loratui.gpu.spill\n"
        "print(sorted(m for m in ('torch', 'pynvml', 'textual') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_an_empty_snapshot_describes_itself():
    assert describe(GpuSnapshot(False, None, None, [], 0.0)) == ["no NVIDIA GPU"]
