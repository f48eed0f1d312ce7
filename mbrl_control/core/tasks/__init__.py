"""Tasks: batched costs and success criteria per robot task."""

from mbrl_control.core.tasks.base import Task
from mbrl_control.core.tasks.cartpole import CartPoleCostWeights, CartPoleSwingUp

__all__ = ["Task", "CartPoleCostWeights", "CartPoleSwingUp"]
