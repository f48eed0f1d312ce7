"""Timers at a fixed phase of their period on the node's clock (the estimator publishes just before
the controller ticks): placed there at start, tried again after a late wake, and kept there by rcl
through late calls."""

import time

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from mbrl_control.nodes import aligned_timer
from mbrl_control.nodes.aligned_timer import create_aligned_timer, phase_wait_ns, timer_phase

PERIOD = 0.02
# create_aligned_timer's default tolerance, plus what two reads of the phase may differ by on a loaded
# host (timer_phase brackets rcl's clock read to 20 us when it can)
TOLERANCE = 2e-4 + 1e-4


def phase_error(timer, offset: float) -> float:
    error = (timer_phase(timer, PERIOD) - offset) % PERIOD
    return min(error, PERIOD - error)


@pytest.fixture
def node():
    context = rclpy.Context()
    rclpy.init(context=context)
    node = Node("aligned_timer_test", context=context)
    yield node
    node.destroy_node()
    rclpy.shutdown(context=context)


def test_the_wait_reaches_the_next_multiple_of_the_period_plus_the_offset():
    assert phase_wait_ns(105, 20, 0) == 15
    assert phase_wait_ns(105, 20, 14) == 9  # offset -6 (mod 20): 114 = 5 * 20 + 14
    assert phase_wait_ns(120, 20, 0) == 0


def test_timers_fall_at_their_offsets_and_keep_them_through_a_late_call(node):
    late = {"calls": 0}

    def slow_once() -> None:
        late["calls"] += 1
        if late["calls"] == 2:
            time.sleep(1.3 * PERIOD)  # past the next call: rcl skips it, it does not shift the phase

    ticks = create_aligned_timer(node, PERIOD, slow_once, offset=0.0)
    estimates = create_aligned_timer(node, PERIOD, lambda: None, offset=-0.006)
    assert phase_error(ticks, 0.0) <= TOLERANCE
    assert phase_error(estimates, -0.006) <= TOLERANCE
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    end = time.monotonic() + 10 * PERIOD
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=PERIOD)
    assert late["calls"] >= 3
    assert phase_error(ticks, 0.0) <= TOLERANCE
    assert phase_error(estimates, -0.006) <= TOLERANCE


def test_a_late_wake_at_start_is_tried_again_at_the_next_period(node, monkeypatch):
    sleeps, sleep = [], time.sleep

    def oversleep_first(seconds: float) -> None:
        sleeps.append(seconds)
        sleep(seconds + (0.003 if len(sleeps) == 1 else 0.0))  # a busy host: woken 3 ms late once

    monkeypatch.setattr(aligned_timer.time, "sleep", oversleep_first)
    timer = create_aligned_timer(node, PERIOD, lambda: None, offset=0.0)
    assert len(sleeps) >= 2
    assert phase_error(timer, 0.0) <= TOLERANCE
