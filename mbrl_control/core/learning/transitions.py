"""Transitions: the unit of logged experience, as plain numpy arrays, and their assembly from a
stream of per-tick (stamp, state, action) samples."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torch import Tensor

from mbrl_control.core.angles import wrap_dims

if TYPE_CHECKING:
    from mbrl_control.core.dynamics.base import DynamicsModel


@dataclass
class Transitions:
    """``N`` transitions ``(state, action) -> next_state`` over one control period, column-wise.

    ``seq`` numbers every transition ever appended to a replay buffer (stable across restarts and
    evictions, so a transition always falls in the same train/held-out split); ``stamp`` is the
    time of ``state`` [s]; ``episode`` numbers episodes; ``done`` marks an episode's last one;
    ``robot`` says which robot of a fleet it came from (the learner's index of its sample stream;
    0 for one robot, and for data recorded before fleets).
    """

    seq: np.ndarray  # [N] int64
    state: np.ndarray  # [N, nx] float32
    action: np.ndarray  # [N, nu] float32
    next_state: np.ndarray  # [N, nx] float32
    reward: np.ndarray  # [N] float32
    done: np.ndarray  # [N] bool
    stamp: np.ndarray  # [N] float64
    episode: np.ndarray  # [N] int64
    robot: np.ndarray | None = None  # [N] int64; None: all robot 0

    def __post_init__(self) -> None:
        if self.robot is None:
            self.robot = np.zeros(len(self.seq), np.int64)

    def __len__(self) -> int:
        return len(self.seq)

    @classmethod
    def empty(cls, state_dim: int, action_dim: int) -> "Transitions":
        return cls(
            seq=np.zeros(0, np.int64),
            state=np.zeros((0, state_dim), np.float32),
            action=np.zeros((0, action_dim), np.float32),
            next_state=np.zeros((0, state_dim), np.float32),
            reward=np.zeros(0, np.float32),
            done=np.zeros(0, bool),
            stamp=np.zeros(0, np.float64),
            episode=np.zeros(0, np.int64),
            robot=np.zeros(0, np.int64),
        )

    @classmethod
    def concatenate(cls, parts: list["Transitions"]) -> "Transitions":
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    def select(self, index: np.ndarray | slice) -> "Transitions":
        return Transitions(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(state, action, next_state, reward)`` as float32 tensors sharing this memory."""
        return tuple(
            torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
            for a in (self.state, self.action, self.next_state, self.reward)
        )


@torch.no_grad()
def residual_transitions(analytic: "DynamicsModel", data: Transitions, angle_dims: Sequence[int] = (),
                         batch: int = 8192) -> Transitions:
    """``data`` with each next state replaced by ``state + (next_state - analytic.step(state, action))``
    (angle entries of the difference wrapped): an ensemble trained on it learns the analytic model's
    residual as its "state change" (``dynamics.residual.ResidualDynamics``)."""
    if len(data) == 0:
        return data
    state, action, next_state, _ = data.tensors()
    predicted = torch.cat([analytic.step(state[lo : lo + batch], action[lo : lo + batch])
                           for lo in range(0, len(data), batch)])
    error = wrap_dims((next_state - predicted).numpy(), angle_dims)
    return dataclasses.replace(data, next_state=(data.state + error).astype(np.float32))


class TransitionAssembler:
    """Pairs consecutive control ticks into transitions.

    Feed it every tick's ``(stamp, state, action applied at that state, reward of that pair)``; it
    returns the transition that the new state completes, or None: at the first tick of an
    episode, and when the gap between the two stamps is not one period (a missed tick, a pause, a
    reset), since the model only predicts exactly one period ahead.
    """

    def __init__(self, dt: float, tolerance: float = 0.25) -> None:
        self.dt = float(dt)
        self.tolerance = tolerance * self.dt  # as a fraction of the period
        self._last: tuple[float, np.ndarray, np.ndarray, int, float] | None = None
        self.dropped_gaps = 0

    def reset(self) -> None:
        """A new episode starts: never pair across it."""
        self._last = None

    def push(
        self, stamp: float, state: np.ndarray, action: np.ndarray, episode: int, reward: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float, int] | None:
        """Returns ``(state, action, next_state, reward, stamp, episode)`` or None."""
        out = None
        if self._last is not None:
            last_stamp, last_state, last_action, last_episode, last_reward = self._last
            if last_episode == episode and abs(stamp - last_stamp - self.dt) <= self.tolerance:
                out = (last_state, last_action, np.asarray(state, np.float32), last_reward, last_stamp, episode)
            else:
                self.dropped_gaps += 1
        state32 = np.array(state, np.float32)
        self._last = (float(stamp), state32, np.array(action, np.float32), int(episode), float(reward))
        return out
