"""The loss curve of a run in bounded memory, whatever its length.

A million-step run cannot keep a million points for a sparkline that is 60 cells wide. The
curve is kept as at most ``max_points`` buckets of ``width`` consecutive steps each (their
sum); when the buckets run out, neighbours merge in pairs and ``width`` doubles. So memory stays
bounded, every step counts in exactly one bucket, and a bucket's mean is the mean loss of its
steps. Alongside: the last raw losses, the minimum and where it was, and an exponential moving
average (the "smoothed" line).
"""

from __future__ import annotations

import math
from collections import deque

SMOOTHING = 0.95  # EMA factor: about the last 20 steps weigh most
RECENT = 512
# Beyond this many values the EMA's older terms weigh less than 1e-11: they can be skipped.
EMA_HORIZON = int(math.log(1e-11) / math.log(SMOOTHING)) + 1


class LossHistory:
    def __init__(self, max_points: int = 1024) -> None:
        if max_points < 2 or max_points % 2:
            raise ValueError("max_points must be an even number >= 2")
        self.max_points = max_points
        self.first_step = 1  # the step of the first loss
        self.width = 1  # steps per bucket
        self.sums: list[float] = []  # full buckets
        self._partial_sum = 0.0
        self._partial_count = 0
        self.count = 0
        self.last: float | None = None
        self.min: float | None = None
        self.min_step: int | None = None
        self._ema = 0.0
        self.recent: deque[float] = deque(maxlen=RECENT)

    # ------------------------------------------------------------------ input
    def add(self, loss: float) -> None:
        self.extend([loss])

    def extend(self, losses: list[float]) -> None:
        if not losses:
            return
        low = min(losses)
        if self.min is None or low < self.min:
            self.min, self.min_step = low, self.first_step + self.count + losses.index(low)
        self._update_ema(losses)
        self.count += len(losses)
        self.last = losses[-1]
        self.recent.extend(losses[-RECENT:])
        self._bucket(losses)

    def _update_ema(self, losses: list[float]) -> None:
        beta = SMOOTHING
        if len(losses) > EMA_HORIZON:  # earlier terms have decayed below float precision
            self._ema = 0.0
            losses = losses[-EMA_HORIZON:]
        ema = self._ema
        for loss in losses:
            ema = beta * ema + (1 - beta) * loss
        self._ema = ema

    def _bucket(self, losses: list[float]) -> None:
        i, n = 0, len(losses)
        while i < n:
            width = self.width
            if self._partial_count == 0 and n - i >= width:
                room = self.max_points - len(self.sums)
                whole = min((n - i) // width, room)
                self.sums.extend(sum(losses[j : j + width]) for j in range(i, i + whole * width, width))
                i += whole * width
            else:
                take = min(width - self._partial_count, n - i)
                self._partial_sum += sum(losses[i : i + take])
                self._partial_count += take
                i += take
                if self._partial_count == width:
                    self.sums.append(self._partial_sum)
                    self._partial_sum, self._partial_count = 0.0, 0
            if len(self.sums) >= self.max_points:
                self._merge()

    def _merge(self) -> None:
        sums = self.sums
        self.sums = [sums[k] + sums[k + 1] for k in range(0, len(sums) - 1, 2)]
        if len(sums) % 2:  # an odd bucket out becomes the start of the (wider) partial one
            self._partial_sum += sums[-1]
            self._partial_count += self.width
        self.width *= 2

    # ----------------------------------------------------------------- output
    @property
    def smoothed(self) -> float | None:
        if not self.count:
            return None
        # Debiased as in TensorBoard: early values are not pulled towards the EMA's start at 0.
        return self._ema / (1 - SMOOTHING ** min(self.count, EMA_HORIZON * 4))

    def points(self) -> list[float]:
        """Mean loss per bucket, oldest first; the last bucket may cover fewer steps."""
        means = [total / self.width for total in self.sums]
        if self._partial_count:
            means.append(self._partial_sum / self._partial_count)
        return means

    def point_steps(self) -> list[int]:
        """The first step of each point in :meth:`points`."""
        return [self.first_step + k * self.width for k in range(len(self.points()))]
