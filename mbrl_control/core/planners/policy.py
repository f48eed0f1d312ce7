"""A learned policy as a planner: a tick is one forward pass of the MBPO policy.

``PolicyPlanner`` applies ``policy(x0)`` and, for the markers, rolls the policy forward through
the model for ``horizon`` ticks (default 1: the action and the state it leads to). All buffers
are allocated once; a tick runs under ``torch.inference_mode``, compiled if asked for. A new
policy (a file, or bytes from a topic) is copied into the existing module in place
(``set_policy`` / ``load_policy_bytes_``), so a compiled rollout stays valid.

``PolicyRollout`` is the shared piece: batched closed-loop rollouts of a policy through a model,
which iCEM also uses to put policy rollouts into its population (``ICEMPlanner(policy=...)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.core.mbpo.policy import Policy, PolicyFormatError, load_policy, policy_from_bytes
from mbrl_control.core.planners.base import Plan, Planner, host_copies
from mbrl_control.core.rollout import compile_or_eager
from mbrl_control.core.tasks.base import Task
from mbrl_control.core.util import module_device, setting


@dataclass(frozen=True)
class PolicyPlannerConfig:
    horizon: int = setting(1, "ticks of the policy's rollout through the model in the plan; 1: one forward pass",
                           1, 1000)
    path: str = setting("", "policy file (mbrl_control.core.mbpo.save_policy); empty: given in code or as bytes")

    def __post_init__(self) -> None:
        if self.horizon < 1:
            raise ValueError("need horizon >= 1")


def check_policy_fits(policy: Policy, task: Task) -> None:
    """Raise ``PolicyFormatError`` unless ``policy`` acts on ``task``'s state and action sizes."""
    if policy.state_dim != task.state_dim or policy.action_dim != task.action_dim:
        raise PolicyFormatError(
            f"policy maps {policy.state_dim} states to {policy.action_dim} actions; the task has "
            f"{task.state_dim} and {task.action_dim}"
        )


def resolve_policy(policy: "Policy | str | Path | None", path: str = "") -> Policy | None:
    """``policy`` itself, or the policy loaded from it (a path) or from ``path``; None if neither."""
    if isinstance(policy, Policy):
        return policy
    if policy is not None and str(policy):
        return load_policy(policy)
    return load_policy(path) if path else None


class PolicyRollout(torch.nn.Module):
    """``(x0[n, nx], noise[T, n, nu]) -> (actions[T, n, nu], states[T+1, n, nx])``: ``n``
    closed-loop rollouts, ``u_t = clip(policy(x_t) + noise_t)`` within the task's bounds.
    Time-major, so each step reads and writes contiguous rows."""

    def __init__(self, model: DynamicsModel, task: Task, policy: Policy) -> None:
        super().__init__()
        check_policy_fits(policy, task)
        self.model, self.policy = model, policy.to(module_device(model))  # the policy joins the model's device
        self.register_buffer("action_low", task.action_low.float().clone())
        self.register_buffer("action_high", task.action_high.float().clone())

    def forward(self, x0: Tensor, noise: Tensor | None = None, steps: int | None = None) -> tuple[Tensor, Tensor]:
        x, states, actions = x0, [x0], []
        for t in range(noise.shape[0] if noise is not None else int(steps)):
            u = self.policy(x) if noise is None else self.policy(x) + noise[t]
            u = torch.clamp(u, self.action_low, self.action_high)
            x = self.model.step(x, u)
            actions.append(u)
            states.append(x)
        return torch.stack(actions), torch.stack(states)


class PolicyPlanner(Planner):
    """``plan(x0)``: the policy's action, and its ``horizon``-tick rollout through the model.

    ``cost`` is the task's cost of that rollout (running plus terminal). Stateless between
    ticks, so ``reset`` has nothing to forget. Deadlines are not checked: a tick is one fixed,
    short computation.
    """

    def __init__(self, model: DynamicsModel, task: Task, policy: Policy,
                 config: PolicyPlannerConfig = PolicyPlannerConfig(), compile: bool = False,
                 device: torch.device | str | None = None) -> None:
        self.config = config
        self.horizon = config.horizon
        self.task = task
        if device is not None:  # model and task move there, as for the sampling planners
            model.to(device)
            task.to(device)
        self.device = module_device(model)
        self.rollout = PolicyRollout(model, task, policy.float())
        self._x = torch.zeros(1, task.state_dim, device=self.device)
        self._fn = self._tick
        if compile:
            with torch.inference_mode():
                self._fn = compile_or_eager(self._tick, (self._x,), self.device)

    @property
    def policy(self) -> Policy:
        return self.rollout.policy

    def _tick(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        actions, states = self.rollout(x, steps=self.horizon)  # [T, 1, nu], [T+1, 1, nx]
        cost = self.task.trajectory_cost(states.transpose(0, 1), actions.transpose(0, 1))
        return actions[:, 0], states[:, 0], cost[0]

    def set_policy(self, policy: Policy) -> None:
        """Copy ``policy``'s weights into the one in use (same architecture, else
        ``PolicyFormatError`` and nothing changes); call between ticks, from the ticking thread."""
        self.policy.load_state_(policy)

    def load_policy_bytes_(self, data: bytes) -> Policy:
        """Validate a policy message (``policy_to_bytes``) and swap it in; returns it (version,
        extra). Raises ``PolicyFormatError`` for a bad or different one, leaving the old in use."""
        policy = policy_from_bytes(data)
        self.set_policy(policy)
        return policy

    def reset(self) -> None:
        pass

    def plan(self, x0: Tensor, deadline: float | None = None) -> Plan:
        with torch.inference_mode():
            self._x[0].copy_(x0)
            actions, states, cost = self._fn(self._x)
        # Copied out of inference mode: the plan's owner may modify its tensors in place.
        actions, states, cost = host_copies(actions, states, cost)
        return Plan(actions=actions, states=states, cost=float(cost), iterations=1)
