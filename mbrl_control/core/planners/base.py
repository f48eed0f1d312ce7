"""The planner interface the controller node calls every tick."""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class Plan:
    """A planned action sequence, the states the model predicts along it, and diagnostics.

    ``actions[T, nu]`` starts with the action to apply now; ``states[T+1, nx]`` starts at the
    state planned from. ``deadline_missed`` says the planner stopped early for its deadline.
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
