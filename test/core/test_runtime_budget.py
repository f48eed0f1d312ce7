"""What a running controller or estimator may change between ticks (issue 17, "tune while it
runs"): the planners' budgets (``set_budget``, refused with a reason where buffers or a compiled
graph do not allow it), the terminal weights, the estimator's noise model."""

import math

import numpy as np
import pytest
import torch

from mbrl_control.core.builders import build_planner
from mbrl_control.core.estimation import build_estimator
from mbrl_control.core.planners.icem import ICEMConfig, population_schedule
from mbrl_control.core.planners.lqr import solve_lqr
from mbrl_control.core.tasks.lqr_terminal import LQRTerminalCost

HANGING = torch.tensor([0.0, 3.0, 0.0, 0.0])


class BatchSpy:
    """A trajectory evaluator that records the batch size of every call."""

    def __init__(self, evaluator) -> None:
        self.inner, self.task, self.model, self.batches = evaluator, evaluator.task, evaluator.model, []

    def __call__(self, x0, actions):
        self.batches.append(actions.shape[0])
        return self.inner(x0, actions)


def sampling_planner(cartpole, name: str, **config):
    # the planner itself (smoothing off): its evaluator is spied on
    planner = build_planner(name, cartpole.model, cartpole.task, {"horizon": 15, "smoothing_window": 0, **config},
                            compile=False)
    planner.evaluator = BatchSpy(planner.evaluator)
    return planner


@pytest.mark.parametrize("name", ["cem", "icem"])
def test_cem_budget_changes_what_the_next_plan_evaluates_and_keeps_the_warm_start(cartpole, name):
    planner = sampling_planner(cartpole, name, population=120, elites=12, iterations=2)
    planner.plan(HANGING)
    mean = planner._mean.clone()
    planner.evaluator.batches.clear()
    planner.set_budget(population=40, elites=4, iterations=3)
    assert torch.equal(planner._mean, mean)  # the warm start survives the change
    plan = planner.plan(HANGING)
    assert planner.evaluator.batches == [40, 40, 40] and plan.iterations == 3
    assert plan.actions.shape == (15, 1) and math.isfinite(plan.cost)
    # back up to the size allocated at start, more elites than before: still no allocation of samples
    planner.evaluator.batches.clear()
    planner.set_budget(population=120, elites=30, iterations=1)
    plan = planner.plan(HANGING)
    assert planner.evaluator.batches == [120] and plan.iterations == 1 and math.isfinite(plan.cost)
    assert planner.config.elites == 30 and planner._elites.shape[-1] == 30


@pytest.mark.parametrize("name", ["cem", "icem"])
def test_cem_budget_refusals_name_the_reason_and_change_nothing(cartpole, name):
    planner = sampling_planner(cartpole, name, population=100, elites=10, iterations=2)
    config = planner.config
    assert "allocated at start" in planner.budget_problem(population=101)
    assert "elites" in planner.budget_problem(population=20, elites=30)
    assert "no runtime setting" in planner.budget_problem(horizon=10)
    # A compiled evaluator has one graph per batch size: a new size would compile inside a tick.
    assert "compile" in planner.budget_problem(compiled=True, population=50)
    assert planner.budget_problem(compiled=True, iterations=5, elites=20) is None
    with pytest.raises(ValueError, match="allocated at start"):
        planner.set_budget(population=500)
    assert planner.config == config
    planner.plan(HANGING)


def test_icem_decay_schedule_is_the_planners_own():
    config = ICEMConfig(population=300, elites=10, iterations=4, population_decay=2.0)
    assert population_schedule(config) == [300, 150, 75, 38]


def test_icem_with_decay_refuses_compiled_sizes_it_has_not_seen(cartpole):
    planner = sampling_planner(cartpole, "icem", population=80, elites=8, iterations=3, population_decay=2.0)
    assert planner.populations == population_schedule(planner.config) == [80, 40, 20]
    assert planner.budget_problem(compiled=True, iterations=2) is None  # a prefix: graphs it has
    assert "[16]" in planner.budget_problem(compiled=True, iterations=4)  # 80/8, at least 2 elites: a new graph
    planner.set_budget(iterations=2)
    assert planner.budget_problem(compiled=True, iterations=3) is None  # back to sizes seen before


def test_mppi_samples_and_iterations(cartpole):
    planner = sampling_planner(cartpole, "mppi", samples=100, iterations=1)
    planner.plan(HANGING)
    mean = planner._mean.clone()
    planner.evaluator.batches.clear()
    planner.set_budget(samples=30, iterations=2)
    assert torch.equal(planner._mean, mean)
    plan = planner.plan(HANGING)
    assert planner.evaluator.batches == [30, 30] and plan.iterations == 2 and math.isfinite(plan.cost)
    assert plan.info["effective_samples"] <= 30
    assert "allocated at start" in planner.budget_problem(samples=101)
    assert "compile" in planner.budget_problem(compiled=True, samples=100)  # 30 is what it runs now
    assert planner.budget_problem(compiled=True, iterations=3) is None
    planner.set_budget(samples=100)
    planner.evaluator.batches.clear()
    planner.plan(HANGING)
    assert planner.evaluator.batches == [100, 100]


def test_ilqr_iterations(cartpole):
    planner = build_planner("ilqr", cartpole.model, cartpole.task, {"horizon": 15, "iterations": 1, "tolerance": 0.0},
                            compile=False)
    planner.plan(HANGING)
    planner.set_budget(iterations=3)
    plan = planner.plan(HANGING)
    assert plan.iterations == 3 and len(planner.cost_history) == 4
    assert "no runtime setting" in planner.budget_problem(horizon=10)
    with pytest.raises(ValueError, match="iterations >= 1"):
        planner.set_budget(iterations=0)


def test_terminal_weight_scales_the_lqr_terminal_cost_in_place(cartpole):
    P = solve_lqr(cartpole.model, cartpole.task).P
    terminal = LQRTerminalCost(cartpole.task, P, angle_dims=(1,), weight=2.0)
    x = torch.tensor([[0.1, 0.2, 0.0, 0.3]])
    buffer = terminal.terminal_weight
    cost = float(terminal.terminal_cost(x))
    terminal.set_terminal_weight(6.0)
    assert float(terminal.terminal_cost(x)) == pytest.approx(3.0 * cost, rel=1e-6)
    assert terminal.terminal_weight is buffer  # the tensor a compiled graph reads


def test_estimator_noise_changes_the_next_prediction_and_keeps_the_estimate(cartpole):
    config = {"accel_noise_density": [0.01, 0.05], "compile": False}
    ekf = build_estimator("ekf", cartpole.model, config, angular_joints=(False, True))
    ekf.update(np.array([0.0, 3.0]), 0.0)
    ekf.predict(np.zeros(1), 0.02)
    base = ekf.cov
    twin = build_estimator("ekf", cartpole.model, config, angular_joints=(False, True))
    twin.update(np.array([0.0, 3.0]), 0.0)
    twin.predict(np.zeros(1), 0.02)
    mean = ekf.mean
    ekf.set_noise(accel_noise_density=[1.0], position_noise_std=[0.01, 0.02])
    assert np.array_equal(ekf.mean, mean)  # the estimate is kept
    ekf.predict(np.zeros(1), 0.02)
    twin.predict(np.zeros(1), 0.02)
    # Q(dt) grows the velocity variance by density * dt per step: the larger density shows at once
    velocity_variance = base.diagonal()[2:]
    assert np.all(ekf.cov.diagonal()[2:] - velocity_variance > 5 * (twin.cov.diagonal()[2:] - velocity_variance))
    assert ekf.config.accel_noise_density == (1.0, 1.0)
    resolution = np.square(ekf.config.position_resolution) / 12
    assert np.allclose(np.diag(ekf._measurement_cov), np.square([0.01, 0.02]) + resolution)


def test_estimator_noise_refusals(cartpole):
    ekf = build_estimator("ekf", cartpole.model, {"compile": False}, angular_joints=(False, True))
    config = ekf.config
    assert "2 values" in ekf.noise_problem(accel_noise_density=[1.0, 2.0, 3.0])
    assert "> 0" in ekf.noise_problem(position_noise_std=[0.0])
    assert ekf.noise_problem(accel_noise_density=[0.0]) is None  # a perfect model is allowed
    assert "no runtime noise setting" in ekf.noise_problem(gate_probability=[0.9])
    with pytest.raises(ValueError, match="finite"):
        ekf.set_noise(accel_noise_density=[math.nan])
    assert ekf.config == config
