"""Analytic cart-pole dynamics, batched in torch, with parameters read from the robot's URDF."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.core.urdf import read_urdf

INTEGRATORS = ("euler", "rk4")


@dataclass(frozen=True)
class CartPoleParams:
    """Physical parameters of a cart on a rail with a pole on a passive hinge.

    Angle 0 is the pole upright; a positive angle tips the pole towards +x (REP-103, hinge about +y).
    """

    cart_mass: float = 1.0
    pole_mass: float = 0.1
    pole_com: float = 0.5  # hinge to the pole's centre of mass [m]
    pole_inertia: float = 0.1 / 12.0  # about the centre of mass, around the hinge axis [kg m^2]
    cart_damping: float = 0.0  # viscous [N s/m]
    pole_damping: float = 0.0  # viscous [N m s/rad]
    gravity: float = 9.81
    force_limit: float = 20.0  # [N]
    track_limit: float = 2.4  # |cart position| bound [m]
    rail_origin: tuple[float, float, float] = (0.0, 0.0, 0.0)  # the rail in the URDF's root frame
    cart_joint: str = "slider_to_cart"
    pole_joint: str = "cart_to_pole"

    @classmethod
    def from_urdf(
        cls,
        path: str | Path,
        gravity: float = 9.81,
        cart_joint: str = "slider_to_cart",
        pole_joint: str = "cart_to_pole",
    ) -> "CartPoleParams":
        robot = read_urdf(path)
        if cart_joint not in robot.joints or pole_joint not in robot.joints:
            raise ValueError(
                f"{path}: expected joints '{cart_joint}' and '{pole_joint}', "
                f"found {sorted(robot.joints)}"
            )
        slider, hinge = robot.joints[cart_joint], robot.joints[pole_joint]
        if slider.type != "prismatic" or hinge.type not in ("continuous", "revolute"):
            raise ValueError(f"{path}: '{cart_joint}' must be prismatic, '{pole_joint}' a hinge")
        cart, pole = robot.links[slider.child], robot.links[hinge.child]
        rail_origin = np.zeros(3)
        parent = slider.parent
        while parents := [j for j in robot.joints.values() if j.child == parent and j.type == "fixed"]:
            rail_origin += parents[0].origin_xyz  # fixed chain to the root (no rotations assumed)
            parent = parents[0].parent
        axis = hinge.axis / np.linalg.norm(hinge.axis)
        com = pole.com + hinge.origin_xyz
        return cls(
            cart_mass=cart.mass,
            pole_mass=pole.mass,
            pole_com=float(np.linalg.norm(com - axis * (com @ axis))),
            pole_inertia=float(axis @ pole.inertia @ axis),
            cart_damping=slider.damping,
            pole_damping=hinge.damping,
            gravity=gravity,
            force_limit=slider.effort,
            track_limit=min(abs(slider.lower), abs(slider.upper)),
            rail_origin=tuple(float(v) for v in rail_origin + slider.origin_xyz),
            cart_joint=cart_joint,
            pole_joint=pole_joint,
        )

    @property
    def joint_names(self) -> list[str]:
        return [self.cart_joint, self.pole_joint]


class CartPoleDynamics(DynamicsModel):
    """``x = [cart position, pole angle, cart velocity, pole angular velocity]``, ``u = [force]``.

    ``integrator='euler'`` is the semi-implicit Euler scheme PyBullet uses; with the sim's physics
    step (``dt / substeps``) it reproduces the simulator. ``'rk4'`` reaches the same accuracy with
    fewer evaluations, which is what a planner wants.
    """

    state_dim = 4
    action_dim = 1

    def __init__(
        self,
        params: CartPoleParams,
        dt: float,
        substeps: int = 1,
        integrator: str = "rk4",
    ) -> None:
        super().__init__()
        if integrator not in INTEGRATORS:
            raise ValueError(f"integrator must be one of {INTEGRATORS}, got '{integrator}'")
        if substeps < 1 or dt <= 0:
            raise ValueError("need dt > 0 and substeps >= 1")
        self.params = params
        self.dt = float(dt)
        self.substeps = int(substeps)
        self.integrator = integrator
        p = params
        self._total_mass = p.cart_mass + p.pole_mass
        self._ml = p.pole_mass * p.pole_com
        self._pole_moment = p.pole_mass * p.pole_com**2 + p.pole_inertia  # about the hinge

    def accelerations(self, theta: Tensor, xd: Tensor, thd: Tensor, force: Tensor) -> tuple[Tensor, Tensor]:
        """Cart and pole accelerations from the Lagrangian equations of motion (2x2 solve)."""
        p = self.params
        s, c = torch.sin(theta), torch.cos(theta)
        mlc = self._ml * c
        rhs_x = force - p.cart_damping * xd + self._ml * s * thd * thd
        rhs_th = self._ml * p.gravity * s - p.pole_damping * thd
        inv_det = 1.0 / (self._total_mass * self._pole_moment - mlc * mlc)
        xdd = (self._pole_moment * rhs_x - mlc * rhs_th) * inv_det
        thdd = (self._total_mass * rhs_th - mlc * rhs_x) * inv_det
        return xdd, thdd

    def _derivative(self, s: tuple[Tensor, ...], force: Tensor) -> tuple[Tensor, ...]:
        _, th, xd, thd = s
        xdd, thdd = self.accelerations(th, xd, thd, force)
        return xd, thd, xdd, thdd

    def _advance(self, s: tuple[Tensor, ...], force: Tensor) -> tuple[Tensor, ...]:
        """One control period on the state kept as four ``[B]`` vectors."""
        h = self.dt / self.substeps
        for _ in range(self.substeps):
            if self.integrator == "euler":
                pos, th, xd, thd = s
                xdd, thdd = self.accelerations(th, xd, thd, force)
                xd = xd + h * xdd
                thd = thd + h * thdd
                s = (pos + h * xd, th + h * thd, xd, thd)
            else:
                k1 = self._derivative(s, force)
                k2 = self._derivative(_axpy(s, k1, 0.5 * h), force)
                k3 = self._derivative(_axpy(s, k2, 0.5 * h), force)
                k4 = self._derivative(_axpy(s, k3, h), force)
                s = tuple(
                    si + (h / 6.0) * (a + 2.0 * b + 2.0 * c + d)
                    for si, a, b, c, d in zip(s, k1, k2, k3, k4)
                )
        return s

    def step(self, x: Tensor, u: Tensor) -> Tensor:
        return torch.stack(self._advance(tuple(x.unbind(-1)), u[..., 0]), dim=-1)

    def rollout(self, x0: Tensor, actions: Tensor) -> Tensor:
        # Kept as per-component [B] vectors and stacked time-major ([T+1, nx, B]), the rollout
        # compiles to contiguous, vectorised loops; a [B, nx] state would be read with stride nx.
        s = tuple(x0.unbind(-1))
        forces = actions[..., 0].t()  # [T, B]
        states = [torch.stack(s, dim=0)]
        for t in range(forces.shape[0]):
            s = self._advance(s, forces[t])
            states.append(torch.stack(s, dim=0))
        return torch.stack(states, dim=0).permute(2, 0, 1)


def _axpy(s: tuple[Tensor, ...], k: tuple[Tensor, ...], a: float) -> tuple[Tensor, ...]:
    return tuple(si + a * ki for si, ki in zip(s, k))
