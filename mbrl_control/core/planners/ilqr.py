"""iLQR model predictive control for any differentiable dynamics model and any task.

Each iteration linearises the dynamics along the nominal trajectory (``model.jacobians``: one
vmap'd jacrev call for the whole horizon) and expands the task's cost to second order with
torch.func (the task stays a black box; see ``StageDerivatives``), runs the Riccati-like backward
pass in numpy float64, and tries several step sizes in one batched closed-loop rollout
(``FeedbackRollout``), keeping the cheapest.

Choices:
- Regularisation: Levenberg-Marquardt on ``Q_uu`` (``Q_uu + mu I``), ``mu`` raised when ``Q_uu``
  is not positive definite or no step size lowers the cost, lowered after a successful step
  (Tassa et al. 2012).
- Action bounds: the feedforward is clamped so the nominal plus the full step stays in bounds,
  and the feedback rows of clamped actions are zeroed (box-DDP's free/clamped split, Tassa et al.
  2014, solved exactly for one action dimension; for several, one projection of the unconstrained
  step instead of the projected-Newton QP). The rollout clips every action as well, so a plan is
  always feasible.
- Monotone cost: step size 0 (the nominal under its own feedback) is among the candidates, so an
  iteration never returns a costlier trajectory than it started from.
- Warm start: each tick the nominal actions, states and gains are shifted by one step; the first
  rollout from the new state runs them in closed loop, which corrects for the state the previous
  tick did not predict.
- With ``compile=True`` the derivatives and the rollout are compiled graphs (cold compiles of about
  45 s and 3 min for the cart-pole at horizon 50, then cached on disk); the backward pass stays in
  numpy (about 5 us a step: ``np.dot`` into preallocated arrays, scalars for one action).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import lapack
from torch import Tensor

from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.core.planners.base import Plan, Planner, host_copies, no_time_for_another, shift_in_time
from mbrl_control.core.rollout import FeedbackRollout, compile_or_eager
from mbrl_control.core.tasks.base import Task
from mbrl_control.core.util import module_device, setting


@dataclass(frozen=True)
class ILQRConfig:
    horizon: int = setting(50, "planning horizon [ticks]", 1, 1000)
    iterations: int = setting(1, "iterations per tick (the warm start carries the optimisation across ticks)", 1, 100)
    line_search_steps: int = setting(7, "step sizes 1, 1/2, ... tried in one batch", 1, 16)
    reg_init: float = setting(1e-2, "Levenberg-Marquardt mu on Q_uu after a reset", 0.0, 1e6)
    reg_min: float = setting(1e-6, "below this mu becomes 0", 0.0, 1.0)
    reg_max: float = setting(1e8, "above this the iteration gives up and keeps the nominal (the next tick starts "
                                  "over at reg_init)", 1.0, 1e12)
    reg_factor: float = setting(4.0, "mu grows or shrinks by this factor", 1.01, 100.0)
    tolerance: float = setting(1e-5, "stop once the relative cost decrease is below this", 0.0, 1.0)
    hessians: str = setting("exact", "the cost's second derivatives: exact (autograd) or gauss_newton (the task's "
                                     "residual Jacobians; much cheaper through forward kinematics)",
                            choices=("exact", "gauss_newton"))


def per_step_gradient_and_hessian(cost_sum, inputs: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
    """Gradient ``[T, nz]`` and Hessian blocks ``[T, nz, nz]`` of ``cost_sum(*inputs)``, a sum of
    per-row terms over inputs ``[T, k_i]`` (``nz = sum k_i``): its Hessian is block diagonal in
    the rows, so ``nz`` Hessian-vector products, each with one basis direction repeated at every
    row, give every row's block at once.

    Eager: reverse over reverse with the directions batched (``is_grads_batched``), 9x faster
    than torch.func's forward-over-reverse for the cart-pole's stage costs (2.3 against 21 ms at
    horizon 50), whose eager jvp runs many ops through Python decompositions. Compiled:
    torch.func, which dynamo traces into the graph (``autograd.grad`` would break it).
    """
    sizes = [v.shape[-1] for v in inputs]
    rows, nz = inputs[0].shape[0], sum(sizes)
    basis = torch.eye(nz, dtype=inputs[0].dtype, device=inputs[0].device)
    if torch.compiler.is_compiling():
        grad = torch.func.grad(cost_sum, argnums=tuple(range(len(inputs))))
        gradient = torch.cat(grad(*inputs), dim=-1)
        if rows == 1:  # reverse over reverse: forward over reverse fails an autograd layout assert here when compiled
            blocks = torch.func.jacrev(lambda *z: torch.cat(grad(*z), dim=-1), argnums=tuple(range(len(inputs))))(*inputs)
            return gradient, torch.cat([b.reshape(1, nz, -1) for b in blocks], dim=-1)

        def hessian_columns(v: Tensor) -> tuple[Tensor, ...]:
            return torch.func.jvp(grad, inputs, tuple(d.expand(rows, -1) for d in v.split(sizes)))[1]

        columns = torch.cat(torch.func.vmap(hessian_columns)(basis), dim=-1)  # [nz, T, nz]
    else:
        with torch.enable_grad():
            leaves = tuple(v.detach().requires_grad_() for v in inputs)
            first = torch.autograd.grad(cost_sum(*leaves), leaves, create_graph=True)
            gradient = torch.cat(first, dim=-1)
            directions = basis.unsqueeze(1).expand(nz, rows, nz)
            second = torch.autograd.grad(gradient, leaves, grad_outputs=directions, is_grads_batched=True,
                                         allow_unused=True, materialize_grads=True)
            gradient, columns = gradient.detach(), torch.cat(second, dim=-1)
    return gradient, columns.permute(1, 2, 0)


class StageDerivatives(torch.nn.Module):
    """Linearised dynamics and quadratic cost expansion along a trajectory, in one call.

    ``(states[T+1,nx], actions[T,nu]) -> (dynamics[T, nz+1, nx+1], stage[T, nz+1, nz+1],
    terminal[nx+1, nx+1])``, all in homogeneous form (``z = [x, u, 1]``, ``y = [x, 1]``):
    ``dynamics`` holds ``[[A' 0], [B' 0], [0 1]]``, ``stage`` holds ``[[l_zz, l_z], [l_z', 0]]`` and
    ``terminal`` ``[[phi_xx, phi_x], [phi_x', 0]]``.
    """

    def __init__(self, model: DynamicsModel, task: Task, gauss_newton: bool = False) -> None:
        super().__init__()
        self.model = model
        self.task = task
        if gauss_newton and not hasattr(task, "gauss_newton"):
            raise ValueError(f"hessians 'gauss_newton' needs a task of residual terms, not {type(task).__name__}")
        self.gauss_newton = gauss_newton

    def _stage_cost_sum(self, x: Tensor, u: Tensor) -> Tensor:
        return self.task.step_cost(x, u).sum()

    def _terminal_cost_sum(self, x: Tensor) -> Tensor:
        return self.task.terminal_cost(x).sum()

    def forward(self, states: Tensor, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x, u = states[:-1], actions
        T, nx = x.shape
        nu = u.shape[-1]
        a, b = self.model.jacobians(x, u)
        xT = states[-1:]
        if self.gauss_newton:
            l_z, l_zz = self.task.gauss_newton(x, u)
            phi_x, phi_xx = (v[0] for v in self.task.gauss_newton(xT, terminal=True))
        else:
            l_z, l_zz = per_step_gradient_and_hessian(self._stage_cost_sum, (x, u))
            phi_x, phi_xx = (v[0] for v in per_step_gradient_and_hessian(self._terminal_cost_sum, (xT,)))
        zeros = x.new_zeros(T, 1)
        stage = torch.cat(
            [torch.cat([l_zz, l_z.unsqueeze(-1)], dim=-1), torch.cat([l_z, zeros], dim=-1).unsqueeze(1)], dim=1
        )
        top = torch.cat([a.transpose(1, 2), x.new_zeros(T, nx, 1)], dim=-1)
        middle = torch.cat([b.transpose(1, 2), x.new_zeros(T, nu, 1)], dim=-1)
        bottom = torch.cat([x.new_zeros(T, 1, nx), x.new_ones(T, 1, 1)], dim=-1)
        dynamics = torch.cat([top, middle, bottom], dim=1)
        terminal = torch.cat(
            [torch.cat([phi_xx, phi_x.unsqueeze(-1)], dim=-1), torch.cat([phi_x, x.new_zeros(1)]).unsqueeze(0)], dim=0
        )
        return dynamics, stage, terminal


class ILQRPlanner(Planner):
    """iLQR-MPC; see the module docstring. Buffers are allocated once and filled per tick."""

    def __init__(
        self, model: DynamicsModel, task: Task, config: ILQRConfig = ILQRConfig(), compile: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        if config.horizon < 1 or config.iterations < 1 or config.line_search_steps < 1:
            raise ValueError("need horizon, iterations and line_search_steps >= 1")
        if config.reg_factor <= 1.0 or not 0.0 <= config.reg_min <= config.reg_max:
            raise ValueError("need reg_factor > 1 and 0 <= reg_min <= reg_max")
        self.config = config
        self.horizon = T = config.horizon
        self.model = model
        self.task = task
        nx, nu = task.state_dim, task.action_dim
        self._nx, self._nu = nx, nu
        nz = nx + nu
        self._derivatives = StageDerivatives(model, task, gauss_newton=config.hessians == "gauss_newton")
        if device is not None:  # model and task move there, as for the sampling planners
            self._derivatives.to(device)
        self.device = module_device(model)
        self._rollout = FeedbackRollout(model, task, compile=compile)
        self._compile_derivatives = compile
        self._low = task.action_low.detach().cpu().double().numpy()
        self._high = task.action_high.detach().cpu().double().numpy()
        with torch.device(self.device):
            self._step_sizes = torch.tensor([0.0] + [0.5**i for i in range(config.line_search_steps)])
            self._center = 0.5 * (task.action_low + task.action_high).float()
            self._action_low, self._action_high = task.action_low.float(), task.action_high.float()
            # Nominal trajectory and policy (torch float32 on the device, read by the rollout) ...
            self._x0 = torch.zeros(nx)
            self._states = torch.zeros(T + 1, nx)
            self._actions = torch.zeros(T, nu)
            self._feedforward = torch.zeros(T, nu)
            self._gains = torch.zeros(T, nu, nx)
            self._scratch = (torch.empty(T + 1, nx), torch.empty(T, nu), torch.empty(T, nu, nx))
        # ... and the backward pass's float64 workspace.
        self._dynamics = np.zeros((T, nz + 1, nx + 1))
        self._dynamics_t = np.zeros((T, nx + 1, nz + 1))  # contiguous transposes, for np.dot
        self._stage = np.zeros((T, nz + 1, nz + 1))
        self._q = np.zeros((T, nz + 1, nz + 1))
        self._terminal = np.zeros((nx + 1, nx + 1))
        self._value = np.zeros((nx + 1, nx + 1))
        self._value_dyn = np.zeros((nx + 1, nz + 1))
        self._q_policy = np.zeros((nz + 1, nx + 1))
        self._policies = np.zeros((T, nz + 1, nx + 1))  # [[I 0], [K k], [0 1]]: y -> z, per step
        self._policies[:, :nx, :nx] = np.eye(nx)
        self._policies[:, nz, nx] = 1.0
        self._gains64 = self._policies[:, nx:nz, :nx]  # views: the backward pass fills them
        self._ff64 = self._policies[:, nx:nz, nx]
        self._eye_u = np.eye(nu)
        self._u64 = np.zeros((T, nu))
        self.cost_history = np.full(config.iterations + 1, np.nan)  # nominal cost before/after each iteration
        self.reset()

    def reset(self) -> None:
        self._actions.copy_(self._center.expand_as(self._actions))
        self._gains.zero_()
        self._feedforward.zero_()
        self._fresh = True
        self._mu = self.config.reg_init

    def start_from_hold(self, x0: Tensor) -> float:
        """The nominal when there is none yet: the actions that hold the robot still where it is,
        if the model knows them (an arm: zero effort would plan from a falling arm), else the
        centre, rolled out from ``x0`` (zero gains, so step sizes do not matter). Returns its cost."""
        x0 = self._x0.copy_(x0)
        self._actions.copy_(self._center.expand_as(self._actions))
        self._gains.zero_()
        hold = self.model.hold_action(x0.unsqueeze(0))
        if hold is not None:
            self._actions.copy_(torch.clamp(hold[0], self._action_low, self._action_high).expand_as(self._actions))
        self._states.copy_(x0)
        _, cost = self._line_search(x0, feedforward_scale=0.0)
        self._fresh = False
        return cost

    def plan(self, x0: Tensor, deadline: float | None = None) -> Plan:
        cfg = self.config
        start = time.perf_counter()
        x0 = self._x0.copy_(x0)  # onto the device (and float32)
        self.cost_history.fill(np.nan)
        if self._fresh:
            self.start_from_hold(x0)
        # The first iteration linearises along the shifted nominal; its step 0 is that nominal
        # from x0 under its own feedback, so every iteration's cost is measured from x0.
        cost = math.inf
        done = 0
        stopped = False
        for it in range(cfg.iterations):
            if no_time_for_another(self.device, deadline, start, it):
                stopped = True
                break
            previous = cost
            start_cost, cost, expected = self._iterate(x0)
            if it == 0:
                self.cost_history[0] = previous = start_cost
            done += 1
            self.cost_history[done] = cost
            # Converged: the quadratic model predicts (and the step achieved) almost nothing.
            converged = -expected <= cfg.tolerance * abs(cost) and previous - cost <= cfg.tolerance * abs(cost)
            if converged or self._mu > cfg.reg_max:
                break
        if self._mu > cfg.reg_max:
            # Given up: from here a step too small to change the cost in float32 never brings mu
            # down again. The next tick starts over from the initial regularisation, as after a reset.
            self._mu = cfg.reg_init
        actions, states = host_copies(self._actions, self._states)
        plan = Plan(
            actions=actions,
            states=states,
            cost=cost,
            iterations=done,
            deadline_missed=stopped,
            info={"regularisation": self._mu},
        )
        self._shift_warm_start()
        return plan

    def _iterate(self, x0: Tensor) -> tuple[float, float, float]:
        """One iLQR iteration about the current nominal.

        Returns the cost of the nominal from ``x0`` (step 0), the cost of the new nominal, and the
        first-order cost change the quadratic model predicted for the full step.
        """
        cfg = self.config
        self._expand_about_nominal()
        while not self._backward_pass():
            self._mu = max(self._mu * cfg.reg_factor, cfg.reg_min)
            if self._mu > cfg.reg_max:
                self._ff64.fill(0.0)  # no usable step: re-roll the nominal, no feedback
                self._gains64.fill(0.0)
                break
        nx, nz = self._nx, self._nx + self._nu
        expected = float(np.einsum("tu,tu->", self._ff64, self._q[:, nx:nz, nz]))
        self._feedforward.copy_(torch.from_numpy(self._ff64), non_blocking=True)
        self._gains.copy_(torch.from_numpy(self._gains64), non_blocking=True)
        start_cost, new_cost = self._line_search(x0, feedforward_scale=1.0)
        if new_cost < start_cost:
            self._mu = self._mu / cfg.reg_factor if self._mu / cfg.reg_factor >= cfg.reg_min else 0.0
        elif -expected > cfg.tolerance * abs(start_cost) or self._mu > cfg.reg_init:
            self._mu = max(self._mu * cfg.reg_factor, cfg.reg_min)
        # else: at the optimum (a robot held exactly at its equilibrium) there is nothing to gain,
        # and a step that changes nothing in float32 is no failure: raising mu for it, tick after
        # tick, would leave the controller numb (gains ~ 1/mu) when the next push comes.
        return start_cost, new_cost, expected

    def _expand_about_nominal(self) -> None:
        """The linearised dynamics and quadratic cost along the nominal, into the float64 host
        workspace of the backward pass: computed on the device, brought over in one transfer."""
        derivatives = self._derivatives_fn()(self._states, self._actions)
        host = host_copies(*derivatives, self._actions)
        for target, source in zip((self._dynamics, self._stage, self._terminal, self._u64), host):
            np.copyto(target, source.numpy())
        np.copyto(self._dynamics_t, self._dynamics.transpose(0, 2, 1))

    def _derivatives_fn(self):
        if self._compile_derivatives:
            self._compile_derivatives = False
            # The C++ wrapper: one graph of many small kernels a tick (the arm's 0.86 -> 0.71 ms).
            self._derivatives = compile_or_eager(self._derivatives, (self._states, self._actions), cpp_wrapper=True)
        return self._derivatives

    def _backward_pass(self) -> bool:
        """Fill the policies from the float64 expansion; False if ``Q_uu + mu I`` is not positive definite.

        Homogeneous form: ``Q_t = stage_t + M_t' V M_t`` and ``V = G_t' Q_t G_t`` with the policy
        ``G_t = [[I 0], [K k], [0 1]]``, which is the full (regularisation-consistent) value update.
        """
        nx, nu = self._nx, self._nu
        nz = nx + nu
        value, q_all, policies, mu = self._value, self._q, self._policies, self._mu
        np.copyto(value, self._terminal)
        for t in range(self.horizon - 1, -1, -1):
            q, policy = q_all[t], policies[t]
            # np.dot: a third of np.matmul's call overhead on these tiny matrices.
            np.dot(value, self._dynamics_t[t], out=self._value_dyn)
            np.dot(self._dynamics[t], self._value_dyn, out=q)
            q += self._stage[t]
            if nu == 1:  # the common case, in scalars
                q_uu = q[nx, nx] + mu
                if not q_uu > 0.0:
                    return False
                scale = -1.0 / q_uu
                k = q[nx, nz] * scale
                u = self._u64[t, 0]
                clamped = min(max(k, self._low[0] - u), self._high[0] - u)
                if clamped == k:
                    np.multiply(q[nx, :nx], scale, out=policy[nx, :nx])
                else:  # box: the full step is clamped, so this action gets no feedback
                    policy[nx, :nx] = 0.0
                policy[nx, nx] = clamped
            elif not self._multi_action_policy(q, policy, t, mu):
                return False
            np.dot(q, policy, out=self._q_policy)
            np.dot(policy.T, self._q_policy, out=value)
        return True

    def _multi_action_policy(self, q: np.ndarray, policy: np.ndarray, t: int, mu: float) -> bool:
        """``_backward_pass``'s step for several actions: Cholesky solve, then the box projection."""
        nx, nz = self._nx, self._nx + self._nu
        # LAPACK's potrf/potrs directly: numpy's cholesky and two solves cost 59 us a step for the
        # arm's 7 actions against 7 us (1.3 ms of a 25-step backward pass).
        chol, info = lapack.dpotrf(q[nx:nz, nx:nz] + mu * self._eye_u, lower=1, clean=0)
        if info != 0:  # > 0: not positive definite
            return False
        step, info = lapack.dpotrs(chol, q[nx:nz], lower=1)  # [K, ., k] in Q's columns
        if info != 0:
            return False
        step = -step
        feedforward = step[:, nz]
        clamped = np.minimum(np.maximum(feedforward, self._low - self._u64[t]), self._high - self._u64[t])
        gains = step[:, :nx]
        gains[clamped != feedforward] = 0.0
        policy[nx:nz, :nx] = gains
        policy[nx:nz, nx] = clamped
        return True

    def _line_search(self, x0: Tensor, feedforward_scale: float) -> tuple[float, float]:
        """Roll out all step sizes in one batch and keep the cheapest as the new nominal.

        Returns the cost at step 0 (the nominal under its feedback) and the cost kept.
        """
        steps = self._step_sizes * feedforward_scale
        costs, states, actions = self._rollout(x0, self._states, self._actions, self._feedforward, self._gains, steps)
        costs = torch.nan_to_num(costs, nan=float("inf"))
        best = int(torch.argmin(costs))
        if math.isfinite(float(costs[best])):
            self._states.copy_(states[best])
            self._actions.copy_(actions[best])
        # else every rollout diverged: the nominal stays, as a NaN one would never be left again
        # (NaN derivatives, no step) and a controller falling back along it would send NaN.
        return float(costs[0]), float(costs[best])

    def _shift_warm_start(self) -> None:
        for buffer, scratch in zip((self._states, self._actions, self._gains), self._scratch):
            shift_in_time(buffer, scratch)

    # -- the budget, changed between ticks by a running controller -----------------------------
    def budget_problem(self, compiled: bool = False, **budget: int) -> str | None:
        """Why the budget (``iterations``) cannot be used from the next tick (None: it can). The
        compiled graphs do not depend on it."""
        unknown = set(budget) - {"iterations"}
        if unknown:
            return f"no runtime setting {sorted(unknown)} (the budget is iterations)"
        if budget.get("iterations", 1) < 1:
            return f"need iterations >= 1 (got {budget['iterations']})"
        return None

    def set_budget(self, **budget: int) -> None:
        """Iterate ``iterations`` times per tick from the next call; ValueError and no change if it does not fit."""
        problem = self.budget_problem(**budget)
        if problem:
            raise ValueError(problem)
        self.config = dataclasses.replace(self.config, **budget)
        self.cost_history = np.full(self.config.iterations + 1, np.nan)
