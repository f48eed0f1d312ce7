"""Rigid-body dynamics of any fixed-base robot from its URDF, batched in torch.

``M(q) qdd + C(q, qd) qd + g(q) + D qd = S u``: the mass matrix by the composite-rigid-body
algorithm, the bias by recursive Newton-Euler, both in world coordinates, so that every step but
the forward-kinematics chain is one tensor operation over all links (a sum over a link's ancestors
or descendants is a product with a constant 0/1 matrix). Only that chain loops, over joints, never
over samples. Written by hand because no candidate library was fast enough for a sampling planner
and differentiable in torch (bench/rigid_body.py, iiwa, B = 500, one thread): adam-robotics'
batched torch backend took ~27-45 ms per forward dynamics, Pinocchio ~1.7 ms but per sample in C++
(no torch.func, no torch.compile), pytorch-kinematics has no dynamics; this model ~1.4 ms eager,
~0.5 ms compiled. adam-robotics' CasADi backend (``adam.casadi``, with ``liecasadi``) gives the same
dynamics symbolically (agrees to 1e-13), the way to NMPC.

Matches PyBullet to machine precision in float64 (calculateMassMatrix, calculateInverseDynamics,
link frames, and the sim's own steps with ``integrator='euler'`` at its physics step), given how
the sim loads a robot (mbrl_control/sim/bullet_robot.py): ``URDF_USE_INERTIA_FROM_FILE`` (without
it PyBullet recomputes inertias: the iiwa's mass matrix moves ~2 %), link damping removed, velocity
motors off. PyBullet applies the URDF's joint damping in stepSimulation (not in
calculateInverseDynamics), explicitly, as this model does. What PyBullet does and this model does
not: joint limits (PyBullet enforces them with constraints), joint speeds capped at 100 rad/s,
URDF joint friction, contacts and collisions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.core.urdf import UrdfRobot, read_urdf, rpy_matrix

log = logging.getLogger(__name__)

INTEGRATORS = ("euler", "rk4", "euler_implicit_damping")
MOVABLE = ("revolute", "continuous", "prismatic")


@dataclass(frozen=True)
class KinematicTree:
    """The URDF reduced to what the algorithms need: one body per joint in ``joints``.

    Bodies are in topological order (a parent before its children); fixed joints, and movable
    joints left out of ``joints`` (held at zero), merge a child link into its parent's body.
    Each body's frame is its joint's frame; constants are float64 numpy arrays.
    """

    joints: list[str]  # topological order
    parent: list[int]  # parent body per body, -1 for the fixed base
    revolute: np.ndarray  # [n] bool
    axis: np.ndarray  # [n, 3] unit joint axis in the body frame
    origin_rot: np.ndarray  # [n, 3, 3] joint frame at q = 0 in the parent body's frame
    origin_pos: np.ndarray  # [n, 3]
    mass: np.ndarray  # [n]
    com: np.ndarray  # [n, 3] in the body frame (zero for a massless body)
    inertia: np.ndarray  # [n, 3, 3] about the centre of mass, body axes
    damping: np.ndarray  # [n] viscous [N m s/rad or N s/m]
    friction: np.ndarray  # [n] from the URDF; not modelled (see the module docstring)
    links: dict[str, tuple[int, np.ndarray, np.ndarray]]  # link -> (body or -1, rotation, position)

    @classmethod
    def from_urdf(cls, robot: UrdfRobot, joints: list[str]) -> "KinematicTree":
        unknown = [j for j in joints if j not in robot.joints or robot.joints[j].type not in MOVABLE]
        if unknown:
            movable = [j.name for j in robot.movable_joints]
            raise ValueError(f"not movable joints of '{robot.name}': {unknown}; it has {movable}")
        if len(set(joints)) != len(joints):
            raise ValueError(f"joints listed twice: {joints}")
        children: dict[str, list] = {}
        for j in robot.joints.values():
            children.setdefault(j.parent, []).append(j)
        order, parent, axis, o_rot, o_pos, revolute, damping, friction = [], [], [], [], [], [], [], []
        links: dict[str, tuple[int, np.ndarray, np.ndarray]] = {}

        def visit(link: str, body: int, rot: np.ndarray, pos: np.ndarray) -> None:
            """Depth first from the root, so that every body is numbered after its parent."""
            links[link] = (body, rot, pos)
            for j in children.get(link, []):
                jr, jp = rot @ rpy_matrix(j.origin_rpy), pos + rot @ j.origin_xyz
                if j.name not in joints:  # fixed, or held at zero: the child joins this body
                    visit(j.child, body, jr, jp)
                    continue
                order.append(j.name)
                parent.append(body)
                axis.append(j.axis / np.linalg.norm(j.axis))
                o_rot.append(jr)
                o_pos.append(jp)
                revolute.append(j.type != "prismatic")
                damping.append(j.damping)
                friction.append(j.friction)
                visit(j.child, len(order) - 1, np.eye(3), np.zeros(3))

        visit(robot.root_link, -1, np.eye(3), np.zeros(3))
        n = len(order)
        mass, com, inertia = np.zeros(n), np.zeros((n, 3)), np.zeros((n, 3, 3))
        first_moment, inertia_origin = np.zeros((n, 3)), np.zeros((n, 3, 3))
        for name, (body, rot, pos) in links.items():
            link = robot.links[name]
            if body < 0 or link.mass == 0.0:
                continue
            c = pos + rot @ link.com
            mass[body] += link.mass
            first_moment[body] += link.mass * c
            inertia_origin[body] += rot @ link.inertia @ rot.T + link.mass * _shift(c)
        for k in range(n):
            if mass[k] > 0:
                com[k] = first_moment[k] / mass[k]
                inertia[k] = inertia_origin[k] - mass[k] * _shift(com[k])
        return cls(
            joints=order,
            parent=parent,
            revolute=np.array(revolute, dtype=bool),
            axis=np.array(axis).reshape(n, 3),
            origin_rot=np.array(o_rot).reshape(n, 3, 3),
            origin_pos=np.array(o_pos).reshape(n, 3),
            mass=mass,
            com=com,
            inertia=inertia,
            damping=np.array(damping, dtype=np.float64),
            friction=np.array(friction, dtype=np.float64),
            links=links,
        )

    def ancestors(self) -> np.ndarray:
        """``[n, n]``: entry ``[k, j]`` is 1 when body ``j`` is ``k`` or one of its ancestors."""
        n = len(self.joints)
        anc = np.zeros((n, n))
        for k in range(n):
            j = k
            while j >= 0:
                anc[k, j] = 1.0
                j = self.parent[j]
        return anc


def _shift(c: np.ndarray) -> np.ndarray:
    """Parallel-axis term ``|c|^2 I - c c^T`` (per unit mass)."""
    return float(c @ c) * np.eye(3) - np.outer(c, c)


def _skew(a: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])


# Internally every tensor keeps the batch as its LAST dimension (``q [n, B]``, rotations
# ``[n, 3, 3, B]``): each small product is then a few multiply-adds over contiguous batch rows,
# which beats batched matmul in eager (~4x on 3x3 products) and which inductor vectorises over the
# batch when compiled (with the batch first it vectorises over the 3s).


def _mm(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for matrices ``[..., i, j, B]`` and ``[..., j, l, B]``."""
    return (a.unsqueeze(-2) * b.unsqueeze(-4)).sum(-3)


def _mv(a: Tensor, v: Tensor) -> Tensor:
    """``a @ v`` for ``a [..., i, j, B]`` and ``v [..., j, B]``."""
    return (a * v.unsqueeze(-3)).sum(-2)


def _cross(a: Tensor, b: Tensor) -> Tensor:
    """``a x b`` for vectors ``[..., 3, B]``."""
    a0, a1, a2 = a.unbind(-2)
    b0, b1, b2 = b.unbind(-2)
    return torch.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], dim=-2)


def _solve_spd(a: Tensor, b: Tensor) -> Tensor:
    """``a^-1 b`` for symmetric positive definite ``a [n, n, B]`` and ``b [n, B]``, by Cholesky.

    Eager calls LAPACK; a compiled graph gets the factorization and both substitutions written out
    on ``[B]`` rows, which inductor fuses with the rest of the step.
    """
    if not torch.compiler.is_compiling():
        # cholesky_ex: a sample whose state has gone non-finite (a planner's wild sample) yields
        # NaN for its cost to reject, as the compiled path does, instead of raising for the batch.
        chol, info = torch.linalg.cholesky_ex(a.movedim(-1, 0))
        x = torch.cholesky_solve(b.t().unsqueeze(-1), chol).squeeze(-1).t()
        return torch.where(info == 0, x, torch.full_like(x, float("nan")))
    n = a.shape[0]
    low: list[list[Tensor]] = [[] for _ in range(n)]  # low[i][k] = L[i, k] for k <= i
    inv_diag: list[Tensor] = []
    for j in range(n):
        inv_diag.append(torch.rsqrt(a[j, j] - sum(low[j][k] * low[j][k] for k in range(j))))
        low[j].append(1.0 / inv_diag[j])
        for i in range(j + 1, n):
            low[i].append((a[i, j] - sum(low[i][k] * low[j][k] for k in range(j))) * inv_diag[j])
    y: list[Tensor] = []
    for i in range(n):  # L y = b
        y.append((b[i] - sum(low[i][k] * y[k] for k in range(i))) * inv_diag[i])
    x: list[Tensor] = list(y)
    for i in reversed(range(n)):  # L^T x = y
        x[i] = (y[i] - sum(low[k][i] * x[k] for k in range(i + 1, n))) * inv_diag[i]
    return torch.stack(x, dim=0)


class RigidBodyDynamics(DynamicsModel):
    """A fixed-base URDF robot: ``x = [q, qd]`` over ``state_joints``, ``u`` = efforts of ``command_joints``.

    Joints in ``state_joints`` but not in ``command_joints`` are passive (zero effort, like the
    cart-pole's hinge); movable joints in neither are held at zero. Joint damping is the URDF's
    ``<dynamics damping>``; gravity is ``-gravity`` along world z, the root link's frame being the
    world frame (PyBullet's ``useFixedBase`` at the origin).

    ``integrator='euler'`` is PyBullet's semi-implicit Euler step: with ``dt / substeps`` equal to
    the sim's physics step it reproduces the sim. Its damping is explicit, as in ``'rk4'``, and a
    light distal link with a large damping is stiff: the iiwa's last joint (0.5 N m s on
    0.001 kg m^2, a 2 ms time constant) needs steps <= 4 ms in Euler and <= 5.5 ms in RK4.
    ``'euler_implicit_damping'`` is the same step with the damping taken at the new velocity
    (``M + h D`` in place of ``M``): stable at any step, so a planner can take one step per period.

    Public methods take and return batch-first tensors (``q [B, n]``) in ``state_joints`` order.
    """

    def __init__(
        self,
        urdf: str | Path,
        state_joints: list[str],
        command_joints: list[str] | None = None,
        dt: float = 0.02,
        substeps: int = 1,
        integrator: str = "rk4",
        gravity: float = 9.81,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if integrator not in INTEGRATORS:
            raise ValueError(f"integrator must be one of {INTEGRATORS}, got '{integrator}'")
        if substeps < 1 or dt <= 0:
            raise ValueError("need dt > 0 and substeps >= 1")
        command_joints = list(state_joints) if command_joints is None else list(command_joints)
        missing = [j for j in command_joints if j not in state_joints]
        if missing:
            raise ValueError(f"command joints {missing} are not among the state joints {state_joints}")
        self.robot = read_urdf(urdf)
        self.tree = tree = KinematicTree.from_urdf(self.robot, list(state_joints))
        self.state_joints = list(state_joints)
        self.command_joints = command_joints
        n, m = len(state_joints), len(command_joints)
        self.n_joints = n
        self.state_dim, self.action_dim = 2 * n, m
        self.dt, self.substeps, self.integrator = float(dt), int(substeps), integrator
        self._parent = list(tree.parent)
        if (tree.friction > 0).any():
            log.warning("%s: URDF joint friction %s is not modelled", urdf, dict(zip(tree.joints, tree.friction)))

        def buf(name: str, value, *, batch_last: bool = True) -> None:
            """A constant of the model; ``batch_last`` adds the trailing batch axis of size 1."""
            t = torch.as_tensor(np.asarray(value), dtype=dtype)
            self.register_buffer(name, t.unsqueeze(-1) if batch_last else t, persistent=False)

        # Tree (topological) order <-> state order; the copy is skipped when they agree.
        to_tree = [state_joints.index(j) for j in tree.joints]
        self._reorder = to_tree != list(range(n))
        self.register_buffer("_to_tree", torch.tensor(to_tree), persistent=False)
        self.register_buffer("_to_state", torch.tensor([tree.joints.index(j) for j in state_joints]), persistent=False)
        self.register_buffer("_command_index", torch.tensor([state_joints.index(j) for j in command_joints]),
                             persistent=False)
        actuation = np.zeros((n, m))  # efforts [n, B] = actuation @ u^T, in tree order
        for i, j in enumerate(command_joints):
            actuation[tree.joints.index(j), i] = 1.0
        buf("_actuation", actuation, batch_last=False)

        # Joint rotation R0 Rot(axis, q) = R0 + sin q R0 K + (1 - cos q) R0 K^2 (Rodrigues).
        k = np.stack([_skew(a) for a in tree.axis]) if n else np.zeros((0, 3, 3))
        rev = tree.revolute[:, None, None]
        buf("_rot0", tree.origin_rot)
        buf("_rot_sin", np.where(rev, tree.origin_rot @ k, 0.0))
        buf("_rot_cos", np.where(rev, tree.origin_rot @ k @ k, 0.0))
        buf("_pos0", tree.origin_pos)
        buf("_slide", np.where(tree.revolute[:, None], 0.0, np.einsum("kij,kj->ki", tree.origin_rot, tree.axis)))
        buf("_axis", tree.axis)
        buf("_revolute", tree.revolute[:, None].astype(np.float64))
        buf("_prismatic", ~tree.revolute[:, None])
        buf("_mass", tree.mass[:, None])
        buf("_com", tree.com)
        buf("_inertia", tree.inertia)
        buf("_damping", tree.damping)
        anc = tree.ancestors()
        buf("_ancestors", anc, batch_last=False)  # [k, j]: j is k or an ancestor of k
        buf("_upper", anc.T)  # [i, j]: i is j or an ancestor of j (M's upper triangle in tree order)
        buf("_strict_upper", anc.T - np.eye(n))
        buf("_damping_matrix", np.diag(tree.damping))
        buf("_eye3", np.eye(3))
        buf("_composite_mass", anc.T @ tree.mass[:, None])  # each body with its descendants
        buf("_base_acceleration", [0.0, 0.0, 0.0, 0.0, 0.0, gravity])  # gravity as the base accelerating up

        self._link_frames: dict[str, str] = {}
        for name, (_, rot, pos) in tree.links.items():
            key = f"_link_{len(self._link_frames)}"
            buf(key + "_rot", rot, batch_last=False)
            buf(key + "_pos", pos, batch_last=False)
            self._link_frames[name] = key

        # Limits in state order, for tasks and safety layers.
        js = [self.robot.joints[j] for j in state_joints]
        buf("position_lower", [j.lower for j in js], batch_last=False)
        buf("position_upper", [j.upper for j in js], batch_last=False)
        buf("velocity_limit", [j.velocity for j in js], batch_last=False)
        buf("effort_limit", [self.robot.joints[j].effort for j in command_joints], batch_last=False)

    # ---- layout: public [B, n] in state order <-> internal [n, B] in tree order ------------------

    def _inward(self, v: Tensor) -> Tensor:
        v = v.reshape(-1, v.shape[-1]).t()
        return v.index_select(0, self._to_tree) if self._reorder else v

    def _outward(self, v: Tensor, batch: torch.Size) -> Tensor:
        """``v [n, ..., B]`` in tree order -> ``[*batch, n, ...]`` in state order."""
        if self._reorder:
            v = v.index_select(0, self._to_state)
        return v.movedim(-1, 0).reshape(*batch, *v.shape[:-1])

    # ---- kinematics -------------------------------------------------------------------------

    def _frames(self, q: Tensor, bodies: list[int] | None = None) -> tuple[list[Tensor | None], list[Tensor | None]]:
        """World rotations ``[3, 3, B]`` and origins ``[3, B]`` of ``bodies`` (default all; tree order)."""
        s, c = torch.sin(q)[:, None, None], (1.0 - torch.cos(q))[:, None, None]
        local_rot = self._rot0 + s * self._rot_sin + c * self._rot_cos  # [n, 3, 3, B]
        local_pos = self._pos0 + q[:, None] * self._slide  # [n, 3, B]
        n = len(self._parent)
        rots: list[Tensor | None] = [None] * n
        poss: list[Tensor | None] = [None] * n
        for k in range(n) if bodies is None else bodies:  # the chain: the only loop, over joints
            par = self._parent[k]
            if par < 0:
                rots[k], poss[k] = local_rot[k], local_pos[k]
            else:
                rots[k] = _mm(rots[par], local_rot[k])
                poss[k] = poss[par] + _mv(rots[par], local_pos[k])
        return rots, poss

    def forward_kinematics(self, q: Tensor, link: str, point: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """World position ``[B, 3]`` (of ``point`` in the link frame, default its origin) and
        rotation ``[B, 3, 3]`` of ``link`` at joint positions ``q [B, n]`` (state order)."""
        if link not in self.tree.links:
            raise ValueError(f"unknown link '{link}'; the URDF has {sorted(self.tree.links)}")
        body = self.tree.links[link][0]
        # The link's frame in its body's, as buffers (a tensor made from numpy inside a compiled
        # or vmapped call breaks its guards).
        key = self._link_frames[link]  # buffer names: .double() or .to() replaces the tensors
        rot_link, pos_link = getattr(self, key + "_rot").to(q.dtype), getattr(self, key + "_pos").to(q.dtype)
        if point is not None:
            pos_link = pos_link + rot_link @ point.to(q.dtype)
        batch = q.shape[:-1]
        if body < 0:
            return pos_link.expand(*batch, 3), rot_link.expand(*batch, 3, 3)
        chain = []
        k = body
        while k >= 0:
            chain.append(k)
            k = self._parent[k]
        rots, poss = self._frames(self._inward(q), chain[::-1])
        rot, pos = rots[body], poss[body]
        pos = pos + _mv(rot, pos_link.unsqueeze(-1))
        rot = _mm(rot, rot_link.unsqueeze(-1))
        return pos.movedim(-1, 0).reshape(*batch, 3), rot.movedim(-1, 0).reshape(*batch, 3, 3)

    # ---- dynamics terms, internal layout -------------------------------------------------------

    def _bodies(self, q: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Joint motion subspaces ``[n, 6, B]`` (angular, then linear at the world origin) and each
        body's spatial inertia about the world origin: first moment ``m c [n, 3, B]`` and
        rotational inertia ``[n, 3, 3, B]`` (its mass is constant)."""
        rots, poss = self._frames(q)
        rot, pos = torch.stack(rots), torch.stack(poss)
        axis = _mv(rot, self._axis)
        s = torch.cat([axis * self._revolute, _cross(pos, axis) * self._revolute + axis * self._prismatic], dim=1)
        com = pos + _mv(rot, self._com)
        inertia = _mm(_mm(rot, self._inertia), rot.transpose(1, 2))
        inertia = inertia + self._mass[:, None] * (
            (com * com).sum(1, keepdim=True).unsqueeze(1) * self._eye3 - com.unsqueeze(2) * com.unsqueeze(1)
        )
        return s, self._mass * com, inertia

    def _from_root(self, x: Tensor) -> Tensor:
        """``[k, ...]``: the sum of ``x [n, ...]`` over body ``k`` and its ancestors."""
        if not torch.compiler.is_compiling():
            return (self._ancestors @ x.flatten(1)).view_as(x)
        out: list[Tensor] = []
        for k, par in enumerate(self._parent):
            out.append(x[k] if par < 0 else out[par] + x[k])
        return torch.stack(out)

    def _to_root(self, x: Tensor) -> Tensor:
        """``[j, ...]``: the sum of ``x [n, ...]`` over body ``j`` and its descendants."""
        if not torch.compiler.is_compiling():
            return (self._ancestors.t() @ x.flatten(1)).view_as(x)
        out = list(x.unbind(0))
        for k in reversed(range(len(self._parent))):
            if self._parent[k] >= 0:
                out[self._parent[k]] = out[self._parent[k]] + out[k]
        return torch.stack(out)

    @staticmethod
    def _apply_inertia(mass: Tensor, moment: Tensor, inertia: Tensor, v: Tensor) -> Tensor:
        """Spatial inertia (mass, first moment, rotational inertia about the origin) times motion ``v [n, 6, B]``."""
        w, lin = v[:, :3], v[:, 3:]
        return torch.cat([_mv(inertia, w) + _cross(moment, lin), mass * lin - _cross(moment, w)], dim=1)

    def _mass_matrix(self, s: Tensor, moment: Tensor, inertia: Tensor) -> Tensor:
        """Composite-rigid-body algorithm: ``M[i, j] = s_i . (Ic_j s_j)`` for ``i`` an ancestor of
        ``j``, ``Ic_j`` being body ``j`` and its descendants as one rigid body. ``[n, n, B]``."""
        force = self._apply_inertia(self._composite_mass, self._to_root(moment), self._to_root(inertia), s)
        full = (s.unsqueeze(1) * force.unsqueeze(0)).sum(2)  # [i, j] = s_i . f_j
        return full * self._upper + (full * self._strict_upper).transpose(0, 1)

    def _rnea(self, s: Tensor, moment: Tensor, inertia: Tensor, qd: Tensor, qdd: Tensor | None = None) -> Tensor:
        """``C(q, qd) qd + g(q) [n, B]`` (``+ M(q) qdd`` with ``qdd``): recursive Newton-Euler, each
        pass one sum over the tree (with ``qdd``, inverse dynamics without the mass matrix's O(n^2))."""
        v = self._from_root(qd.unsqueeze(1) * s)  # body velocities
        w, lin = v[:, :3], v[:, 3:]
        sw, sl = s[:, :3], s[:, 3:]
        s_dot = torch.cat([_cross(w, sw), _cross(w, sl) + _cross(lin, sw)], dim=1)  # v x s
        joint_acc = qd.unsqueeze(1) * s_dot if qdd is None else qd.unsqueeze(1) * s_dot + qdd.unsqueeze(1) * s
        acc = self._from_root(joint_acc) + self._base_acceleration
        momentum = self._apply_inertia(self._mass, moment, inertia, v)
        mw, ml = momentum[:, :3], momentum[:, 3:]
        force = self._apply_inertia(self._mass, moment, inertia, acc) + torch.cat(
            [_cross(w, mw) + _cross(lin, ml), _cross(w, ml)], dim=1
        )
        return (s * self._to_root(force)).sum(1)

    def _gravity(self, s: Tensor, moment: Tensor) -> Tensor:
        """``g(q) [n, B]``: gravity's force on each subtree, ``(c x m g, m g)``, along each joint."""
        up = self._base_acceleration[3:]
        moment_c = self._to_root(moment)
        torque = (s[:, :3] * _cross(moment_c, up.expand_as(moment_c))).sum(1)
        return torque + (s[:, 3:] * up).sum(1) * self._composite_mass[:, 0]

    def _acceleration(self, q: Tensor, qd: Tensor, effort: Tensor, implicit_step: float = 0.0) -> Tensor:
        """``qdd [n, B]``; with ``implicit_step = h`` the damping acts on the velocity after a step of
        ``h`` (``M + h D`` replaces ``M``), which no step size can make unstable."""
        s, moment, inertia = self._bodies(q)
        mass = self._mass_matrix(s, moment, inertia)
        if implicit_step:
            mass = mass + implicit_step * self._damping_matrix
        return _solve_spd(mass, effort - self._rnea(s, moment, inertia, qd) - self._damping * qd)

    def _advance(self, q: Tensor, qd: Tensor, effort: Tensor) -> tuple[Tensor, Tensor]:
        """One control period on the internal layout."""
        h = self.dt / self.substeps
        for _ in range(self.substeps):
            if self.integrator != "rk4":
                implicit = h if self.integrator == "euler_implicit_damping" else 0.0
                qd = qd + h * self._acceleration(q, qd, effort, implicit)
                q = q + h * qd
            else:
                k1q, k1v = qd, self._acceleration(q, qd, effort)
                k2q = qd + 0.5 * h * k1v
                k2v = self._acceleration(q + 0.5 * h * k1q, k2q, effort)
                k3q = qd + 0.5 * h * k2v
                k3v = self._acceleration(q + 0.5 * h * k2q, k3q, effort)
                k4q = qd + h * k3v
                k4v = self._acceleration(q + h * k3q, k4q, effort)
                q = q + (h / 6.0) * (k1q + 2.0 * k2q + 2.0 * k3q + k4q)
                qd = qd + (h / 6.0) * (k1v + 2.0 * k2v + 2.0 * k3v + k4v)
        return q, qd

    # ---- public batched terms: [B, n] in state order ------------------------------------------

    def mass_matrix(self, q: Tensor) -> Tensor:
        """``M(q) [B, n, n]``."""
        mass = self._mass_matrix(*self._bodies(self._inward(q)))
        if self._reorder:
            mass = mass.index_select(1, self._to_state)
        return self._outward(mass, q.shape[:-1])

    def bias(self, q: Tensor, qd: Tensor) -> Tensor:
        """``C(q, qd) qd + g(q) + D qd [B, n]``: the effort that keeps ``q, qd`` from accelerating."""
        qdt = self._inward(qd)
        return self._outward(self._rnea(*self._bodies(self._inward(q)), qdt) + self._damping * qdt, q.shape[:-1])

    def gravity_torques(self, q: Tensor) -> Tensor:
        """``g(q) [B, n]``: the efforts that hold the robot still at ``q`` (gravity compensation)."""
        s, moment, _ = self._bodies(self._inward(q))
        return self._outward(self._gravity(s, moment), q.shape[:-1])

    def hold_action(self, x: Tensor) -> Tensor:
        """The command joints' gravity torques at the positions of ``x[B, nx]``."""
        return self.gravity_torques(x[..., : self.n_joints]).index_select(-1, self._command_index)

    def inverse_dynamics(self, q: Tensor, qd: Tensor, qdd: Tensor, damped: Tensor | None = None) -> Tensor:
        """``M qdd + C qd + g [B, n]``, without the joints' damping: what PyBullet's
        calculateInverseDynamics returns. ``damped``: velocities ``[B, n]`` whose damping
        ``D damped`` is added (the effort a robot with damped joints needs)."""
        s, moment, inertia = self._bodies(self._inward(q))
        tau = self._rnea(s, moment, inertia, self._inward(qd), self._inward(qdd))
        if damped is not None:
            tau = tau + self._damping * self._inward(damped)
        return self._outward(tau, q.shape[:-1])

    def forward_dynamics(self, q: Tensor, qd: Tensor, effort: Tensor) -> Tensor:
        """``qdd [B, n]`` under ``effort [B, n]`` on every state joint (state order; damping included)."""
        qdd = self._acceleration(self._inward(q), self._inward(qd), self._inward(effort))
        return self._outward(qdd, q.shape[:-1])

    # ---- DynamicsModel ------------------------------------------------------------------------

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.reshape(-1, x.shape[-1]).t()
        n = self.n_joints
        q, qd = x[:n], x[n:]
        if self._reorder:
            q, qd = q.index_select(0, self._to_tree), qd.index_select(0, self._to_tree)
        return q, qd

    def _join(self, q: Tensor, qd: Tensor) -> Tensor:
        """``[2n, B]`` in state order."""
        if self._reorder:
            q, qd = q.index_select(0, self._to_state), qd.index_select(0, self._to_state)
        return torch.cat([q, qd], dim=0)

    # One step is a large graph (the kinematic chain, the unrolled Cholesky): a horizon of them
    # compiles for many minutes, so planners compile the step alone and loop over the horizon.
    compile_rollout = False

    def jacobians(self, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """``A [B, nx, nx]``, ``B [B, nx, nu]`` by central differences, all perturbations in one
        batched step: ~7x faster than reverse-mode autograd through the chain (``torch.func``)
        and, being one step call, compiled as one. Steps of cbrt(machine epsilon) relative, per
        entry, which balances truncation and rounding: ~1e-4 relative error in float32."""
        nx = x.shape[-1]
        _, jac = self._central_differences(x, u, nx + u.shape[-1])
        return jac[..., :nx], jac[..., nx:]

    def step_and_state_jacobian(self, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """``x_next [B, nx]`` and ``A [B, nx, nx]`` from one batched step of the point and its
        state perturbations: what a filter's prediction needs (no ``B``: 2 nx + 1 points, not
        2 (nx + nu) + 1 step calls; on the arm 29 points against 43)."""
        return self._central_differences(x, u, x.shape[-1], with_point=True)

    def step_and_jacobians(self, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x_next [B, nx]``, ``A [B, nx, nx]`` and ``B [B, nx, nu]`` from one batched step of
        the point and its perturbations (a filter estimating an effort needs both Jacobians and
        the prediction: ``jacobians`` then ``step`` would be two step calls)."""
        nx = x.shape[-1]
        x_next, jac = self._central_differences(x, u, nx + u.shape[-1], with_point=True)
        return x_next, jac[..., :nx], jac[..., nx:]

    def _central_differences(self, x: Tensor, u: Tensor, columns: int,
                             with_point: bool = False) -> tuple[Tensor | None, Tensor]:
        """The step at ``[x, u]`` (``with_point``) and its central-difference Jacobian
        ``[B, nx, columns]`` with respect to the first ``columns`` entries of ``[x, u]``."""
        batch, nx = x.shape[0], x.shape[-1]
        n = nx + u.shape[-1]
        z = torch.cat([x, u], dim=-1)  # [B, n]
        h = torch.finfo(z.dtype).eps ** (1.0 / 3.0) * (1.0 + z[:, :columns].abs())  # [B, columns]
        delta = torch.diag_embed(h, dim1=-2, dim2=-1)  # [B, columns, columns]: row k perturbs entry k
        delta = torch.cat([delta, delta.new_zeros(batch, columns, n - columns)], dim=-1)  # [B, columns, n]
        parts = [z.unsqueeze(1) + delta, z.unsqueeze(1) - delta] + ([z.unsqueeze(1)] if with_point else [])
        points = torch.cat(parts, dim=1).reshape(-1, n)  # [B * (2 columns (+1)), n]
        out = self.step(points[:, :nx], points[:, nx:]).view(batch, -1, nx)
        jac = ((out[:, :columns] - out[:, columns : 2 * columns]) / (2.0 * h.unsqueeze(-1))).transpose(1, 2)
        return (out[:, -1] if with_point else None), jac

    def step(self, x: Tensor, u: Tensor) -> Tensor:
        q, qd = self._split(x)
        q, qd = self._advance(q, qd, self._actuation @ u.reshape(-1, u.shape[-1]).t())
        return self._join(q, qd).t().reshape(x.shape)

    def rollout(self, x0: Tensor, actions: Tensor) -> Tensor:
        # The state stays in the internal [2n, B] layout for the whole horizon.
        q, qd = self._split(x0)
        efforts = self._actuation @ actions.permute(1, 2, 0)  # [T, n, B]
        states = [self._join(q, qd)]
        for t in range(actions.shape[1]):
            q, qd = self._advance(q, qd, efforts[t])
            states.append(self._join(q, qd))
        return torch.stack(states, dim=0).permute(2, 0, 1)
