"""Random exploration behind the planner interface: what a controller does before it has any
model to plan with (the first episode of learning from scratch).

Two excitations. ``effort``: uniform efforts, each held a few ticks; right for an underactuated
toy (the cart-pole's cart), wrong for an arm, where full-range random torques fling the links into
their limits within a second and the estimate cannot follow. ``acceleration``: random joint
accelerations about a critically damped spring to where the episode started, turned into efforts
by the URDF's inverse dynamics (computed torque) -- the way an arm is excited for identification:
it wanders a few tenths of a radian at about a radian a second, gravity carried, and the learned
model, not the URDF's, is what later plans. Only the excitation's shape comes from the URDF."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from mbrl_control.core.planners.base import Plan, Planner
from mbrl_control.core.util import setting

EXCITATIONS = ("effort", "acceleration")

# (x [1, nx], qdd [1, nq]) -> efforts [1, nu] that produce qdd (computed torque, within the effort bounds)
ComputedTorqueFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class RandomConfig:
    hold: int = setting(5, "ticks each uniformly drawn action is held (slower excitation reaches further)", 1, 1000)
    scale: float = setting(1.0, "fraction of the action range drawn from (excitation 'effort')", 0.0, 1.0)
    seed: int = setting(0, "seed of the draws", 0, 2**31 - 1)
    excitation: str = setting("effort", "what is drawn: 'effort' (uniform efforts within scale x the range) or "
                                        "'acceleration' (joint accelerations about a damped spring to the episode's "
                                        "start, made efforts by the URDF's inverse dynamics: an arm; needs every "
                                        "state joint commanded)", choices=EXCITATIONS)
    acceleration: float = setting(3.0, "[rad/s^2] half-range of the drawn joint accelerations (excitation "
                                       "'acceleration')", 0.0, 1000.0)
    bandwidth: float = setting(2.0, "[rad/s] natural frequency of the critically damped spring to the episode's "
                                    "start (excitation 'acceleration'; the wander is about acceleration / bandwidth^2)",
                               0.0, 100.0)

    def __post_init__(self) -> None:
        if self.excitation not in EXCITATIONS:
            raise ValueError(f"explore.excitation must be one of {', '.join(EXCITATIONS)}, got '{self.excitation}'")


class RandomPlanner(Planner):
    """Random actions within the bounds, each draw held ``hold`` ticks. It predicts nothing: the
    plan's states repeat the current one. It computes nothing worth a device: everything stays on
    the CPU, where the plan goes anyway (bounds from any device are copied at start).

    ``computed_torque`` (required for ``excitation='acceleration'``; ``ComputedTorque.efforts``)
    maps states and joint accelerations to the efforts that produce them."""

    def __init__(self, action_low: Tensor, action_high: Tensor, state_dim: int, config: RandomConfig = RandomConfig(),
                 computed_torque: ComputedTorqueFn | None = None) -> None:
        self.config = config
        self.horizon = config.hold
        action_low, action_high = action_low.detach().cpu().float(), action_high.detach().cpu().float()
        center, half = 0.5 * (action_high + action_low), 0.5 * (action_high - action_low) * config.scale
        self._low, self._high = center - half, center + half
        self._nq = state_dim // 2
        if config.excitation == "acceleration" and computed_torque is None:
            raise ValueError("explore.excitation 'acceleration' needs the robot's computed torque (a URDF model)")
        self._computed_torque = computed_torque
        self._generator = torch.Generator(device="cpu")
        self._actions = torch.empty(config.hold, self._low.shape[0], device="cpu")
        self._states = torch.empty(config.hold + 1, state_dim, device="cpu")
        self._draw = torch.zeros(self._low.shape[0], device="cpu")
        self._origin = torch.zeros(self._nq, device="cpu")
        self.reset()

    def reset(self) -> None:
        self._generator.manual_seed(self.config.seed)
        self._tick = 0

    def plan(self, x0: Tensor, deadline: float | None = None) -> Plan:
        x0 = x0.detach().cpu().float()
        new_draw = self._tick % self.config.hold == 0
        if new_draw:
            self._draw = torch.rand(self._low.shape, generator=self._generator, device="cpu")
        if self.config.excitation == "effort":
            if new_draw:
                self._actions[:] = self._low + self._draw * (self._high - self._low)
        else:
            self._actions[:] = self._excite(x0)
        self._tick += 1
        self._states[:] = x0
        return Plan(actions=self._actions.clone(), states=self._states.clone(), cost=0.0, iterations=0)

    @torch.no_grad()
    def _excite(self, x0: Tensor) -> Tensor:
        q, qd = x0[: self._nq], x0[self._nq:]
        if self._tick == 0:
            self._origin.copy_(q)
        cfg = self.config
        w = cfg.bandwidth
        qdd = w * w * (self._origin - q) - 2.0 * w * qd + cfg.acceleration * (2.0 * self._draw - 1.0)
        return self._computed_torque(x0.unsqueeze(0), qdd.unsqueeze(0))[0].float()
