"""A task whose terminal cost is a DP value function: a sampling planner sees past its horizon."""

from __future__ import annotations

from torch import Tensor

from mbrl_control.core.dp.grid import GridValue
from mbrl_control.core.tasks.base import Task, TerminalCostOverride


class ValueTerminalCost(TerminalCostOverride):
    """``task`` with ``terminal_cost(x) = weight * V(x)`` inside ``value``'s grid.

    ``V`` is a discounted sum of the same per-step costs the running cost sums, so ``weight = 1``
    makes a rollout's cost an estimate of its infinite-horizon cost. Outside the grid the terminal
    cost is the DP's exit value plus the task's own terminal cost: never cheaper than any state
    inside, yet still ranking outside states by how far they are from the goal, which is what a
    swing-up needs to get into the grid at all.
    """

    def __init__(self, task: Task, value: GridValue, weight: float = 1.0) -> None:
        super().__init__(task, weight)
        self.value = value

    def terminal_cost(self, x: Tensor) -> Tensor:
        return self.terminal_weight * self.value(x, outside=self.value.exit_value + self.task.terminal_cost(x))
