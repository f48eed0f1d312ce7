"""Batched open-loop rollouts and their cost: the hot path every sampling planner shares."""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.core.tasks.base import Task

log = logging.getLogger(__name__)


class TrajectoryEvaluator(torch.nn.Module):
    """``(x0[nx], actions[B,T,nu]) -> (cost[B], states[B,T+1,nx])`` for one model and task.

    With ``compile=True`` the whole rollout and its cost go through ``torch.compile``: the
    cart-pole's per-sample arithmetic fuses into a few vectorised C++ loops instead of thousands
    of small eager ops. Machines without a working compiler fall back to eager on the first call.
    Actions stored time-major with the batch fastest (a ``[T, nu, B]`` buffer viewed as
    ``[B, T, nu]``) are read contiguously; any other layout is correct, only slower.
    """

    def __init__(self, model: DynamicsModel, task: Task, compile: bool = False) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self._fn = self._evaluate
        self._compile_pending = compile
        self._step = model.step  # compiled alone for models whose horizon is too big a graph
        self._cost = task.trajectory_cost

    def _evaluate(self, x0: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        x = x0.unsqueeze(0).expand(actions.shape[0], -1)
        states = self.model.rollout(x, actions)
        return self.task.trajectory_cost(states, actions), states

    def _evaluate_by_steps(self, x0: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        x = x0.unsqueeze(0).expand(actions.shape[0], -1)
        states = [x]
        for t in range(actions.shape[1]):
            x = self._step(x, actions[:, t])
            states.append(x)
        states_b = torch.stack(states, dim=1)
        return self._cost(states_b, actions), states_b

    def forward(self, x0: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        if self._compile_pending:
            self._compile_pending = False
            if self.model.compile_rollout:
                self._fn = compile_or_eager(self._evaluate, (x0, actions))
            else:  # one compiled step, looped; the cost compiled on its own
                x = x0.unsqueeze(0).expand(actions.shape[0], -1)
                self._step = compile_or_eager(self.model.step, (x, actions[:, 0]))
                states = torch.stack([x] * (actions.shape[1] + 1), dim=1)
                self._cost = compile_or_eager(self.task.trajectory_cost, (states, actions))
                self._fn = self._evaluate_by_steps
        return self._fn(x0, actions)


def compile_or_eager(fn, example_args: tuple):
    """``torch.compile(fn)`` if it compiles and runs on ``example_args`` here, else ``fn``."""
    try:
        compiled = torch.compile(fn, dynamic=False, fullgraph=True)
        compiled(*example_args)
        return compiled
    except Exception as exc:  # no C++ compiler, unsupported op, ...: eager still works
        log.warning("torch.compile unavailable (%s: %s); using eager mode", type(exc).__name__, exc)
        return fn


class FeedbackRollout(torch.nn.Module):
    """Closed-loop rollouts of a time-varying affine policy at several step sizes, in one batch.

    ``(x0[nx], x_ref[T+1,nx], u_ref[T,nu], feedforward[T,nu], gains[T,nu,nx], step_sizes[S])
    -> (cost[S], states[S,T+1,nx], actions[S,T,nu])`` with
    ``u_t = clip(u_ref_t + step * feedforward_t + gains_t (x_t - x_ref_t))``: the forward pass and
    parallel line search of iLQR/DDP. The feedback product is unrolled over the state entries into
    pointwise operations, which a compiled graph fuses with the dynamics (a batched matmul or a
    reduction per step splits it into many small kernels: 2x slower for the cart-pole).
    """

    def __init__(self, model: DynamicsModel, task: Task, compile: bool = False) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self._fn = self._rollout
        self._compile_pending = compile
        self._feedback_step = self._step_with_feedback  # compiled alone for models with big step graphs
        self._cost = task.trajectory_cost

    def _step_with_feedback(self, x: Tensor, x_ref: Tensor, u_ref: Tensor, feedforward: Tensor, gains: Tensor,
                            step: Tensor) -> tuple[Tensor, Tensor]:
        dx = x - x_ref
        feedback = sum(dx[:, i : i + 1] * gains[:, i] for i in range(dx.shape[-1]))
        u = torch.clamp(u_ref + step * feedforward + feedback, self.task.action_low, self.task.action_high)
        return self.model.step(x, u), u

    def _rollout(
        self, x0: Tensor, x_ref: Tensor, u_ref: Tensor, feedforward: Tensor, gains: Tensor, step_sizes: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        x = x0.unsqueeze(0).expand(step_sizes.shape[0], -1)
        step = step_sizes.unsqueeze(-1)
        states, actions = [x], []
        for t in range(u_ref.shape[0]):
            x, u = self._feedback_step(x, x_ref[t], u_ref[t], feedforward[t], gains[t], step)
            states.append(x)
            actions.append(u)
        states_b, actions_b = torch.stack(states, dim=1), torch.stack(actions, dim=1)
        return self._cost(states_b, actions_b), states_b, actions_b

    def forward(
        self, x0: Tensor, x_ref: Tensor, u_ref: Tensor, feedforward: Tensor, gains: Tensor, step_sizes: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        args = (x0, x_ref, u_ref, feedforward, gains, step_sizes)
        if self._compile_pending:
            self._compile_pending = False
            if self.model.compile_rollout:
                self._fn = compile_or_eager(self._rollout, args)
            else:  # one compiled feedback step, looped; the cost compiled on its own
                x = x0.unsqueeze(0).expand(step_sizes.shape[0], -1)
                step = step_sizes.unsqueeze(-1)
                self._feedback_step = compile_or_eager(self._step_with_feedback,
                                                       (x, x_ref[0], u_ref[0], feedforward[0], gains[0], step))
                states = torch.stack([x] * (u_ref.shape[0] + 1), dim=1)
                actions = u_ref.unsqueeze(0).expand(step_sizes.shape[0], -1, -1)
                self._cost = compile_or_eager(self.task.trajectory_cost, (states, actions))
        return self._fn(*args)
