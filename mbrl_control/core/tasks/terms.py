"""Cost terms as data, in the style of mujoco_mpc: each term is a residual of the state (or the
action) passed through a norm and multiplied by a weight; a task is a list of them.

Residuals (``residual``):
  joint_position  q - target (the robot's equilibrium posture), wrapped for continuous joints
  joint_velocity  qd
  effort          u
  command_rate    u_t - u_{t-1} (u_{-1}: the command last sent, which the controller tells the task)
  joint_limit     how far a joint is past its soft limit (the URDF's, ``margin`` inside), else 0
  link_position   the position of a point on a link (forward kinematics) minus the goal
Norms (``norm``), with per-entry multipliers ``s`` (``scale``):
  quadratic       sum s r^2
  cosine          sum s (1 - cos r)             (an angle's distance that does not wind)
  smooth_abs      sqrt(sum s r^2 + p^2) - p      (pulls with a constant force far away, quadratic near)

Weights live in a buffer, so changing one at runtime (``ResidualTask.set_weight``) reaches a
compiled planner without recompiling it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from mbrl_control.core.angles import angle_mask, wrap_masked
from mbrl_control.core.robot import RobotSpec, RobotSpecError
from mbrl_control.core.util import setting

RESIDUALS = ("joint_position", "joint_velocity", "effort", "command_rate", "joint_limit", "link_position")
ACTION_RESIDUALS = ("effort", "command_rate")
NORMS = ("quadratic", "cosine", "smooth_abs")

# (q[..., nq], link, offset[3]) -> positions [..., 3] in the URDF's root frame
LinkPosition = Callable[[Tensor, str, Tensor], Tensor]


@dataclass(frozen=True)
class TermConfig:
    """One cost term (``task.<name>.*`` parameters)."""

    residual: str = setting("joint_position", "what the term measures", choices=RESIDUALS)
    norm: str = setting("quadratic", "how the residual is priced", choices=NORMS)
    weight: float = setting(1.0, "the term's weight (settable at runtime)", 0.0, 1e9)
    joints: tuple[str, ...] = setting((), "joints the residual covers; empty: every state joint (every command joint "
                                          "for effort and command_rate)")
    scale: tuple[float, ...] = setting((), "per-entry multipliers of the norm (empty: 1 each)", 0.0, 1e9)
    margin: float = setting(0.0, "joint_limit: the soft limit lies this far inside the URDF's [m or rad]", 0.0, 100.0)
    link: str = setting("", "link_position: the link carrying the point")
    offset: tuple[float, ...] = setting((0.0, 0.0, 0.0), "link_position: the point in the link's frame [m]", -100.0, 100.0)
    smoothing: float = setting(0.02, "smooth_abs: the length p of the quadratic zone [residual units]", 1e-6, 100.0)


class Term(torch.nn.Module):
    """A residual and its norm (unweighted: the task holds the weights)."""

    def __init__(self, name: str, config: TermConfig, spec: RobotSpec, link_position: LinkPosition | None) -> None:
        super().__init__()
        c = config
        if c.residual not in RESIDUALS or c.norm not in NORMS:
            raise RobotSpecError(f"parameter 'task.{name}': residual must be one of {RESIDUALS}, norm one of {NORMS}")
        self.name, self.config = name, c
        self.residual_kind = c.residual
        self.uses_action = c.residual in ACTION_RESIDUALS
        if self.uses_action:
            if c.joints and any(j not in spec.command_joints for j in c.joints):
                raise RobotSpecError(f"parameter 'task.{name}.joints': {list(c.joints)} must be command joints "
                                     f"{list(spec.command_joints)}")
            index = tuple(spec.command_joints.index(j) for j in c.joints) if c.joints else tuple(range(spec.action_dim))
        else:
            index = spec.joint_indices(c.joints, f"task.{name}.joints")
        self.index = index
        size = 3 if c.residual == "link_position" else len(index)
        scale = np.ones(size) if not c.scale else np.asarray(c.scale, dtype=np.float64)
        if scale.shape != (size,):
            raise RobotSpecError(f"parameter 'task.{name}.scale' needs {size} entries (or none), got {len(c.scale)}")
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))
        self.smoothing = float(c.smoothing)
        # Static slices are read as vector loops once compiled (an index tensor would gather).
        self._contiguous = index == tuple(range(index[0], index[0] + len(index))) if index else True
        if c.residual == "joint_position":
            target = torch.tensor(spec.equilibrium[list(index)], dtype=torch.float32)
            self.register_buffer("target", target)
            wrapped = [k for k, i in enumerate(index) if i in spec.angle_dims]
            self.register_buffer("wrap", angle_mask(len(index), wrapped))
            self._wraps = bool(wrapped)
        elif c.residual == "joint_limit":
            lower, upper = spec.position_lower[list(index)], spec.position_upper[list(index)]
            finite = np.isfinite(lower) & np.isfinite(upper)
            if not finite.any():
                raise RobotSpecError(f"parameter 'task.{name}': none of joints {[spec.state_joints[i] for i in index]} has "
                                     "position limits")
            centre = np.where(finite, 0.5 * (lower + upper), 0.0)
            half = np.where(finite, 0.5 * (upper - lower) - c.margin, np.inf)
            if np.any(half <= 0):
                raise RobotSpecError(f"parameter 'task.{name}.margin' = {c.margin} leaves no range inside the limits")
            self.register_buffer("centre", torch.tensor(centre, dtype=torch.float32))
            self.register_buffer("half_range", torch.tensor(half, dtype=torch.float32))
        elif c.residual == "link_position":
            if link_position is None or not c.link:
                raise RobotSpecError(f"parameter 'task.{name}': link_position needs a link and a model with kinematics")
            if len(c.offset) != 3:
                raise RobotSpecError(f"parameter 'task.{name}.offset' needs 3 values")
            self.link = c.link
            self.link_position = link_position
            self.register_buffer("offset", torch.tensor(c.offset, dtype=torch.float32))

    def _take(self, v: Tensor) -> Tensor:
        i = self.index
        if self._contiguous:
            return v[..., i[0] : i[0] + len(i)]
        return torch.stack([v[..., k] for k in i], dim=-1)

    def residual(self, x: Tensor, u: Tensor | None, goal: Tensor, last_command: Tensor) -> Tensor:
        """``[..., k]`` for states ``x[..., nx]`` (and actions ``u[B, T, nu]`` for action terms)."""
        kind = self.residual_kind
        nq = x.shape[-1] // 2
        if kind == "joint_position":
            r = self._take(x[..., :nq]) - self.target
            return wrap_masked(r, self.wrap) if self._wraps else r
        if kind == "joint_velocity":
            return self._take(x[..., nq:])
        if kind == "joint_limit":
            return torch.relu((self._take(x[..., :nq]) - self.centre).abs() - self.half_range)
        if kind == "link_position":
            return self.link_position(x[..., :nq], self.link, self.offset) - goal
        assert u is not None
        if kind == "effort":
            return self._take(u)
        previous = torch.cat([last_command.expand(u.shape[0], 1, -1), u[:, :-1]], dim=1)  # [B, T, nu]
        return self._take(u - previous)

    def norm(self, r: Tensor) -> Tensor:
        if self.config.norm == "quadratic":
            return (self.scale * r * r).sum(-1)
        if self.config.norm == "cosine":
            return (self.scale * (1.0 - torch.cos(r))).sum(-1)
        p = self.smoothing
        return torch.sqrt((self.scale * r * r).sum(-1) + p * p) - p

    def forward(self, x: Tensor, u: Tensor | None, goal: Tensor, last_command: Tensor) -> Tensor:
        return self.norm(self.residual(x, u, goal, last_command))

    # -- Gauss-Newton: the norm's exact derivatives through the residual's Jacobian ----------------
    def residual_jacobian(self, x: Tensor, r: Tensor, nu: int) -> Tensor:
        """``dr/d[x, u]`` ``[B, k, nx + nu]`` at states ``x[B, nx]`` with residual ``r[B, k]``
        (one step: ``command_rate`` against the last command, as the step's cost is)."""
        batch, nx = x.shape
        nq = nx // 2
        jac = x.new_zeros(batch, r.shape[-1], nx + nu)
        kind, rows = self.residual_kind, torch.arange(len(self.index), device=x.device)
        if kind == "link_position":
            jac[:, :, :nq] = self._point_jacobian(x[:, :nq])
            return jac
        column = {"joint_position": 0, "joint_limit": 0, "joint_velocity": nq, "effort": nx, "command_rate": nx}[kind]
        columns = torch.tensor(self.index, device=x.device) + column
        slope = torch.ones_like(r)
        if kind == "joint_limit":  # d relu(|q - c| - h) = sign(q - c) past the soft limit, else 0
            slope = torch.sign(self._take(x[:, :nq]) - self.centre) * (r > 0)
        jac[:, rows, columns] = slope
        return jac

    def _point_jacobian(self, q: Tensor) -> Tensor:
        """``d point / dq [B, 3, nq]`` by central differences on one batched forward-kinematics call."""
        batch, nq = q.shape
        h = torch.finfo(q.dtype).eps ** (1.0 / 3.0) * (1.0 + q.abs())
        delta = torch.diag_embed(h)
        points = torch.cat([q.unsqueeze(1) + delta, q.unsqueeze(1) - delta], dim=1).reshape(-1, nq)
        out = self.link_position(points, self.link, self.offset).view(batch, 2, nq, 3)
        return ((out[:, 0] - out[:, 1]) / (2.0 * h.unsqueeze(-1))).transpose(1, 2)

    def norm_derivatives(self, r: Tensor) -> tuple[Tensor, Tensor]:
        """Gradient ``[B, k]`` and Hessian ``[B, k, k]`` of the norm at residuals ``r[B, k]``."""
        s = self.scale
        if self.config.norm == "quadratic":
            return 2.0 * s * r, torch.diag_embed(2.0 * s).expand(r.shape[0], -1, -1)
        if self.config.norm == "cosine":
            return s * torch.sin(r), torch.diag_embed(s * torch.cos(r))
        p = self.smoothing
        sr = s * r
        n = torch.sqrt((sr * r).sum(-1, keepdim=True) + p * p)
        outer = sr.unsqueeze(-1) * sr.unsqueeze(-2)
        return sr / n, torch.diag_embed(s / n) - outer / (n * n * n).unsqueeze(-1)

    # -- the same term as a CasADi expression (NMPC) --------------------------------------------
    def symbolic(self, x: Any, u: Any, u_previous: Any) -> Any:
        """The unweighted term for CasADi symbols ``x[nx]``, ``u[nu]`` and the previous action
        ``u_previous[nu]`` (``u``, ``u_previous`` unused by state terms)."""
        import casadi as ca

        kind, i = self.residual_kind, list(self.index)
        nq = x.shape[0] // 2
        if kind == "joint_position":
            target = ca.DM(self.target.double().numpy())
            r = ca.vertcat(*[x[k] for k in i]) - target
            wrap = self.wrap.numpy()
            if self.config.norm != "cosine" and wrap.any():  # the cosine norm does not wind anyway
                r = ca.vertcat(*[ca.atan2(ca.sin(r[k]), ca.cos(r[k])) if wrap[k] else r[k] for k in range(len(i))])
        elif kind == "joint_velocity":
            r = ca.vertcat(*[x[nq + k] for k in i])
        elif kind == "joint_limit":
            q = ca.vertcat(*[x[k] for k in i])
            r = ca.fmax(ca.fabs(q - ca.DM(self.centre.double().numpy())) - ca.DM(self.half_range.double().numpy()), 0.0)
        elif kind == "effort":
            r = ca.vertcat(*[u[k] for k in i])
        elif kind == "command_rate":
            r = ca.vertcat(*[u[k] - u_previous[k] for k in i])
        else:
            raise NotImplementedError(f"term '{self.name}': {kind} has no CasADi form (it needs forward kinematics)")
        s = ca.DM(self.scale.double().numpy())
        if self.config.norm == "quadratic":
            return ca.dot(s, r * r)
        if self.config.norm == "cosine":
            return ca.dot(s, 1.0 - ca.cos(r))
        p = self.smoothing
        return ca.sqrt(ca.dot(s, r * r) + p * p) - p


def term_configs(p: dict[str, Any], names: list[str]) -> dict[str, TermConfig]:
    """``TermConfig`` per term name from the flat ``task.<name>.*`` parameters."""
    from mbrl_control.core.util import dataclass_from, section

    return {name: dataclass_from(TermConfig, section(p, f"task.{name}")) for name in names}
