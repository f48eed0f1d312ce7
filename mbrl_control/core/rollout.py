"""Batched open-loop rollouts and their cost: the hot path every sampling planner shares."""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.core.tasks.base import Task
from mbrl_control.core.util import module_device

log = logging.getLogger(__name__)


class TrajectoryEvaluator(torch.nn.Module):
    """``(x0[nx], actions[B,T,nu]) -> (cost[B], states[B,T+1,nx])`` for one model and task.

    With ``compile=True`` the whole rollout and its cost go through ``torch.compile``: the
    cart-pole's per-sample arithmetic fuses into a few vectorised C++ loops instead of thousands
    of small eager ops (on CUDA, the graph is also captured as a CUDA graph: see
    ``compile_or_eager``). Machines without a working compiler fall back to eager on the first
    call. Actions stored time-major with the batch fastest (a ``[T, nu, B]`` buffer viewed as
    ``[B, T, nu]``) are read contiguously; any other layout is correct, only slower.

    ``device``: where to evaluate; the model and the task are moved there (in place, as
    ``Module.to`` does). None: where the model is. A model that samples (it has a
    ``draw(batch, steps)`` method, like the learned ensemble) has its random numbers drawn
    before the compiled graph and passed to ``model.rollout(x0, actions, draws)``, so the graph
    itself is free of random number generation.
    """

    def __init__(self, model: DynamicsModel, task: Task, compile: bool = False,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        self.model = model
        self.task = task
        if device is not None:
            self.to(device)
        self._fn = self._evaluate
        self._compile_pending = compile
        self._draw = getattr(model, "draw", None)

    @property
    def device(self) -> torch.device:
        return module_device(self.model)

    def _evaluate(self, x0: Tensor, actions: Tensor, draws: tuple[Tensor, ...] | None) -> tuple[Tensor, Tensor]:
        x = x0.unsqueeze(0).expand(actions.shape[0], -1)
        states = self.model.rollout(x, actions) if draws is None else self.model.rollout(x, actions, draws)
        return self.task.trajectory_cost(states, actions), states

    def forward(self, x0: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        draws = None if self._draw is None else self._draw(actions.shape[0], actions.shape[1])
        if self._compile_pending:
            self._compile_pending = False
            self._fn = compile_or_eager(self._evaluate, (x0, actions, draws), self.device)
        return self._fn(x0, actions, draws)


def compile_or_eager(fn, example_args: tuple, device: torch.device | str = "cpu"):
    """``torch.compile(fn)`` if it compiles and runs on ``example_args`` here, else ``fn``.

    On CUDA the compiled graph is replayed as a CUDA graph (``mode="reduce-overhead"``): a
    planner's tick is many small kernels, which a GPU otherwise spends launching. Outputs of a
    replayed graph are overwritten by its next replay: callers copy what they keep.
    """
    mode = "reduce-overhead" if torch.device(device).type == "cuda" else None
    try:
        compiled = torch.compile(fn, dynamic=False, fullgraph=True, mode=mode)
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

    def _rollout(
        self, x0: Tensor, x_ref: Tensor, u_ref: Tensor, feedforward: Tensor, gains: Tensor, step_sizes: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        low, high = self.task.action_low, self.task.action_high
        x = x0.unsqueeze(0).expand(step_sizes.shape[0], -1)
        step = step_sizes.unsqueeze(-1)
        states, actions = [x], []
        for t in range(u_ref.shape[0]):
            dx = x - x_ref[t]
            feedback = sum(dx[:, i : i + 1] * gains[t][:, i] for i in range(dx.shape[-1]))
            u = torch.clamp(u_ref[t] + step * feedforward[t] + feedback, low, high)
            x = self.model.step(x, u)
            states.append(x)
            actions.append(u)
        states_b, actions_b = torch.stack(states, dim=1), torch.stack(actions, dim=1)
        return self.task.trajectory_cost(states_b, actions_b), states_b, actions_b

    def forward(
        self, x0: Tensor, x_ref: Tensor, u_ref: Tensor, feedforward: Tensor, gains: Tensor, step_sizes: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        args = (x0, x_ref, u_ref, feedforward, gains, step_sizes)
        if self._compile_pending:
            self._compile_pending = False
            self._fn = compile_or_eager(self._rollout, args, module_device(self.model))
        return self._fn(*args)
