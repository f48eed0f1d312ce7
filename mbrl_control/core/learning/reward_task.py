"""A task whose running cost is the ensemble's learned reward head (``learn_reward``): plug it in
where the known task would go, and the planner optimises the learned reward instead."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from mbrl_control.core.dynamics.ensemble import EnsembleDynamics
from mbrl_control.core.tasks.base import Task

TERMINALS = ("learned", "task", "none")


class LearnedRewardTask(Task):
    """Running cost ``-sum_t r(x_t, u_t)`` from ``model.predict_reward`` (one member per pair).

    Action bounds, success and keypoints come from ``task`` (the known task). The terminal cost
    (``terminal``): ``learned``, the learned reward of the final state at zero action counted as
    many steps as the known task counts its final state (its ``terminal_weight``, as the residual
    tasks price where a short horizon ends); ``task``, the known task's own; ``none``. Scoring
    every (sample, step) is one more pass of one member's network per pair: about as much again
    as the dynamics rollout. ``model`` is read at every call, so weights swapped into it in
    place (a controller's new model) reprice the plans at once.
    """

    def __init__(self, model: EnsembleDynamics, task: Task, terminal: str = "learned") -> None:
        super().__init__()
        if not model.config.learn_reward:
            raise ValueError("the ensemble was built without learn_reward")
        if terminal not in TERMINALS:
            raise ValueError(f"terminal must be one of {', '.join(TERMINALS)}; got '{terminal}'")
        self.model = model
        self.task = task
        self.terminal = terminal
        self.state_dim, self.action_dim = task.state_dim, task.action_dim
        self.register_buffer("action_low", task.action_low.clone())
        self.register_buffer("action_high", task.action_high.clone())

    def running_cost(self, x: Tensor, u: Tensor) -> Tensor:
        return -self.model.predict_reward(x, u).sum(-1)

    def terminal_cost(self, x: Tensor) -> Tensor:
        if self.terminal == "task":
            return self.task.terminal_cost(x)
        if self.terminal == "none":
            return x.new_zeros(x.shape[:-1])
        steps = getattr(self.task, "terminal_weight", 1.0)  # a buffer: a runtime change reaches this too
        return -steps * self.model.predict_reward(x, x.new_zeros(*x.shape[:-1], self.action_dim))

    def success(self, states: np.ndarray, times: np.ndarray) -> bool:
        return self.task.success(states, times)

    def within_tolerance(self, states: np.ndarray) -> np.ndarray:
        return self.task.within_tolerance(states)

    def keypoints(self, states: np.ndarray) -> np.ndarray:
        """The known task's keypoints (plan markers)."""
        return self.task.keypoints(states)
