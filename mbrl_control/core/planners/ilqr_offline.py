"""Structured offline planning: one iLQR trajectory, then only tracking it with its time-varying
LQR gains, no replanning (the seed's "offline use of structured models").

On the first ``plan`` after a ``reset`` (a new episode, a new goal) iLQR runs to convergence over
``horizon`` steps from the state it is given (the one long tick; in realtime that tick misses its
deadline and the controller's fallback covers it). Every later tick is one affine feedback law,
``u = clip(u_ref[k] + K[k] (x - x_ref[k]))``, microseconds of numpy. Past the end of the
trajectory an infinite-horizon LQR about its end state keeps the robot there.

The trade-off against iLQR-MPC is what ``bench/planners.py`` and ``bench/arm.py`` measure: a tick
costs almost nothing, but a disturbance the plan did not foresee (a push) is only corrected by
the local feedback of a trajectory that no longer fits.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mbrl_control.core.angles import wrap_dims
from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.core.planners.base import Plan, Planner
from mbrl_control.core.planners.ilqr import ILQRConfig, ILQRPlanner
from mbrl_control.core.planners.lqr import solve_lqr
from mbrl_control.core.tasks.base import Task
from mbrl_control.core.util import setting


@dataclass(frozen=True)
class ILQROfflineConfig:
    horizon: int = setting(150, "length of the one optimised trajectory [ticks]", 1, 5000)
    iterations: int = setting(100, "iLQR iterations at most when a trajectory is (re)optimised", 1, 10000)
    tolerance: float = setting(1e-6, "stop once the relative cost decrease is below this", 0.0, 1.0)
    line_search_steps: int = setting(10, "step sizes 1, 1/2, ... tried in one batch", 1, 16)
    hessians: str = setting("exact", "the cost's second derivatives: exact (autograd) or gauss_newton (residual Jacobians)",
                            choices=("exact", "gauss_newton"))


class ILQROfflinePlanner(Planner):
    """See the module docstring. ``angle_dims``: state entries wrapped in ``x - x_ref``.

    ``initial_policy`` ``(K[nu, nx], x_eq[nx], u_eq[nu])``: the first nominal is the closed loop of
    ``u = u_eq - K (x - x_eq)`` from the start state (an LQR about the equilibrium), not zero
    actions: from zero actions a pole falls and iLQR settles in the local minimum of a full turn.
    """

    def __init__(self, model: DynamicsModel, task: Task, config: ILQROfflineConfig = ILQROfflineConfig(),
                 compile: bool = False, angle_dims: tuple[int, ...] = (),
                 initial_policy: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                 device: torch.device | str | None = None) -> None:
        self.config = config
        self.initial_policy = initial_policy
        self.horizon = config.horizon
        self.angle_dims = tuple(angle_dims)
        self._ilqr = ILQRPlanner(model, task, ILQRConfig(horizon=config.horizon, iterations=config.iterations,
                                                         line_search_steps=config.line_search_steps,
                                                         tolerance=config.tolerance, hessians=config.hessians),
                                 compile=compile, device=device)
        self._low = task.action_low.detach().cpu().double().numpy()
        self._high = task.action_high.detach().cpu().double().numpy()
        self._x_ref = np.zeros((config.horizon + 1, task.state_dim))
        self._u_ref = np.zeros((config.horizon, task.action_dim))
        self._gains = np.zeros((config.horizon, task.action_dim, task.state_dim))
        self._step: int | None = None  # ticks since the trajectory was optimised; None: optimise next
        self._end_gain = np.zeros((task.action_dim, task.state_dim))  # the LQR past the trajectory's end ...
        self._end_state = np.zeros(task.state_dim)  # ... about its end posture, at rest
        self._model, self._task = model, task
        self.optimise_seconds = 0.0
        self.optimise_iterations = 0
        self.trajectory_cost = math.nan

    def reset(self) -> None:
        self._ilqr.reset()
        self._step = None

    def _optimise(self, x0: Tensor) -> None:
        """iLQR to convergence from ``x0``, then the time-varying gains about the final trajectory."""
        start = time.perf_counter()
        ilqr = self._ilqr
        ilqr.reset()
        if self.initial_policy is not None:
            gains, x_eq, u_eq = (torch.as_tensor(a, dtype=torch.float32, device=ilqr.device) for a in self.initial_policy)
            ilqr._states.copy_(x_eq.expand_as(ilqr._states))
            ilqr._actions.copy_(u_eq.expand_as(ilqr._actions))
            ilqr._gains.copy_((-gains).expand_as(ilqr._gains))
            ilqr._line_search(ilqr._x0.copy_(x0), feedforward_scale=0.0)  # the nominal: the LQR's closed loop
            ilqr._fresh = False
        plan = ilqr.plan(x0)  # converges (or runs out of iterations) inside; no deadline
        # plan() shifted its warm start by one step; the plan itself holds the trajectory. The gains
        # come from one more backward pass about exactly this trajectory.
        ilqr._states.copy_(plan.states)
        ilqr._actions.copy_(plan.actions)
        ilqr._expand_about_nominal()
        while not ilqr._backward_pass():
            ilqr._mu = max(ilqr._mu * ilqr.config.reg_factor, ilqr.config.reg_min)
        self._x_ref[:] = plan.states.double().numpy()
        self._u_ref[:] = plan.actions.double().numpy()
        self._gains[:] = ilqr._gains64
        # Past the end: the infinite-horizon LQR about the end state (the finite-horizon gains
        # fade towards the end, where the terminal cost, not a value function, prices the future).
        # It holds the end posture at rest (the trajectory may end still moving).
        self._end_state[:] = self._x_ref[-1]
        self._end_state[self._task.state_dim // 2:] = 0.0
        end = solve_lqr(self._model, self._task, 1.0, self._end_state, self._u_ref[-1])
        self._end_gain[:] = -end.K
        self.trajectory_cost = plan.cost
        self.optimise_iterations = plan.iterations
        self.optimise_seconds = time.perf_counter() - start

    def plan(self, x0: Tensor, deadline: float | None = None) -> Plan:
        optimised = self._step is None
        if optimised:
            self._optimise(x0)
            self._step = 0
        T = self.horizon
        k = min(self._step, T - 1)
        x = x0.detach().cpu().double().numpy()  # tracking is a few numpy operations on the host
        reference = self._x_ref[self._step] if self._step < T else self._end_state
        dx = wrap_dims(x - reference, self.angle_dims)
        gain = self._gains[k] if self._step < T else self._end_gain
        u = np.clip(self._u_ref[k] + gain @ dx, self._low, self._high)
        remaining = max(1, T - self._step)
        actions = np.concatenate([u[None], self._u_ref[T - remaining + 1:]]) if remaining > 1 else u[None]
        states = self._x_ref[T - remaining:]
        self._step += 1
        return Plan(
            actions=torch.from_numpy(actions).float(),
            states=torch.from_numpy(states).float(),
            cost=self.trajectory_cost,
            iterations=self.optimise_iterations if optimised else 0,
            info={"tracking_step": float(k), "optimise_s": self.optimise_seconds if optimised else 0.0},
        )
