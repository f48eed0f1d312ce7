"""Tick timing statistics kept in a fixed ring buffer (no allocation per tick)."""

from __future__ import annotations

import numpy as np


class TickStats:
    """Counts ticks and misses and keeps the last ``window`` tick durations for percentiles."""

    def __init__(self, period: float, window: int = 2000) -> None:
        self.period = period
        self.ticks = 0
        self.missed = 0
        self._durations = np.zeros(window)
        self._next = 0

    def record(self, duration: float, missed: int = 0) -> None:
        self._durations[self._next] = duration
        self._next = (self._next + 1) % len(self._durations)
        self.ticks += 1
        self.missed += missed

    def percentile_ms(self, q: float) -> float:
        n = min(self.ticks, len(self._durations))
        return float(np.percentile(self._durations[:n], q) * 1e3) if n else 0.0

    def summary(self) -> dict[str, float]:
        return {
            "ticks": self.ticks,
            "missed_ticks": self.missed,
            "tick_ms_p50": round(self.percentile_ms(50), 3),
            "tick_ms_p99": round(self.percentile_ms(99), 3),
        }
