"""A task whose terminal cost is the LQR cost-to-go ``x'Px/2`` about the upright equilibrium.

Sampling planners see only their horizon; the LQR value of the final state prices what comes
after it (exact to second order near upright for the same stage cost), so a short horizon can
balance as well as a long one. The state enters with its angles wrapped.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from mbrl_control.core.tasks.base import Task, TerminalCostOverride


class LQRTerminalCost(TerminalCostOverride):
    """``task`` with its terminal cost replaced by ``weight * x'Px/2``."""

    def __init__(self, task: Task, P: np.ndarray, angle_indices: tuple[int, ...] = (1,), weight: float = 1.0) -> None:
        super().__init__(task)
        self.register_buffer("value_matrix", torch.as_tensor(0.5 * weight * P, dtype=torch.float32))
        mask = torch.zeros(task.state_dim, dtype=torch.bool)
        mask[list(angle_indices)] = True
        self.register_buffer("angle_mask", mask)

    def terminal_cost(self, x: Tensor) -> Tensor:
        dx = torch.where(self.angle_mask, torch.remainder(x + math.pi, 2 * math.pi) - math.pi, x)
        return ((dx @ self.value_matrix) * dx).sum(-1)
