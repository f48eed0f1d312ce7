"""A task whose terminal cost is the LQR cost-to-go ``dx'P dx/2`` about the robot's equilibrium.

Sampling planners see only their horizon; the LQR value of the final state prices what comes
after it (exact to second order near the equilibrium for the same stage cost), so a short horizon
can balance as well as a long one. The deviation enters with its angles wrapped.

On a learned model (``LearnedLQRTerminal``) the cost-to-go is that model's, re-solved for every
model the learner sends. It matters more there: a short horizon on a learned cart-pole model lets
the balanced cart wander into its track limit. Bringing a balanced cart back to the centre is a
slow manoeuvre (seconds) that a 0.6 s horizon sees only through the cart's small position cost;
the URDF's exact equations make it out anyway, an early learned model's slightly different ones do
not, even planning against itself (the ensemble's mean as the plant: the cart overshot the centre
by 1.6 m). With its own cost-to-go the same model brought the cart from 1.3 m to within 0.1 m in
2 s (README, A fleet learning together).
"""

from __future__ import annotations

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import Tensor

from mbrl_control.core.angles import angle_mask, wrap_masked
from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.core.planners.lqr import lqr_weights, solve_linearized
from mbrl_control.core.tasks.base import Task, TerminalCostOverride
from mbrl_control.core.util import module_device


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

    @torch.no_grad()
    def set_cost_to_go_(self, P: np.ndarray) -> None:
        """Price the horizon's end with ``P`` from now on (in place: a compiled rollout sees it)."""
        self.value_matrix.copy_(torch.as_tensor(0.5 * P, dtype=torch.float32))


class LearnedLQRTerminal:
    """Keeps ``terminal``'s cost-to-go the LQR one of the newest learned model, linearised at the
    equilibrium ``(x_eq, u_eq)`` with ``task``'s stage-cost Hessians there (computed once). A refit
    takes a few ms (the cart-pole's: the ensemble's Jacobians ~2 ms, the Riccati solve ~1.5 ms).

    ``refit(model)`` after each swap: a model that cannot be stabilised there (no stabilising
    Riccati solution, or a non-finite one) keeps the last cost-to-go and is counted in ``failures``.
    Until the first fit the terminal cost is zero (the task's running cost alone)."""

    def __init__(self, terminal: LQRTerminalCost, task: Task, x_eq: np.ndarray | None = None,
                 u_eq: np.ndarray | None = None) -> None:
        self.terminal = terminal
        nx, nu = task.state_dim, task.action_dim
        self.x_eq = torch.zeros(nx) if x_eq is None else torch.as_tensor(x_eq, dtype=torch.float32)
        self.u_eq = torch.zeros(nu) if u_eq is None else torch.as_tensor(u_eq, dtype=torch.float32)
        self.Q, self.R = lqr_weights(task, self.x_eq, self.u_eq)
        self.fits = 0
        self.failures = 0
        terminal.set_cost_to_go_(np.zeros((nx, nx)))

    def refit(self, model: DynamicsModel) -> bool:
        """Solve for ``model``; True if its cost-to-go is now in use."""
        device = module_device(model)
        try:
            # One BLAS thread: beside the control loop, OpenBLAS's pool made the cart-pole's 4 x 4
            # Riccati solve take 84 ms (median) instead of 0.4.
            with threadpool_limits(1, user_api="blas"):
                P = solve_linearized(model, self.Q, self.R, self.x_eq.to(device), self.u_eq.to(device)).P
        except (np.linalg.LinAlgError, ValueError):
            P = None
        if P is None or not np.isfinite(P).all():
            self.failures += 1
            return False
        self.terminal.set_cost_to_go_(P)
        self.fits += 1
        return True
