"""Cart-pole swing-up and balance: the cost the planners minimise and the success criterion."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mbrl_control.core.dynamics.cartpole import CartPoleParams
from mbrl_control.core.tasks.base import Task


@dataclass(frozen=True)
class CartPoleCostWeights:
    angle: float = 1.0  # on (1 - cos(angle)): 0 upright, 2 hanging
    position: float = 0.1  # on cart position^2 [1/m^2]
    velocity: float = 0.01  # on cart velocity^2
    angular_velocity: float = 0.005  # on pole angular velocity^2
    action: float = 1e-4  # on force^2 [1/N^2]
    track_barrier: float = 100.0  # on the squared excursion beyond the soft track limit
    track_margin: float = 0.4  # the soft limit sits this far inside the track limit [m]
    terminal: float = 5.0  # the terminal state costs this many steps' worth of running cost


class CartPoleSwingUp(Task):
    """Bring the pole upright over the cart at the rail's centre and keep it there.

    Success: over the last ``success_window`` seconds the pole stays within ``angle_tolerance``
    of upright and the cart within the track limits.
    """

    state_dim = 4
    action_dim = 1

    def __init__(
        self,
        params: CartPoleParams,
        weights: CartPoleCostWeights = CartPoleCostWeights(),
        angle_tolerance: float = 0.2,
        success_window: float = 5.0,
    ) -> None:
        super().__init__()
        self.params = params
        self.weights = weights
        self.angle_tolerance = angle_tolerance
        self.success_window = success_window
        self.register_buffer("action_low", torch.tensor([-params.force_limit]))
        self.register_buffer("action_high", torch.tensor([params.force_limit]))
        self._soft_limit = params.track_limit - weights.track_margin

    def state_cost(self, x: Tensor) -> Tensor:
        """Per-state cost over any leading batch shape ``[..., 4] -> [...]``."""
        w = self.weights
        pos, th, xd, thd = x.unbind(-1)
        excursion = torch.relu(pos.abs() - self._soft_limit)
        return (
            w.angle * (1.0 - torch.cos(th))
            + w.position * pos * pos
            + w.velocity * xd * xd
            + w.angular_velocity * thd * thd
            + w.track_barrier * excursion * excursion
        )

    def running_cost(self, x: Tensor, u: Tensor) -> Tensor:
        return (self.state_cost(x) + self.weights.action * (u * u).sum(-1)).sum(-1)

    def terminal_cost(self, x: Tensor) -> Tensor:
        return self.weights.terminal * self.state_cost(x)

    def pole_angle(self, states: np.ndarray) -> np.ndarray:
        """The pole's angle from upright, wrapped to [-pi, pi), for states ``[..., 4]``."""
        return np.remainder(states[..., 1] + math.pi, 2 * math.pi) - math.pi

    def upright(self, states: np.ndarray) -> np.ndarray:
        """Per-sample flag: pole within tolerance of upright and cart within the track."""
        angle = self.pole_angle(states)
        return (np.abs(angle) < self.angle_tolerance) & (np.abs(states[:, 0]) < self.params.track_limit)

    def keypoints(self, states: np.ndarray) -> np.ndarray:
        """Cart centre and pole tip per state, ``[T, 2, 3]`` in the URDF's root frame (for rviz)."""
        p = self.params
        origin = np.asarray(p.rail_origin)
        pos, th = states[:, 0], states[:, 1]
        length = 2.0 * p.pole_com
        cart = np.stack([pos, np.zeros_like(pos), np.zeros_like(pos)], -1) + origin
        tip = cart + np.stack([length * np.sin(th), np.zeros_like(th), length * np.cos(th)], -1)
        return np.stack([cart, tip], axis=1)

    def success(self, states: np.ndarray, times: np.ndarray) -> bool:
        if len(times) == 0 or times[-1] - times[0] < self.success_window:
            return False
        window = times >= times[-1] - self.success_window
        return bool(self.upright(states[window]).all())
