"""Velocity commands over an effort-controlled arm: the action space the sampling planners search.

CEM sampling efforts does not move the iiwa to its goals (its plans' cost falls while the hand
stays put); sampling joint speeds, made efforts by the URDF's inverse dynamics inside the model, it
reaches them. What leaves a tick is an effort within the robot's bounds."""

import numpy as np
import pytest
import torch

from mbrl_control.core.builders import build_mpc, robot_parameters
from mbrl_control.core.planners.velocity_commands import (
    ComputedTorque,
    VelocityCommandConfig,
    VelocityCommandPlanner,
    VelocityCommands,
)
from mbrl_control.core.tasks.goals import random_goals

# A small budget: eager, a few ms a tick, enough to show the difference.
SMALL = {"compile": False, "cem.population": 64, "cem.elites": 6, "cem.iterations": 1, "cem.horizon": 8}


def reach(sampling_actions: str, goal_index: int = 0, seconds: float = 2.0) -> float:
    """Closed loop on the URDF model from the ready pose to a seeded goal; the final hand error [m]."""
    p = robot_parameters("iiwa") | SMALL | {"planner": "cem", "sampling_actions": sampling_actions}
    mpc = build_mpc(p)
    spec, task = mpc.robot.spec, mpc.task
    goal = random_goals(task, goal_index + 1, 0)[goal_index]
    task.set_goal(goal)
    x = torch.tensor(spec.x_eq, dtype=torch.float32)
    limit = torch.as_tensor(spec.effort_limit, dtype=torch.float32)
    for _ in range(round(seconds / spec.dt)):
        u = mpc.planner.plan(x).actions[0]
        assert bool((u.abs() <= limit + 1e-3).all())  # efforts leave, within the robot's bounds
        x = mpc.model.step(x.unsqueeze(0), u.unsqueeze(0))[0]
    return float(task.error(x.numpy()[None], goal)[0])


def test_cem_reaches_with_velocity_commands_where_sampling_efforts_does_not():
    with_speeds, with_efforts = reach("velocity"), reach("effort")
    assert with_speeds < 0.02, with_speeds
    assert with_efforts > 2 * with_speeds, (with_efforts, with_speeds)


def test_the_inner_loop_tracks_a_commanded_speed():
    p = robot_parameters("iiwa") | {"compile": False}
    mpc = build_mpc(p | {"planner": "ilqr"})
    robot = mpc.robot
    commands = VelocityCommands(ComputedTorque(robot.kinematics, robot.spec.command_index, mpc.task.action_low,
                                               mpc.task.action_high))
    x = torch.tensor(robot.spec.x_eq, dtype=torch.float32).unsqueeze(0)
    v = torch.tensor([[0.3, -0.2, 0.4, 0.2, -0.5, 0.5, 1.0]])
    for _ in range(25):  # 0.5 s at gain 10 /s: five time constants
        x = robot.model.step(x, commands.efforts(x, v))
    np.testing.assert_allclose(x[0, 7:].numpy(), v[0].numpy(), atol=0.03)


def test_plans_leave_as_the_efforts_of_their_commands_along_the_predicted_states():
    p = robot_parameters("iiwa") | SMALL | {"planner": "cem", "sampling_actions": "velocity"}
    mpc = build_mpc(p)
    assert isinstance(mpc.planner, VelocityCommandPlanner)
    x0 = torch.tensor(mpc.robot.spec.x_eq, dtype=torch.float32)
    inner = mpc.planner.planner.plan(x0)
    mpc.planner.reset()
    plan = mpc.planner.plan(x0)
    expected = mpc.planner.commands.efforts(inner.states[:-1], inner.actions)
    torch.testing.assert_close(plan.actions, expected)
    # Standing still at rest costs the arm its gravity torques, no more.
    still = mpc.planner.commands.efforts(x0.unsqueeze(0), torch.zeros(1, 7))[0]
    hold = mpc.robot.kinematics.gravity_torques(x0[:7].unsqueeze(0))[0]
    torch.testing.assert_close(still, hold, atol=1e-4, rtol=1e-4)


def test_velocity_commands_refuse_what_they_cannot_drive():
    with pytest.raises(ValueError, match="sampling_actions 'velocity'.*every state joint commanded"):
        build_mpc(robot_parameters("cartpole") | {"compile": False, "planner": "cem", "sampling_actions": "velocity"})
    with pytest.raises(ValueError, match="sampling_actions 'velocity'.*deterministic model"):
        build_mpc(robot_parameters("iiwa") | SMALL | {"planner": "cem", "sampling_actions": "velocity",
                                                      "model": "learned"})
    with pytest.raises(ValueError, match="velocity_command.gain 200 /s is unstable"):
        build_mpc(robot_parameters("iiwa") | SMALL | {"planner": "cem", "sampling_actions": "velocity",
                                                      "velocity_command.gain": 200.0})
    # iLQR plans efforts whatever sampling_actions says.
    mpc = build_mpc(robot_parameters("iiwa") | {"compile": False, "planner": "ilqr", "sampling_actions": "velocity"})
    assert not isinstance(mpc.planner, VelocityCommandPlanner)
    assert VelocityCommandConfig().gain * 0.02 < 2.0
