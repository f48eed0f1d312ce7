"""The safety layer: whatever the planner or the inputs do, the command is safe on the same tick."""

import math

import numpy as np
import pytest

from mbrl_control.core.safety import (
    DEGRADED,
    RUNNING,
    STOPPED,
    CommandWatchdog,
    EStopLatch,
    JointLimits,
    SafetyConfig,
    SafetyLayer,
    limit_effort,
)

DT = 0.02


def layer(**kw) -> SafetyLayer:
    return SafetyLayer(SafetyConfig(effort_limit=np.array([20.0]), **kw))


def test_normal_operation_clamps_and_rate_limits():
    s = layer(rate_limit=500.0)  # 10 N per 20 ms tick
    assert s.command(0.0, np.array([5.0]), 0.01, DT)[0] == 5.0 and s.mode == RUNNING
    assert s.command(0.02, np.array([50.0]), 0.01, DT)[0] == 15.0  # clamped to 20, then +10 max
    assert s.counts["clamped"] == 1 and s.counts["rate_limited"] == 1


@pytest.mark.parametrize("age", [0.5, math.inf, math.nan])
def test_stale_or_missing_state_zeroes_the_command_at_once(age):
    s = layer(rate_limit=1.0)
    s.command(0.0, np.array([0.02]), 0.0, DT)
    out = s.command(0.02, np.array([20.0]), age, DT)
    assert out[0] == 0.0 and s.mode == DEGRADED and "stale" in s.reason  # no rate limit on going safe


@pytest.mark.parametrize("action", [np.array([math.nan]), np.array([math.inf]), None])
def test_unusable_plans_are_rejected(action):
    s = layer()
    s.command(0.0, np.array([3.0]), 0.0, DT)
    assert s.command(0.02, action, 0.0, DT)[0] == 0.0 and s.mode == DEGRADED
    assert s.counts["unsafe_plan"] == 1


def test_hold_keeps_the_last_command_briefly_then_zeroes():
    s = layer(stale_action="hold", hold_timeout=0.05)
    s.command(0.0, np.array([7.0]), 0.0, DT)
    assert s.command(0.02, None, 1.0, DT)[0] == 7.0
    assert s.command(0.04, None, 1.0, DT)[0] == 7.0
    assert s.command(0.08, None, 1.0, DT)[0] == 0.0


def test_gravity_hold_gives_way_to_the_robots_own_safe_stop_after_its_timeout():
    """An arm's hold is right only while it stays where it was last seen: past
    gravity_hold_timeout nothing goes out (the robot's brakes take over), and the first fresh
    state brings the planner's command back, with the hold's clock started anew."""
    hold = np.array([-36.0])
    s = SafetyLayer(SafetyConfig(effort_limit=np.array([100.0]), stale_action="gravity_hold",
                                 gravity_hold_timeout=0.1, rate_limit=1e6), hold_effort=lambda: hold)
    s.command(0.0, np.array([-30.0]), 0.0, DT)
    for now in (0.02, 0.06, 0.12):  # held for 0.1 s from the first stale tick
        np.testing.assert_array_equal(s.command(now, None, 1.0, DT), hold)
    assert s.command(0.14, None, 1.0, DT) is None and s.mode == DEGRADED and "safe stop" in s.reason
    assert s.command(0.50, None, 1.0, DT) is None and s.counts["released_to_robot"] == 2
    assert s.command(0.52, np.array([-31.0]), 0.0, DT)[0] == -31.0 and s.mode == RUNNING
    np.testing.assert_array_equal(s.command(0.54, None, 1.0, DT), hold)  # a new stale spell holds again
    forever = SafetyLayer(SafetyConfig(effort_limit=np.array([100.0]), stale_action="gravity_hold"),
                          hold_effort=lambda: hold)  # 0: hold until the state returns
    assert all(forever.command(t, None, 1.0, DT) is not None for t in np.arange(0.0, 30.0, 0.5))


def test_estop_latches_until_reset_with_the_input_released():
    s = layer()
    s.estop.update(True)
    assert s.command(0.0, np.array([5.0]), 0.0, DT)[0] == 0.0 and s.mode == STOPPED
    assert s.estop.reset() == (False, "e-stop input is still pressed")
    s.estop.update(False)
    assert s.command(0.02, np.array([5.0]), 0.0, DT)[0] == 0.0, "released is not reset"
    assert s.estop.reset()[0]
    assert s.command(0.04, np.array([5.0]), 0.0, DT)[0] == 5.0 and s.mode == RUNNING
    assert s.estop.trips == 1


def test_limit_effort_refuses_effort_past_position_and_velocity_limits():
    limits = JointLimits(np.array([10.0, 10.0]), np.array([-1.0, -1.0]), np.array([1.0, 1.0]), np.array([2.0, 2.0]))
    effort = np.array([50.0, -5.0])
    assert limit_effort(effort, np.array([0.0, 0.0]), np.array([0.0, 0.0]), limits).tolist() == [10.0, -5.0]
    # joint 0 at its upper limit pushing further: refused; joint 1 too fast in the pushed direction
    out = limit_effort(effort, np.array([1.0, 0.0]), np.array([0.0, -2.5]), limits)
    assert out.tolist() == [0.0, 0.0]
    # pushing back into range passes
    assert limit_effort(np.array([-3.0, 3.0]), np.array([1.5, 0.0]), np.array([0.0, -2.5]), limits).tolist() == [-3.0, 3.0]


def test_watchdog_counts_each_timeout_once():
    w = CommandWatchdog(0.1)
    assert not w.fresh(0.0)
    w.feed(0.0)
    assert w.fresh(0.05) and not w.fresh(0.2) and not w.fresh(0.3)
    assert w.timeouts == 1
    e = EStopLatch()
    e.update(True)
    e.update(True)
    assert e.trips == 1
