"""Cross-entropy method MPC over open-loop action sequences (batched, warm-started)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from mbrl_control.core.planners.base import Plan, Planner, out_of_time
from mbrl_control.core.rollout import TrajectoryEvaluator


@dataclass(frozen=True)
class CEMConfig:
    population: int = 500
    elites: int = 50
    iterations: int = 5
    horizon: int = 30
    init_std: float = 0.5  # as a fraction of the half-range of the action bounds
    min_std: float = 0.02  # likewise; keeps the search alive when the distribution collapses
    momentum: float = 0.1  # weight of the old distribution in each refit
    seed: int = 0


class CEMPlanner(Planner):
    """CEM: sample action sequences around a Gaussian, refit it to the elites, repeat.

    Warm start: each tick starts from last tick's mean shifted by one step (the last step is
    repeated) with the initial spread. Population member 0 is always the current mean, and the
    plan returned is the best sequence evaluated this tick, so it is never worse than the warm
    start. Every buffer is allocated once, time-major with the population fastest, the layout the
    compiled rollout reads contiguously; ``plan`` only fills them.
    """

    def __init__(self, evaluator: TrajectoryEvaluator, config: CEMConfig = CEMConfig()) -> None:
        if not 0 < config.elites <= config.population:
            raise ValueError("need 0 < elites <= population")
        if config.iterations < 1 or config.horizon < 1:
            raise ValueError("need iterations >= 1 and horizon >= 1")
        self.evaluator = evaluator
        self.config = config
        self.horizon = config.horizon
        task = evaluator.task
        low, high = task.action_low.float(), task.action_high.float()
        nu, T, P = low.shape[0], config.horizon, config.population
        self._low = low.view(1, nu, 1).expand(T, nu, 1).contiguous()
        self._high = high.view(1, nu, 1).expand(T, nu, 1).contiguous()
        half_range = 0.5 * (high - low)
        self._center = (0.5 * (low + high)).expand(T, nu).contiguous()
        self._init_std = (config.init_std * half_range).expand(T, nu).contiguous()
        self._min_std = (config.min_std * half_range).expand(T, nu).contiguous()
        self._generator = torch.Generator().manual_seed(config.seed)
        self._noise = torch.empty(T, nu, P)
        self._samples_t = torch.empty(T, nu, P)
        self._samples = self._samples_t.permute(2, 0, 1)  # [P, T, nu] view for the evaluator
        self._mean = torch.empty(T, nu)
        self._std = torch.empty(T, nu)
        self._scratch = torch.empty(T, nu)
        self._best_actions = torch.empty(T, nu)
        self._best_states = torch.empty(T + 1, task.state_dim)
        self.reset()

    def reset(self) -> None:
        self._mean.copy_(self._center)
        self._generator.manual_seed(self.config.seed)

    def plan(self, x0: Tensor, deadline: float | None = None) -> Plan:
        cfg = self.config
        start = time.perf_counter()
        x0 = x0.to(torch.float32)
        self._std.copy_(self._init_std)
        best_cost = float("inf")
        done = 0
        for it in range(cfg.iterations):
            # Stop if one more iteration (judged by the mean so far) would overrun the deadline.
            if it > 0 and out_of_time(deadline, (time.perf_counter() - start) / it):
                break
            torch.randn(self._noise.shape, generator=self._generator, out=self._noise)
            torch.addcmul(self._mean.unsqueeze(-1), self._std.unsqueeze(-1), self._noise, out=self._samples_t)
            self._samples_t[..., 0] = self._mean
            torch.clamp(self._samples_t, self._low, self._high, out=self._samples_t)
            costs, states = self.evaluator(x0, self._samples)
            costs = torch.nan_to_num(costs, nan=float("inf"))
            elite_costs, elite_idx = torch.topk(costs, cfg.elites, largest=False, sorted=True)
            if elite_costs[0].item() < best_cost:
                best_cost = elite_costs[0].item()
                self._best_actions.copy_(self._samples_t[..., elite_idx[0]])
                self._best_states.copy_(states[elite_idx[0]])
            elites = self._samples_t.index_select(-1, elite_idx)
            std, mean = torch.std_mean(elites, dim=-1)
            self._mean.mul_(cfg.momentum).add_(mean, alpha=1.0 - cfg.momentum)
            self._std.mul_(cfg.momentum).add_(std, alpha=1.0 - cfg.momentum)
            torch.maximum(self._std, self._min_std, out=self._std)
            done += 1
        plan = Plan(
            actions=self._best_actions.clone(),
            states=self._best_states.clone(),
            cost=best_cost,
            iterations=done,
            deadline_missed=done < cfg.iterations,
        )
        self._shift_mean()
        return plan

    def _shift_mean(self) -> None:
        """Warm start for the next tick: drop the step just executed, repeat the last one."""
        self._scratch[:-1].copy_(self._mean[1:])
        self._scratch[-1].copy_(self._mean[-1])
        self._mean.copy_(self._scratch)
