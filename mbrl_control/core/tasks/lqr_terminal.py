"""A task whose terminal cost is the LQR cost-to-go ``dx'P dx/2`` about the robot's equilibrium.

Sampling planners see only their horizon; the LQR value of the final state prices what comes
after it (exact to second order near the equilibrium for the same stage cost), so a short horizon
can balance as well as a long one. The deviation enters with its angles wrapped.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mbrl_control.core.angles import angle_mask, wrap_masked
from mbrl_control.core.tasks.base import Task, TerminalCostOverride


class LQRTerminalCost(TerminalCostOverride):
    """``task`` with its terminal cost replaced by ``weight * dx'P dx/2``, ``dx = x - x_eq``."""

    def __init__(self, task: Task, P: np.ndarray, x_eq: np.ndarray | None = None, angle_dims: tuple[int, ...] = (),
                 weight: float = 1.0) -> None:
        super().__init__(task, weight)
        self.register_buffer("value_matrix", torch.as_tensor(0.5 * P, dtype=torch.float32))
        x_eq = np.zeros(task.state_dim) if x_eq is None else x_eq
        self.register_buffer("x_eq", torch.as_tensor(x_eq, dtype=torch.float32))
        self.register_buffer("angle_mask", angle_mask(task.state_dim, angle_dims))

    def terminal_cost(self, x: Tensor) -> Tensor:
        dx = wrap_masked(x - self.x_eq, self.angle_mask)
        return self.terminal_weight * ((dx @ self.value_matrix) * dx).sum(-1)
