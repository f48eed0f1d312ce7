"""A task whose running cost is the ensemble's learned reward head (``learn_reward``): plug it in
where the known task would go, and the planner optimises the learned reward instead."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mbrl_control.core.dynamics.ensemble import EnsembleDynamics
from mbrl_control.core.tasks.base import Task


class LearnedRewardTask(Task):
    """Running cost ``-sum_t r(x_t, u_t)`` from ``model.predict_reward`` (one member per pair).

    Action bounds, success and keypoints come from ``task`` (the known task). The terminal
    cost is the known task's if ``terminal_from_task``, else zero (a learned reward has no notion
    of one). Scoring every (sample, step) is one more pass of one member's network per pair: about
    as much again as the dynamics rollout.
    """

    def __init__(self, model: EnsembleDynamics, task: Task, terminal_from_task: bool = False) -> None:
        super().__init__()
        if not model.config.learn_reward:
            raise ValueError("the ensemble was built without learn_reward")
        self.model = model
        self.task = task
        self.terminal_from_task = terminal_from_task
        self.state_dim, self.action_dim = task.state_dim, task.action_dim
        self.register_buffer("action_low", task.action_low.clone())
        self.register_buffer("action_high", task.action_high.clone())

    def running_cost(self, x: Tensor, u: Tensor) -> Tensor:
        return -self.model.predict_reward(x, u).sum(-1)

    def terminal_cost(self, x: Tensor) -> Tensor:
        if self.terminal_from_task:
            return self.task.terminal_cost(x)
        return torch.zeros(x.shape[:-1], dtype=x.dtype)

    def success(self, states: np.ndarray, times: np.ndarray) -> bool:
        return self.task.success(states, times)

    def within_tolerance(self, states: np.ndarray) -> np.ndarray:
        return self.task.within_tolerance(states)

    def keypoints(self, states: np.ndarray) -> np.ndarray:
        """The known task's keypoints (plan markers)."""
        return self.task.keypoints(states)
