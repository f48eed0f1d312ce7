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

    def step_cost(self, x: Tensor, u: Tensor) -> Tensor:
        """Cost ``[B]`` of single steps ``x[B,nx]``, ``u[B,nu]`` taken out of any sequence (a DP grid,
        an LQR or iLQR expansion, a model-rollout reward): terms on the change of command, which need
        the command before, are left out."""
        return self.running_cost(x.unsqueeze(1), u.unsqueeze(1))

    def trajectory_cost(self, states: Tensor, actions: Tensor) -> Tensor:
        """Cost of ``states[B,T+1,nx]`` reached under ``actions[B,T,nu]``."""
        return self.running_cost(states[:, :-1], actions) + self.terminal_cost(states[:, -1])

    @abc.abstractmethod
    def success(self, states: np.ndarray, times: np.ndarray) -> bool:
        """Whether a recorded trajectory ``states[T,nx]`` sampled at ``times[T]`` [s] succeeded."""

    def within_tolerance(self, states: np.ndarray) -> np.ndarray:
        """Per state of ``states[T,nx]``: within the success tolerance (held at the posture, at the goal)."""
        raise NotImplementedError(f"{type(self).__name__} has no success tolerance")


class TerminalCostOverride(Task):
    """``task`` with its terminal cost replaced by a subclass's ``terminal_cost``; the running
    cost, bounds and success are ``task``'s. How a value function (LQR, DP, a learned critic)
    extends a short horizon. It is what planners price trajectories with; everything else (goals,
    keypoints, errors) is asked of ``task`` itself, which this wraps and never hides.

    ``terminal_weight`` multiplies the subclass's terminal cost; a buffer, so changing it at
    runtime (``set_terminal_weight``) reaches a compiled rollout without recompiling it."""

    def __init__(self, task: Task, weight: float = 1.0) -> None:
        super().__init__()
        self.state_dim = task.state_dim
        self.action_dim = task.action_dim
        # Buffers first: registering checks the name is free, which would ask the task below.
        self.register_buffer("action_low", task.action_low.clone())
        self.register_buffer("action_high", task.action_high.clone())
        self.register_buffer("terminal_weight", torch.tensor(float(weight)))
        self.task = task

    def set_terminal_weight(self, weight: float) -> None:
        self.terminal_weight.fill_(float(weight))

    def running_cost(self, x: Tensor, u: Tensor) -> Tensor:
        return self.task.running_cost(x, u)

    def step_cost(self, x: Tensor, u: Tensor) -> Tensor:
        return self.task.step_cost(x, u)

    def success(self, states: np.ndarray, times: np.ndarray) -> bool:
        return self.task.success(states, times)

    def within_tolerance(self, states: np.ndarray) -> np.ndarray:
        return self.task.within_tolerance(states)
