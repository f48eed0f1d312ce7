"""CasADi NMPC: its symbolic cart-pole and cost against the torch ones, solvers, warm start, deadline.

Closed-loop balance with the default solver: test_planner_closed_loop.py.
"""

import math
import time

import casadi as ca
import numpy as np
import pytest
import torch

from mbrl_control.core.builders import build_planner
from mbrl_control.core.dynamics import CartPoleDynamics
from mbrl_control.core.planners.nmpc import SOLVERS, NMPCConfig, NMPCPlanner, cartpole_ode, rk4_step

DT = 0.02


@pytest.fixture(scope="module")
def setup(cartpole):
    return cartpole.params, cartpole.model, cartpole.task


def test_symbolic_dynamics_and_cost_match_the_torch_model_and_task(setup):
    params, _, task = setup
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=g, dtype=torch.float64) * torch.tensor([1.5, 3.0, 2.0, 5.0], dtype=torch.float64)
    u = 20.0 * torch.rand(16, 1, generator=g, dtype=torch.float64) - 10.0
    for substeps in (1, 3):
        torch_step = CartPoleDynamics(params, DT, substeps=substeps).double()
        casadi_step = rk4_step(cartpole_ode(params), DT, substeps)
        expected = torch_step.step(x, u).numpy()
        got = np.array([np.asarray(casadi_step(xi, ui)).ravel() for xi, ui in zip(x.numpy(), u.numpy())])
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
    # The task's terms in CasADi, weights as symbols: stage and terminal costs equal the torch task's.
    xs, us, prev = ca.SX.sym("x", 4), ca.SX.sym("u", 1), ca.SX.sym("u_prev", 1)
    weights = ca.SX.sym("w", len(task.terms))
    stage, state = task.symbolic_costs(xs, us, prev, weights)
    fn = ca.Function("cost", [xs, us, prev, weights], [stage, state])
    w = task.weights.double().numpy()
    got = np.array([[float(v) for v in fn(xi, ui, 0.0, w)] for xi, ui in zip(x.numpy(), u.numpy())])
    np.testing.assert_allclose(got[:, 0], task.running_cost(x.unsqueeze(1).float(), u.unsqueeze(1).float()).numpy(),
                               rtol=1e-5)
    np.testing.assert_allclose(float(task.terminal_weight) * got[:, 1], task.terminal_cost(x.float()).numpy(), rtol=1e-5)


@pytest.mark.parametrize("solver", SOLVERS)
def test_every_solver_finds_the_balancing_plan(setup, solver):
    _, model, task = setup
    plan = build_planner("nmpc", model, task, {"solver": solver}).plan(torch.tensor([0.0, 0.2, 0.0, 0.0]))
    assert plan.info["solver_success"] == 1.0 and not plan.deadline_missed
    assert plan.actions[0, 0] > 0  # the pole leans towards +x: the cart must move under it
    assert abs(float(plan.states[-1, 1])) < 0.05 and plan.actions.abs().max() <= 20.0
    rollout = model.rollout(plan.states[:1], plan.actions[None])[0]
    torch.testing.assert_close(rollout, plan.states, atol=1e-4, rtol=1e-4)


def test_warm_start_converges_faster(setup):
    _, model, task = setup
    planner = NMPCPlanner(model, task, NMPCConfig(solver="ipopt"))
    x0 = torch.tensor([0.1, 0.3, 0.0, 0.0])
    cold = planner.plan(x0)
    # Replanning from where the plan said the system would be: the shifted solution is nearly optimal.
    warm = planner.plan(cold.states[1])
    assert warm.iterations < cold.iterations
    assert planner.last_status == "Solve_Succeeded"
    assert warm.cost < cold.cost


def test_deadline_returns_in_time_with_a_finite_plan(setup):
    _, model, task = setup
    planner = NMPCPlanner(model, task, NMPCConfig(solver="ipopt", max_iterations=1000, tolerance=1e-12))
    start = time.perf_counter()
    plan = planner.plan(torch.tensor([0.0, math.pi, 0.0, 0.0]), deadline=start + 0.01)
    elapsed = time.perf_counter() - start
    assert plan.deadline_missed and elapsed < 0.2
    assert torch.isfinite(plan.actions).all() and plan.actions.abs().max() <= 20.0


def test_rejects_other_models_and_bad_configs(setup):
    params, model, task = setup
    with pytest.raises(ValueError):
        NMPCPlanner(model, task, NMPCConfig(solver="nope"))
    with pytest.raises(ValueError):
        NMPCPlanner(model, task, NMPCConfig(horizon=0))
