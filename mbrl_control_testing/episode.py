"""Closed-loop episodes without ROS: a planner acting on a plant model, for tests and benchmarks."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.core.planners.base import Planner
from mbrl_control.core.tasks.residual import ResidualTask


@dataclass
class Episode:
    states: np.ndarray  # [T+1, nx], the first is the initial state
    actions: np.ndarray  # [T, nu]
    tick_s: np.ndarray  # [T] planning time per tick
    dt: float

    @property
    def times(self) -> np.ndarray:
        return np.arange(len(self.states)) * self.dt


def task_of(planner: Planner) -> ResidualTask | None:
    """The task of residual terms ``planner`` prices with, found through a smoother, an evaluator
    and terminal-cost wrappers (None: it has none)."""
    inner = getattr(planner, "planner", planner)
    evaluator = getattr(inner, "evaluator", None)
    task = evaluator.task if evaluator is not None else getattr(inner, "task", None)
    while task is not None and not isinstance(task, ResidualTask):
        task = getattr(task, "task", None)
    return task


def run_episode(
    planner: Planner,
    plant: DynamicsModel,
    x0: torch.Tensor,
    steps: int,
    budget_s: float | None = None,
    task: ResidualTask | None = None,
) -> Episode:
    """Replan every step from the plant's true state and apply the first action.

    ``budget_s`` gives the planner a deadline per tick, as the controller node does in realtime.
    ``task``: told every command sent, as the controller node tells it (its ``command_rate``
    terms read it); by default the task the planner prices with.
    """
    task = task if task is not None else task_of(planner)
    planner.reset()
    if task is not None:
        task.set_last_command(torch.zeros(task.action_dim))
    x = x0.to(torch.float64).unsqueeze(0)
    states, actions, ticks = [x[0].numpy().copy()], [], []
    for _ in range(steps):
        start = time.perf_counter()
        plan = planner.plan(x[0].float(), None if budget_s is None else start + budget_s)
        ticks.append(time.perf_counter() - start)
        u = plan.actions[:1].to(torch.float64)
        if task is not None:
            task.set_last_command(plan.actions[0])
        x = plant.step(x, u)
        states.append(x[0].numpy().copy())
        actions.append(u[0].numpy().copy())
    return Episode(np.array(states), np.array(actions), np.array(ticks), plant.dt)
