"""The LQR terminal cost of a model that changes (core/tasks/lqr_terminal.LearnedLQRTerminal): the
cost-to-go a learned model's controller prices its horizon's end with, re-solved for each model."""

import math

import numpy as np
import torch
from conftest import DT, WithMotorGain, mismatched_params

from mbrl_control.core.builders import with_terminal
from mbrl_control.core.planners import CEMConfig, CEMPlanner
from mbrl_control.core.rollout import TrajectoryEvaluator
from mbrl_control.core.tasks.lqr_terminal import LearnedLQRTerminal, LQRTerminalCost


def learned_terminal(cartpole) -> tuple[LQRTerminalCost, LearnedLQRTerminal]:
    eq = cartpole.robot.equilibrium()
    terminal = LQRTerminalCost(cartpole.task, np.zeros((4, 4)), eq.x_eq, eq.angle_dims)
    return terminal, LearnedLQRTerminal(terminal, cartpole.task, eq.x_eq, eq.u_eq)


def test_a_refit_gives_the_lqr_cost_to_go_of_the_model_it_was_given(cartpole):
    terminal, refitter = learned_terminal(cartpole)
    assert terminal.value_matrix.abs().max() == 0  # no model yet: the running cost alone
    assert refitter.refit(cartpole.model) and refitter.fits == 1
    solved_once = with_terminal(cartpole.task, cartpole.model, "lqr", equilibrium=cartpole.robot.equilibrium())
    torch.testing.assert_close(terminal.value_matrix, solved_once.value_matrix)
    x = torch.tensor([[0.3, 0.2 + 2 * math.pi, -0.3, 0.5]])  # the angle wrapped, as in the analytic terminal
    torch.testing.assert_close(terminal.terminal_cost(x), solved_once.terminal_cost(x))


def test_a_model_that_cannot_be_stabilised_keeps_the_last_cost_to_go(cartpole):
    terminal, refitter = learned_terminal(cartpole)
    assert refitter.refit(cartpole.model)
    before = terminal.value_matrix.clone()
    deaf = WithMotorGain(cartpole.params, DT, 0.0)  # ignores its command: the upright pole cannot be held
    assert not refitter.refit(deaf)
    assert refitter.failures == 1 and refitter.fits == 1
    torch.testing.assert_close(terminal.value_matrix, before)


def test_the_models_own_cost_to_go_brings_a_balanced_cart_back_to_the_centre_faster(cartpole):
    """The slow part of balancing: the cart 1.5 m off centre, the pole upright. CEM's 0.6 s horizon
    sees the way back only through the cart's small position cost; the cost-to-go of the model it
    plans on (a wrong one: the conftest's mismatched cart-pole) prices the rest. 2 s on the plant."""
    wrong = WithMotorGain(mismatched_params(cartpole.params), DT, 0.9)
    terminal, refitter = learned_terminal(cartpole)
    assert refitter.refit(wrong)
    distance = {}
    for name, task in (("task", cartpole.task), ("lqr", terminal)):
        planner = CEMPlanner(TrajectoryEvaluator(wrong, task, compile=False), CEMConfig(seed=0))
        x = torch.tensor([1.5, 0.0, 0.0, 0.0], dtype=torch.float64)
        for _ in range(100):
            x = cartpole.plant.step(x[None], planner.plan(x.float()).actions[0].double()[None])[0]
        assert abs(math.remainder(float(x[1]), 2 * math.pi)) < 0.2  # still balanced after the 2 s
        distance[name] = abs(float(x[0]))
    assert distance["lqr"] < 0.25 and distance["task"] > 0.5, distance  # 0.07 and 0.73 m when written
