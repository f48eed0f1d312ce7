"""Random exploration behind the planner interface: what a controller does before it has any
model to plan with (the first episode of learning from scratch)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mbrl_control.core.planners.base import Plan, Planner
from mbrl_control.core.util import setting


@dataclass(frozen=True)
class RandomConfig:
    hold: int = setting(5, "ticks each uniformly drawn action is held (slower excitation reaches further)", 1, 1000)
    scale: float = setting(1.0, "fraction of the action range drawn from", 0.0, 1.0)
    seed: int = setting(0, "seed of the draws", 0, 2**31 - 1)


class RandomPlanner(Planner):
    """Uniform random actions within the bounds, each held ``hold`` ticks. It predicts nothing:
    the plan's states repeat the current one. It computes nothing worth a device: everything
    stays on the CPU, where the plan goes anyway (bounds from any device are copied at start)."""

    def __init__(self, action_low: Tensor, action_high: Tensor, state_dim: int, config: RandomConfig = RandomConfig()) -> None:
        self.config = config
        self.horizon = config.hold
        action_low, action_high = action_low.detach().cpu().float(), action_high.detach().cpu().float()
        center, half = 0.5 * (action_high + action_low), 0.5 * (action_high - action_low) * config.scale
        self._low, self._high = center - half, center + half
        self._generator = torch.Generator(device="cpu")
        self._actions = torch.empty(config.hold, self._low.shape[0], device="cpu")
        self._states = torch.empty(config.hold + 1, state_dim, device="cpu")
        self.reset()

    def reset(self) -> None:
        self._generator.manual_seed(self.config.seed)
        self._tick = 0

    def plan(self, x0: Tensor, deadline: float | None = None) -> Plan:
        if self._tick % self.config.hold == 0:
            draw = torch.rand(self._low.shape, generator=self._generator, device="cpu")
            self._actions[:] = self._low + draw * (self._high - self._low)
        self._tick += 1
        self._states[:] = x0
        return Plan(actions=self._actions.clone(), states=self._states.clone(), cost=0.0, iterations=0)
