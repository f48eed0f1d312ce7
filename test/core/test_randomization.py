"""Domain randomization rewrites the robot consistently: the analytic model read from the
rewritten URDF still reproduces the reloaded PyBullet robot exactly."""

import tempfile

import numpy as np
import pytest
import torch

from mbrl_control.core.dynamics import CartPoleDynamics, CartPoleParams
from mbrl_control.paths import config_dir
from mbrl_control.sim.bullet_robot import BulletRobot
from mbrl_control.sim.randomization import DomainRandomizer, PhysicalDraw, RandomizationConfig

URDF = config_dir() / "urdf" / "cartpole.urdf"


def params_of(text: str) -> CartPoleParams:
    with tempfile.NamedTemporaryFile("w", suffix=".urdf") as f:
        f.write(text)
        f.flush()
        return CartPoleParams.from_urdf(f.name)


def test_draws_stay_in_their_ranges_and_disabled_means_nominal():
    r = DomainRandomizer(RandomizationConfig(enabled=True, seed=3))
    draws = [r.draw() for _ in range(200)]
    assert all(0.8 <= d.mass_scale <= 1.2 and 0.8 <= d.length_scale <= 1.2 for d in draws)
    assert all(0.0 <= d.joint_damping <= 0.05 and 0.9 <= d.motor_gain <= 1.1 for d in draws)
    assert len({d.mass_scale for d in draws}) == 200
    assert DomainRandomizer(RandomizationConfig()).draw() == PhysicalDraw()
    with pytest.raises(ValueError):
        DomainRandomizer(RandomizationConfig(mass_scale=(1.2, 0.8)))


def test_a_fleet_robot_keeps_its_one_draw_and_robots_of_other_seeds_differ():
    robots = [DomainRandomizer(RandomizationConfig(enabled=True, seed=s, every_reset=False)) for s in (0, 1, 2)]
    draws = [[r.draw() for _ in range(5)] for r in robots]
    assert all(len(set(d)) == 1 for d in draws)  # the same robot at every reset
    assert len({d[0] for d in draws}) == 3 and PhysicalDraw() not in {d[0] for d in draws}
    assert draws[0][0] == DomainRandomizer(RandomizationConfig(enabled=True, seed=0)).draw()  # the first draw of its seed


def test_rewritten_urdf_scales_the_pole_and_the_reloaded_robot_matches_the_model():
    nominal = params_of(URDF.read_text())
    draw = PhysicalDraw(mass_scale=1.15, length_scale=0.85, joint_damping=0.05)
    text = DomainRandomizer(RandomizationConfig(enabled=True, link="pole")).urdf(URDF.read_text(), draw)
    p = params_of(text)
    assert p.pole_mass == pytest.approx(nominal.pole_mass * 1.15)
    assert p.pole_com == pytest.approx(nominal.pole_com * 0.85)
    assert p.pole_inertia == pytest.approx(nominal.pole_inertia * 1.15 * 0.85**2)
    assert p.cart_damping == pytest.approx(0.05) and p.pole_damping == pytest.approx(0.05)
    robot = BulletRobot(URDF, 0.02 / 8)
    try:
        robot.reload(text)
        model = CartPoleDynamics(p, 0.02, substeps=8, integrator="euler").double()
        rng = np.random.default_rng(0)
        for _ in range(20):
            q, qd, u = np.array([rng.uniform(-1, 1), rng.uniform(-3, 3)]), rng.uniform(-3, 3, 2), rng.uniform(-20, 20)
            robot.reset(q, qd)
            robot.step(np.array([u, 0.0]), 8)
            s = robot.state()
            predicted = model.step(torch.tensor(np.r_[q, qd][None]), torch.tensor([[u]]))[0].numpy()
            np.testing.assert_allclose(predicted, np.r_[s.position, s.velocity], atol=1e-6)
    finally:
        robot.close()
