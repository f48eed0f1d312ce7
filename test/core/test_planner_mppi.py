"""MPPI: path-integral weights, the control-cost term, warm start, buffers, deadline.

Closed-loop swing-up and balance: test_planner_closed_loop.py.
"""

import math

import pytest
import torch

from mbrl_control.core.planners import MPPIConfig, MPPIPlanner
from mbrl_control.core.planners.mppi import path_integral_weights
from mbrl_control.core.rollout import TrajectoryEvaluator

DT = 0.02
HANGING = torch.tensor([0.0, math.pi, 0.0, 0.0])


@pytest.fixture(scope="module")
def setup(cartpole):
    return cartpole.params, cartpole.model, cartpole.task


class ConstantCost:
    """An evaluator stand-in: every sequence costs the same, so only the control cost ranks them."""

    def __init__(self, task):
        self.task = task

    def __call__(self, x0, samples):
        return torch.zeros(samples.shape[0]), torch.zeros(samples.shape[0], samples.shape[1] + 1, 4)


def test_path_integral_weights_favour_low_costs_more_at_low_temperature():
    costs = torch.tensor([3.0, 1.0, 2.0, float("inf"), float("nan")])
    sharp, flat = torch.empty(5), torch.empty(5)
    path_integral_weights(costs, 0.1, out=sharp)
    path_integral_weights(costs, 10.0, out=flat)
    for w in (sharp, flat):
        assert float(w.sum()) == pytest.approx(1.0) and int(w.argmax()) == 1
        assert w[3] == 0 and w[4] == 0
        assert w[1] > w[2] > w[0]
    assert sharp[1] > flat[1]
    path_integral_weights(torch.full((4,), float("nan")), 1.0, out=sharp[:4])
    torch.testing.assert_close(sharp[:4], torch.full((4,), 0.25))


def test_control_cost_pulls_the_sequence_towards_zero_force(setup):
    _, _, task = setup
    sizes = []
    for gamma in (0.0, 1.0):
        planner = MPPIPlanner(ConstantCost(task), MPPIConfig(samples=2000, horizon=5, gamma=gamma, temperature=1.0))
        planner._mean.fill_(10.0)
        plan = planner.plan(HANGING)
        sizes.append(float(plan.actions.mean()))
    # gamma u' Sigma^-1 eps penalises noise along u: with gamma > 0 the update moves against u.
    assert sizes[0] == pytest.approx(10.0, abs=1.0)
    assert sizes[1] < sizes[0] - 2.0


def test_warm_start_is_the_shifted_sequence_and_member_zero(setup):
    _, model, task = setup
    evaluator = TrajectoryEvaluator(model, task)
    planner = MPPIPlanner(evaluator, MPPIConfig(samples=32, horizon=6, seed=0))
    plan = planner.plan(HANGING)
    first_members = []

    def spy(x0, samples):
        first_members.append(samples[0].clone())
        return evaluator(x0, samples)

    planner.evaluator = spy
    planner.plan(HANGING)
    expected = torch.cat([plan.actions[1:], plan.actions[-1:]])
    torch.testing.assert_close(first_members[0], expected)


def test_plan_reuses_its_buffers(setup):
    _, model, task = setup
    planner = MPPIPlanner(TrajectoryEvaluator(model, task), MPPIConfig(samples=32, horizon=6, iterations=2))
    buffers = (planner._samples_t, planner._eps, planner._weights, planner._mean, planner._noise.out)
    ptrs = [t.data_ptr() for t in buffers]
    for _ in range(3):
        plan = planner.plan(HANGING)
        assert plan.actions.abs().max() <= 20.0 and plan.states.shape == (7, 4)
    assert ptrs == [t.data_ptr() for t in buffers]


def test_rejects_bad_configs(setup):
    _, model, task = setup
    evaluator = TrajectoryEvaluator(model, task)
    for bad in ({"samples": 1}, {"temperature": 0.0}, {"gamma": -1.0}, {"noise_std": 0.0}):
        with pytest.raises(ValueError):
            MPPIPlanner(evaluator, MPPIConfig(**bad))
