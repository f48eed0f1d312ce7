"""Periodic timers whose calls fall at a fixed offset past whole multiples of their period on the
node's clock: two nodes on one clock (or on clocks that NTP/PTP keeps together) then run in a known
order instead of at whatever phase their start-up left them.

Why: the estimator publishes at the control rate and the controller ticks at it, each from its own
timer. Started independently, the estimate was 0 to one period old when a tick began, different
in every run (the iiwa, realtime at 50 Hz: 16-27 ms old when the command left, by the controller's
``~/timing``), and the oldest phases are where the realtime arm lost its estimate (a run at 27 ms
went unstable with no tick missed). Aligned, the estimate is published just before each tick.
"""

from __future__ import annotations

import time
from typing import Callable

from rclpy.node import Node
from rclpy.timer import Timer


def phase_wait_ns(now_ns: int, period_ns: int, offset_ns: int) -> int:
    """Nanoseconds from ``now_ns`` to the next time ``t`` with ``t = k * period + offset``."""
    return (offset_ns - now_ns) % period_ns


def create_aligned_timer(node: Node, period: float, callback: Callable[[], None], offset: float = 0.0,
                         tolerance: float = 2e-4, attempts: int = 20) -> Timer:
    """``node.create_timer(period, callback)`` whose calls fall ``offset`` seconds past multiples of
    ``period`` on the node's clock (rcl keeps a timer's phase: a late call does not shift the next
    ones). The timer is started at such a time; a start the process woke late for (a busy host:
    other nodes compiling while this one starts) is tried again at the next one, up to
    ``attempts`` periods. For wall-clock (realtime) timers; a node on simulated time steps with its
    clock instead."""
    period_ns = round(period * 1e9)
    offset_ns = round(offset * 1e9) % period_ns
    timer = None
    for _ in range(attempts):
        time.sleep(phase_wait_ns(node.get_clock().now().nanoseconds, period_ns, offset_ns) * 1e-9)
        if timer is None:
            timer = node.create_timer(period, callback)
        else:
            timer.reset()
        error = timer_phase(timer, period) - offset_ns * 1e-9
        if abs((error + period / 2) % period - period / 2) <= tolerance:
            break
    return timer


def timer_phase(timer: Timer, period: float, attempts: int = 5) -> float:
    """Where the timer's next call falls past a multiple of ``period`` [s], in [0, period).

    rcl reads its clock inside ``time_until_next_call``; a read of the clock on each side brackets
    that instant; its midpoint is taken, from the narrowest of a few brackets: a thread preempted
    between the reads (a loaded host) would otherwise shift the phase by as long as it waited
    (0.25 ms seen on CI)."""
    period_ns = round(period * 1e9)
    best_width, best_next = None, 0
    for _ in range(attempts):
        before = timer.clock.now().nanoseconds
        until = timer.time_until_next_call() or 0
        width = timer.clock.now().nanoseconds - before
        if best_width is None or width < best_width:
            best_width, best_next = width, before + width // 2 + until
        if width <= 20_000:
            break
    return (best_next % period_ns) * 1e-9
