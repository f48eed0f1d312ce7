"""The ground-truth judge and the sequence-number loss counter of mbrl_control_testing.fault_probe, on
hand-made ticks and truth: no ROS nodes."""

import math

import numpy as np

from mbrl_control.core.learning import Sample
from mbrl_control_testing.fault_probe import (
    SAFE_COMMAND,
    TRUE_PLAN,
    UNJUDGED,
    UNSAFE,
    GroundTruth,
    StateTolerance,
    Tick,
    expected_transitions,
    judge_tick,
    robot_under_test,
    sequence_loss,
    truth_verdict,
)

P = 0.02
TOL = StateTolerance(position=(0.05, 0.05), velocity=(0.5, 0.5), max_age=0.12)
LIMIT = 20.0


def _truth(t_end: float = 2.0) -> GroundTruth:
    """The cart at rest, the pole turning at 1 rad/s from 0: truth every 10 ms."""
    t = np.arange(0.0, t_end + 1e-9, 0.01)
    return GroundTruth(t, [np.array([0.0, 1.0 * ti]) for ti in t], [np.array([0.0, 1.0]) for _ in t], angle_joints=(1,))


def _tick(t: float, command: float, state=None, stamp: float | None = None, seq: int = 0, sent=None) -> Tick:
    sample = None
    if state is not None:
        sample = Sample(stamp=t if stamp is None else stamp, episode=0, seq=seq, state=np.asarray(state, float),
                        action=np.array([command]), reward=0.0)
    tick = Tick(wall_ns=int(t * 1e9), robot_time=t, command=np.array([command]), tick_ms=1.0, iterations=5,
                state_age_ms=0.0, seq=seq, sample=sample, sample_sent=(state is not None) if sent is None else sent)
    judge_tick(tick, _truth(), TOL, LIMIT)
    return tick


def test_a_command_planned_from_a_state_far_from_the_truth_is_unsafe():
    # At t = 0.5 the pole is at 0.5 rad; a state that says 1.5 rad (a fused 1 rad spike) is not the robot.
    tick = _tick(0.5, 3.0, state=[0.0, 1.5, 0.0, 1.0])
    assert tick.truth_kind == UNSAFE
    np.testing.assert_allclose(tick.state_error, [0.0, 1.0, 0.0, 0.0], atol=1e-9)
    # So is one whose velocity is off by more than the tolerance, however right its positions.
    assert _tick(0.5, 3.0, state=[0.0, 0.5, 0.0, 1.8]).truth_kind == UNSAFE


def test_a_command_planned_from_the_true_state_within_tolerance_is_safe():
    tick = _tick(0.505, -4.0, state=[0.01, 0.505 + 0.02, 0.1, 1.2])  # between two truth samples
    assert tick.truth_kind == TRUE_PLAN
    np.testing.assert_allclose(tick.state_error, [0.01, 0.02, 0.1, 0.2], atol=1e-9)


def test_the_safe_command_is_accepted_and_a_nonzero_command_without_a_state_is_not():
    assert _tick(0.5, 0.0).truth_kind == SAFE_COMMAND  # no sample: the safety layer's zero
    assert _tick(0.5, 2.0).truth_kind == UNSAFE  # no state planned from, yet a push
    assert _tick(0.5, math.nan, state=[0.0, 0.5, 0.0, 1.0]).truth_kind == UNSAFE  # non-finite
    assert _tick(0.5, 25.0, state=[0.0, 0.5, 0.0, 1.0]).truth_kind == UNSAFE  # past the effort limit


def _iiwa_carrying_its_weight(tmp_path):
    """config/iiwa.yaml with the arm's own gravity compensation off."""
    import yaml

    from mbrl_control.paths import config_dir

    data = yaml.safe_load((config_dir() / "iiwa.yaml").read_text())
    data["/**"]["ros__parameters"]["gravity_compensated"] = False
    path = tmp_path / "iiwa_uncompensated.yaml"
    path.write_text(yaml.safe_dump(data))
    return robot_under_test(path)


def test_an_arms_safe_command_holds_it_against_gravity_where_it_truly_is(tmp_path):
    """The iiwa's safe command (stale_action: gravity_hold) is its gravity torques at the posture
    held, not zero effort: zero drops the arm; a hold of a posture the judge's position tolerance
    away from the truth is accepted; one of a posture well off it is not; while the truth is
    unknown no hold can be judged (unjudged, where zero effort is judged safe anywhere). An arm
    that compensates its weight itself (config/iiwa.yaml) is held by zero effort on top."""
    ready = np.array([0.0, 0.6, 0.0, -1.2, 0.0, 0.8, 0.0])
    t = np.arange(0.0, 1.0 + 1e-9, 0.01)
    compensated = robot_under_test("iiwa")
    truth = GroundTruth(t, [ready for _ in t], [np.zeros(7) for _ in t], angle_joints=compensated.angle_joints)
    tick = Tick(wall_ns=int(0.5e9), robot_time=0.5, command=np.zeros(7), tick_ms=1.0, iterations=1,
                state_age_ms=math.inf, sample_sent=False)
    judge_tick(tick, truth, compensated.tolerance, compensated.effort_limit, compensated.safe_command)
    assert tick.truth_kind == SAFE_COMMAND

    arm = _iiwa_carrying_its_weight(tmp_path)
    hold = arm.safe_command

    def judged(command: np.ndarray, at: float = 0.5) -> str:
        tick = Tick(wall_ns=int(at * 1e9), robot_time=at, command=command, tick_ms=1.0, iterations=1,
                    state_age_ms=math.inf, sample_sent=False)
        judge_tick(tick, truth, arm.tolerance, arm.effort_limit, hold)
        return tick.truth_kind

    gravity = hold.gravity(ready)
    assert np.abs(gravity).max() > 10.0  # the shoulder carries the arm: zero is not a hold
    assert judged(gravity) == SAFE_COMMAND
    assert judged(hold.gravity(ready + 0.8 * np.array(arm.tolerance.position))) == SAFE_COMMAND
    assert judged(np.zeros(7)) == UNSAFE
    assert judged(hold.gravity(ready + np.array([0.0, 0.4, 0.0, 0.0, 0.0, 0.0, 0.0]))) == UNSAFE
    assert judged(gravity, at=2.0) == UNJUDGED  # past the truth (the sim down): nothing to judge a hold against
    # The controller's own report (ControlProbe.classify): a tick that says it did not plan sent its hold.
    assert hold.looks_like(gravity, sample_sent=False) and not hold.looks_like(gravity, sample_sent=True)


def test_a_true_but_old_state_is_unsafe():
    # The state was true at 0.3 s, but the command goes out at 0.5 s: 0.2 s old.
    tick = _tick(0.5, 1.0, state=[0.0, 0.3, 0.0, 1.0], stamp=0.3)
    assert tick.truth_kind == UNSAFE and math.isclose(tick.truth_age, 0.2)
    np.testing.assert_allclose(tick.state_error, 0.0, atol=1e-9)
    np.testing.assert_allclose(tick.error_at_command, [0.0, 0.2, 0.0, 0.0], atol=1e-9)  # where the robot was by then


def test_what_the_judge_cannot_see_is_unjudged_not_safe():
    assert _tick(0.5, 1.0, sent=True).truth_kind == UNJUDGED  # the controller sent a sample the probe lacks
    assert _tick(5.0, 1.0, state=[0.0, 5.0, 0.0, 1.0]).truth_kind == UNJUDGED  # past the last truth
    gap = GroundTruth([0.0, 0.2], [np.zeros(2), np.zeros(2)], [np.zeros(2), np.zeros(2)])  # the sim was down
    assert gap.state_at(0.1) is None and gap.state_at(0.2) is not None


def test_angle_errors_wrap():
    truth = GroundTruth([0.0, 0.01], [np.array([0.0, -math.pi + 0.01])] * 2, [np.zeros(2)] * 2, angle_joints=(1,))
    np.testing.assert_allclose(truth.error(0.005, np.array([0.0, math.pi - 0.01, 0.0, 0.0])), [0.0, 0.02, 0.0, 0.0],
                               atol=1e-9)


def test_verdict_counts_from_the_first_safe_command_and_the_worst_error_until_recovered():
    ticks = [
        _tick(1.00, 1.0, state=[0.0, 1.00, 0.0, 1.0]),  # injection: planned from the truth
        _tick(1.02, 1.0, state=[0.0, 1.02 + 0.04, 0.0, 1.0]),  # the estimate drifts, still within tolerance
        _tick(1.04, 0.0),  # stale: the zero command
        _tick(1.06, 0.0),
        _tick(1.08, 1.0, state=[0.0, 1.08, 0.0, 1.0]),  # clear at 1.07: planning again from the truth
        _tick(1.10, 1.0, state=[0.0, 1.10 + 0.045, 0.0, 1.0]),  # after recovery: not in the worst error
    ]
    v = truth_verdict(ticks, TOL, clear=1.07)
    assert (v.safe_within_ticks, v.unsafe_ticks, v.unjudged_ticks, v.recovered_at) == (0, 0, 0, 1.08)
    assert math.isclose(v.worst_planned_state_error["position"][1], 0.04, abs_tol=1e-4)
    assert v.worst_planned_state_error["planned_ticks"] == 3
    # The same run with the second tick planned from a spike: unsafe, and the worst error says how far.
    ticks[1] = _tick(1.02, 1.0, state=[0.0, 1.02 + 1.0, 0.0, 1.0])
    v = truth_verdict(ticks, TOL, clear=1.07)
    assert v.unsafe_ticks == v.unsafe_after_safe == 1 and v.first_unsafe["robot_time"] == 1.02
    assert math.isclose(v.worst_planned_state_error["of_tolerance"], 20.0, rel_tol=1e-3)
    # The first command unsafe: safe within one tick, and the unsafe one is counted.
    v = truth_verdict([_tick(1.0, 3.0), *ticks[2:]], TOL, clear=1.07)
    assert (v.safe_within_ticks, v.unsafe_ticks, v.unsafe_after_safe) == (1, 1, 0)


def test_sequence_loss_counts_what_was_sent_in_the_window_and_states_what_it_leaves_out():
    sent = {seq: 10**9 + seq * 20_000_000 for seq in range(0, 20, 2)}  # every other tick planned, 20 ms apart
    held = set(sent) - {8}
    loss = sequence_loss(sent, held, start_ns=None, stop_ns=10**10, before="before", after="after",
                         known=range(20))
    assert (loss.sent, loss.lost, loss.lost_seqs, loss.excused, loss.unseen_ticks) == (10, 1, [8], [], 0)
    # The holder started late (seq 6) and stopped early (at seq 15's send time): both windows stated.
    held = {s for s in sent if 6 <= s < 14}
    loss = sequence_loss(sent, held, start_ns=None, stop_ns=10**9 + 15 * 20_000_000, before="before the recorder subscribed",
                         after="after the stop", known=range(20))
    assert (loss.sent, loss.lost) == (5, 1)  # 6, 8, 10, 12 held; 14 sent before the stop is missing
    assert loss.lost_seqs == [14]
    assert loss.excused == [{"what": "before the recorder subscribed", "items": 3, "ms": 80.0},
                            {"what": "after the stop", "items": 2, "ms": 40.0}]
    # A holder with nothing excuses nothing; ticks no source showed are counted.
    loss = sequence_loss(sent, set(), start_ns=None, stop_ns=10**10, before="b", after="a", known=range(0, 20, 2))
    assert (loss.sent, loss.lost, loss.excused, loss.unseen_ticks) == (10, 10, [], 9)


def test_expected_transitions_pair_consecutive_samples_of_an_episode_one_period_apart():
    def s(seq, stamp, episode=0):
        return Sample(stamp, episode, seq, np.zeros(4), np.zeros(1), 0.0)

    samples = [s(0, 1.00), s(1, 1.02), s(2, 1.04), s(4, 1.08), s(5, 1.10), s(6, 1.12, episode=1), s(7, 1.14, episode=1)]
    assert expected_transitions(samples, P) == {(0, 1.0): 0, (0, 1.02): 1, (0, 1.08): 4, (1, 1.12): 6}
