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


# -- a payload the controller's URDF does not know ------------------------------------------------
IIWA = "kuka_iiwa/model.urdf"


def _iiwa_text() -> str:
    from mbrl_control.paths import resolve_urdf

    return resolve_urdf(f"pybullet_data:{IIWA}").read_text()


def test_a_payload_at_the_flange_loads_the_arm_as_the_rigid_body_model_of_the_same_text_says():
    """2 kg at the flange: PyBullet's holding torques change by newtons-metres, and the analytic
    model read from the rewritten URDF (its fixed child link lumped in) agrees with them."""
    from mbrl_control.core.dynamics import RigidBodyDynamics
    from mbrl_control.paths import resolve_urdf
    from mbrl_control.sim.randomization import apply_payload

    original = resolve_urdf(f"pybullet_data:{IIWA}")
    joints = [f"lbr_iiwa_joint_{i}" for i in range(1, 8)]
    text = apply_payload(original.read_text(), "lbr_iiwa_link_7", 2.0, (0.0, 0.0, 0.05))
    q = [0.3, 0.7, -0.2, -1.1, 0.4, 0.9, 0.1]

    def holding_torques(robot: BulletRobot) -> np.ndarray:
        return np.array(robot._client.calculateInverseDynamics(robot.body, q, [0.0] * 7, [0.0] * 7))

    # Two robots, each asked once: PyBullet keeps the inverse-dynamics tree it built for a body id,
    # and a body reloaded under the same id would be answered from the old one.
    before = holding_torques(BulletRobot(original, 0.0025))
    sim = BulletRobot(original, 0.0025)
    sim.reload(text)
    after = holding_torques(sim)
    assert sim.joint_names == joints  # the payload hangs on a fixed joint: no new joint
    assert abs(after[1] - before[1]) > 5.0  # ~2 kg x 9.81 x the shoulder's lever arm
    with tempfile.NamedTemporaryFile("w", suffix=".urdf") as f:  # the model reads masses, not meshes
        f.write(text)
        f.flush()
        model = RigidBodyDynamics(f.name, joints, joints, dt=0.02, dtype=torch.float64)
        hold = model.gravity_torques(torch.tensor([q], dtype=torch.float64))[0].numpy()
    np.testing.assert_allclose(hold, after, rtol=1e-4, atol=1e-6)


def test_a_heavier_pole_scales_its_mass_and_inertia_and_randomized_payloads_stay_in_range():
    from mbrl_control.sim.randomization import PayloadConfig, apply_payload

    nominal = params_of(URDF.read_text())
    heavy = params_of(apply_payload(URDF.read_text(), "pole", mass_scale=1.3))
    assert heavy.pole_mass == pytest.approx(1.3 * nominal.pole_mass)
    assert heavy.cart_mass == pytest.approx(nominal.cart_mass)
    with pytest.raises(ValueError, match="payload.link"):
        PayloadConfig(mass=1.0)
    with pytest.raises(ValueError, match="not in the URDF"):
        apply_payload(URDF.read_text(), "no_such_link", 1.0)
    randomizer = DomainRandomizer(RandomizationConfig(enabled=True, link="lbr_iiwa_link_7", length_scale=(1.0, 1.0),
                                                      payload_mass=(0.0, 4.0), seed=2),
                                  PayloadConfig(link="lbr_iiwa_link_7", offset=(0.0, 0.0, 0.05)))
    draws = [randomizer.draw() for _ in range(50)]
    assert all(0.0 <= d.payload_mass <= 4.0 for d in draws) and len({d.payload_mass for d in draws}) == 50
    assert "lbr_iiwa_link_7_payload" in randomizer.urdf(_iiwa_text(), draws[0])
    with pytest.raises(ValueError, match="payload.link"):
        DomainRandomizer(RandomizationConfig(enabled=True, payload_mass=(0.0, 1.0)))
