"""Shared fixtures of the core tests: the cart-pole as the controller models it, and the plant
(Euler at the physics step: PyBullet's own integrator on the same parameters, to machine precision)."""

from types import SimpleNamespace

import pytest

from mbrl_control.core.builders import build_model, load_robot

DT = 0.02


@pytest.fixture(scope="session")
def cartpole() -> SimpleNamespace:
    robot = load_robot("cartpole")
    return SimpleNamespace(
        robot=robot,
        spec=robot.spec,
        params=robot.model.params,  # CartPoleParams: the cart-pole's masses, lengths, limits
        model=robot.model,
        task=robot.task,
        plant=build_model(robot.spec, DT, dynamics="cartpole", substeps=8, integrator="euler").double(),
        dt=DT,
    )
