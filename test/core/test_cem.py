"""CEM swings the cart-pole up and balances it on the analytic model, no ROS involved."""

import math

import numpy as np
import pytest
import torch

from mbrl_control.core.builders import build_planner
from mbrl_control.core.planners import CEMConfig, CEMPlanner
from mbrl_control.core.rollout import TrajectoryEvaluator
from mbrl_control_testing.episode import run_episode

DT = 0.02


@pytest.fixture(scope="module")
def setup(cartpole):
    return cartpole.params, cartpole.model, cartpole.task, cartpole.plant


@pytest.fixture(scope="module")
def compiled_evaluator(setup):
    _, model, task, _ = setup
    return TrajectoryEvaluator(model, task, compile=True)


def test_swings_up_and_balances_for_ten_of_ten_seeds(setup, compiled_evaluator):
    _, _, task, plant = setup
    results = []
    for seed in range(10):
        planner = CEMPlanner(compiled_evaluator, CEMConfig(seed=seed))
        g = torch.Generator().manual_seed(seed)
        x0 = torch.tensor([0.0, math.pi, 0.0, 0.0]) + 0.1 * torch.randn(4, generator=g)
        ep = run_episode(planner, plant, x0, steps=400)  # 8 s: swing up, then 5 s balanced
        results.append(task.success(ep.states, ep.times))
        assert np.abs(ep.actions).max() <= float(task.action_high[0]) + 1e-6
    assert all(results), f"succeeded for seeds {[i for i, ok in enumerate(results) if ok]}"


def test_swings_up_and_balances_the_mismatched_plant(cartpole, compiled_evaluator):
    """The robot is not the model (conftest: pole 10 % heavier, damped joints, 90 % motor gain):
    CEM, replanning every tick from the true state, still swings it up and balances it."""
    results = []
    for seed in range(3):
        planner = CEMPlanner(compiled_evaluator, CEMConfig(seed=seed))
        g = torch.Generator().manual_seed(seed)
        x0 = torch.tensor([0.0, math.pi, 0.0, 0.0]) + 0.1 * torch.randn(4, generator=g)
        ep = run_episode(planner, cartpole.mismatched_plant, x0, steps=400)
        results.append(cartpole.task.success(ep.states, ep.times))
    assert all(results), f"succeeded for seeds {[i for i, ok in enumerate(results) if ok]}"


def test_same_seed_same_plan(compiled_evaluator):
    x0 = torch.tensor([0.1, 3.0, 0.0, 0.5])
    pa = CEMPlanner(compiled_evaluator, CEMConfig(seed=3)).plan(x0)
    pb = CEMPlanner(compiled_evaluator, CEMConfig(seed=3)).plan(x0)
    torch.testing.assert_close(pa.actions, pb.actions)
    assert pa.states.shape == (31, 4) and pa.actions.shape == (30, 1)
    torch.testing.assert_close(pa.states[0], x0)


def test_warm_start_shifts_the_mean_and_seeds_the_next_population(compiled_evaluator):
    planner = CEMPlanner(compiled_evaluator, CEMConfig(seed=0, horizon=30))
    planner._mean.copy_(torch.arange(30.0).unsqueeze(-1))
    planner._shift_warm_start()
    assert planner._mean[:, 0].tolist() == list(range(1, 30)) + [29.0]
    first_members = []
    evaluate = planner.evaluator

    def spy(x0, samples):
        first_members.append(samples[0].clone())
        return evaluate(x0, samples)

    planner.evaluator = spy
    planner.plan(torch.tensor([0.0, 3.0, 0.0, 0.0]))
    warm = planner._mean.clone()
    planner.plan(torch.tensor([0.0, 3.0, 0.0, 0.0]))
    torch.testing.assert_close(first_members[-planner.config.iterations], warm.clamp(-20, 20))


def test_plan_reuses_its_buffers(compiled_evaluator):
    planner = CEMPlanner(compiled_evaluator, CEMConfig(seed=0))
    buffers = lambda: [t.data_ptr() for t in (planner._noise.out, *planner._samples_t, planner._mean, planner._std)]
    ptrs = buffers()
    for _ in range(3):
        planner.plan(torch.tensor([0.0, math.pi, 0.0, 0.0]))
    assert ptrs == buffers()


def test_rejects_bad_configs(compiled_evaluator):
    with pytest.raises(ValueError):
        CEMPlanner(compiled_evaluator, CEMConfig(population=10, elites=20))
    with pytest.raises(ValueError):
        build_planner("nope", compiled_evaluator.model, compiled_evaluator.task)
