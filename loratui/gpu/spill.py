"""Notice when training has run out of VRAM without crashing, and say what to change.

On Windows the NVIDIA driver (536.40 and later) lets CUDA allocations that do not fit in VRAM
fall back to "shared GPU memory", i.e. system RAM reached over PCIe. Nothing fails: every step
just becomes several times slower, and users wait hours without knowing why. On Linux CUDA stops
with an out-of-memory error instead, but a card at its limit still slows down when PyTorch has
to free and re-allocate memory inside every step. Both show as "VRAM nearly full and steps
suddenly much slower"; on Windows the shared-memory counter shows the spill directly.

This module is pure logic: the caller feeds it step times and memory readings and shows the
warning it returns. Thresholds are parameters so that tests (and cautious users) can set them.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

MIB = 1024**2
GIB = 1024**3

SPILL_CODE = "vram_spill"
WINDOWS_SETTING = (
    'on Windows, set NVIDIA Control Panel > Manage 3D Settings > "CUDA - Sysmem Fallback Policy" '
    'to "Prefer No Sysmem Fallback", so a run that does not fit stops with an out-of-memory error '
    "instead of crawling"
)
FIXES = (
    "use less VRAM: a smaller training.batch_size, network.rank or dataset.resolution; "
    'training.gradient_checkpointing = true; cached latents (dataset.cache_latents = "memory" '
    'or "disk"); an 8-bit optimizer (optimizer.name = "AdamW8bit")'
)


@dataclass(frozen=True)
class SpillWarning:
    code: str  # always SPILL_CODE: the UI keys its banner on it
    message: str  # what is happening, with the figures that show it
    hint: str  # what to change


@dataclass(frozen=True)
class MemoryPressure:
    fraction: float | None  # used / total, None when unknown
    level: str  # "ok", "high", "critical" or "unknown"


def memory_pressure(
    used: int | None, total: int | None, *, high: float = 0.85, critical: float = 0.95
) -> MemoryPressure:
    """How full the VRAM is, for a gauge's colour."""
    if used is None or not total:
        return MemoryPressure(None, "unknown")
    fraction = used / total
    level = "critical" if fraction >= critical else "high" if fraction >= high else "ok"
    return MemoryPressure(fraction, level)


class SpillDetector:
    """Watches step times and memory; returns a :class:`SpillWarning` when VRAM has overflowed.

    It fires when either
      (a) the process's shared GPU memory (Windows) grows by ``shared_growth_bytes`` over the
          lowest value seen (a process can hold some shared memory from the start, likely
          pinned host buffers, so growth, not the absolute value, is the sign of a spill), or
      (b) dedicated memory is at least ``full_fraction`` used AND the median of the last
          ``recent_steps`` steps is ``slowdown`` times the median of the earlier steps.
    Slow steps with memory to spare are a different problem (a slow disk, another process), so
    (b) needs both. The first ``warmup_steps`` steps (compilation, cache filling) are ignored,
    and one slow step (a checkpoint save, a sample image) is not enough: the recent median needs
    a majority of slow steps.

    A warning is given once per episode: the detector stays quiet until the condition clears
    and comes back, and even then not more than once per ``quiet_seconds``.

    ``platform`` is ``sys.platform`` of the machine that runs the training, which is not this
    one when the engine runs on a rented server.
    """

    def __init__(
        self,
        *,
        platform: str | None = None,
        warmup_steps: int = 5,
        window: int = 50,
        min_history: int = 5,
        recent_steps: int = 3,
        slowdown: float = 3.0,
        full_fraction: float = 0.95,
        shared_growth_bytes: int = 256 * MIB,
        quiet_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.platform = sys.platform if platform is None else platform
        self.warmup_steps = warmup_steps
        self.min_history = min_history
        self.slowdown = slowdown
        self.full_fraction = full_fraction
        self.shared_growth_bytes = shared_growth_bytes
        self.quiet_seconds = quiet_seconds
        self._clock = clock
        self._history: deque[float] = deque(maxlen=window)  # step times the baseline is made of
        self._recent: deque[float] = deque(maxlen=recent_steps)
        self._steps_seen = 0
        self._last_step: int | None = None
        self._used: int | None = None
        self._total: int | None = None
        self._shared: int | None = None
        self._shared_floor: int | None = None
        self._in_episode = False
        self._warned_at: float | None = None

    def observe_step(self, step: int, seconds: float) -> SpillWarning | None:
        """Feed the wall time of one optimizer step."""
        if self._last_step is not None and step < self._last_step:
            # A new run, or a resume from an earlier checkpoint: its warm-up starts over.
            self._history.clear()
            self._recent.clear()
            self._steps_seen = 0
        self._last_step = step
        self._steps_seen += 1
        if self._steps_seen > self.warmup_steps and seconds > 0:
            self._recent.append(seconds)
            # Steps that look like a spill stay out of the baseline; otherwise a long spill would
            # become the new normal and the warning would clear while the run still crawls.
            if not (self._memory_full() and self._is_slow(seconds)):
                self._history.append(seconds)
        return self._update()

    def observe_memory(
        self, dedicated_used: int | None, dedicated_total: int | None, shared_used: int | None
    ) -> SpillWarning | None:
        """Feed a memory reading: the GPU's used and total VRAM, the process's shared memory."""
        self._used, self._total = dedicated_used, dedicated_total
        if shared_used is not None:
            self._shared = shared_used
            self._shared_floor = shared_used if self._shared_floor is None else min(self._shared_floor, shared_used)
        return self._update()

    @property
    def active(self) -> bool:
        """Whether the overflow is going on now (a UI can keep its badge up while it lasts)."""
        return self._in_episode

    # -- conditions --

    def _memory_full(self) -> bool:
        if self._used is None or not self._total:
            return False
        return self._used / self._total >= self.full_fraction

    def _baseline(self) -> float | None:
        return statistics.median(self._history) if len(self._history) >= self.min_history else None

    def _is_slow(self, seconds: float) -> bool:
        baseline = self._baseline()
        return baseline is not None and seconds >= self.slowdown * baseline

    def _slowdown(self) -> tuple[float, float] | None:
        """(recent median, baseline median) when the steps are ``slowdown`` times slower."""
        baseline = self._baseline()
        if baseline is None or len(self._recent) < (self._recent.maxlen or 1):
            return None
        recent = statistics.median(self._recent)
        return (recent, baseline) if recent >= self.slowdown * baseline else None

    def _shared_growth(self) -> int | None:
        if self._shared is None or self._shared_floor is None:
            return None
        growth = self._shared - self._shared_floor
        return growth if growth >= self.shared_growth_bytes else None

    def _update(self) -> SpillWarning | None:
        growth = self._shared_growth()
        slowdown = self._slowdown() if self._memory_full() else None
        if growth is None and slowdown is None:
            self._in_episode = False
            return None
        if self._in_episode:
            return None
        self._in_episode = True
        now = self._clock()
        if self._warned_at is not None and now - self._warned_at < self.quiet_seconds:
            return None
        self._warned_at = now
        return SpillWarning(SPILL_CODE, self._message(growth, slowdown), self._hint())

    # -- words --

    def _spill_possible(self) -> bool:
        return self.platform.startswith("win") or bool(self._shared)

    def _message(self, growth: int | None, slowdown: tuple[float, float] | None) -> str:
        facts = []
        if slowdown is not None:
            recent, baseline = slowdown
            facts.append(f"step time {recent:.1f} s vs {baseline:.1f} s median")
        if self._used is not None and self._total:
            facts.append(f"{self._used / GIB:.1f} of {self._total / GIB:.1f} GiB used")
        if growth is not None and self._shared is not None:
            facts.append(f"{self._shared / GIB:.1f} GiB in shared GPU memory, up {growth / GIB:.1f} GiB")
        if self._spill_possible():
            cause = (
                "VRAM is full and spilling into system memory (shared GPU memory): "
                "each step now goes over PCIe and runs several times slower"
            )
        else:
            cause = (
                "VRAM is nearly full and steps became much slower: PyTorch is likely freeing "
                "and re-allocating GPU memory inside every step"
            )
        return f"{cause} ({'; '.join(facts)})."

    def _hint(self) -> str:
        hint = FIXES[0].upper() + FIXES[1:]
        if self._spill_possible():
            hint += "; " + WINDOWS_SETTING
        return hint + "."
