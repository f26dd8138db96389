"""GPU telemetry for the terminal side: what the GPUs report, and whether VRAM has overflowed.

- :mod:`.nvml`: a typed NVML layer (memory, load, temperature, power, processes); a value the
  driver will not give is None, a machine without a driver gives a snapshot that says why.
- :mod:`.shared_memory`: Windows' shared GPU memory (VRAM spilled into system RAM), which NVML
  cannot see.
- :mod:`.spill`: turns step times and memory readings into one clear warning when training has
  run out of VRAM and slowed down.

No UI code and no torch here; pynvml is imported only when a reading is taken.
"""

from loratui.gpu.nvml import GpuDevice, GpuProcess, GpuSnapshot, Telemetry, describe, process_memory, read_gpus
from loratui.gpu.shared_memory import SharedMemoryReading, read_shared_usage
from loratui.gpu.spill import MemoryPressure, SpillDetector, SpillWarning, memory_pressure

__all__ = [
    "GpuDevice",
    "GpuProcess",
    "GpuSnapshot",
    "MemoryPressure",
    "SharedMemoryReading",
    "SpillDetector",
    "SpillWarning",
    "Telemetry",
    "describe",
    "memory_pressure",
    "process_memory",
    "read_gpus",
    "read_shared_usage",
]
