"""Nonlinear MPC with CasADi: multiple shooting, warm-started, deadline-bounded.

The dynamics are a CasADi-symbolic twin of the analytic model (for ``CartPoleDynamics``, the same
equations of motion from ``CartPoleParams``, RK4 per control interval) and the cost is the task's
own terms in CasADi (``ResidualTask.symbolic_costs``: same residuals, norms, terminal multiple),
with the weights, the terminal multiple and the last command as NLP parameters, so they can change
between ticks without rebuilding the solver. Joints with position limits are bounded. Decision
variables are ordered stage by stage (``x0, u0, x1, u1, ..., xN``), the layout
structure-exploiting solvers want.

Solvers (``solver``): ``ipopt`` (interior point, robust), ``fatrop`` (interior point exploiting
the optimal-control structure, fastest here), ``sqpmethod`` (SQP with the qrqp QP solver).
Bounded time: ``max_iterations`` caps the solver, and an iteration callback stops it as soon as
the tick's deadline has passed; the plan is then the last iterate (within the action bounds,
possibly with small shooting defects) and ``deadline_missed`` is set.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import casadi as ca
import numpy as np
import torch
from torch import Tensor

from mbrl_control.core.dynamics.cartpole import CartPoleDynamics, CartPoleParams
from mbrl_control.core.planners.base import Plan, Planner
from mbrl_control.core.tasks.residual import ResidualTask
from mbrl_control.core.util import setting

SOLVERS = ("ipopt", "fatrop", "sqpmethod")


@dataclass(frozen=True)
class NMPCConfig:
    horizon: int = setting(30, "planning horizon [ticks]", 1, 1000)
    solver: str = setting("fatrop", "NLP solver", choices=SOLVERS)
    max_iterations: int = setting(30, "solver iterations per tick", 1, 1000)
    tolerance: float = setting(1e-4, "the solver's convergence tolerance", 1e-10, 1.0)
    substeps: int = setting(1, "RK4 steps per control interval", 1, 20)


def cartpole_ode(params: CartPoleParams) -> ca.Function:
    """``xdot = f(x, u)``: the Lagrangian equations of ``CartPoleDynamics.accelerations`` in CasADi."""
    p = params
    x = ca.SX.sym("x", 4)
    u = ca.SX.sym("u", 1)
    th, xd, thd = x[1], x[2], x[3]
    total_mass = p.cart_mass + p.pole_mass
    ml = p.pole_mass * p.pole_com
    pole_moment = p.pole_mass * p.pole_com**2 + p.pole_inertia
    s, c = ca.sin(th), ca.cos(th)
    mlc = ml * c
    rhs_x = u[0] - p.cart_damping * xd + ml * s * thd * thd
    rhs_th = ml * p.gravity * s - p.pole_damping * thd
    inv_det = 1.0 / (total_mass * pole_moment - mlc * mlc)
    xdd = (pole_moment * rhs_x - mlc * rhs_th) * inv_det
    thdd = (total_mass * rhs_th - mlc * rhs_x) * inv_det
    return ca.Function("cartpole_ode", [x, u], [ca.vertcat(xd, thd, xdd, thdd)])


def rk4_step(ode: ca.Function, dt: float, substeps: int) -> ca.Function:
    """One control period of ``ode`` by ``substeps`` RK4 steps, the force held constant."""
    x = ca.SX.sym("x", ode.size1_in(0))
    u = ca.SX.sym("u", ode.size1_in(1))
    h = dt / substeps
    xn = x
    for _ in range(substeps):
        k1 = ode(xn, u)
        k2 = ode(xn + 0.5 * h * k1, u)
        k3 = ode(xn + 0.5 * h * k2, u)
        k4 = ode(xn + h * k3, u)
        xn = xn + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
    return ca.Function("cartpole_step", [x, u], [xn])


class _DeadlineCallback(ca.Callback):
    """Solver iteration callback: returns 1 (stop) once ``deadline`` has passed."""

    def __init__(self, name: str, nx: int, ng: int, np_: int) -> None:
        ca.Callback.__init__(self)
        self.deadline: float | None = None
        self.iterations = 0
        self._sizes = {"x": (nx, 1), "f": (1, 1), "g": (ng, 1), "lam_x": (nx, 1), "lam_g": (ng, 1), "lam_p": (np_, 1)}
        self.construct(name, {})

    def get_n_in(self) -> int:
        return ca.nlpsol_n_out()

    def get_n_out(self) -> int:
        return 1

    def get_name_in(self, i: int) -> str:
        return ca.nlpsol_out(i)

    def get_name_out(self, i: int) -> str:
        return "ret"

    def get_sparsity_in(self, i: int) -> ca.Sparsity:
        return ca.Sparsity.dense(*self._sizes[ca.nlpsol_out(i)])

    def eval(self, arg: list) -> list:
        self.iterations += 1
        stop = self.deadline is not None and time.perf_counter() >= self.deadline
        return [1 if stop else 0]


def symbolic_ode(model: object) -> ca.Function:
    """``xdot = f(x, u)`` in CasADi for an analytic model that has a symbolic twin."""
    if isinstance(model, CartPoleDynamics):
        return cartpole_ode(model.params)
    raise ValueError(f"nmpc has no CasADi twin of {type(model).__name__} (the cartpole dynamics have one)")


class NMPCPlanner(Planner):
    """Multiple-shooting NMPC of a ``ResidualTask`` on the symbolic twin of an analytic model."""

    def __init__(self, model: CartPoleDynamics, task: ResidualTask, config: NMPCConfig = NMPCConfig()) -> None:
        if not isinstance(task, ResidualTask):
            raise ValueError("nmpc needs a task of cost terms (ResidualTask) to write it in CasADi")
        if config.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got '{config.solver}'")
        if config.horizon < 1 or config.max_iterations < 1 or config.substeps < 1:
            raise ValueError("need horizon, max_iterations and substeps >= 1")
        self.config = config
        self.task = task
        self.horizon = N = config.horizon
        nx, nu = task.state_dim, task.action_dim
        self._nx, self._nu = nx, nu
        step = rk4_step(symbolic_ode(model), model.dt, config.substeps)
        n_terms = len(task.terms)
        x0 = ca.SX.sym("x0", nx)
        weights = ca.SX.sym("weights", n_terms)
        terminal = ca.SX.sym("terminal")
        u_last = ca.SX.sym("u_last", nu)
        xs = [ca.SX.sym(f"x{k}", nx) for k in range(N + 1)]
        us = [ca.SX.sym(f"u{k}", nu) for k in range(N)]
        w, g, cost = [], [], 0.0
        for k in range(N):
            w += [xs[k], us[k]]
            stage, _ = task.symbolic_costs(xs[k], us[k], us[k - 1] if k > 0 else u_last, weights)
            cost += stage
        w.append(xs[N])
        _, final_state = task.symbolic_costs(xs[N], us[N - 1], us[N - 1], weights)
        cost += terminal * final_state
        # Stage-wise constraints: the initial state, then each shooting defect.
        g.append(xs[0] - x0)
        for k in range(N):
            g.append(xs[k + 1] - step(xs[k], us[k]))  # the sign structure detection expects
        nlp = {"x": ca.vertcat(*w), "p": ca.vertcat(x0, weights, terminal, u_last), "f": cost, "g": ca.vertcat(*g)}
        n_w, n_g = nlp["x"].shape[0], nlp["g"].shape[0]
        self._params = np.zeros(nlp["p"].shape[0])
        self._callback = _DeadlineCallback("deadline", n_w, n_g, self._params.size)
        self._solver = ca.nlpsol("nmpc", config.solver, nlp, self._solver_options(n_g))
        # Index of each stage's state and action in the decision vector.
        stride = nx + nu
        self._x_index = np.array([[k * stride + i for i in range(nx)] for k in range(N + 1)])
        self._u_index = np.array([[k * stride + nx + i for i in range(nu)] for k in range(N)])
        self._lbw = np.full(n_w, -np.inf)
        self._ubw = np.full(n_w, np.inf)
        self._lbw[self._u_index] = task.action_low.double().numpy()
        self._ubw[self._u_index] = task.action_high.double().numpy()
        spec = task.spec
        for j in range(spec.nq):  # the joints' travel: hard bounds where the URDF has them
            self._lbw[self._x_index[:, j]] = spec.position_lower[j]
            self._ubw[self._x_index[:, j]] = spec.position_upper[j]
        self._w = np.zeros(n_w)
        self._lam_x = np.zeros(n_w)
        self._lam_g = np.zeros(n_g)
        self._zeros_g = np.zeros(n_g)
        self._warm = False
        self.last_status = ""

    def _solver_options(self, n_g: int) -> dict:
        cfg = self.config
        common = {"iteration_callback": self._callback, "print_time": False, "error_on_fail": False}
        if cfg.solver == "ipopt":
            return common | {
                "ipopt": {
                    "max_iter": cfg.max_iterations,
                    "tol": cfg.tolerance,
                    "print_level": 0,
                    "sb": "yes",
                    "warm_start_init_point": "yes",
                    "mu_init": 1e-3,
                }
            }
        if cfg.solver == "fatrop":
            return common | {
                "structure_detection": "auto",
                "equality": [True] * n_g,
                "fatrop": {"max_iter": cfg.max_iterations, "tol": cfg.tolerance, "print_level": 0, "mu_init": 1e-3},
            }
        return common | {
            "qpsol": "qrqp",
            "qpsol_options": {"print_iter": False, "print_header": False, "error_on_fail": False},
            "max_iter": cfg.max_iterations,
            "tol_pr": cfg.tolerance,
            "tol_du": cfg.tolerance,
            "print_header": False,
            "print_iteration": False,
            "print_status": False,
        }

    def reset(self) -> None:
        self._warm = False

    def plan(self, x0: Tensor, deadline: float | None = None) -> Plan:
        x = x0.double().numpy()
        if not self._warm:
            # Cold start: hold the state, zero force.
            self._w[self._x_index] = x
            self._w[self._u_index] = 0.0
            self._lam_x[:] = 0.0
            self._lam_g[:] = 0.0
        self._callback.deadline = deadline
        self._callback.iterations = 0
        task = self.task  # its weights and last command as they are now (settable at runtime)
        self._params[:] = np.concatenate([x, task.weights.double().numpy(), [float(task.terminal_weight)],
                                          task.last_command.double().numpy()])
        solution = self._solver(
            x0=self._w, p=self._params, lbx=self._lbw, ubx=self._ubw, lbg=self._zeros_g, ubg=self._zeros_g,
            lam_x0=self._lam_x, lam_g0=self._lam_g,
        )
        stats = self._solver.stats()
        self.last_status = str(stats.get("return_status", ""))
        w = np.asarray(solution["x"]).ravel()
        finite = bool(np.all(np.isfinite(w)))
        if finite:
            self._w[:] = w
            self._lam_x[:] = np.asarray(solution["lam_x"]).ravel()
            self._lam_g[:] = np.asarray(solution["lam_g"]).ravel()
        actions = np.clip(self._w[self._u_index], self._lbw[self._u_index], self._ubw[self._u_index])
        states = self._w[self._x_index]
        cost = float(solution["f"]) if finite else math.inf
        plan = Plan(
            actions=torch.from_numpy(actions).float(),
            states=torch.from_numpy(states).float(),
            cost=cost,
            iterations=int(stats.get("iter_count", self._callback.iterations)),
            deadline_missed=deadline is not None and time.perf_counter() >= deadline,
            info={"solver_success": float(bool(stats.get("success", False)))},
        )
        self._shift_warm_start()
        self._warm = True
        return plan

    def _shift_warm_start(self) -> None:
        """Next tick starts from this solution one stage on; the last stage is kept (repeated).

        numpy copies overlapping slices safely.
        """
        stride, nx = self._nx + self._nu, self._nx
        self._w[:-stride] = self._w[stride:]
        self._lam_x[:-stride] = self._lam_x[stride:]
        self._lam_g[nx:-nx] = self._lam_g[2 * nx :]
