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
    assert float(task.running_cost(upright, torch.full((1, 1, 1), 10.0))) == pytest.approx(1e-4 * 100, rel=1e-5)
    assert float(task.terminal_cost(hanging[:, 0])) == pytest.approx(5.0 * 2.0, rel=1e-6)


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
