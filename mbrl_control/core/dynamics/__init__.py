"""Dynamics models: the interface, the analytic cart-pole, any fixed-base URDF robot, the learned
probabilistic ensemble, the analytic model corrected by a learned residual, and a model whose
commands carry a steady extra effort (offset-free MPC)."""

from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.core.dynamics.cartpole import CartPoleDynamics, CartPoleParams
from mbrl_control.core.dynamics.effort_offset import EffortOffsetDynamics
from mbrl_control.core.dynamics.ensemble import EnsembleConfig, EnsembleDynamics, ModelStateError, PropagationConfig
from mbrl_control.core.dynamics.residual import ResidualDynamics
from mbrl_control.core.dynamics.rigid_body import RigidBodyDynamics

__all__ = [
    "DynamicsModel",
    "CartPoleDynamics",
    "CartPoleParams",
    "CheckedState",
    "EffortOffsetDynamics",
    "EnsembleConfig",
    "EnsembleDynamics",
    "ModelStateError",
    "PropagationConfig",
    "ResidualDynamics",
    "RigidBodyDynamics",
]
