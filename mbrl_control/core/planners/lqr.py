"""Discrete-time LQR about the robot's equilibrium: a planner, a terminal value, a fallback.

The model is linearised at the equilibrium ``(x_eq, u_eq)`` (the robot's posture at rest and the
effort that holds it there: zero for the cart-pole upright, the gravity torques for an arm) with
``model.jacobians`` (any differentiable model), and the weights are the task's own stage-cost
Hessians there (``Q = l_xx``, ``R = l_uu``), so the stage cost near it is ``dx'Q dx/2 + du'R du/2``
and ``dx'P dx/2`` (``P`` from ``scipy.linalg.solve_discrete_are``) is the task's infinite-horizon
cost-to-go to second order. Angles (``Equilibrium.angle_dims``) enter ``dx`` wrapped to ``[-pi, pi)``.

Region of validity of the fallback: the largest ellipsoid ``x'Px <= c`` in which the feedback
``u = -Kx`` stays inside the action bounds, ``c = min_i (u_max_i^2 / (K P^-1 K')_ii)``, shrunk by
``region_scale`` as a margin for the nonlinearity the linearisation ignores. Inside it the
linearised closed loop is unsaturated and ``x'Px`` decreases every step, so the state stays inside.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from mbrl_control.core.angles import wrap_dims
from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.core.planners.base import Plan, Planner
from mbrl_control.core.tasks.base import Task
from mbrl_control.core.util import module_device, setting


@dataclass(frozen=True)
class LQRConfig:
    horizon: int = setting(30, "length of the predicted (linearised) trajectory in the plan", 1, 1000)
    action_weight_scale: float = setting(10.0, "multiplies R = l_uu: larger is gentler, with a larger region", 1e-3, 1e6)
    region_scale: float = setting(0.5, "fallback region: this fraction of the unsaturated ellipsoid's level", 1e-3, 1.0)


@dataclass(frozen=True)
class Equilibrium:
    """Where an LQR regulates to: ``x_eq`` at rest, the effort ``u_eq`` holding it, which state
    entries are angles (wrapped in ``x - x_eq``), and which positions belong to passive joints (no
    command: at rest one is where ``x_eq`` has it, as the cart-pole's pole is upright wherever the
    cart stands). The default is the origin with no angles."""

    x_eq: np.ndarray | None = None
    u_eq: np.ndarray | None = None
    angle_dims: tuple[int, ...] = ()
    passive_dims: tuple[int, ...] = ()

    def deviation(self, x: np.ndarray) -> np.ndarray:
        """``x - x_eq`` (any leading shape), its angle entries wrapped to ``[-pi, pi)``."""
        dx = np.asarray(x, dtype=np.float64) - (0.0 if self.x_eq is None else self.x_eq)
        return wrap_dims(dx, self.angle_dims)

    def action(self, du: np.ndarray) -> np.ndarray:
        return du if self.u_eq is None else du + self.u_eq


def rest_action(model: DynamicsModel, x: np.ndarray) -> np.ndarray:
    """The effort that holds ``model`` at rest at posture ``x`` (least squares on the velocity change:
    the gravity torques of the actuated joints for an arm, zero for the cart-pole upright). Two
    Gauss-Newton steps; exact after the first for dynamics affine in the effort."""
    nq = model.state_dim // 2
    device = module_device(model)
    x = torch.as_tensor(x, dtype=torch.float32, device=device).view(1, -1)
    u = torch.zeros(1, model.action_dim, device=device)
    for _ in range(2):
        with torch.no_grad():
            velocity = model.step(x, u)[0, nq:]
        _, b = model.jacobians(x, u)
        step = torch.linalg.lstsq(b[0, nq:].double(), -velocity.double().unsqueeze(-1)).solution.squeeze(-1)
        u = u + step.float()
    return u[0].double().cpu().numpy()


@dataclass(frozen=True)
class LQRSolution:
    """Linearisation, weights and solution, all float64: ``u = -K (x - x_eq)`` (then clipped)."""

    A: np.ndarray
    B: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    P: np.ndarray
    K: np.ndarray

    @property
    def closed_loop(self) -> np.ndarray:
        return self.A - self.B @ self.K


def solve_lqr(model: DynamicsModel, task: Task, action_weight_scale: float = 1.0,
              x_eq: np.ndarray | None = None, u_eq: np.ndarray | None = None) -> LQRSolution:
    """LQR of ``model`` linearised at ``(x_eq, u_eq)`` (default: the origin), weighted by ``task``'s
    stage-cost Hessians there (projected onto the positive semidefinite cone: away from the
    cost's minimum a Hessian may have small negative curvature)."""
    nx, nu = task.state_dim, task.action_dim
    device = module_device(model)  # linearised where the model lives; the solve is float64 numpy
    x0 = torch.zeros(nx, device=device) if x_eq is None else torch.as_tensor(x_eq, dtype=torch.float32, device=device)
    u0 = torch.zeros(nu, device=device) if u_eq is None else torch.as_tensor(u_eq, dtype=torch.float32, device=device)
    Q, R = lqr_weights(task, x0, u0, action_weight_scale)
    return solve_linearized(model, Q, R, x0, u0)


def lqr_weights(task: Task, x0: Tensor, u0: Tensor, action_weight_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``(Q, R)``: ``task``'s stage-cost Hessians at ``(x0, u0)``, Q projected onto the positive
    semidefinite cone."""
    nx = task.state_dim

    def stage(xu: Tensor) -> Tensor:
        return task.step_cost(xu[:nx].view(1, nx), xu[nx:].view(1, -1))[0]

    hessian = torch.func.hessian(stage)(torch.cat([x0, u0])).detach().cpu().double().numpy()
    Q = _nearest_psd(0.5 * (hessian[:nx, :nx] + hessian[:nx, :nx].T))
    R = action_weight_scale * 0.5 * (hessian[nx:, nx:] + hessian[nx:, nx:].T)
    return Q, R


def solve_linearized(model: DynamicsModel, Q: np.ndarray, R: np.ndarray, x0: Tensor, u0: Tensor) -> LQRSolution:
    """LQR of ``model`` linearised at ``(x0, u0)`` (on the model's device) for the weights ``Q, R``;
    raises ``numpy.linalg.LinAlgError`` or ``ValueError`` where the Riccati equation has no
    stabilising solution (a model that cannot be stabilised there)."""
    a, b = model.jacobians(x0.view(1, -1), u0.view(1, -1))
    A, B = a[0].detach().cpu().double().numpy(), b[0].detach().cpu().double().numpy()
    P = scipy.linalg.solve_discrete_are(A, B, Q, R)
    K = np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
    return LQRSolution(A=A, B=B, Q=Q, R=R, P=P, K=K)


def _nearest_psd(m: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(m)
    return (vectors * np.maximum(values, 0.0)) @ vectors.T


class LQRFallback:
    """``fallback_action(x)``: the clipped LQR action inside the region of validity, else None.

    Cheap (a few numpy operations, no torch) so a controller can call it when its planner missed
    its deadline or returned a non-finite plan. See the module docstring for the region.
    """

    def __init__(self, solution: LQRSolution, action_low: np.ndarray, action_high: np.ndarray,
                 equilibrium: Equilibrium = Equilibrium(), region_scale: float = 0.5) -> None:
        if not 0.0 < region_scale <= 1.0:
            raise ValueError("need 0 < region_scale <= 1")
        self.solution = solution
        self.equilibrium = equilibrium
        self.action_low = np.asarray(action_low, dtype=np.float64)
        self.action_high = np.asarray(action_high, dtype=np.float64)
        # The feedback's room: from u_eq to the bounds.
        u_eq = equilibrium.action(np.zeros_like(self.action_low))
        u_max = np.minimum(np.abs(self.action_low - u_eq), np.abs(self.action_high - u_eq))
        K, P = solution.K, solution.P
        gain_spread = np.einsum("ij,jk,ik->i", K, np.linalg.inv(P), K)  # max of (K_i x)^2 on x'Px = 1
        self.level = region_scale * float(np.min(u_max**2 / gain_spread))

    @classmethod
    def from_model(cls, model: DynamicsModel, task: Task, config: LQRConfig = LQRConfig(),
                   equilibrium: Equilibrium = Equilibrium()) -> "LQRFallback":
        """The fallback for ``model`` and ``task`` (one DARE solve: build it once, at start-up)."""
        solution = solve_lqr(model, task, config.action_weight_scale, equilibrium.x_eq, equilibrium.u_eq)
        low, high = (b.detach().cpu().double().numpy() for b in (task.action_low, task.action_high))
        return cls(solution, low, high, equilibrium, config.region_scale)

    def value(self, x: np.ndarray) -> float:
        """``dx'P dx`` of the wrapped deviation: the region test and (halved) the LQR cost-to-go."""
        dx = self.equilibrium.deviation(x)
        return float(dx @ self.solution.P @ dx)

    def in_region(self, x: np.ndarray) -> bool:
        return self.value(x) <= self.level

    def fallback_action(self, x: np.ndarray) -> np.ndarray | None:
        """The LQR action for state ``x[nx]``, or None when ``x`` is outside the region of validity."""
        dx = self.equilibrium.deviation(x)
        if not float(dx @ self.solution.P @ dx) <= self.level:  # also rejects NaN states
            return None
        return np.clip(self.equilibrium.action(-self.solution.K @ dx), self.action_low, self.action_high)


class LQRPlanner(Planner):
    """Constant-gain LQR as a planner: the feedback action now, and the linearised prediction.

    ``Plan.states`` follows the linearised closed loop (``dx_{t+1} = (A - BK) dx_t``, unclipped) and
    ``Plan.actions = clip(u_eq - K dx_t)``; ``Plan.cost`` is the LQR cost-to-go ``dx'P dx/2``. The
    gain is computed once; ``plan`` is a handful of matrix products, so it never misses a deadline.
    ``device``: where the model is linearised (model and task move there); the tick is numpy.
    """

    def __init__(self, model: DynamicsModel, task: Task, config: LQRConfig = LQRConfig(),
                 equilibrium: Equilibrium = Equilibrium(), device: torch.device | str | None = None) -> None:
        if config.horizon < 1:
            raise ValueError("need horizon >= 1")
        if device is not None:
            model.to(device)
            task.to(device)
        self.config = config
        self.horizon = config.horizon
        self.equilibrium = equilibrium
        self.fallback = LQRFallback.from_model(model, task, config, equilibrium)
        self.solution = self.fallback.solution
        self._low, self._high = self.fallback.action_low, self.fallback.action_high
        # Powers of the closed loop, stacked: the whole prediction is one batched product.
        powers = [np.eye(task.state_dim)]
        for _ in range(config.horizon):
            powers.append(self.solution.closed_loop @ powers[-1])
        self._powers = np.stack(powers)  # [T+1, nx, nx]

    def reset(self) -> None:
        pass  # no warm start: the gain is fixed

    def plan(self, x0: Tensor, deadline: float | None = None) -> Plan:
        x = x0.detach().cpu().double().numpy()  # a few numpy products on the host, whatever the model's device
        dx = self.equilibrium.deviation(x)
        predicted = self._powers @ dx  # [T+1, nx]
        actions = np.clip(self.equilibrium.action(-predicted[:-1] @ self.solution.K.T), self._low, self._high)
        states = predicted + (x - dx)  # back to x0's frame (its unwrapped angles, its equilibrium offset)
        return Plan(
            actions=torch.from_numpy(actions).float(),
            states=torch.from_numpy(states).float(),
            cost=0.5 * float(dx @ self.solution.P @ dx),
            iterations=1,
            info={"in_fallback_region": float(self.fallback.in_region(x))},
        )
