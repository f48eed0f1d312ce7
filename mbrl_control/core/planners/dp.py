"""Dynamic programming on a grid around upright: solve once, then act greedily on the values."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from mbrl_control.core.dp import (
    DPSolution,
    GreedyPolicy,
    GridMDP,
    GridValue,
    StateGrid,
    build_grid_mdp,
    load_solution,
    policy_iteration,
    save_solution,
    value_iteration,
)
from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.core.planners.base import Plan, Planner, host_copies, no_time_for_another
from mbrl_control.core.rollout import compile_or_eager
from mbrl_control.core.tasks.base import Task
from mbrl_control.core.util import module_device, setting

log = logging.getLogger(__name__)

SOLVERS = ("pi", "vi")


@dataclass(frozen=True)
class DPConfig:
    # The grid over [cart position, pole angle, cart velocity, pole angular velocity]: the region
    # the controller balances in. Odd point counts put a point on upright at rest.
    grid_low: tuple[float, ...] = setting((-1.5, -0.4, -1.5, -2.0), "grid lower bound per state dimension", -100.0, 100.0)
    grid_high: tuple[float, ...] = setting((1.5, 0.4, 1.5, 2.0), "grid upper bound per state dimension", -100.0, 100.0)
    grid_points: tuple[int, ...] = setting((15, 15, 13, 15), "grid points per state dimension (odd: one on upright)", 2, 41)
    periodic: tuple[int, ...] = setting((1,), "state dimensions that are angles, wrapped to [-pi, pi)", 0, 3)
    actions: int = setting(11, "forces evenly spaced over the actuator range, ends included", 2, 41)
    gamma: float = setting(0.99, "discount per control period (~2 s horizon at 50 Hz)", 0.5, 0.9999)
    solver: str = setting("pi", "policy iteration (~1 s on the default grid) or value iteration (~5x slower)", choices=("pi", "vi"))
    tolerance: float = setting(1e-4, "guaranteed max |V - V*| at the end, in task cost units", 1e-8, 0.1)
    max_iterations: int = setting(10000, "VI sweeps, or PI improvement steps", 1, 1000000)
    exit_cost: float = setting(0.0, "cost-to-go on leaving the grid; 0: max stage cost / (1 - gamma)", 0.0, 1e9)
    horizon: int = setting(5, "greedy rollout ticks returned for the markers (1: the applied action only)", 1, 50)
    cache: str = setting("", "safetensors file to load the solution from and save it to; empty: always solve")

    def __post_init__(self) -> None:
        for name in ("grid_low", "grid_high", "grid_points", "periodic"):  # ROS arrays come as lists
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got '{self.solver}'")
        if not 0.0 < self.gamma < 1.0 or self.tolerance <= 0.0:
            raise ValueError("need 0 < gamma < 1 and tolerance > 0")
        if self.actions < 2 or self.horizon < 1 or self.max_iterations < 1:
            raise ValueError("need actions >= 2, horizon >= 1 and max_iterations >= 1")


def action_set(low: Tensor, high: Tensor, count: int) -> Tensor:
    """``count`` evenly spaced values per action dimension, all combinations: ``[count**nu, nu]``."""
    axes = [torch.linspace(lo, hi, count) for lo, hi in zip(low.tolist(), high.tolist())]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(axes))


def config_grid(config: DPConfig) -> StateGrid:
    return StateGrid(config.grid_low, config.grid_high, config.grid_points, config.periodic)


def solve_value(model: DynamicsModel, task: Task, config: DPConfig = DPConfig()) -> tuple[GridValue, DPSolution]:
    """The value function of ``task`` under ``model`` on the configured grid (float32, for planners
    and ``ValueTerminalCost``) and the solution it came from; loaded if the cache file holds it."""
    grid = config_grid(config)
    if grid.dim != task.state_dim:
        raise ValueError(f"the grid needs {task.state_dim} dimensions, got {grid.dim}")
    actions = action_set(task.action_low, task.action_high, config.actions)
    start = time.perf_counter()
    mdp = build_grid_mdp(model, task, grid, actions, config.gamma, config.exit_cost)
    solution = solve(mdp, config)
    log.info(
        "DP: %d states x %d actions, %s in %d iterations, %.1f s",
        grid.size, len(actions), solution.solver, solution.iterations, time.perf_counter() - start,
    )
    return GridValue(grid, solution.values.to(torch.float32), mdp.exit_value), solution


def solve(mdp: GridMDP, config: DPConfig) -> DPSolution:
    """Solve ``mdp`` with the configured solver, through the cache file if one is configured."""
    key = f"{mdp.fingerprint()}:{config.solver}:{config.tolerance}"
    if config.cache and (cached := load_solution(config.cache, key)) is not None:
        log.info("DP solution loaded from %s", config.cache)
        return cached
    if config.solver == "pi":
        solution = policy_iteration(mdp, config.tolerance, config.max_iterations)
    else:
        solution = value_iteration(mdp, config.tolerance, config.max_iterations)
    if not solution.converged:
        log.warning("DP (%s) stopped after %d iterations without converging", config.solver, solution.iterations)
    if config.cache:
        save_solution(config.cache, solution, key)
    return solution


class DPPlanner(Planner):
    """Greedy one-step lookahead on a grid value function solved at construction.

    The policy steps the state under every action of the set in one batched model call and takes
    ``argmin_a c(x, a) + gamma V(f(x, a))``. A tick computes that action, then follows the policy
    on the model for the rest of ``horizon`` (for the markers), one step while the deadline
    leaves time for one: the first action is always ready. ``cost`` is the first action's Q
    value, the discounted cost-to-go it expects. Outside the grid every successor is worth the
    exit cost and the action is just the one cheapest now: this planner balances, it does not
    swing up (give CEM a ``ValueTerminalCost`` for that). Stateless between ticks, so ``reset``
    has nothing to forget.
    """

    def __init__(
        self,
        model: DynamicsModel,
        task: Task,
        config: DPConfig = DPConfig(),
        compile: bool = True,
        device: torch.device | str | None = None,
    ) -> None:
        self.config = config
        self.horizon = config.horizon
        if device is not None:  # model and task move there, as for the sampling planners
            model.to(device)
            task.to(device)
        self.device = module_device(model)
        # The grid solve is float64 on the host (scipy), with host copies of a device's model and task.
        host_model, host_task = (model, task) if self.device.type == "cpu" else (
            copy.deepcopy(model).cpu(), copy.deepcopy(task).cpu())
        with torch.device("cpu"):
            self.value, self.solution = solve_value(host_model, host_task, config)
            self.grid = config_grid(config)  # float64, for callers; the value holds a float32 copy
            actions = action_set(task.action_low, task.action_high, config.actions)
        self.value.to(self.device)
        self.policy = GreedyPolicy(model, task, self.value, actions.to(self.device), config.gamma)
        self._x = torch.zeros(1, self.grid.dim, device=self.device)
        # One compiled step, looped: unrolling the whole rollout into one graph saves ~30 us a
        # step but takes minutes to compile. (Not a CUDA graph: a tick keeps every step's outputs.)
        self._step = compile_or_eager(self._greedy, (self._x,)) if compile else self._greedy

    def _greedy(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        with torch.no_grad():
            return self.policy(x)

    def reset(self) -> None:
        pass

    def plan(self, x0: Tensor, deadline: float | None = None) -> Plan:
        start = time.perf_counter()
        self._x[0].copy_(x0)
        actions, states, x = [], [self._x], self._x
        for t in range(self.horizon):
            if no_time_for_another(self.device, deadline, start, t):
                break
            u, q, x = self._step(x)
            if t == 0:
                cost = q
            actions.append(u)
            states.append(x)
        # One copy out at the end (the plan owns its tensors): per-step copies cost more here.
        actions, states, cost = host_copies(torch.cat(actions), torch.cat(states), cost[0])
        return Plan(
            actions=actions,
            states=states,
            cost=float(cost),
            iterations=len(actions),
            deadline_missed=len(actions) < self.horizon,
        )
