"""Dynamics models: the interface, the analytic cart-pole and (later) learned ensembles."""

from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.core.dynamics.cartpole import CartPoleDynamics, CartPoleParams, wrap_angle

__all__ = ["DynamicsModel", "CartPoleDynamics", "CartPoleParams", "wrap_angle"]
