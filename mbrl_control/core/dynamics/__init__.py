"""Dynamics models: the interface, the analytic cart-pole, any fixed-base URDF robot, the learned
probabilistic ensemble, and the analytic model corrected by a learned residual."""

from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.core.dynamics.cartpole import CartPoleDynamics, CartPoleParams
from mbrl_control.core.dynamics.ensemble import EnsembleConfig, EnsembleDynamics, ModelStateError, PropagationConfig
from mbrl_control.core.dynamics.residual import ResidualDynamics
from mbrl_control.core.dynamics.rigid_body import RigidBodyDynamics

__all__ = [
    "DynamicsModel",
    "CartPoleDynamics",
    "CartPoleParams",
    "CheckedState",
    "EnsembleConfig",
    "EnsembleDynamics",
    "ModelStateError",
    "PropagationConfig",
    "ResidualDynamics",
    "RigidBodyDynamics",
]
