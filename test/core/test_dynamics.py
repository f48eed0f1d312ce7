"""The analytic cart-pole reproduces the PyBullet robot built from the same URDF."""

import math

import numpy as np
import pytest
import torch

from mbrl_control.core.angles import wrap
from mbrl_control.core.dynamics import CartPoleDynamics, CartPoleParams
from mbrl_control.paths import config_dir
from mbrl_control.sim.bullet_robot import BulletRobot

URDF = config_dir() / "urdf" / "cartpole.urdf"
DT, SUBSTEPS = 0.02, 8


@pytest.fixture(scope="module")
def params() -> CartPoleParams:
    return CartPoleParams.from_urdf(URDF)


@pytest.fixture(scope="module")
def robot():
    r = BulletRobot(URDF, DT / SUBSTEPS)
    yield r
    r.close()


def test_params_come_from_the_urdf(params):
    assert params.cart_mass == pytest.approx(1.0)
    assert params.pole_mass == pytest.approx(0.1)
    assert params.pole_com == pytest.approx(0.5)
    assert params.pole_inertia == pytest.approx(0.008341)
    assert params.force_limit == pytest.approx(20.0)
    assert params.track_limit == pytest.approx(2.4)
    assert params.rail_origin == pytest.approx((0.0, 0.0, 1.0))


def _random_transitions(robot, n, seed):
    rng = np.random.default_rng(seed)
    xs, us, nexts = [], [], []
    for _ in range(n):
        q = np.array([rng.uniform(-1.5, 1.5), rng.uniform(-math.pi, math.pi)])
        qd = rng.uniform(-4.0, 4.0, 2)
        u = rng.uniform(-20.0, 20.0)
        robot.reset(q, qd)
        robot.step(np.array([u, 0.0]), SUBSTEPS)
        s = robot.state()
        xs.append(np.r_[q, qd])
        us.append([u])
        nexts.append(np.r_[s.position, s.velocity])
    return (torch.tensor(np.array(a), dtype=torch.float64) for a in (xs, us, nexts))


def test_euler_model_at_the_physics_step_reproduces_pybullet(params, robot):
    x, u, x_next = _random_transitions(robot, 200, seed=0)
    model = CartPoleDynamics(params, DT, substeps=SUBSTEPS, integrator="euler")
    err = (model.step(x, u) - x_next).abs().max().item()
    assert err < 1e-9  # the same integrator on the same parameters: machine precision


def test_rk4_planning_model_is_close_to_pybullet(params, robot):
    x, u, x_next = _random_transitions(robot, 200, seed=1)
    model = CartPoleDynamics(params, DT, substeps=1, integrator="rk4")
    err = (model.step(x, u) - x_next).abs()
    assert err[:, :2].max() < 2e-3 and err[:, 2:].max() < 5e-3


def test_rollout_equals_repeated_steps_float32(params):
    model = CartPoleDynamics(params, DT)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(64, 4, generator=g)
    actions = 10 * torch.randn(64, 12, 1, generator=g)
    states = model.rollout(x0, actions)
    assert states.shape == (64, 13, 4) and states.dtype == torch.float32
    x = x0
    for t in range(12):
        x = model.step(x, actions[:, t])
        torch.testing.assert_close(states[:, t + 1], x)


def test_autograd_jacobians_match_finite_differences(params):
    model = CartPoleDynamics(params, DT).double()
    x = torch.tensor([[0.3, 2.0, -0.5, 1.0], [0.0, 0.1, 0.2, -0.3]], dtype=torch.float64)
    u = torch.tensor([[3.0], [-7.0]], dtype=torch.float64)
    a, b = model.jacobians(x, u)
    assert a.shape == (2, 4, 4) and b.shape == (2, 4, 1)
    eps = 1e-6
    for i in range(4):
        dx = torch.zeros(4, dtype=torch.float64)
        dx[i] = eps
        fd = (model.step(x + dx, u) - model.step(x - dx, u)) / (2 * eps)
        torch.testing.assert_close(a[:, :, i], fd, rtol=1e-5, atol=1e-7)
    fd_u = (model.step(x, u + eps) - model.step(x, u - eps)) / (2 * eps)
    torch.testing.assert_close(b[:, :, 0], fd_u, rtol=1e-5, atol=1e-7)


def test_hanging_is_an_equilibrium_and_upright_is_unstable(params):
    model = CartPoleDynamics(params, DT)
    hanging = torch.tensor([[0.0, math.pi, 0.0, 0.0]])
    upright = torch.tensor([[0.0, 1e-3, 0.0, 0.0]])
    zero = torch.zeros(1, 1)
    for _ in range(50):
        hanging = model.step(hanging, zero)
        upright = model.step(upright, zero)
    assert wrap(hanging[0, 1] - math.pi).abs() < 1e-4
    assert upright[0, 1].abs() > 0.01  # small tilt grows


def test_the_mismatched_plant_is_another_robot(cartpole):
    """The closed-loop tests' mismatched plant (conftest) departs from the planners' model: a
    weaker push on the cart, a pole that loses speed, and within a second a different state."""
    model, plant, exact = cartpole.model, cartpole.mismatched_plant, cartpole.plant
    rest = torch.zeros(1, 4, dtype=torch.float64)
    push = torch.tensor([[10.0]], dtype=torch.float64)
    assert 0.85 < plant.step(rest, push)[0, 2] / exact.step(rest, push)[0, 2] < 0.95  # ~ motor gain, heavier pole
    spinning = torch.tensor([[0.0, math.pi, 0.0, 5.0]], dtype=torch.float64)
    zero = torch.zeros(1, 1, dtype=torch.float64)
    assert plant.step(spinning, zero)[0, 3] < exact.step(spinning, zero)[0, 3] - 1e-3  # pole damping
    g = torch.Generator().manual_seed(0)
    x = torch.tensor([[0.0, 0.3, 0.0, 0.0]], dtype=torch.float64)
    x_model, x_plant = x, x
    for _ in range(50):
        u = 10 * torch.randn(1, 1, generator=g, dtype=torch.float64)
        x_model, x_plant = model.step(x_model, u), plant.step(x_plant, u)
    assert (x_plant - x_model).abs().max() > 0.1, (x_plant, x_model)
