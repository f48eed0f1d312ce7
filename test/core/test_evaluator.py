"""The trajectory evaluator's threads and particles.

Threads: a batch cut into shares evaluated at the same time gives exactly the results of
evaluating each share alone (same draws), for analytic and learned models, eager and compiled;
a planner using it stays reproducible. Particles (PETS): a sequence's cost is the mean over its
particles' rollouts, each with its own member draws."""

import math

import pytest
import torch

from mbrl_control.core.dynamics import EnsembleConfig, EnsembleDynamics, PropagationConfig
from mbrl_control.core.planners import CEMConfig, CEMPlanner
from mbrl_control.core.rollout import TrajectoryEvaluator

ENSEMBLE = EnsembleConfig(state_dim=4, action_dim=1, dt=0.02, members=5, hidden=16, layers=2, angle_dims=(1,))
X0 = torch.tensor([0.0, math.pi, 0.0, 0.0])


def actions(batch: int, horizon: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(batch)
    return (10 * torch.randn(horizon, 1, batch, generator=g)).permute(2, 0, 1)  # the planners' layout


def test_shares_are_contiguous_and_whole_groups_of_members(cartpole):
    model = EnsembleDynamics(ENSEMBLE, PropagationConfig(kernel="torch"))  # the fused kernel threads itself
    evaluator = TrajectoryEvaluator(model, cartpole.task, threads=2)
    assert evaluator._shares(500) == [(0, 250), (250, 500)]
    assert evaluator._shares(334) == [(0, 165), (165, 334)]  # the last one pads to whole groups itself
    assert TrajectoryEvaluator(cartpole.model, cartpole.task, threads=3)._shares(10) == [(0, 3), (3, 6), (6, 10)]


def test_analytic_model_gives_the_same_results_on_two_threads(cartpole):
    a = actions(101, 12)
    one = TrajectoryEvaluator(cartpole.model, cartpole.task)(X0, a)
    two = TrajectoryEvaluator(cartpole.model, cartpole.task, threads=2)(X0, a)
    for x, y in zip(one, two):  # equal up to rounding (vector loops split a shorter batch differently)
        torch.testing.assert_close(y, x, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("compile", [False, True])
def test_each_share_is_evaluated_with_its_own_draws(cartpole, compile):
    model = EnsembleDynamics(ENSEMBLE, PropagationConfig(mode="ts1", output_noise=True, seed=3)).freeze()
    a = actions(60, 8)
    threaded = TrajectoryEvaluator(model, cartpole.task, compile=compile, threads=2)
    model.reseed()
    costs, states = threaded(X0, a)
    assert costs.shape == (60,) and states.shape == (60, 9, 4)
    # The same, share by share, with the draws in the same order.
    model.reseed()
    alone = TrajectoryEvaluator(model, cartpole.task)
    expected = [alone(X0, a[lo:hi]) for lo, hi in ((0, 30), (30, 60))]
    torch.testing.assert_close(costs, torch.cat([e[0] for e in expected]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(states, torch.cat([e[1] for e in expected]), rtol=1e-5, atol=1e-5)


def test_a_planner_on_two_threads_is_reproducible(cartpole):
    model = EnsembleDynamics(ENSEMBLE, PropagationConfig(mode="ts1", seed=1)).freeze()
    plans = []
    for _ in range(2):
        model.reseed()
        planner = CEMPlanner(TrajectoryEvaluator(model, cartpole.task, threads=2),
                             CEMConfig(population=50, elites=5, iterations=2, horizon=6))
        plans.append(planner.plan(X0))
    torch.testing.assert_close(plans[1].actions, plans[0].actions, rtol=0, atol=0)
    assert plans[0].iterations == 2


def test_particles_average_the_cost_of_their_own_rollouts(cartpole):
    model = EnsembleDynamics(ENSEMBLE, PropagationConfig(mode="ts1", seed=2)).freeze()
    a = actions(6, 5)
    evaluator = TrajectoryEvaluator(model, cartpole.task, particles=4)
    model.reseed()
    costs, states = evaluator(X0, a)
    assert costs.shape == (6,) and states.shape == (6, 6, 4)
    model.reseed()  # the same draws, for the 24 rollouts spelled out
    repeated = a.repeat_interleave(4, dim=0)
    each = model.rollout(X0.expand(24, -1), repeated)
    particle_costs = cartpole.task.trajectory_cost(each, repeated).view(6, 4)
    torch.testing.assert_close(costs, particle_costs.mean(1))
    torch.testing.assert_close(states, each.view(6, 4, 6, 4).mean(1))
    assert (particle_costs.std(1) > 0).all()  # the particles did take different members
    # A deterministic model: every particle the same, so the cost is the single rollout's.
    single = TrajectoryEvaluator(cartpole.model, cartpole.task)(X0, a)[0]
    torch.testing.assert_close(TrajectoryEvaluator(cartpole.model, cartpole.task, particles=3)(X0, a)[0], single)
