"""The sim's readings report the effort their sample's physics step was under, not the one applied
when they are published a latency later (what an estimator predicting with reported efforts needs)."""

import numpy as np

from mbrl_control.sim.effort_history import EffortHistory

MS = 1_000_000


def test_a_reading_reports_the_effort_of_the_step_that_ended_at_its_sample_time():
    history = EffortHistory(horizon_ns=1000 * MS)
    history.reset(0, np.zeros(2))
    history.record(10 * MS, np.array([5.0, -1.0]))  # acts from the step starting at 10 ms
    history.record(20 * MS, np.array([5.0, -1.0]))  # unchanged: nothing new
    history.record(25 * MS, np.array([-3.0, 2.0]))
    np.testing.assert_array_equal(history.during_step_ending(10 * MS), [0.0, 0.0])  # that step started at 7.5 ms
    np.testing.assert_array_equal(history.during_step_ending(12 * MS), [5.0, -1.0])
    np.testing.assert_array_equal(history.during_step_ending(25 * MS), [5.0, -1.0])
    np.testing.assert_array_equal(history.during_step_ending(27 * MS), [-3.0, 2.0])


def test_old_efforts_are_forgotten_but_the_one_still_acting_is_kept():
    history = EffortHistory(horizon_ns=50 * MS)
    history.reset(0, np.zeros(1))
    for k in range(1, 100):
        history.record(k * 10 * MS, np.array([float(k)]))
    assert len(history._starts) <= 7
    np.testing.assert_array_equal(history.during_step_ending(2000 * MS), [99.0])
    np.testing.assert_array_equal(history.during_step_ending(985 * MS), [98.0])
