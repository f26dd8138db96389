"""Watching for VRAM spill-over from inside the training loop.

The engine is the one process that always sees both halves of the symptom: its own step times
and the GPU's memory. It feeds them to :class:`loratui.gpu.SpillDetector` (step times after every
step, NVML memory and Windows' shared usage every few seconds) and writes the detector's warning
as a ``warning`` event with code ``vram_spill``, so every client, including one that attaches
hours later, sees it. Off CUDA, or without an NVIDIA driver, it only watches step times, which
alone never warn (a slow step with free memory is a different problem).
"""

from __future__ import annotations

import logging
import os
import sys
import time

import torch

from engine.events import EventWriter
from loratui.gpu import SpillDetector, Telemetry, read_shared_usage

log = logging.getLogger("engine.spill")
SAMPLE_EVERY_S = 5.0


class SpillWatch:
    def __init__(self, events: EventWriter, device: torch.device) -> None:
        self.events = events
        self.detector = SpillDetector(platform=sys.platform)
        self.telemetry = Telemetry(with_processes=False) if device.type == "cuda" else None
        self.nvml_index = _nvml_index(device, self.telemetry) if self.telemetry else None
        self.shared_supported = sys.platform == "win32"
        self._next_sample = 0.0

    def after_step(self, step: int, seconds: float) -> None:
        self._report(self.detector.observe_step(step, seconds))
        now = time.monotonic()
        if self.telemetry is not None and now >= self._next_sample:
            self._next_sample = now + SAMPLE_EVERY_S
            self._report(self._sample_memory())

    def _sample_memory(self):
        snapshot = self.telemetry.read()
        if not snapshot.available or self.nvml_index is None or self.nvml_index >= len(snapshot.devices):
            return None
        device = snapshot.devices[self.nvml_index]
        shared = None
        if self.shared_supported:
            reading = read_shared_usage(os.getpid())
            shared = reading.process_shared_bytes if reading.supported else None
        return self.detector.observe_memory(device.memory_used, device.memory_total, shared)

    def _report(self, warning) -> None:
        if warning is not None:
            log.warning("%s", warning.message)
            self.events.emit("warning", code=warning.code, message=warning.message, hint=warning.hint)

    def close(self) -> None:
        if self.telemetry is not None:
            self.telemetry.close()


def _nvml_index(device: torch.device, telemetry: Telemetry) -> int | None:
    """NVML numbers GPUs by PCI bus, CUDA (by default) fastest first, and CUDA_VISIBLE_DEVICES
    renumbers them: match the two by UUID where torch knows it."""
    index = device.index or 0
    try:
        uuid = str(torch.cuda.get_device_properties(index).uuid)
    except (AttributeError, RuntimeError):
        return index
    for gpu in telemetry.read().devices:
        if gpu.uuid and gpu.uuid.removeprefix("GPU-") == uuid.removeprefix("GPU-"):
            return gpu.index
    return index
