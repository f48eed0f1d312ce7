"""Cross-entropy method MPC over open-loop action sequences (batched, warm-started).

Plain CEM is iCEM without its improvements: white noise, no elites kept across iterations or
ticks, a constant population. It is built that way here, so the two share one implementation
(preallocated buffers, time-major samples that the compiled rollout reads contiguously)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from mbrl_control.core.planners.icem import (
    SETTLE_TICKS_HELP,
    SETTLED_RATE_HELP,
    SETTLED_STD_HELP,
    ICEMConfig,
    ICEMPlanner,
)
from mbrl_control.core.rollout import TrajectoryEvaluator
from mbrl_control.core.util import setting


@dataclass(frozen=True)
class CEMConfig:
    population: int = setting(500, "action sequences per iteration", 2, 100000)
    elites: int = setting(50, "elites refitted per iteration", 1, 100000)
    iterations: int = setting(5, "iterations per tick", 1, 100)
    horizon: int = setting(30, "planning horizon [ticks]", 1, 1000)
    init_std: float = setting(0.5, "initial std as a fraction of the action half-range", 0.0, 10.0)
    settled_std: float = setting(0.0, SETTLED_STD_HELP, 0.0, 10.0)
    settle_ticks: int = setting(50, SETTLE_TICKS_HELP, 0, 100000)
    settled_rate: float = setting(0.0, SETTLED_RATE_HELP, 0.0, 1e6)
    min_std: float = setting(0.02, "std floor as a fraction of the action half-range", 0.0, 10.0)
    momentum: float = setting(0.1, "weight of the old distribution in each refit", 0.0, 1.0)
    seed: int = setting(0, "sampling seed", 0, 2**31 - 1)
    smoothing_window: int = setting(0, "Savitzky-Golay smoothing of the command sent, over this many ticks of past "
                                    "commands and plan (odd; 0: off): sampling noise a motor would take as vibration; "
                                    "with settled_std, only while settled", 0, 101)


class CEMPlanner(ICEMPlanner):
    """CEM: sample action sequences around a Gaussian, refit it to the elites, repeat.

    Warm start: each tick starts from last tick's mean shifted by one step (the last step is
    repeated) with the initial spread. Population member 0 is always the current mean, and the
    plan returned is the best sequence evaluated this tick, so it is never worse than the warm
    start.
    """

    def __init__(self, evaluator: TrajectoryEvaluator, config: CEMConfig = CEMConfig(),
                 device: torch.device | str | None = None) -> None:
        super().__init__(
            evaluator,
            ICEMConfig(
                population=config.population, elites=config.elites, iterations=config.iterations,
                horizon=config.horizon, noise_beta=0.0, keep_elites=0.0, population_decay=1.0,
                init_std=config.init_std, settled_std=config.settled_std, settle_ticks=config.settle_ticks,
                settled_rate=config.settled_rate, min_std=config.min_std, momentum=config.momentum, seed=config.seed,
            ),
            device=device,
        )
        self.cem_config = config

    def set_budget(self, **budget: int) -> None:
        super().set_budget(**budget)
        self.cem_config = dataclasses.replace(self.cem_config, **budget)
