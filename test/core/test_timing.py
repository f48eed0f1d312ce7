"""Tick statistics as real-time people count them: lateness from the intended release, late ticks
past 10 % of the period, missed = releases skipped + ticks that ended after the next release."""

import math
import tracemalloc

from mbrl_control.core.timing import TickStats

P = 0.01


def test_lateness_late_ticks_and_missed_releases_are_counted_from_the_release():
    stats = TickStats(P, window=100)
    assert stats.record(0.002, lateness=0.0) == 0  # on time
    assert stats.record(0.002, lateness=0.0009) == 0  # 9 % late: not late
    assert stats.record(0.002, lateness=0.0011) == 0  # 11 % late: late, not missed
    assert stats.record(0.006, lateness=0.005) == 1  # ends 11 ms after its release: overran its period
    assert stats.record(0.002, lateness=0.003, skipped=2) == 2  # two releases never ran
    s = stats.summary()
    assert (s["ticks"], s["late_ticks"], s["missed_ticks"], s["skipped_releases"], s["overrun_ticks"]) == (5, 3, 3, 2, 1)
    assert s["lateness_ms_max"] == 5.0
    assert math.isclose(s["lateness_ms_p50"], 1.1)
    assert 4.0 < s["lateness_ms_p99"] <= 5.0


def test_lockstep_has_no_lateness_and_misses_only_ticks_slower_than_the_period():
    stats = TickStats(P)
    stats.record(0.002)
    stats.record(0.012)
    s = stats.summary()
    assert (s["ticks"], s["missed_ticks"], s["overrun_ticks"]) == (2, 1, 1)
    assert "lateness_ms_p99" not in s and "late_ticks" not in s
    assert math.isnan(stats.lateness_percentile_ms(99))


def test_percentiles_cover_the_last_window_ticks_and_recording_allocates_nothing():
    stats = TickStats(P, window=10)
    for _ in range(10):
        stats.record(0.009, lateness=0.009)
    for _ in range(10):  # the window now holds only these
        stats.record(0.001, lateness=0.0)
    assert stats.summary()["tick_ms_p99"] == 1.0 and stats.summary()["lateness_ms_p99"] == 0.0
    assert stats.summary()["late_ticks"] == 10  # counts are since the start
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(1000):
        stats.record(0.001, 0.0005, 0)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename") if "timing.py" in str(s.traceback))
    assert grown < 1024, grown
