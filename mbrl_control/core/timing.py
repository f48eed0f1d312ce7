"""Tick timing statistics kept in fixed ring buffers (no allocation per tick).

Measured the way real-time people measure a periodic task (cyclictest): each tick has an intended
release time (the timer's schedule: start + k periods) and its **lateness** is how long after that
release it started. A tick is **late** when it starts more than ``late_fraction`` (10 %) of the
period after its release. A release is **missed** when no tick ran for it (the timer skipped it,
because the previous tick ran past it) or when its tick finished after the next release
(``lateness + duration > period``: it overran its period). ``duration`` (``tick_ms``) is the tick's
own compute time, from the start of its callback to its end.

Lockstep has no release time (the sim waits for each command; ticks run when the state arrives),
so no lateness is recorded there; a lockstep tick is counted as missed when its computation took
longer than the period (it could not have kept up in realtime).
"""

from __future__ import annotations

import math

import numpy as np


class TickStats:
    """Counts ticks, late ticks and missed releases; keeps the last ``window`` tick durations and
    latenesses for percentiles."""

    def __init__(self, period: float, window: int = 2000, late_fraction: float = 0.1) -> None:
        self.period = period
        self.late_after = late_fraction * period
        self.ticks = 0
        self.missed = 0  # skipped releases + overrun ticks
        self.skipped = 0  # releases no tick ran for
        self.overruns = 0  # ticks that ended after the next release (lockstep: took longer than a period)
        self.late = 0
        self.timed = 0  # ticks with a release time (realtime)
        self.lateness_max = 0.0
        self._durations = np.zeros(window)
        self._lateness = np.zeros(window)
        self._next = 0
        self._next_lateness = 0

    def record(self, duration: float, lateness: float | None = None, skipped: int = 0) -> int:
        """One tick: its compute time [s], how long after its intended release it started [s]
        (None in lockstep: no release time) and how many releases before it the timer skipped.
        Returns the releases missed with it."""
        self._durations[self._next] = duration
        self._next = (self._next + 1) % len(self._durations)
        self.ticks += 1
        if lateness is None:
            overran = int(duration > self.period)
        else:
            self._lateness[self._next_lateness] = lateness
            self._next_lateness = (self._next_lateness + 1) % len(self._lateness)
            self.timed += 1
            self.late += int(lateness > self.late_after)
            self.lateness_max = max(self.lateness_max, lateness)
            overran = int(lateness + duration > self.period)
        self.skipped += skipped
        self.overruns += overran
        self.missed += skipped + overran
        return skipped + overran

    def percentile_ms(self, q: float) -> float:
        """Percentile ``q`` of the last ``window`` tick durations [ms]."""
        n = min(self.ticks, len(self._durations))
        return float(np.percentile(self._durations[:n], q) * 1e3) if n else 0.0

    def lateness_percentile_ms(self, q: float) -> float:
        """Percentile ``q`` of the last ``window`` latenesses [ms]; nan without a release time."""
        n = min(self.timed, len(self._lateness))
        return float(np.percentile(self._lateness[:n], q) * 1e3) if n else math.nan

    def summary(self) -> dict[str, float]:
        """Counts since the start; percentiles over the last ``window`` ticks. Lateness figures
        only where ticks have a release time (realtime)."""
        out = {
            "ticks": self.ticks,
            "missed_ticks": self.missed,
            "skipped_releases": self.skipped,
            "overrun_ticks": self.overruns,
            "tick_ms_p50": round(self.percentile_ms(50), 3),
            "tick_ms_p99": round(self.percentile_ms(99), 3),
        }
        if self.timed:
            out |= {
                "late_ticks": self.late,
                "lateness_ms_p50": round(self.lateness_percentile_ms(50), 3),
                "lateness_ms_p99": round(self.lateness_percentile_ms(99), 3),
                "lateness_ms_max": round(self.lateness_max * 1e3, 3),
            }
        return out
