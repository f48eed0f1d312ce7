"""Shared fixtures of the core tests: the cart-pole as the controller models it, and the plant
(Euler at the physics step: PyBullet's own integrator on the same parameters, to machine precision)."""

from types import SimpleNamespace

import pytest

from mbrl_control.core.builders import build_model, build_task, robot_params
from mbrl_control.core.dynamics import CartPoleDynamics
from mbrl_control.paths import config_dir

DT = 0.02


@pytest.fixture(scope="session")
def cartpole() -> SimpleNamespace:
    params = robot_params("cartpole", config_dir() / "urdf" / "cartpole.urdf")
    return SimpleNamespace(
        params=params,
        model=build_model(params, DT),
        task=build_task(params),
        plant=CartPoleDynamics(params, DT, substeps=8, integrator="euler").double(),
        dt=DT,
    )
