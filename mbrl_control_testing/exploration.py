"""Logged experience without a robot: episodes of an explorer (anything that maps a state to an
action) on a model plant with process noise, for tests and benchmarks (the role the sim and the
episode manager play for the learner node)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.core.learning.transitions import Transitions
from mbrl_control.core.planners.base import Planner
from mbrl_control.core.tasks.base import Task

Explorer = Callable[[Tensor], Tensor]  # state [nx] float32 -> action [nu]


class RandomExplorer:
    """Uniform random actions within the bounds, each held for ``hold`` ticks (slower, larger
    excursions than white noise at the control rate)."""

    def __init__(self, low: Tensor, high: Tensor, hold: int = 1, seed: int = 0) -> None:
        self.low, self.high, self.hold = low.float(), high.float(), max(1, hold)
        self._g = torch.Generator().manual_seed(seed)
        self._u = self.low
        self._age = 0

    def __call__(self, x: Tensor) -> Tensor:
        if self._age % self.hold == 0:
            self._u = self.low + (self.high - self.low) * torch.rand(self.low.shape, generator=self._g)
        self._age += 1
        return self._u


class PlannerExplorer:
    """A planner's first action plus Gaussian exploration noise (clamped by the plant's user);
    ``reset`` at each episode start forgets the planner's warm start."""

    def __init__(self, planner: Planner, action_noise: float, seed: int = 0) -> None:
        self.planner, self.action_noise = planner, action_noise
        self._g = torch.Generator().manual_seed(seed)

    def reset(self) -> None:
        self.planner.reset()

    def __call__(self, x: Tensor) -> Tensor:
        u = self.planner.plan(x).actions[0]
        return u + self.action_noise * torch.randn(u.shape, generator=self._g)


def task_reward(task: Task) -> Callable[[Tensor, Tensor], float]:
    """The reward of one ``(x, u)``: minus the task's running cost of that single step."""

    def reward(x: Tensor, u: Tensor) -> float:
        return -float(task.running_cost(x.view(1, 1, -1).float(), u.view(1, 1, -1).float()))

    return reward


def collect_episode(
    plant: DynamicsModel,
    explorer: Explorer,
    x0: Tensor,
    steps: int,
    process_noise: Tensor | None = None,
    seed: int = 0,
    episode: int = 0,
    first_seq: int = 0,
    reward: Callable[[Tensor, Tensor], float] | None = None,
    position_limit: float | None = None,
) -> Transitions:
    """Run ``explorer`` on ``plant`` for ``steps`` periods from ``x0``.

    ``process_noise[nx]``: std of Gaussian noise added to every next state (the episode goes on
    from the noisy state), so the one-step state change has exactly this much irreducible spread.
    The episode ends early (``done``) once ``|x[0]|`` passes ``position_limit``.
    """
    g = torch.Generator().manual_seed(seed)
    x = x0.to(torch.float64).clone()
    rows: list[tuple] = []
    for k in range(steps):
        u = explorer(x.float()).to(torch.float64).reshape(-1)
        x_next = plant.step(x.unsqueeze(0), u.unsqueeze(0))[0]
        if process_noise is not None:
            x_next = x_next + process_noise.double() * torch.randn(x.shape, generator=g, dtype=torch.float64)
        done = position_limit is not None and abs(float(x_next[0])) > position_limit
        r = reward(x, u) if reward is not None else 0.0
        rows.append((x.numpy().copy(), u.numpy().copy(), x_next.numpy().copy(), r, done, k * plant.dt))
        x = x_next
        if done:
            break
    n = len(rows)
    return Transitions(
        seq=np.arange(first_seq, first_seq + n, dtype=np.int64),
        state=np.array([r[0] for r in rows], np.float32),
        action=np.array([r[1] for r in rows], np.float32),
        next_state=np.array([r[2] for r in rows], np.float32),
        reward=np.array([r[3] for r in rows], np.float32),
        done=np.array([r[4] for r in rows], bool),
        stamp=np.array([r[5] for r in rows], np.float64),
        episode=np.full(n, episode, np.int64),
    )


def explore(
    plant: DynamicsModel,
    explorers: Sequence[Explorer],
    initial_states: Tensor,
    steps: int,
    process_noise: Tensor | None = None,
    first_episode: int = 0,
    first_seq: int = 0,
    reward: Callable[[Tensor, Tensor], float] | None = None,
    position_limit: float | None = None,
) -> Transitions:
    """One episode per ``(explorers[k], initial_states[k])``, numbered from ``first_episode`` with
    consecutive sequence numbers from ``first_seq``; all of them, concatenated."""
    episodes, seq = [], first_seq
    for k, (explorer, x0) in enumerate(zip(explorers, initial_states)):
        if hasattr(explorer, "reset"):
            explorer.reset()
        episode = first_episode + k
        episodes.append(collect_episode(plant, explorer, x0, steps, process_noise, seed=episode, episode=episode,
                                        first_seq=seq, reward=reward, position_limit=position_limit))
        seq += len(episodes[-1])
    return Transitions.concatenate(episodes)
