"""A task whose terminal cost is MBPO's learned critic: a sampling planner sees past its horizon
through the value SAC learned, as with the DP value (``ValueTerminalCost``) but from a network
that needs no grid and no analytic model."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mbrl_control.core.mbpo.policy import PolicyFormatError, ValueFunction
from mbrl_control.core.tasks.base import Task, TerminalCostOverride
from mbrl_control.core.util import setting


@dataclass(frozen=True)
class ValueTerminalConfig:
    path: str = setting("", "critic file for terminal:=value (safetensors, mbrl_control.core.mbpo.save_value)")


class ValueFunctionTerminalCost(TerminalCostOverride):
    """``task`` with ``terminal_cost(x) = -weight * V(x)`` inside the critic's region.

    ``V`` (``ValueFunction``: the min of SAC's twin Q's at the policy's action) is a discounted
    sum of rewards, minus the same per-step costs the running cost sums, so ``-V`` is a
    cost-to-go and ``weight = 1`` makes a rollout's cost an estimate of its infinite-horizon cost
    (up to SAC's entropy bonus, a near-constant offset that does not change the ranking). Outside
    the region the critic was trained on, its values mean nothing: there the terminal cost is the
    cost of leaving the region in training plus the task's own terminal cost, as for the DP value
    outside its grid.
    """

    def __init__(self, task: Task, value: ValueFunction, weight: float = 1.0) -> None:
        if value.spec.policy.state_dim != task.state_dim or value.spec.policy.action_dim != task.action_dim:
            raise PolicyFormatError("the critic's state and action sizes differ from the task's")
        super().__init__(task, weight)
        self.value = value.float()

    def terminal_cost(self, x: Tensor) -> Tensor:
        outside = self.value.spec.exit_value + self.task.terminal_cost(x)
        return self.terminal_weight * torch.where(self.value.inside(x), -self.value(x), outside)
