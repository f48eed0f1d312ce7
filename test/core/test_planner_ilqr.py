"""iLQR-MPC on the analytic cart-pole: derivatives, monotone cost, bounds, warm start, deadline.

Eager mode and horizon 30 keep this file fast without a cold compile; bench/planners.py times
the compiled planner at horizon 50. Closed-loop swing-up and balance: test_planner_closed_loop.py.
"""


import numpy as np
import pytest
import torch

from mbrl_control.core.planners import ILQRConfig, ILQRPlanner
from mbrl_control.core.planners.ilqr import StageDerivatives

DT = 0.02


@pytest.fixture(scope="module")
def setup(cartpole):
    return cartpole.params, cartpole.model, cartpole.task


def test_derivatives_match_per_step_autograd(setup):
    _, model, task = setup
    g = torch.Generator().manual_seed(0)
    T = 6
    states = torch.randn(T + 1, 4, generator=g) + torch.tensor([2.2, 0.0, 0.0, 0.0])  # past the soft track limit too
    actions = 10.0 * torch.randn(T, 1, generator=g)
    dynamics, stage, terminal = StageDerivatives(model, task)(states, actions)

    def stage_cost(z):
        return task.running_cost(z[:4].view(1, 1, 4), z[4:].view(1, 1, 1))[0]

    def terminal_cost(x):
        return task.terminal_cost(x.view(1, 4))[0]

    for t in range(T):
        z = torch.cat([states[t], actions[t]])
        a, b = torch.autograd.functional.jacobian(lambda x, u: model.step(x[None], u[None])[0], (states[t], actions[t]))
        torch.testing.assert_close(dynamics[t, :4, :4], a.T)
        torch.testing.assert_close(dynamics[t, 4:5, :4], b.T)
        hessian = torch.autograd.functional.hessian(stage_cost, z)
        torch.testing.assert_close(stage[t, :5, :5], hessian, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(stage[t, :5, 5], torch.autograd.functional.jacobian(stage_cost, z))
    torch.testing.assert_close(terminal[:4, :4], torch.autograd.functional.hessian(terminal_cost, states[-1]))
    torch.testing.assert_close(terminal[:4, 4], torch.autograd.functional.jacobian(terminal_cost, states[-1]))
    assert float(dynamics[:, 5, 4].min()) == 1.0 and float(stage[:, 5, 5].abs().max()) == 0.0


def test_cost_decreases_monotonically_over_iterations(setup):
    _, model, task = setup
    planner = ILQRPlanner(model, task, ILQRConfig(horizon=30, iterations=15, tolerance=0.0))
    plan = planner.plan(torch.tensor([0.0, 3.0, 0.0, 0.0]))
    costs = planner.cost_history[: plan.iterations + 1]
    assert plan.iterations >= 5
    assert np.all(np.diff(costs) <= 1e-6 * costs[0]), costs
    assert costs[-1] < 0.9 * costs[0]
    assert plan.cost == pytest.approx(costs[-1])
    # The plan is consistent: its states are the model's rollout of its actions from x0.
    rollout = model.rollout(plan.states[:1], plan.actions[None])[0]
    torch.testing.assert_close(rollout, plan.states, atol=1e-4, rtol=1e-4)
    assert plan.actions.abs().max() <= 20.0


def test_warm_start_shifts_the_nominal(setup):
    _, model, task = setup
    planner = ILQRPlanner(model, task, ILQRConfig(horizon=20, iterations=2))
    plan = planner.plan(torch.tensor([0.0, 3.0, 0.0, 0.0]))
    torch.testing.assert_close(planner._actions[:-1], plan.actions[1:])
    torch.testing.assert_close(planner._states[:-1], plan.states[1:])


def test_held_exactly_upright_it_stays_ready_for_the_next_push(setup):
    """At the optimum no step changes the cost in float32. Counting that as a failed step raised
    mu every tick until the gains vanished (~1/mu): after 0.4 s of exact balance (exact states in
    realtime) a 0.05 rad push got no answer and the pole fell."""
    params, model, task = setup
    from mbrl_control.core.dynamics import CartPoleDynamics

    planner = ILQRPlanner(model, task, ILQRConfig(horizon=30))
    plant = CartPoleDynamics(params, DT, substeps=8, integrator="euler").double()
    x = torch.zeros(4, dtype=torch.float64)
    tilt = []
    for k in range(150):
        if k == 50:
            x = x + torch.tensor([0.0, 0.05, 0.0, 0.0], dtype=torch.float64)
        plan = planner.plan(x.float())
        if k == 49:
            assert plan.info["regularisation"] <= ILQRConfig().reg_init  # still as responsive as after a reset
        x = plant.step(x.unsqueeze(0), plan.actions[:1].double())[0]
        tilt.append(abs(float(x[1])))
    assert tilt[50] > 0.04 and max(tilt) < 0.1 and tilt[-1] < 0.01, tilt[48:]


def test_rejects_bad_configs(setup):
    _, model, task = setup
    for bad in ({"horizon": 0}, {"line_search_steps": 0}, {"reg_factor": 1.0}):
        with pytest.raises(ValueError):
            ILQRPlanner(model, task, ILQRConfig(**bad))


def test_a_fresh_plan_for_an_arm_starts_from_holding_it_not_from_zero_effort():
    """After a reset (start-up, a new goal) iLQR's nominal is the model's hold action (the arm's
    gravity torques), not zero effort: one iteration from a falling arm once sent the iiwa's
    shoulder +4 N m where holding it takes -36 N m, and in realtime it never recovered."""
    from mbrl_control.core.builders import load_robot

    iiwa = load_robot("iiwa")
    x = torch.tensor(iiwa.spec.x_eq, dtype=torch.float32)
    hold = iiwa.model.hold_action(x.unsqueeze(0))[0]
    planner = ILQRPlanner(iiwa.model, iiwa.task, ILQRConfig(horizon=10, iterations=1), compile=False)
    iiwa.task.set_goal(iiwa.task.reach_point(x.numpy()[None])[0])  # the goal: where it is
    plan = planner.plan(x)
    assert torch.allclose(plan.actions[0], hold, atol=0.5), (plan.actions[0], hold)
    drift = (plan.states[:, : iiwa.spec.nq] - x[: iiwa.spec.nq]).abs().max()
    assert drift < 0.01, drift  # the planned arm stays where it is


class Poisoned(torch.nn.Module):
    """A model whose every prediction is NaN while ``poisoned``: a tick on which every rollout diverges."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model, self.poisoned = model, False
        self.state_dim, self.action_dim, self.dt = model.state_dim, model.action_dim, model.dt

    def step(self, x, u):
        y = self.model.step(x, u)
        return y * float("nan") if self.poisoned else y

    def hold_action(self, x):
        return self.model.hold_action(x)

    def jacobians(self, x, u):  # the real model's: along a finite nominal they stay finite, as in a real divergence
        return self.model.jacobians(x, u)


def test_a_tick_whose_every_rollout_diverges_leaves_the_nominal_finite(setup):
    """Every step size's rollout NaN: the nominal is kept, not replaced by the diverged rollout
    (from which iLQR never recovered: NaN derivatives, no step, NaN plans on every later tick)."""
    _, model, task = setup
    poisoned = Poisoned(model)
    planner = ILQRPlanner(poisoned, task, ILQRConfig(horizon=30, iterations=2), compile=False)
    x0 = torch.tensor([0.0, 0.3, 0.0, 0.0])
    assert torch.isfinite(planner.plan(x0).actions).all()
    poisoned.poisoned = True
    diverged = planner.plan(x0)
    assert torch.isfinite(diverged.actions).all()  # the kept nominal, shifted: what the robot can be sent
    poisoned.poisoned = False
    after = planner.plan(x0)
    assert torch.isfinite(after.actions).all() and np.isfinite(after.cost)
