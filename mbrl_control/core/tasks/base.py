"""The task interface: what a planner minimises, and what counts as success."""

from __future__ import annotations

import abc

import numpy as np
import torch
from torch import Tensor


class Task(torch.nn.Module, abc.ABC):
    """Batched costs over trajectories; lower is better.

    ``running_cost(x[B,T,nx], u[B,T,nu]) -> [B]`` sums over the horizon and
    ``terminal_cost(x[B,nx]) -> [B]`` prices where the trajectory ends. ``action_low`` and
    ``action_high`` are the actuator bounds every planner respects.
    """

    state_dim: int
    action_dim: int
    action_low: Tensor
    action_high: Tensor

    @abc.abstractmethod
    def running_cost(self, x: Tensor, u: Tensor) -> Tensor: ...

    @abc.abstractmethod
    def terminal_cost(self, x: Tensor) -> Tensor: ...

    def trajectory_cost(self, states: Tensor, actions: Tensor) -> Tensor:
        """Cost of ``states[B,T+1,nx]`` reached under ``actions[B,T,nu]``."""
        return self.running_cost(states[:, :-1], actions) + self.terminal_cost(states[:, -1])

    @abc.abstractmethod
    def success(self, states: np.ndarray, times: np.ndarray) -> bool:
        """Whether a recorded trajectory ``states[T,nx]`` sampled at ``times[T]`` [s] succeeded."""
