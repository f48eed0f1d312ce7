"""State estimation: Kalman filters on the controller's own dynamics model, with delay
compensation and outlier rejection, for a thin ROS node to drive.

A node, all times in seconds of the node's clock (sim time in lockstep)::

    est = build_estimator("ekf", model, params["estimator"], angular_joints=(False, True))
    on command u (sent at now):   est.apply_command(u, now)
    on a joint-state reading:     est.update(z, stamp)        # z: positions [+ velocities]
    on its publish timer (now):   unless est.status(now).stale: publish est.predicted(now)
"""

from __future__ import annotations

from typing import Any, Sequence

from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.core.estimation.base import REJECT_REASONS, Estimator, EstimatorStatus
from mbrl_control.core.estimation.ekf import ExtendedKalmanFilter
from mbrl_control.core.estimation.kalman import EstimatorConfig, KalmanFilter
from mbrl_control.core.estimation.ukf import UnscentedKalmanFilter
from mbrl_control.core.util import dataclass_from

ESTIMATORS = {"ekf": ExtendedKalmanFilter, "ukf": UnscentedKalmanFilter}


def build_estimator(
    name: str,
    model: DynamicsModel,
    config: EstimatorConfig | dict[str, Any] | None = None,
    angular_joints: Sequence[bool] | None = None,
    position_limits: Sequence[tuple[float, float]] | None = None,
    command_index: Sequence[int] | None = None,
) -> KalmanFilter:
    """An estimator by name (``ekf`` | ``ukf``) with its config section (e.g. the ``estimator.*``
    parameters; keys that are not config fields are ignored). ``angular_joints`` flags the joints
    whose position is an angle that may wrap (the cart-pole: ``(False, True)``); ``position_limits``
    are the joints' travel limits ``(lower, upper)`` (the URDF's; None: unbounded); ``command_index``
    the state joint each command entry drives (``RobotSpec.command_index``; a joint resting on its
    stop is held there only if it is commanded)."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator '{name}'; known: {tuple(ESTIMATORS)}")
    if not isinstance(config, EstimatorConfig):
        config = dataclass_from(EstimatorConfig, config or {})
    return ESTIMATORS[name](model, config, angular_joints, position_limits, command_index)


__all__ = [
    "ESTIMATORS",
    "REJECT_REASONS",
    "Estimator",
    "EstimatorConfig",
    "EstimatorStatus",
    "ExtendedKalmanFilter",
    "KalmanFilter",
    "UnscentedKalmanFilter",
    "build_estimator",
]
