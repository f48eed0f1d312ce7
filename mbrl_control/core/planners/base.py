"""The planner interface the controller node calls every tick."""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from mbrl_control.core.util import synchronize


@dataclass
class Plan:
    """A planned action sequence, the states the model predicts along it, and diagnostics.

    ``actions[T, nu]`` starts with the action to apply now; ``states[T+1, nx]`` starts at the
    state planned from. ``deadline_missed`` says the planner stopped early for its deadline.
    The tensors are the plan's own and live on the CPU, whatever device planned it: the plan is
    what leaves a tick (``host_copies``).
    """

    actions: Tensor
    states: Tensor
    cost: float
    iterations: int = 0
    deadline_missed: bool = False
    info: dict[str, float] = field(default_factory=dict)


class Planner(abc.ABC):
    """Plans from a state; keeps its own warm start between calls."""

    horizon: int

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget the warm start (a new episode, a jump in state)."""

    @abc.abstractmethod
    def plan(self, x0: Tensor, deadline: float | None = None) -> Plan:
        """Plan from ``x0[nx]``; return by ``deadline`` (a ``time.perf_counter()`` value) if given."""


def out_of_time(deadline: float | None, reserve: float = 0.0) -> bool:
    """True when less than ``reserve`` seconds remain before ``deadline``."""
    return deadline is not None and time.perf_counter() + reserve >= deadline


def shift_in_time(sequence: Tensor, scratch: Tensor) -> None:
    """Warm start in place: ``sequence[t] = sequence[t + 1]``, the last step repeated.

    ``scratch`` is a buffer of the same shape (source and destination overlap).
    """
    scratch[:-1].copy_(sequence[1:])
    scratch[-1].copy_(sequence[-1])
    sequence.copy_(scratch)


def host_copies(*tensors: Tensor) -> tuple[Tensor, ...]:
    """CPU copies of ``tensors`` (the caller owns them), in one transfer from a GPU: the plan
    leaving a tick. On the CPU this is one ``clone`` per tensor."""
    if all(t.device.type == "cpu" for t in tensors):
        return tuple(t.detach().clone() for t in tensors)
    flat = torch.cat([t.detach().reshape(-1).to(torch.float32) for t in tensors]).cpu()
    out, start = [], 0
    for t in tensors:
        out.append(flat[start : start + t.numel()].view(t.shape))
        start += t.numel()
    return tuple(out)


def no_time_for_another(device: torch.device, deadline: float | None, start: float, done: int) -> bool:
    """True when one more iteration, as long as the mean of the ``done`` since ``start``, would
    end past ``deadline``. On a GPU it first waits for the queued work: the time the iterations
    took, not the time it took to queue them."""
    if deadline is None or done == 0:
        return False
    synchronize(device)
    return out_of_time(deadline, (time.perf_counter() - start) / done)
