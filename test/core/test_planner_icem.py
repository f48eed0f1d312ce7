"""iCEM: colored noise, elites kept across iterations and ticks, population decay, budget, deadline.

Closed-loop swing-up and balance: test_planner_closed_loop.py.
"""

import math

import pytest
import torch

from mbrl_control.core.builders import load_robot
from mbrl_control.core.planners import CEMConfig, ICEMConfig, ICEMPlanner
from mbrl_control.core.planners.noise import ColoredNoise
from mbrl_control.core.rollout import TrajectoryEvaluator

DT = 0.02
HANGING = torch.tensor([0.0, math.pi, 0.0, 0.0])


@pytest.fixture(scope="module")
def eager_evaluator():
    robot = load_robot("cartpole")
    return TrajectoryEvaluator(robot.model, robot.task, compile=False)


class Spy:
    """Wraps an evaluator, recording every batch and its costs."""

    def __init__(self, evaluator):
        self.evaluator, self.batches, self.costs = evaluator, [], []
        self.task = evaluator.task

    def __call__(self, x0, samples):
        costs, states = self.evaluator(x0, samples)
        self.batches.append(samples.clone())
        self.costs.append(costs.clone())
        return costs, states


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.5])
def test_colored_noise_has_unit_variance_and_smoothness_grows_with_beta(beta):
    lag1 = []
    for b in (beta, beta + 1.0):
        noise = ColoredNoise(30, 1, 20000, b, torch.Generator().manual_seed(0))
        x = noise.sample()
        assert x.data_ptr() == noise.out.data_ptr() and noise.sample().data_ptr() == x.data_ptr()
        torch.testing.assert_close(x.var(dim=-1), torch.ones(30, 1), atol=0.05, rtol=0)
        lag1.append(float((x[1:] * x[:-1]).mean()))
    assert lag1[1] > lag1[0] + 0.02


def test_elites_are_kept_across_iterations_and_shifted_into_the_next_tick(eager_evaluator):
    config = ICEMConfig(population=40, elites=10, iterations=3, horizon=8, keep_elites=0.3, seed=0)
    planner = ICEMPlanner(eager_evaluator, config)
    spy = Spy(eager_evaluator)
    planner.evaluator = spy
    x0 = torch.tensor([0.0, 3.0, 0.0, 0.0])
    plan = planner.plan(x0)
    keep = round(config.keep_elites * config.elites)
    for it in (1, 2):  # members 1..keep of iteration it are the best of iteration it-1
        best = torch.topk(spy.costs[it - 1], keep, largest=False).indices
        torch.testing.assert_close(spy.batches[it][1 : 1 + keep], spy.batches[it - 1][best])
    last_elites = spy.batches[2][torch.topk(spy.costs[2], keep, largest=False).indices]
    planner.plan(x0)
    shifted = torch.cat([last_elites[:, 1:], last_elites[:, -1:]], dim=1)
    torch.testing.assert_close(spy.batches[3][1 : 1 + keep], shifted)
    # The plan is the best sequence evaluated in its tick.
    costs = torch.cat(spy.costs[:3])
    assert plan.cost == pytest.approx(float(costs.min()), rel=1e-6)
    torch.testing.assert_close(plan.actions, torch.cat(spy.batches[:3])[costs.argmin()])


def test_population_decays_per_iteration_down_to_twice_the_elites(eager_evaluator):
    config = ICEMConfig(population=64, elites=8, iterations=4, horizon=5, population_decay=2.0)
    planner = ICEMPlanner(eager_evaluator, config)
    spy = Spy(eager_evaluator)
    planner.evaluator = spy
    planner.plan(HANGING)
    assert [b.shape[0] for b in spy.batches] == [64, 32, 16, 16]


def test_plan_reuses_its_buffers_and_respects_bounds(eager_evaluator):
    planner = ICEMPlanner(eager_evaluator, ICEMConfig(population=50, elites=10, iterations=2, horizon=10))
    buffers = (planner._samples_t[0], planner._mean, planner._std, planner._kept, planner._noise.out)
    ptrs = [t.data_ptr() for t in buffers]
    for _ in range(3):
        plan = planner.plan(HANGING)
        assert plan.actions.abs().max() <= 20.0
    assert ptrs == [t.data_ptr() for t in buffers]


def test_default_budget_is_at_most_a_third_of_cems_samples():
    icem, cem = ICEMConfig(), CEMConfig()  # the closed-loop test shows it swings up with it
    assert icem.population * icem.iterations <= cem.population * cem.iterations / 3


def test_rejects_bad_configs(eager_evaluator):
    for bad in ({"elites": 0}, {"keep_elites": 1.5}, {"population_decay": 0.5}, {"noise_beta": -1.0}):
        with pytest.raises(ValueError):
            ICEMPlanner(eager_evaluator, ICEMConfig(**bad))
