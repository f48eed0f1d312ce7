"""LQR about upright: the gain against an independent Riccati iteration, stability, the planner, the
fallback's region of validity, and the LQR terminal value for sampling planners."""

import math

import numpy as np
import pytest
import torch

from mbrl_control.core.builders import build_planner
from mbrl_control.core.dynamics import CartPoleDynamics
from mbrl_control.core.planners import LQRConfig, LQRFallback, MPPIConfig, MPPIPlanner
from mbrl_control.core.planners.lqr import Equilibrium, solve_lqr
from mbrl_control.core.rollout import TrajectoryEvaluator
from mbrl_control.core.tasks.lqr_terminal import LQRTerminalCost
from mbrl_control_testing.episode import run_episode

DT = 0.02


@pytest.fixture(scope="module")
def setup(cartpole):
    return cartpole.params, cartpole.model, cartpole.task, cartpole.plant


def riccati_by_iteration(A, B, Q, R, steps=20000):
    """The finite-horizon Riccati recursion run until it stops changing: an independent solution."""
    P = Q.copy()
    for _ in range(steps):
        K = np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
        P_next = Q + A.T @ P @ (A - B @ K)
        if np.allclose(P_next, P, rtol=1e-13, atol=1e-12):
            break
        P = P_next
    return P, K


@pytest.mark.parametrize("action_weight_scale", [1.0, 10.0])
def test_gain_matches_the_riccati_recursion_and_stabilises(setup, action_weight_scale):
    params, model, task, _ = setup
    sol = solve_lqr(model, task, action_weight_scale)
    P, K = riccati_by_iteration(sol.A, sol.B, sol.Q, sol.R)
    np.testing.assert_allclose(sol.K, K, rtol=1e-6)
    np.testing.assert_allclose(sol.P, P, rtol=1e-6)
    assert np.abs(np.linalg.eigvals(sol.A - sol.B @ sol.K)).max() < 1.0
    # The linearisation is the model's: central differences of the float64 model agree.
    exact = CartPoleDynamics(params, DT).double()
    eps = 1e-6
    for i in range(4):
        dx = torch.zeros(1, 4, dtype=torch.float64)
        dx[0, i] = eps
        zero = torch.zeros(1, 1, dtype=torch.float64)
        column = (exact.step(dx, zero) - exact.step(-dx, zero))[0].numpy() / (2 * eps)
        np.testing.assert_allclose(sol.A[:, i], column, atol=1e-5)
    # The weights are the task's stage-cost Hessian at upright (config/cartpole.yaml's terms).
    w = dict(zip(task.names, task.weights.tolist()))
    diagonal = [2 * w["cart_position"], w["upright"], 2 * w["cart_velocity"], 2 * w["pole_velocity"]]
    np.testing.assert_allclose(np.diag(sol.Q), diagonal, rtol=1e-5)
    np.testing.assert_allclose(sol.R, [[2 * w["effort"] * action_weight_scale]], rtol=1e-5)


def test_planner_predicts_the_linearised_closed_loop_around_the_given_angle(setup):
    _, model, task, _ = setup
    planner = build_planner("lqr", model, task, equilibrium=Equilibrium(angle_dims=(1,)))
    plan = planner.plan(torch.tensor([0.1, 0.05 + 2 * math.pi, 0.0, 0.0]))
    assert plan.states.shape == (31, 4) and plan.actions.shape == (30, 1)
    assert plan.states[0, 1] == pytest.approx(0.05 + 2 * math.pi)  # predicted around the angle given
    assert abs(float(plan.states[-1, 1]) - 2 * math.pi) < abs(float(plan.states[0, 1]) - 2 * math.pi)


def test_fallback_is_valid_inside_its_region_and_declines_outside(setup):
    _, model, task, plant = setup
    fallback = LQRFallback.from_model(model, task, LQRConfig(), Equilibrium(angle_dims=(1,)))
    assert fallback.fallback_action(np.array([0.0, math.pi, 0.0, 0.0])) is None
    assert fallback.fallback_action(np.array([0.0, np.nan, 0.0, 0.0])) is None
    np.testing.assert_allclose(fallback.fallback_action(np.zeros(4)), [0.0])
    np.testing.assert_allclose(fallback.fallback_action(np.array([0.0, 2 * math.pi, 0.0, 0.0])), [0.0], atol=1e-9)
    # From states just inside the region's boundary the nonlinear plant under the fallback stays
    # inside the region (the fallback never declines), never saturates and converges.
    boundary = np.random.default_rng(0).normal(size=(24, 4))
    P = fallback.solution.P
    boundary *= np.sqrt(0.999 * fallback.level / np.einsum("bi,ij,bj->b", boundary, P, boundary))[:, None]
    x = torch.from_numpy(boundary)
    for _ in range(250):
        actions = [fallback.fallback_action(xi) for xi in x.numpy()]
        assert all(a is not None for a in actions)
        u = np.array(actions)
        assert np.abs(u).max() < float(task.action_high[0])
        x = plant.step(x, torch.from_numpy(u))
    assert np.abs(x.numpy()).max() < 0.05


def test_terminal_value_is_the_wrapped_cost_to_go(setup):
    _, model, task, _ = setup
    sol = solve_lqr(model, task)
    wrapped = LQRTerminalCost(task, sol.P, angle_dims=(1,), weight=2.0)
    x = torch.tensor([[0.1, 0.2, -0.3, 0.4], [0.1, 0.2 + 2 * math.pi, -0.3, 0.4], [0.1, 0.2 - 2 * math.pi, -0.3, 0.4]])
    expected = float(x[0].double() @ torch.from_numpy(sol.P) @ x[0].double())  # 2 * x'Px/2
    torch.testing.assert_close(wrapped.terminal_cost(x), torch.full((3,), expected), rtol=1e-5, atol=1e-5)
    states, actions = torch.randn(3, 5, 4), torch.randn(3, 4, 1)
    running = task.running_cost(states[:, :-1], actions)
    torch.testing.assert_close(wrapped.running_cost(states[:, :-1], actions), running)
    assert torch.equal(wrapped.action_high, task.action_high)
    assert wrapped.task is task and wrapped.success(np.zeros((300, 4)), np.arange(300) * 0.02)


@pytest.mark.parametrize("plant", ["plant", "mismatched_plant"])
def test_short_horizon_mppi_balances_with_the_lqr_terminal_value(cartpole, plant):
    model, task, plant = cartpole.model, cartpole.task, getattr(cartpole, plant)
    wrapped = LQRTerminalCost(task, solve_lqr(model, task).P, angle_dims=(1,))
    planner = MPPIPlanner(TrajectoryEvaluator(model, wrapped), MPPIConfig(samples=64, horizon=8, seed=0))
    ep = run_episode(planner, plant, torch.tensor([0.2, 0.15, 0.0, -0.2]), steps=150)
    angles = np.remainder(ep.states[:, 1] + math.pi, 2 * math.pi) - math.pi
    assert np.abs(angles[-50:]).max() < 0.05 and np.abs(ep.states[-50:, 0]).max() < 0.5
