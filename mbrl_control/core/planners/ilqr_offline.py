"""Structured offline planning: one iLQR trajectory, then only tracking it with its time-varying
LQR gains, no replanning (the seed's "offline use of structured models").

On the first ``plan`` after a ``reset`` (a new episode, a new goal) iLQR runs to convergence over
``horizon`` steps from the state it is given, starting from the closed loop of a short
receding-horizon iLQR on the model (the one long tick; in realtime that tick misses its deadline
and the controller's fallback covers it). Every later tick is one affine feedback law,
``u = clip(u_ref[k] + K[k] (x - x_ref[k]))``, microseconds of numpy. Past the end of the
trajectory an infinite-horizon LQR about the rest state nearest its end keeps the robot there;
the time-varying gains end in that LQR's cost-to-go, so they hand over to it without fading.

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
from mbrl_control.core.planners.lqr import rest_action, solve_lqr
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
    first_nominal: str = setting("mpc", "where the optimisation starts: mpc (receding-horizon iLQR's closed loop on the "
                                        "model), lqr (the equilibrium LQR's closed loop), hold (the actions that hold "
                                        "the robot where it is)", choices=("mpc", "lqr", "hold"))
    nominal_horizon: int = setting(30, "first_nominal mpc: its iLQR's horizon [ticks]", 1, 1000)
    nominal_iterations: int = setting(2, "first_nominal mpc: its iLQR's iterations per tick", 1, 100)


class ILQROfflinePlanner(Planner):
    """See the module docstring. ``angle_dims``: state entries wrapped in ``x - x_ref``;
    ``passive_dims``: positions of joints without a command (``_rest_state_near``).

    Where the optimisation starts decides what it finds: a swing-up has many local minima. From
    the closed loop of an LQR about the equilibrium (``initial_policy`` ``(K, x_eq, u_eq)``,
    ``u = u_eq - K (x - x_eq)``), or from holding still, a hanging cart-pole with a few mrad of
    estimation noise on the start lands in one two or three times as expensive (a late swing-up,
    a last-second full turn) for two or three starts in ten (measured: LQR 2 of 8, hold 3 of 10).
    From the closed loop of a short receding-horizon iLQR on the model (``mpc``, the default),
    which swings up by itself, every start measured (8 noisy, 2 traps of the others, one exactly
    hanging) converged to the cheap one (cost 61-65) in 6-7 iterations; that first nominal costs
    ``horizon`` ticks of it (eager on the cart-pole: 11-13 s in all, against 9-10 s from LQR).
    """

    # first_nominal lqr: the equilibrium's LQR is kept unless its closed loop costs this many times
    # the closed loop of an LQR about where the robot is, at rest (on the iiwa: 8.6e6 against
    # finite; a factor, so that a nominal merely somewhat dearer still gets to start the search).
    LQR_NOMINAL_TOO_COSTLY = 10.0

    def __init__(self, model: DynamicsModel, task: Task, config: ILQROfflineConfig = ILQROfflineConfig(),
                 compile: bool = False, angle_dims: tuple[int, ...] = (),
                 initial_policy: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                 passive_dims: tuple[int, ...] = (), device: torch.device | str | None = None) -> None:
        self.config = config
        self.initial_policy = initial_policy
        self.horizon = config.horizon
        self.angle_dims = tuple(angle_dims)
        self.passive_dims = tuple(passive_dims)
        self._ilqr = ILQRPlanner(model, task, ILQRConfig(horizon=config.horizon, iterations=config.iterations,
                                                         line_search_steps=config.line_search_steps,
                                                         tolerance=config.tolerance, hessians=config.hessians),
                                 compile=compile, device=device)
        self._nominal_mpc = ILQRPlanner(model, task, ILQRConfig(horizon=min(config.nominal_horizon, config.horizon),
                                                                iterations=config.nominal_iterations,
                                                                line_search_steps=config.line_search_steps,
                                                                hessians=config.hessians),
                                        compile=compile, device=device) if config.first_nominal == "mpc" else None
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
        self.started_from = config.first_nominal  # the first nominal the last optimisation used

    def reset(self) -> None:
        self._ilqr.reset()
        self._step = None

    def _start_nominal(self, x0: Tensor) -> None:
        """Put the first nominal into the iLQR: its actions (and feedback) rolled out from ``x0``."""
        ilqr, nominal = self._ilqr, self.config.first_nominal
        ilqr.reset()  # without more, the fresh plan starts from holding the robot where it is
        if nominal == "lqr":
            # The LQR about the equilibrium, from a start far from it (an arm at its last goal),
            # can throw the robot about, and so can holding still open loop (an arm held by its
            # gravity torque alone falls away from any posture it moves off: measured on the iiwa,
            # 3 s of either cost 1e6 or overflowed, and 100 iterations did not repair it; tracking
            # the result spun the arm through its limits). Then the start is the closed loop of an
            # LQR about where the robot is, at rest.
            equilibrium_cost = self._seed_with_lqr(ilqr, x0)
            here_cost = self._here_cost(ilqr, x0)  # the nominal is now that LQR's closed loop
            self.started_from = "lqr_here"
            if math.isfinite(equilibrium_cost) and not equilibrium_cost > self.LQR_NOMINAL_TOO_COSTLY * here_cost:
                ilqr.reset()
                self._seed_with_lqr(ilqr, x0)
                self.started_from = "lqr"
        elif nominal == "mpc":
            mpc = self._nominal_mpc
            mpc.reset()
            # Its own first plan from the LQR's closed loop: from holding still, a pole hanging
            # exactly down is a saddle of the cost, where iLQR finds no direction to start in.
            self._seed_with_lqr(mpc, x0)
            x = x0.to(ilqr.device).unsqueeze(0)
            with torch.no_grad():
                for t in range(self.horizon):
                    ilqr._actions[t] = mpc.plan(x[0]).actions[0].to(ilqr.device)
                    x = self._model.step(x, ilqr._actions[t].unsqueeze(0))
            ilqr._line_search(ilqr._x0.copy_(x0), feedforward_scale=0.0)  # rolled out from x0 (reset zeroed the gains)
            ilqr._fresh = False

    def _here_cost(self, ilqr: ILQRPlanner, x0: Tensor) -> float:
        """The cost of the closed loop of an LQR about ``x0`` at rest (kept in ``_lqr_here``)."""
        rest = x0.detach().cpu().double().numpy().copy()
        rest[len(rest) // 2:] = 0.0
        u_rest = rest_action(self._model, rest)
        here = solve_lqr(self._model, self._task, 1.0, rest, u_rest)
        self._lqr_here = (here.K, rest, u_rest)
        ilqr.reset()
        return self._seed_with_lqr(ilqr, x0, self._lqr_here)

    def _seed_with_lqr(self, ilqr: ILQRPlanner, x0: Tensor,
                       policy: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> float:
        """``ilqr``'s nominal: the closed loop of an LQR ``(K, x_eq, u_eq)`` (the equilibrium's,
        ``initial_policy``, unless given) from ``x0``; returns its cost (inf without an LQR)."""
        policy = self.initial_policy if policy is None else policy
        if policy is None:
            return math.inf
        gains, x_eq, u_eq = (torch.as_tensor(np.asarray(a), dtype=torch.float32, device=ilqr.device) for a in policy)
        ilqr._states.copy_(x_eq.expand_as(ilqr._states))
        ilqr._actions.copy_(u_eq.expand_as(ilqr._actions))
        ilqr._gains.copy_((-gains).expand_as(ilqr._gains))
        _, cost = ilqr._line_search(ilqr._x0.copy_(x0), feedforward_scale=0.0)
        ilqr._fresh = False
        return cost

    def _optimise(self, x0: Tensor) -> None:
        """iLQR from the first nominal, then the time-varying gains about the final trajectory."""
        start = time.perf_counter()
        ilqr = self._ilqr
        self._start_nominal(x0)
        plan = ilqr.plan(x0)  # converges (or runs out of iterations) inside; no deadline
        if not (np.isfinite(plan.cost) and torch.isfinite(plan.states).all()):
            raise FloatingPointError(f"iLQR found no finite trajectory from {x0.tolist()} (cost {plan.cost})")
        self._x_ref[:] = plan.states.double().numpy()
        self._u_ref[:] = plan.actions.double().numpy()
        # Past the end: the infinite-horizon LQR about the rest state nearest the end, holding it
        # with the effort that holds it at rest.
        self._end_state[:] = self._rest_state_near(self._x_ref[-1])
        end = solve_lqr(self._model, self._task, 1.0, self._end_state, rest_action(self._model, self._end_state))
        self._end_gain[:] = -end.K
        # The tracking gains: one more backward pass about exactly this trajectory (plan() shifted
        # its warm start by one step; the plan itself holds it), ending in that LQR's cost-to-go.
        # With the task's terminal cost instead they fade to nothing over the last half second
        # (it prices the end state, not the future).
        nx = self._task.state_dim
        ilqr._states.copy_(plan.states)
        ilqr._actions.copy_(plan.actions)
        ilqr._expand_about_nominal()
        # Its curvature only: the gradient towards the rest state would ask for feedforward steps
        # the effort box clamps, and a clamped step gets no feedback gains.
        ilqr._terminal.fill(0.0)
        ilqr._terminal[:nx, :nx] = end.P
        # Under the regularisation the optimisation ended with (about zero once it converged):
        # unregularised gains about an arm's Gauss-Newton expansion pushed it through its limits
        # (bench/arm.py: 130 limit violations in 6 goals against 48).
        while not ilqr._backward_pass():
            ilqr._mu = max(ilqr._mu * ilqr.config.reg_factor, ilqr.config.reg_min)
        self._gains[:] = ilqr._gains64
        self.trajectory_cost = plan.cost
        self.optimise_iterations = plan.iterations
        self.optimise_seconds = time.perf_counter() - start

    def _rest_state_near(self, x: np.ndarray) -> np.ndarray:
        """``x`` at rest: velocities zero, passive joints where the equilibrium has them (the turn
        nearest ``x`` for an angle). A trajectory may end still moving, or with the pole tilted
        against a decelerating cart: no effort holds the robot there, so no LQR about it can."""
        rest = x.copy()
        nq = len(x) // 2
        rest[nq:] = 0.0
        if self.initial_policy is not None:
            x_eq = self.initial_policy[1]
            for i in self.passive_dims:
                turns = round((x[i] - x_eq[i]) / (2 * math.pi)) if i in self.angle_dims else 0
                rest[i] = x_eq[i] + 2 * math.pi * turns
        return rest

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
