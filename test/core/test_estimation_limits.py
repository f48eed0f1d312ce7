"""The estimator at a joint's end stop: the model knows no end stops, so an estimate must not
dead-reckon the robot through one. Driven into the cart's stop in the PyBullet sim (the real end
stop, its impact at 9 m/s and the push after it), the filter configured as the estimator node runs
it (config/cartpole.yaml) on the sim's encoder readings either says it is stale or holds the true
state to within the fault judge's tolerance; without the limits it confidently reports states far
from the truth (a cart past the end of its track)."""

import numpy as np
import pytest

from mbrl_control.config import node_parameters
from mbrl_control.core.builders import load_robot
from mbrl_control.core.estimation import build_estimator
from mbrl_control.core.urdf import read_urdf
from mbrl_control.core.util import section
from mbrl_control.graph import robot_config
from mbrl_control.paths import config_dir
from mbrl_control.sim.bullet_robot import BulletRobot
from mbrl_control.sim.sensor import JointSensor
from mbrl_control_testing.cartpole_rig import cartpole_sensor

DT, PHYSICS_DT = 0.02, 0.0025
URDF = config_dir() / "urdf" / "cartpole.urdf"
JOINTS = ["slider_to_cart", "cart_to_pole"]
TOLERANCE = np.array([0.05, 0.05, 0.5, 0.5])  # mbrl_control_testing.fault_probe.default_tolerance's


def _drive_into_the_stop(kind: str, limits, command_index=(0,)) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """-20 N for 1.2 s from rest at the middle (the cart hits its stop at -2.4 m after ~0.5 s and
    is pushed against it), then 0.8 s without force: per control period, the truth and the estimate
    (None while stale); and the number of limit contacts."""
    model = load_robot("cartpole", "estimator").model
    config = section(node_parameters(robot_config("cartpole"), "estimator"), "estimator") | {"compile": False}
    estimator = build_estimator(kind, model, config, (False, True), limits, command_index)  # as the node runs it
    robot, sensor = BulletRobot(URDF, PHYSICS_DT), JointSensor(cartpole_sensor(seed=0), 2)
    robot.reset(np.zeros(2), np.zeros(2))
    sensor.reset(0.0)
    truths, estimates, t = [], [], 0.0
    try:
        for k in range(100):
            u = np.array([-20.0 if k < 60 else 0.0])
            estimator.apply_command(u, t)
            for _ in range(round(DT / PHYSICS_DT)):
                robot.step(np.array([u[0], 0.0]), 1)
                t += PHYSICS_DT
                s = robot.state()
                sensor.observe(t, s.position, s.velocity)
            for m in sensor.deliver(t):
                estimator.update(m.position, m.stamp)
            estimator.predict_to(t)
            s = robot.state()
            truths.append(np.concatenate([s.position, s.velocity]))
            estimates.append(None if estimator.status(t).stale else estimator.mean)
    finally:
        robot.close()
    return truths, estimates, estimator.status().events.get("limit_contact", 0)


@pytest.mark.parametrize("kind", ["ekf", "ukf"])
def test_at_the_end_stop_the_estimate_is_stale_or_true(kind):
    robot = read_urdf(URDF)
    limits = [(robot.joints[j].lower, robot.joints[j].upper) for j in JOINTS]
    truths, estimates, contacts = _drive_into_the_stop(kind, limits)
    assert min(x[0] for x in truths) < -2.38  # the cart did reach its stop
    assert contacts > 0
    errors = [np.abs(e - x) for x, e in zip(truths, estimates) if e is not None]
    assert len(errors) > 50  # and the estimate is back once the push ends
    worst = np.max(errors, axis=0)
    assert np.all(worst <= TOLERANCE), worst
    assert all(e[0] >= -2.4 - 0.02 for e in estimates if e is not None)


def test_without_the_limits_the_estimate_runs_through_the_stop():
    truths, estimates, contacts = _drive_into_the_stop("ekf", None)
    assert contacts == 0
    errors = np.array([np.abs(e - x) for x, e in zip(truths, estimates) if e is not None])
    assert np.any(errors > TOLERANCE, axis=1).any()  # confidently wrong: what the limits prevent


@pytest.mark.parametrize("kind", ["ekf", "ukf"])
def test_pushed_against_the_stop_the_estimate_stays_fresh(kind):
    """Pushed against its stop, the cart rests there: the stop's reaction is an effort the model
    can take, so the estimate keeps predicting the swinging pole and stays fresh (k 35-59: after
    the impact's rebound has died out, until the push ends). Without knowing which joint the
    command drives it can only treat every step as a new impact, and is stale throughout."""
    robot = read_urdf(URDF)
    limits = [(robot.joints[j].lower, robot.joints[j].upper) for j in JOINTS]
    pushing = slice(35, 60)
    truths, estimates, _ = _drive_into_the_stop(kind, limits)
    fresh = [(x, e) for x, e in zip(truths[pushing], estimates[pushing]) if e is not None]
    assert len(fresh) >= 20, len(fresh)
    assert np.all(np.max([np.abs(e - x) for x, e in fresh], axis=0) <= TOLERANCE)
    _, unaware, _ = _drive_into_the_stop(kind, limits, command_index=None)
    assert sum(e is not None for e in unaware[pushing]) <= 5
