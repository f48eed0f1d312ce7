"""Safety primitives shared by the controller and the hardware drivers (pure, no ROS).

What a real robot needs between a planner and its motors: effort clamped to the joint limits,
effort that never drives a joint further past its position or velocity limit, a watchdog that
zeroes a stale command, and an e-stop that latches until someone resets it deliberately.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class JointLimits:
    """Per-joint limits, arrays in the joints' order; +-inf where a joint has none."""

    effort: np.ndarray
    position_lower: np.ndarray
    position_upper: np.ndarray
    velocity: np.ndarray

    @classmethod
    def unlimited(cls, n: int) -> "JointLimits":
        inf = np.full(n, np.inf)
        return cls(inf, -inf, inf, inf)


def limit_effort(effort: np.ndarray, position: np.ndarray, velocity: np.ndarray, limits: JointLimits) -> np.ndarray:
    """Clamp to the effort limit, and drop effort that pushes a joint further beyond a position
    or velocity limit (effort back towards the safe side passes)."""
    out = np.clip(effort, -limits.effort, limits.effort)
    beyond = (
        ((position >= limits.position_upper) & (out > 0))
        | ((position <= limits.position_lower) & (out < 0))
        | ((velocity >= limits.velocity) & (out > 0))
        | ((velocity <= -limits.velocity) & (out < 0))
    )
    out[beyond] = 0.0
    return out


class EStopLatch:
    """An e-stop: once triggered it stays latched until ``reset()``, which only succeeds while
    the e-stop input itself is released."""

    def __init__(self) -> None:
        self.latched = False
        self.input_pressed = False
        self.trips = 0

    def update(self, pressed: bool) -> None:
        self.input_pressed = bool(pressed)
        if pressed and not self.latched:
            self.latched = True
            self.trips += 1

    def reset(self) -> tuple[bool, str]:
        if self.input_pressed:
            return False, "e-stop input is still pressed"
        was = self.latched
        self.latched = False
        return True, "e-stop reset" if was else "e-stop was not latched"


class CommandWatchdog:
    """Tracks the age of the last command; a command older than ``timeout`` is stale."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.last_time: float | None = None
        self.timeouts = 0
        self._was_fresh = False

    def feed(self, now: float) -> None:
        self.last_time = now

    def fresh(self, now: float) -> bool:
        fresh = self.last_time is not None and now - self.last_time <= self.timeout
        if self._was_fresh and not fresh:
            self.timeouts += 1
        self._was_fresh = fresh
        return fresh
