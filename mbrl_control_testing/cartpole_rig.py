"""The cart-pole rig's encoders and a filter tuned to them, for the core tests of the sensor model
and the estimators. ``SensorConfig`` and ``EstimatorConfig`` default to generic values that stand
for every joint (what a new robot gets); the cart-pole's own are in config/cartpole.yaml.

``cartpole_sensor``: the sim's ``sensor.*`` of config/cartpole.yaml (the pole on a 1024-line
quadrature encoder, the cart on a belt-driven motor encoder). ``cartpole_estimator``: the filter
the estimation tests were calibrated with, its measurement noise the sensor's, its process noise
small (the tests' truth is the model plus this much white acceleration noise).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from mbrl_control.core.builders import robot_parameters
from mbrl_control.core.estimation import EstimatorConfig
from mbrl_control.core.util import dataclass_from, section
from mbrl_control.sim.sensor import SensorConfig


@functools.cache
def _sensor() -> SensorConfig:
    return dataclass_from(SensorConfig, section(robot_parameters("cartpole", "sim"), "sensor"))


def cartpole_sensor(**changes: Any) -> SensorConfig:
    """The cart-pole's encoders (config/cartpole.yaml), with ``changes``."""
    return dataclasses.replace(_sensor(), **changes)


def cartpole_estimator(**changes: Any) -> EstimatorConfig:
    """A filter tuned to the cart-pole's encoders (per joint: cart [m], pole [rad]), with ``changes``."""
    sensor = _sensor()
    return EstimatorConfig(**{
        "position_noise_std": sensor.position_noise_std,
        "position_resolution": sensor.resolution,
        "velocity_noise_std": sensor.velocity_noise_std,
        "accel_noise_density": (0.01, 0.05),  # [m^2/s^3, rad^2/s^3]
        "initial_velocity_std": (1.0, 3.0),  # [m/s, rad/s]
        "stale_position_std": (0.05, 0.1),  # [m, rad]
        "stale_velocity_std": (0.5, 1.0),  # [m/s, rad/s]
    } | changes)
