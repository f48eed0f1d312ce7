"""Shared fixtures of the core tests: the cart-pole as the controller models it, the plant (Euler at
the physics step: PyBullet's own integrator on the same parameters, to machine precision), and a
mismatched plant: the robot the model is not.

The mismatched plant is built from the same CartPoleParams with changed fields, within the sim's
domain-randomisation ranges (config/cartpole.yaml, sim: randomize): the pole 10 % heavier (its
inertia with it), viscous damping on both joints, and a motor that delivers 90 % of the commanded
force (as sim_node applies a drawn motor_gain). Planners that only balance on their own model would
fail on it; the closed-loop tests run it beside the exact plant.
"""

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from mbrl_control.core.builders import build_model, load_robot
from mbrl_control.core.dynamics import CartPoleDynamics, CartPoleParams

DT = 0.02
POLE_MASS_SCALE = 1.1
CART_DAMPING = 0.05  # [N s/m]
POLE_DAMPING = 0.01  # [N m s/rad]
MOTOR_GAIN = 0.9


class WithMotorGain(CartPoleDynamics):
    """The cart-pole driven by a motor that applies ``motor_gain`` times the commanded force."""

    def __init__(self, params: CartPoleParams, dt: float, motor_gain: float, **kwargs) -> None:
        super().__init__(params, dt, **kwargs)
        self.motor_gain = motor_gain

    def step(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return super().step(x, self.motor_gain * u)


def mismatched_params(params: CartPoleParams) -> CartPoleParams:
    return dataclasses.replace(
        params,
        pole_mass=params.pole_mass * POLE_MASS_SCALE,
        pole_inertia=params.pole_inertia * POLE_MASS_SCALE,
        cart_damping=params.cart_damping + CART_DAMPING,
        pole_damping=params.pole_damping + POLE_DAMPING,
    )


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
        mismatched_plant=WithMotorGain(mismatched_params(robot.model.params), DT, MOTOR_GAIN, substeps=8,
                                       integrator="euler").double(),
        dt=DT,
    )
