"""A task as a weighted list of cost terms (``terms.py``) plus a success criterion, read from the
``task.*`` parameters of config/<robot>.yaml: the cart-pole's swing-up and an arm's reach are
both one of these, with different terms.

Success (``task.success.*``):
  hold   over the last ``window`` seconds, the listed joints stay within ``tolerance`` of the
         equilibrium posture (angles wrapped) and every joint inside its URDF limits
         (cart-pole: the pole within 0.2 rad of upright, the cart on its track, for 5 s)
  reach  the task's ``link_position`` point ends within ``tolerance`` of the goal [m]

Goals: a task with a ``link_position`` term has a goal (a point in the URDF's root frame), set
with ``set_goal`` (the controller does, from ``/goal_pose``), checked against the reachable region
(``task.goal_region.*``) first: one outside it is clamped into it, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mbrl_control.core.angles import wrap
from mbrl_control.core.robot import RobotSpec, RobotSpecError
from mbrl_control.core.tasks.base import Task
from mbrl_control.core.tasks.terms import LinkPosition, Term, TermConfig, term_configs
from mbrl_control.core.util import dataclass_from, section, setting

SUCCESS_KINDS = ("hold", "reach")


@dataclass(frozen=True)
class TaskConfig:
    """``task.*``: which terms, the terminal multiplier, the goal before one arrives."""

    name: str = setting("task", "the task's name in reports and summaries")
    terms: tuple[str, ...] = setting((), "names of the cost terms (each configured under task.<name>.*)")
    terminal: float = setting(5.0, "the final state costs this many steps of the state terms (settable at runtime)", 0.0, 1e6)
    goal: tuple[float, ...] = setting((), "reach: the goal until one arrives on /goal_pose [m, URDF root frame]", -100.0, 100.0)


@dataclass(frozen=True)
class SuccessConfig:
    """``task.success.*``: what counts as success."""

    kind: str = setting("hold", "hold: stay near the equilibrium posture; reach: end at the goal", choices=SUCCESS_KINDS)
    joints: tuple[str, ...] = setting((), "hold: the joints judged (empty: all state joints)")
    tolerance: float = setting(0.2, "hold: max deviation [rad or m]; reach: max distance to the goal [m]", 0.0, 100.0)
    window: float = setting(5.0, "hold: seconds at the end of a run the joints must stay within tolerance", 0.0, 3600.0)


@dataclass(frozen=True)
class GoalRegionConfig:
    """``task.goal_region.*``: where goals may lie (a sphere above a floor); others are clamped into it."""

    center: tuple[float, ...] = setting((0.0, 0.0, 0.0), "centre of the reachable sphere [m]", -100.0, 100.0)
    radius: float = setting(1e3, "goals farther than this from the centre are pulled onto the sphere [m]", 0.0, 1e3)
    min_z: float = setting(-1e3, "goals lower than this are raised to it [m]", -1e3, 1e3)


RESERVED_TERM_NAMES = ("name", "success", "goal_region", "terms", "terminal", "goal")


class ResidualTask(Task):
    """``running_cost = sum_t sum_k w_k norm_k(r_k(x_t, u_t))``; ``terminal_cost(x_T) = terminal *
    sum of the state terms at x_T``. See the module docstring for success and goals."""

    def __init__(self, spec: RobotSpec, config: TaskConfig, terms: dict[str, TermConfig],
                 success: SuccessConfig = SuccessConfig(), goal_region: GoalRegionConfig = GoalRegionConfig(),
                 link_position: LinkPosition | None = None) -> None:
        super().__init__()
        if not config.terms:
            raise RobotSpecError("parameter 'task.terms' is empty: a task needs at least one cost term")
        reserved = [n for n in config.terms if n in RESERVED_TERM_NAMES]
        if reserved:
            raise RobotSpecError(f"parameter 'task.terms': {reserved} are reserved names")
        if success.kind not in SUCCESS_KINDS:
            raise RobotSpecError(f"parameter 'task.success.kind' must be one of {SUCCESS_KINDS}")
        self.spec, self.config = spec, config
        self.success_config, self.goal_region = success, goal_region
        self.state_dim, self.action_dim = spec.state_dim, spec.action_dim
        self.register_buffer("action_low", torch.tensor(-spec.effort_limit, dtype=torch.float32))
        self.register_buffer("action_high", torch.tensor(spec.effort_limit, dtype=torch.float32))
        self.terms = torch.nn.ModuleList([Term(name, terms[name], spec, link_position) for name in config.terms])
        self.names = list(config.terms)
        self.register_buffer("weights", torch.tensor([terms[n].weight for n in config.terms], dtype=torch.float32))
        self.register_buffer("terminal_weight", torch.tensor(float(config.terminal)))
        self.register_buffer("last_command", torch.zeros(spec.action_dim))
        self._state_terms = [k for k, t in enumerate(self.terms) if not t.uses_action]
        self._action_terms = [k for k, t in enumerate(self.terms) if t.uses_action]
        self._step_terms = [k for k, t in enumerate(self.terms) if t.residual_kind != "command_rate"]
        reach = [t for t in self.terms if t.residual_kind == "link_position"]
        self.reach_term: Term | None = reach[0] if reach else None
        self.link_position = link_position
        goal = np.asarray(config.goal, dtype=np.float64) if config.goal else np.zeros(3)
        if goal.shape != (3,):
            raise RobotSpecError("parameter 'task.goal' needs 3 values [m]")
        self.register_buffer("goal", torch.tensor(goal, dtype=torch.float32))
        if success.kind == "reach" and self.reach_term is None:
            raise RobotSpecError("parameter 'task.success.kind' is reach, but no term has residual link_position")
        self._success_index = spec.joint_indices(success.joints, "task.success.joints")
        self._region_center = np.asarray(goal_region.center, dtype=np.float64)
        if self._region_center.shape != (3,):
            raise RobotSpecError("parameter 'task.goal_region.center' needs 3 values [m]")

    # -- costs (batched, on the hot path) ----------------------------------------------------
    def _state_cost(self, x: Tensor) -> Tensor:
        cost = torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
        for k in self._state_terms:
            cost = cost + self.weights[k] * self.terms[k](x, None, self.goal, self.last_command)
        return cost

    def running_cost(self, x: Tensor, u: Tensor) -> Tensor:
        cost = self._state_cost(x)  # [B, T]
        for k in self._action_terms:
            cost = cost + self.weights[k] * self.terms[k](x, u, self.goal, self.last_command)
        return cost.sum(-1)

    def step_cost(self, x: Tensor, u: Tensor) -> Tensor:
        x, u = x.unsqueeze(1), u.unsqueeze(1)
        cost = torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
        for k in self._step_terms:
            cost = cost + self.weights[k] * self.terms[k](x, u, self.goal, self.last_command)
        return cost.sum(-1)

    def terminal_cost(self, x: Tensor) -> Tensor:
        return self.terminal_weight * self._state_cost(x)

    # -- Gauss-Newton expansion (iLQR on models whose exact Hessians cost too much) ------------
    def gauss_newton(self, x: Tensor, u: Tensor | None = None, terminal: bool = False) -> tuple[Tensor, Tensor]:
        """Per step, the cost's gradient ``[B, nz]`` and Gauss-Newton Hessian ``[B, nz, nz]`` in
        ``z = [x, u]`` (``z = x`` for ``terminal``): each norm's exact derivatives through its
        residual's Jacobian (``J' g`` and ``J' H J``), the residuals' own curvature left out, as
        mujoco_mpc's iLQG does. Cheap (no second-order autograd) and positive semidefinite for the
        quadratic and smooth-abs norms."""
        nu = 0 if terminal else self.action_dim
        batch = x.shape[0]
        nz = x.shape[-1] + nu
        grad, hess = x.new_zeros(batch, nz), x.new_zeros(batch, nz, nz)
        terms = self._state_terms if terminal else self._step_terms  # steps alone: as step_cost
        for k in terms:
            term = self.terms[k]
            r = term.residual(x.unsqueeze(1), None if u is None else u.unsqueeze(1), self.goal, self.last_command)[:, 0]
            jac = term.residual_jacobian(x, r, self.action_dim)[..., :nz]
            g, h = term.norm_derivatives(r)
            weight = self.weights[k] * (self.terminal_weight if terminal else 1.0)
            grad = grad + weight * (jac.transpose(1, 2) @ g.unsqueeze(-1)).squeeze(-1)
            hess = hess + weight * (jac.transpose(1, 2) @ h @ jac)
        return grad, hess

    # -- the same costs in CasADi (NMPC), weights as symbols so they stay settable ------------
    def symbolic_costs(self, x: Any, u: Any, u_previous: Any, weights: Any) -> tuple[Any, Any]:
        """``(stage, state)`` CasADi expressions: the running cost of one step and the state terms
        alone (the terminal cost is ``terminal * state`` at the last state); ``weights[n_terms]``."""
        stage, state = 0.0, 0.0
        for k, term in enumerate(self.terms):
            value = weights[k] * term.symbolic(x, u, u_previous)
            stage = stage + value
            if not term.uses_action:
                state = state + value
        return stage, state

    # -- runtime settings (copied in place: compiled graphs read them) -----------------------
    def set_weight(self, name: str, weight: float) -> None:
        if name == "terminal":
            self.terminal_weight.fill_(float(weight))
            return
        if name not in self.names:
            raise KeyError(f"no cost term '{name}'; terms: {self.names}")
        self.weights[self.names.index(name)] = float(weight)

    def set_last_command(self, command: np.ndarray | Tensor) -> None:
        """The command just sent: ``command_rate`` terms price the next plan's first step against it."""
        self.last_command.copy_(torch.as_tensor(command, dtype=self.last_command.dtype))

    @property
    def has_goal(self) -> bool:
        return self.reach_term is not None

    def clamp_goal(self, position: np.ndarray) -> tuple[np.ndarray, str]:
        """``position`` moved into the reachable region, and why ('' if it already was)."""
        p = np.asarray(position, dtype=np.float64).copy()
        c, reasons = self.goal_region, []
        if p[2] < c.min_z:
            reasons.append(f"z {p[2]:.3f} below {c.min_z:.3f} m")
            p[2] = c.min_z
        offset = p - self._region_center
        distance = float(np.linalg.norm(offset))
        if distance > c.radius:
            reasons.append(f"{distance:.3f} m from {self._region_center.tolist()}, beyond the reach of {c.radius:.3f} m")
            p = self._region_center + offset * (c.radius / distance)
            p[2] = max(p[2], c.min_z)
        return p, "; ".join(reasons)

    def set_goal(self, position: np.ndarray) -> str:
        """Set the goal (clamped into the reachable region); returns the clamping reason ('' if none)."""
        if not self.has_goal:
            raise ValueError("this task has no goal (no link_position term)")
        position = np.asarray(position, dtype=np.float64)
        if position.shape != (3,) or not np.all(np.isfinite(position)):
            raise ValueError(f"a goal is 3 finite coordinates, got {position.tolist()}")
        clamped, reason = self.clamp_goal(position)
        self.goal.copy_(torch.as_tensor(clamped, dtype=self.goal.dtype))
        return reason

    # -- judging recorded trajectories (numpy, off the hot path) -----------------------------
    def reach_point(self, states: np.ndarray) -> np.ndarray:
        """Positions ``[T, 3]`` of the reach term's point for states ``[T, nx]``."""
        t = self.reach_term
        q = torch.as_tensor(np.asarray(states)[..., : self.spec.nq], dtype=torch.float32)
        with torch.no_grad():
            return t.link_position(q, t.link, t.offset).double().numpy()

    def keypoints(self, states: np.ndarray) -> np.ndarray:
        """The robot's keypoints (``keypoint_links``) per state, ``[T, K, 3]`` in the URDF's root frame."""
        return keypoints(self.spec, self.link_position, states)

    def goal_position(self) -> np.ndarray:
        """Where the task wants the robot: the goal, or the last keypoint at the equilibrium posture."""
        if self.has_goal:
            return self.goal.double().numpy()
        return self.keypoints(self.spec.x_eq[None])[0, -1]

    def error(self, states: np.ndarray, goal: np.ndarray | None = None) -> np.ndarray:
        """Per state ``[T]``: hold, the largest deviation of the judged joints from the posture
        (angles wrapped); reach, the point's distance to ``goal`` (default: the current goal)."""
        states = np.atleast_2d(np.asarray(states, dtype=np.float64))
        if self.success_config.kind == "reach":
            target = self.goal.double().numpy() if goal is None else np.asarray(goal, dtype=np.float64)
            return np.linalg.norm(self.reach_point(states) - target, axis=-1)
        idx = list(self._success_index)
        deviation = states[:, idx] - self.spec.equilibrium[idx]
        angles = [k for k, i in enumerate(idx) if i in self.spec.rotational_dims]
        deviation[:, angles] = wrap(deviation[:, angles])
        return np.abs(deviation).max(axis=-1)

    def within_limits(self, states: np.ndarray) -> np.ndarray:
        q = np.atleast_2d(np.asarray(states))[:, : self.spec.nq]
        return np.all((q >= self.spec.position_lower) & (q <= self.spec.position_upper), axis=-1)

    def within_tolerance(self, states: np.ndarray, goal: np.ndarray | None = None) -> np.ndarray:
        """Per state: within the success tolerance (and, for hold, inside every joint limit)."""
        ok = self.error(states, goal) < self.success_config.tolerance
        return ok & self.within_limits(states) if self.success_config.kind == "hold" else ok

    def success(self, states: np.ndarray, times: np.ndarray) -> bool:
        if len(times) == 0:
            return False
        if self.success_config.kind == "reach":
            return bool(self.within_tolerance(np.asarray(states)[-1:])[0])
        if times[-1] - times[0] < self.success_config.window:
            return False
        window = times >= times[-1] - self.success_config.window
        return bool(self.within_tolerance(np.asarray(states)[window]).all())


def keypoints(spec: RobotSpec, link_position: LinkPosition, states: np.ndarray) -> np.ndarray:
    """The points of ``spec.keypoint_links`` per state, ``[T, K, 3]`` in the URDF's root frame (rviz)."""
    q = torch.as_tensor(np.atleast_2d(np.asarray(states))[:, : spec.nq], dtype=torch.float32)
    with torch.no_grad():
        points = [link_position(q, link, torch.as_tensor(offset, dtype=torch.float32))
                  for link, offset in zip(spec.keypoint_links, spec.keypoint_offsets)]
    return torch.stack(points, dim=1).double().numpy()


def build_residual_task(spec: RobotSpec, p: dict[str, Any], link_position: LinkPosition | None = None) -> ResidualTask:
    """The task of the flat parameters ``p`` (``task.*``)."""
    config = dataclass_from(TaskConfig, section(p, "task"))
    return ResidualTask(spec, config, term_configs(p, list(config.terms)),
                        dataclass_from(SuccessConfig, section(p, "task.success")),
                        dataclass_from(GoalRegionConfig, section(p, "task.goal_region")), link_position)
