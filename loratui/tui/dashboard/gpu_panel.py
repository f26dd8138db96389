"""The GPUs: dedicated VRAM gauge, shared memory, load, temperature and power, per GPU.

Figures come from NVML (:mod:`loratui.gpu`), read by a worker every two seconds. The dedicated
gauge turns yellow above 85% and red above 95% (:func:`loratui.gpu.memory_pressure`). Shared GPU
memory (VRAM spilled into system RAM) exists only with the NVIDIA driver on Windows; elsewhere
the panel says why there is nothing to measure instead of drawing an empty gauge. Without an
NVIDIA GPU the panel says so and shows what bounds a run on the CPU instead: the CPU and RAM use
of the engine's process and of the machine (:mod:`loratui.host`, from ``/proc``; N/A elsewhere),
and the engine's own memory figures (its ``memory`` events) when it has any.
"""

from __future__ import annotations

from textual.content import Content

from loratui.gpu import GpuDevice, memory_pressure
from loratui.host import HostReading
from loratui.quantities import count
from loratui.tui.dashboard import format as fmt
from loratui.tui.dashboard.view import Panel, View

TITLE = "GPU"
TITLE_NO_GPU = "CPU and RAM (no NVIDIA GPU)"
MIN_BAR = 10  # narrower than this, a gauge's figures go on a line of their own
GAUGE_HEAD = "CPU    "  # the label column of the CPU and RAM gauges (as wide as the VRAM one)


class GpuPanel(Panel):
    def build(self, view: View) -> Content:
        width = self.text_width
        reading = view.gpu
        lines: list[Content] = []
        self.border_title = TITLE_NO_GPU if reading is not None and not reading.snapshot.available else TITLE
        host_shown = False
        if reading is None:
            lines.append(Content.styled("reading the GPUs…", "$text-muted"))
        elif not reading.snapshot.available:
            lines.append(Content.styled(reading.snapshot.reason or "no NVIDIA GPU", "$warning"))
            if reading.host is not None:
                lines += host_lines(reading.host, width)
                host_shown = reading.host.supported
        else:
            pid = view.record.pid  # the engine as launched (run_started.pid is the same process)
            for device in reading.snapshot.devices:
                lines += self._device(device, width, _engine_share(device, pid))
            shared = reading.shared
            if shared.supported:
                used = shared.process_shared_bytes or 0
                style = "$error" if used > 0 else ""
                lines.append(
                    Content.assemble(
                        ("shared ", "bold"), (f"{fmt.size(used)} of system RAM in use by the engine", style)
                    )
                )
            else:
                lines.append(Content.assemble(("shared ", "bold"), (shared.reason or "not measured", "$text-muted")))
        engine = self._engine_memory(view, host_shown)
        if engine is not None:
            lines.append(engine)
        return Content("\n").join(lines)

    def _device(self, device: GpuDevice, width: int, engine: int | None) -> list[Content]:
        name = device.name or "N/A"
        pressure = memory_pressure(device.memory_used, device.memory_total)
        percent = f"{pressure.fraction:4.0%}" if pressure.fraction is not None else "  N/A"
        figures = f" {fmt.gib(device.memory_used)}/{fmt.gib(device.memory_total)} GiB {percent}"
        if engine is not None:
            figures += f" · engine {fmt.size(engine)}"
        head = "VRAM   "
        gauge = fmt.bar(pressure.fraction, max(4, width - len(head) - len(figures)), fmt.pressure_style(pressure.level))
        figures_style = (
            "bold $error" if pressure.level == "critical" else "bold $warning" if pressure.level == "high" else ""
        )
        vram = Content.assemble((head, "bold"), gauge, (figures, figures_style))
        load = _na(device.utilization_gpu, "{}%")
        temp = _na(device.temperature_c, "{} °C")
        if device.power_w is None:
            power = "N/A"
        else:
            power = f"{device.power_w:.0f}" + (f"/{device.power_limit_w:.0f} W" if device.power_limit_w else " W")
        head = Content.assemble((f"GPU {device.index} ", "bold"), (name, "$secondary"))
        stats = Content.assemble(("load ", "bold"), load, ("  temp ", "bold"), temp, ("  power ", "bold"), power)
        if head.cell_length + 2 + stats.cell_length <= width:
            return [head + Content("  ") + stats, vram]
        return [head, Content("  ") + stats, vram]  # a narrow column: the figures under the name

    def _engine_memory(self, view: View, host_shown: bool) -> Content | None:
        """The engine's own figures (torch's allocator), from its last memory event."""
        memory = view.summary.memory
        if not memory:
            return None
        if memory.get("allocated") is None:
            if host_shown:  # the CPU and RAM lines say it all
                return None
            return Content.styled(f"engine on {memory['device']}: no memory figures off CUDA", "$text-muted")
        total = f" of {fmt.size(memory['total'])}" if memory.get("total") else ""
        return Content.assemble(
            ("torch  ", "bold"),
            f"{fmt.size(memory['allocated'])} allocated · "
            f"{fmt.size(memory['reserved'])} reserved{total} · peak {fmt.size(memory.get('peak_allocated'))}",
        )


def host_lines(host: HostReading, width: int) -> list[Content]:
    """The machine's and the engine's CPU and RAM use: a gauge of the machine, the figures beside it."""
    if not host.supported:
        return [Content.styled(host.reason or "no CPU and RAM figures", "$text-muted")]
    cores = count(host.cpus, "core") if host.cpus else "? cores"
    if host.cpu_busy is None:  # a rate needs two readings
        cpu_figures = f" measuring… ({cores})"
    else:
        engine_cpu = f"engine {host.process_cpu:.1f} of {cores}" if host.process_cpu is not None else "engine N/A"
        cpu_figures = f" {engine_cpu} · machine {host.cpu_busy:.0%}"
    used, total = host.memory_used, host.memory_total
    pressure = memory_pressure(used, total)
    percent = f" {pressure.fraction:.0%}" if pressure.fraction is not None else ""
    engine_ram = f"engine {fmt.size(host.process_rss)}" if host.process_rss is not None else "engine N/A"
    machine = f"machine {fmt.gib(used)}/{fmt.gib(total)} GiB{percent}" if total else "machine N/A"
    ram_figures = f" {engine_ram} · {machine}"
    # both gauges alike: the figures beside the bars, or under them both when the column is narrow
    beside = width - len(GAUGE_HEAD) - max(len(cpu_figures), len(ram_figures)) >= MIN_BAR
    return _gauge("CPU", host.cpu_busy, cpu_figures, width, "$primary", beside) + _gauge(
        "RAM", pressure.fraction, ram_figures, width, fmt.pressure_style(pressure.level), beside
    )


def _gauge(name: str, fraction: float | None, figures: str, width: int, style: str, beside: bool) -> list[Content]:
    head = f"{name:<{len(GAUGE_HEAD)}}"
    if beside:
        return [Content.assemble((head, "bold"), fmt.bar(fraction, width - len(head) - len(figures), style), figures)]
    return [
        Content.assemble((head, "bold"), fmt.bar(fraction, max(4, width - len(head)), style)),
        Content(" " * (len(head) - 1) + figures),
    ]


def _engine_share(device: GpuDevice, pid: int) -> int | None:
    """Bytes of this GPU the engine holds; None when NVML does not list it (a container shows
    host pids; Windows WDDM gives no per-process figures)."""
    return next(
        (proc.used_memory for proc in device.processes if proc.pid == pid and proc.used_memory is not None), None
    )


def _na(value: object, template: str) -> str:
    return "N/A" if value is None else template.format(value)
