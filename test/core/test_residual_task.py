"""The residual-term task (core/tasks/residual.py): costs from config/<robot>.yaml, success on
hand-made trajectories, goals clamped into the reachable region."""

import math

import numpy as np
import pytest
import torch

from mbrl_control.config import node_parameters
from mbrl_control.core.robot import RobotSpecError, robot_spec
from mbrl_control.core.tasks.residual import build_residual_task
from mbrl_control.paths import config_dir


@pytest.fixture(scope="module")
def cartpole_params() -> dict:
    return node_parameters(config_dir() / "cartpole.yaml", "mpc_controller")


def test_cartpole_cost_terms_price_what_they_name(cartpole_params):
    spec = robot_spec(cartpole_params)
    task = build_residual_task(spec, cartpole_params)
    upright = torch.zeros(1, 1, 4)
    hanging = torch.tensor([[[0.0, math.pi, 0.0, 0.0]]])
    u0 = torch.zeros(1, 1, 1)
    assert float(task.running_cost(upright, u0)) == pytest.approx(0.0, abs=1e-7)
    # 1 - cos(pi) = 2, weight 1; a full turn is upright again (the pole's joint is continuous)
    assert float(task.running_cost(hanging, u0)) == pytest.approx(2.0, rel=1e-6)
    assert float(task.running_cost(torch.tensor([[[0.0, 2 * math.pi, 0.0, 0.0]]]), u0)) == pytest.approx(0.0, abs=1e-5)
    # the soft track limit sits 0.4 m inside the URDF's 2.4 m: 0.5 m past the limit's 2.0 costs 100 * 0.25
    past = torch.tensor([[[2.5, 0.0, 0.0, 0.0]]])
    assert float(task.running_cost(past, u0)) == pytest.approx(0.1 * 2.5**2 + 100 * 0.5**2, rel=1e-5)
    task.set_last_command(torch.tensor([10.0]))  # held: no change of command to price
    assert float(task.running_cost(upright, torch.full((1, 1, 1), 10.0))) == pytest.approx(1e-4 * 100, rel=1e-5)
    assert float(task.terminal_cost(hanging[:, 0])) == pytest.approx(5.0 * 2.0, rel=1e-6)


def test_command_rate_prices_each_change_and_single_steps_leave_it_out(cartpole_params):
    rate = 0.002
    p = cartpole_params | {"task.terms": [*cartpole_params["task.terms"], "rate"], "task.rate.residual": "command_rate",
                           "task.rate.weight": rate}
    task = build_residual_task(robot_spec(p), p)
    upright = torch.zeros(1, 3, 4)
    sequence = torch.tensor([[[4.0], [4.0], [-2.0]]])  # from 1 N last sent: changes 3, 0, -6
    task.set_last_command(torch.tensor([1.0]))
    effort = 1e-4 * (16 + 16 + 4)
    assert float(task.running_cost(upright, sequence)) == pytest.approx(effort + rate * (9 + 0 + 36), rel=1e-5)
    # A step taken out of any sequence (DP, LQR, iLQR, a model-rollout reward) has no command before it.
    steps = task.step_cost(upright[0], sequence[0])
    torch.testing.assert_close(steps, torch.tensor([16e-4, 16e-4, 4e-4]))
    task.set_last_command(torch.tensor([-20.0]))
    torch.testing.assert_close(task.step_cost(upright[0], sequence[0]), steps)


def test_runtime_weight_change_reaches_the_cost(cartpole_params):
    task = build_residual_task(robot_spec(cartpole_params), cartpole_params)
    hanging = torch.tensor([[[0.0, math.pi, 0.0, 0.0]]])
    before = float(task.running_cost(hanging, torch.zeros(1, 1, 1)))
    task.set_weight("upright", 3.0)
    assert float(task.running_cost(hanging, torch.zeros(1, 1, 1))) == pytest.approx(3 * before, rel=1e-6)
    with pytest.raises(KeyError):
        task.set_weight("no_such_term", 1.0)


def test_hold_success_needs_the_whole_window_near_the_posture(cartpole_params):
    task = build_residual_task(robot_spec(cartpole_params), cartpole_params)
    times = np.arange(400) * 0.02  # 8 s
    states = np.zeros((400, 4))
    states[:, 1] = 0.1
    assert task.success(states, times)
    late_wobble = states.copy()
    late_wobble[-10, 1] = 0.3  # outside 0.2 rad within the last 5 s
    assert not task.success(late_wobble, times)
    early_swing = states.copy()
    early_swing[:100, 1] = math.pi  # hanging before the window: still a success
    assert task.success(early_swing, times)
    off_track = states.copy()
    off_track[-1, 0] = 2.45  # past the URDF's track limit
    assert not task.success(off_track, times)
    assert not task.success(states[:200], times[:200])  # 4 s is shorter than the 5 s window


def test_bad_term_configuration_names_the_parameter(cartpole_params):
    spec = robot_spec(cartpole_params)
    with pytest.raises(RobotSpecError, match="task.upright.joints"):
        build_residual_task(spec, cartpole_params | {"task.upright.joints": ["elbow"]})
    with pytest.raises(RobotSpecError, match="task.track.margin"):
        build_residual_task(spec, cartpole_params | {"task.track.margin": 3.0})
    with pytest.raises(RobotSpecError, match="task.effort.scale"):
        build_residual_task(spec, cartpole_params | {"task.effort.scale": [1.0, 2.0]})
    with pytest.raises(RobotSpecError, match="state_joints"):
        robot_spec(cartpole_params | {"state_joints": ["slider_to_cart", "elbow"]})


@pytest.fixture(scope="module")
def iiwa():
    from mbrl_control.core.builders import load_robot

    return load_robot("iiwa")


def test_reach_cost_is_zero_at_the_goal_and_pulls_with_constant_force_far_away(iiwa):
    task, spec = iiwa.task, iiwa.spec
    q = torch.tensor(spec.equilibrium, dtype=torch.float32)
    x = torch.cat([q, torch.zeros(7)]).view(1, 1, 14)
    goal = task.reach_point(x[0].numpy())[0]
    assert task.set_goal(goal) == ""  # inside the reachable region: not clamped
    reach = task.terms[task.names.index("reach")]
    assert float(reach(x, None, task.goal, task.last_command)) == pytest.approx(0.0, abs=1e-6)
    costs = []
    for distance in (0.2, 0.4):
        assert task.set_goal(goal - np.array([distance, 0.0, 0.0])) == ""  # towards the base, inside the region
        costs.append(float(reach(x, None, task.goal, task.last_command)))
    # smooth_abs: ~linear far from the goal (0.2 m more costs ~0.2 more), unlike a quadratic (x3)
    assert costs[1] - costs[0] == pytest.approx(0.2, rel=0.05)


def test_reach_success_is_the_end_within_two_centimetres(iiwa):
    task, spec = iiwa.task, iiwa.spec
    states = np.tile(np.r_[spec.equilibrium, np.zeros(7)], (50, 1))
    end = task.reach_point(states[-1:])[0]
    times = np.arange(50) * 0.02
    task.set_goal(end + np.array([0.015, 0.0, 0.0]))
    assert task.success(states, times)
    task.set_goal(end + np.array([0.025, 0.0, 0.0]))
    assert not task.success(states, times)
    far = states.copy()
    far[:-1, 1] += 0.5  # where the arm was before the end does not matter
    task.set_goal(end)
    assert task.success(far, times)


def test_goals_outside_the_reachable_region_are_clamped_with_a_reason(iiwa):
    task = iiwa.task
    low, reason = task.clamp_goal(np.array([0.5, 0.0, -0.3]))
    assert low[2] == pytest.approx(0.15) and "below" in reason
    far, reason = task.clamp_goal(np.array([3.0, 0.0, 0.36]))
    np.testing.assert_allclose(far, [0.75, 0.0, 0.36], atol=1e-9)
    assert "beyond the reach" in reason
    inside, reason = task.clamp_goal(np.array([0.4, 0.2, 0.6]))
    assert reason == "" and np.allclose(inside, [0.4, 0.2, 0.6])
    with pytest.raises(ValueError):
        task.set_goal(np.array([np.nan, 0.0, 0.5]))


def test_random_goals_are_reachable_seeded_and_inside_the_region(iiwa):
    from mbrl_control.core.tasks.goals import random_goals

    goals = random_goals(iiwa.task, 20, seed=3)
    assert goals.shape == (20, 3)
    assert all(iiwa.task.clamp_goal(g)[1] == "" for g in goals)
    np.testing.assert_array_equal(goals, random_goals(iiwa.task, 20, seed=3))
    assert not np.allclose(goals, random_goals(iiwa.task, 20, seed=4))
    assert np.linalg.norm(goals[:, :2], axis=1).max() > 0.3  # spread over the workspace, not one point


def test_the_arm_is_held_at_its_equilibrium_by_the_equilibrium_effort():
    """The arm carrying its own weight (config/iiwa.yaml has it compensated, where zero holds)."""
    from mbrl_control.core.builders import load_robot

    iiwa = load_robot("iiwa", overrides={"gravity_compensated": False})
    eq = iiwa.equilibrium()
    x = torch.tensor(eq.x_eq, dtype=torch.float32).unsqueeze(0)
    moved = iiwa.model.step(x, torch.tensor(eq.u_eq, dtype=torch.float32).unsqueeze(0))
    assert float((moved - x).abs().max()) < 1e-4  # gravity torques: at rest, it stays
    assert abs(eq.u_eq[1]) > 10.0  # the shoulder does carry the arm
