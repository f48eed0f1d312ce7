"""The MDP that MBPO's SAC learns in: a dynamics model (the learned ensemble, or the analytic
model in tests), the task's reward, and a region around the goal that rollouts must stay in.

MBPO (Janner et al. 2019) branches short rollouts of the current policy off states from the real
replay buffer. ``ModelRollouts`` does that batched in torch: many start states step together
through one model call per step, and the transitions go straight into SAC's replay buffer.
``ModelEnv`` is the same MDP as a one-rollout gymnasium environment: SAC takes its spaces from
it, and it is the reference the batched generator is checked against.

Rewards are minus the task's running cost of ``(x, u)``. A rollout ends (``terminated``) when
the next state leaves ``region`` (or is not finite, a learned model blowing up): that step also
pays ``exit_cost``, by default the most a step inside the region can cost, forever
(``max cost / (1 - gamma)``), so leaving is never cheaper than staying, as for the DP planner's
grid. Without it, ending an episode of negative rewards early would look attractive. A rollout
that reaches ``rollout_length`` steps is truncated (SAC bootstraps through it).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, fields
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.core.learning.transitions import Transitions
from mbrl_control.core.mbpo.policy import observe
from mbrl_control.core.tasks.base import Task


@dataclass
class TransitionBatch:
    """SAC's view of ``N`` transitions, float32 tensors: observations, actions normalised to
    [-1, 1], (scaled) rewards ``[N]``, next observations, and ``dones [N]`` (1: terminated)."""

    observations: Tensor
    actions: Tensor
    rewards: Tensor
    next_observations: Tensor
    dones: Tensor

    def __len__(self) -> int:
        return self.observations.shape[0]

    @classmethod
    def concatenate(cls, parts: list["TransitionBatch"]) -> "TransitionBatch":
        return cls(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(cls)})


class ModelMDP:
    """One batched step of the model MDP: ``step(x[B, nx], a[B, nu] in [-1, 1]) -> (x_next,
    reward, terminated)``; rewards are multiplied by ``reward_scale`` (SAC's entropy bonus is in
    fixed units, so the scale sets how much reward outweighs exploration)."""

    def __init__(
        self,
        model: DynamicsModel,
        task: Task,
        region: tuple[float, ...],
        angle_dims: tuple[int, ...] = (),
        gamma: float = 0.99,
        reward_scale: float = 1.0,
        exit_cost: float = 0.0,
    ) -> None:
        if len(region) != task.state_dim or not all(r > 0 for r in region):
            raise ValueError(f"region needs {task.state_dim} positive half-widths, got {region}")
        self.model, self.task = model, task
        self.state_dim, self.action_dim = task.state_dim, task.action_dim
        self.angle_dims = tuple(angle_dims)
        self.gamma, self.reward_scale = float(gamma), float(reward_scale)
        self.device = device = task.action_low.device  # the model's and the task's
        self.region = torch.tensor(region, dtype=torch.float32, device=device)
        self.angle_mask = torch.zeros(task.state_dim, dtype=torch.bool, device=device)
        self.angle_mask[list(self.angle_dims)] = True
        low, high = task.action_low.float(), task.action_high.float()
        self.center, self.half_range = 0.5 * (low + high), 0.5 * (high - low)
        self.exit_cost = float(exit_cost) if exit_cost > 0 else self.max_step_cost() / (1.0 - self.gamma)

    @property
    def obs_dim(self) -> int:
        return self.state_dim + len(self.angle_dims)

    @torch.no_grad()
    def max_step_cost(self) -> float:
        """The running cost at the worst corner of region x actuator range (the task's costs
        grow away from the goal, so the corners bound the region's costs)."""
        signs = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=self.state_dim)), device=self.device)
        corners = signs * self.region  # [2^nx, nx]
        costs = [
            self.task.step_cost(corners, u.view(1, -1).expand(len(corners), -1))
            for u in (self.task.action_low.float(), self.task.action_high.float())
        ]
        return float(torch.stack(costs).max())

    def observe(self, x: Tensor) -> Tensor:
        return observe(x, self.angle_dims)

    def action(self, a: Tensor) -> Tensor:
        """Physical action for a normalised one."""
        return self.center + self.half_range * a

    def normalize(self, u: Tensor) -> Tensor:
        return ((u - self.center) / self.half_range).clamp(-1.0, 1.0)

    def inside(self, x: Tensor) -> Tensor:
        wrapped = torch.where(self.angle_mask, torch.remainder(x + math.pi, 2 * math.pi) - math.pi, x)
        return (wrapped.abs() <= self.region).all(-1) & torch.isfinite(x).all(-1)

    def reward(self, x: Tensor, u: Tensor, terminated: Tensor) -> Tensor:
        cost = self.task.step_cost(x, u) + self.exit_cost * terminated.float()
        return -self.reward_scale * cost

    @torch.no_grad()
    def step(self, x: Tensor, a: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        u = self.action(a)
        x_next = self.model.step(x, u)
        terminated = ~self.inside(x_next)
        # A non-finite prediction ends the rollout; keep the observation finite for the buffer.
        x_next = torch.where(torch.isfinite(x_next), x_next, x)
        return x_next, self.reward(x, u, terminated), terminated

    def batch_from(self, real: Transitions) -> TransitionBatch:
        """Logged transitions in SAC's terms: those starting inside the region, with the task's
        reward and termination recomputed (the log's reward may be another one, or none)."""
        x, u, x_next, _ = (t.to(self.device) for t in real.tensors())
        keep = self.inside(x)
        x, u, x_next = x[keep], u[keep], x_next[keep]
        terminated = ~self.inside(x_next)
        return TransitionBatch(
            observations=self.observe(x),
            actions=self.normalize(u),
            rewards=self.reward(x, u, terminated),
            next_observations=self.observe(torch.where(torch.isfinite(x_next), x_next, x)),
            dones=terminated.float(),
        )


ActorFn = Callable[[Tensor], Tensor]  # observations [B, obs_dim] -> normalised actions [B, nu]


class ModelRollouts:
    """MBPO's branched rollouts, batched: ``generate(actor, count)`` starts ``count`` rollouts at
    states drawn from ``starts`` and steps them together for up to ``rollout_length`` steps, one
    model call per step for all of them; terminated rollouts drop out. Returns every transition."""

    def __init__(self, mdp: ModelMDP, starts: Tensor, rollout_length: int, generator: torch.Generator) -> None:
        if len(starts) == 0:
            raise ValueError("need at least one start state (real states inside the region)")
        if rollout_length < 1:
            raise ValueError("rollout_length must be >= 1")
        self.mdp, self.starts, self.rollout_length, self.generator = mdp, starts.float(), rollout_length, generator

    @torch.no_grad()
    def generate(self, actor: ActorFn, count: int) -> TransitionBatch:
        x = self.starts[torch.randint(len(self.starts), (count,), generator=self.generator,
                                  device=self.generator.device).to(self.starts.device)]
        parts = []
        for _ in range(self.rollout_length):
            obs = self.mdp.observe(x)
            a = actor(obs)
            x_next, reward, terminated = self.mdp.step(x, a)
            parts.append(TransitionBatch(obs, a, reward, self.mdp.observe(x_next), terminated.float()))
            x = x_next[~terminated]  # only the rollouts still in the region go on
            if len(x) == 0:
                break
        return TransitionBatch.concatenate(parts)


@torch.no_grad()
def policy_returns(mdp: ModelMDP, actor: ActorFn, starts: Tensor, steps: int) -> Tensor:
    """Undiscounted return ``[n]`` of ``actor`` from each of ``starts[n, nx]`` over ``steps`` model
    steps, in task cost units (minus the running costs, minus ``exit_cost`` once on leaving the
    region, nothing after): how the trainer scores a policy without the real system."""
    x = starts.float()
    total = torch.zeros(len(x), device=x.device)
    alive = torch.ones(len(x), dtype=torch.bool, device=x.device)
    for _ in range(steps):
        x, reward, terminated = mdp.step(x, actor(mdp.observe(x)))
        total += torch.where(alive, reward, 0.0)
        alive &= ~terminated
        if not bool(alive.any()):
            break
    return total / mdp.reward_scale


class ModelEnv(gym.Env):
    """The model MDP as a gymnasium environment, one rollout at a time.

    ``reset`` starts at a state drawn from ``starts`` (real replay states: MBPO's branch points);
    ``step`` takes an action in [-1, 1] (scaled to the actuator bounds), steps the model, and
    returns ``(observation, reward, terminated, truncated, info)``, truncating after
    ``rollout_length`` steps. With a learned ensemble in ``ts1`` propagation, every step is
    predicted by a member drawn anew, as MBPO does.
    """

    metadata = {"render_modes": []}

    def __init__(self, mdp: ModelMDP, starts: Tensor, rollout_length: int, seed: int = 0) -> None:
        super().__init__()
        if len(starts) == 0:
            raise ValueError("need at least one start state")
        self.mdp, self.starts, self.rollout_length = mdp, starts.float(), int(rollout_length)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (mdp.obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (mdp.action_dim,), np.float32)
        self._generator = torch.Generator().manual_seed(seed)
        self._x = self.starts[:1].clone()
        self._steps = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self._generator.manual_seed(seed)
        self._x = self.starts[torch.randint(len(self.starts), (1,), generator=self._generator, device="cpu")
                              .to(self.starts.device)]
        self._steps = 0
        return self._observation(), {"state": self._x[0].cpu().numpy().copy()}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = torch.as_tensor(np.asarray(action, np.float32), device=self.mdp.device).view(1, -1).clamp(-1.0, 1.0)
        self._x, reward, terminated = self.mdp.step(self._x, a)
        self._steps += 1
        truncated = self._steps >= self.rollout_length and not bool(terminated[0])
        info = {"state": self._x[0].cpu().numpy().copy()}
        return self._observation(), float(reward[0]), bool(terminated[0]), truncated, info

    def _observation(self) -> np.ndarray:
        return self.mdp.observe(self._x)[0].cpu().numpy().astype(np.float32)
