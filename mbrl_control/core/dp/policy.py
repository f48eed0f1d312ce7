"""The greedy policy of a value function: one-step lookahead over a discrete action set."""

from __future__ import annotations

import torch
from torch import Tensor

from mbrl_control.core.dp.grid import GridValue
from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.core.tasks.base import Task


class GreedyPolicy(torch.nn.Module):
    """``u(x) = argmin_a c(x, a) + gamma * V(f(x, a))`` over ``actions[A, nu]``, batched.

    One model call per batch: every state is stepped under every action at once. With the
    values and the action set the DP solved with, this is the DP's own greedy policy, evaluated
    off the grid points too.
    """

    def __init__(self, model: DynamicsModel, task: Task, value: GridValue, actions: Tensor, gamma: float) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.value = value
        self.gamma = float(gamma)
        self.register_buffer("actions", actions.to(torch.float32).clone())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """For ``x[B, nx]``: the action ``[B, nu]``, its Q value ``[B]`` and next state ``[B, nx]``."""
        batch, (num_actions, nu), nx = x.shape[0], self.actions.shape, x.shape[-1]
        xs = x.unsqueeze(1).expand(batch, num_actions, nx).reshape(batch * num_actions, nx)
        us = self.actions.unsqueeze(0).expand(batch, num_actions, nu).reshape(batch * num_actions, nu)
        x_next = self.model.step(xs, us)
        stage = self.task.step_cost(xs, us)
        q = (stage + self.gamma * self.value(x_next)).view(batch, num_actions)
        q_best, best = q.min(dim=-1)
        x_best = x_next.view(batch, num_actions, nx).gather(1, best.view(batch, 1, 1).expand(batch, 1, nx))
        return self.actions[best], q_best, x_best.squeeze(1)


def closed_loop(policy: GreedyPolicy, plant: DynamicsModel, x0: Tensor, steps: int) -> Tensor:
    """States ``[B, steps + 1, nx]`` of ``plant`` (in its dtype) under ``policy`` from ``x0[B, nx]``.

    The batched counterpart of ``run_episode`` for judging a policy from many starts at once.
    """
    dtype = x0.dtype
    states, x = [x0], x0
    with torch.no_grad():
        for _ in range(steps):
            u, _, _ = policy(x.float())
            x = plant.step(x, u.to(dtype))
            states.append(x)
    return torch.stack(states, dim=1)
