"""Time left in a run, from the engine's own step timings.

The engine measures each step's wall time without the time spent saving, evaluating or paused
(``step.s_per_step``), so a median of the recent ones is the pace of training itself: one slow
step (a save, a hiccup) does not move it. Before the first step of a launch, the pace of the
earlier launches of a resumed run (``run_started.elapsed_s / start_step``) stands in. The ETA is
remaining steps times that pace; between two step events it counts down by the time since the
last one, never by more than one step, so it does not run to zero while the engine saves or
sits paused.
"""

from __future__ import annotations

import statistics
from collections import deque

WINDOW = 50


class EtaEstimator:
    def __init__(self) -> None:
        self._durations: deque[float] = deque(maxlen=WINDOW)
        self._prior_pace: float | None = None

    def set_prior(self, elapsed_s: float, steps_done: int) -> None:
        if steps_done > 0 and elapsed_s > 0:
            self._prior_pace = elapsed_s / steps_done

    def observe(self, seconds: float) -> None:
        if seconds > 0:
            self._durations.append(seconds)

    def observe_many(self, durations: list[float]) -> None:
        for seconds in durations[-WINDOW:]:
            self.observe(seconds)

    @property
    def pace(self) -> float | None:
        """Seconds per step: the median of the recent steps, else the prior."""
        if self._durations:
            return statistics.median(self._durations)
        return self._prior_pace

    def eta(self, remaining_steps: int, since_last_step_s: float = 0.0) -> float | None:
        pace = self.pace
        if pace is None:
            return None
        if remaining_steps <= 0:
            return 0.0
        return max(0.0, remaining_steps * pace - min(max(since_last_step_s, 0.0), pace))
