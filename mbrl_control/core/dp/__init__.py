"""Dynamic programming on a grid: value and policy iteration over any ``DynamicsModel``."""

from mbrl_control.core.dp.grid import GridValue, StateGrid
from mbrl_control.core.dp.policy import GreedyPolicy, closed_loop
from mbrl_control.core.dp.solve import (
    DPSolution,
    GridMDP,
    build_grid_mdp,
    load_solution,
    policy_iteration,
    save_solution,
    value_iteration,
)

__all__ = [
    "StateGrid",
    "GridValue",
    "GreedyPolicy",
    "closed_loop",
    "GridMDP",
    "DPSolution",
    "build_grid_mdp",
    "value_iteration",
    "policy_iteration",
    "save_solution",
    "load_solution",
]
