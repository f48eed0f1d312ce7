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


RUNNING, DEGRADED, STOPPED = "running", "degraded", "stopped"


@dataclass(frozen=True)
class SafetyConfig:
    effort_limit: np.ndarray  # per commanded joint
    rate_limit: float = np.inf  # max effort change per second in normal operation
    state_timeout: float = 0.1  # [s] an older state is stale
    stale_action: str = "zero"  # 'zero', or 'hold' the last command for at most hold_timeout
    hold_timeout: float = 0.2  # [s]

    def __post_init__(self) -> None:
        if self.stale_action not in ("zero", "hold"):
            raise ValueError(f"stale_action must be 'zero' or 'hold', got '{self.stale_action}'")


class SafetyLayer:
    """The last word on every command the controller sends.

    Normal operation (``running``): the planner's action, clamped to the effort limits and
    rate-limited. ``degraded``: the state is stale or the plan was unusable (non-finite), so the
    command is zero, or the last good command held briefly when configured to. ``stopped``: the
    e-stop is latched and the command is zero until it is reset. Going safe is never
    rate-limited: a zero command goes out on the very tick the fault is seen.
    """

    def __init__(self, config: SafetyConfig) -> None:
        self.config = config
        self.estop = EStopLatch()
        self.mode = RUNNING
        self.reason = ""
        self.last_command = np.zeros_like(config.effort_limit, dtype=float)
        self.last_good_time: float | None = None
        self.counts = {"stale_state": 0, "unsafe_plan": 0, "clamped": 0, "rate_limited": 0, "estop": 0}

    def command(self, now: float, action: np.ndarray | None, state_age: float, dt: float) -> np.ndarray:
        """The command to send at time ``now`` given the planner's ``action`` (None: no plan)."""
        cfg = self.config
        zero = np.zeros_like(self.last_command)
        if self.estop.latched:
            self.counts["estop"] += 1
            return self._emit(zero, STOPPED, "e-stop latched")
        if not state_age <= cfg.state_timeout:  # also catches NaN and inf (no state yet)
            self.counts["stale_state"] += 1
            return self._emit(self._fallback(now, zero), DEGRADED, "state stale")
        if action is None or not np.all(np.isfinite(action)):
            self.counts["unsafe_plan"] += 1
            return self._emit(self._fallback(now, zero), DEGRADED, "plan rejected (non-finite)")
        clamped = np.clip(action, -cfg.effort_limit, cfg.effort_limit)
        self.counts["clamped"] += int(not np.array_equal(clamped, action))
        step = cfg.rate_limit * dt
        limited = np.clip(clamped, self.last_command - step, self.last_command + step)
        self.counts["rate_limited"] += int(not np.array_equal(limited, clamped))
        self.last_good_time = now
        return self._emit(limited, RUNNING, "")

    def _fallback(self, now: float, zero: np.ndarray) -> np.ndarray:
        cfg = self.config
        if (
            cfg.stale_action == "hold"
            and self.last_good_time is not None
            and now - self.last_good_time <= cfg.hold_timeout
        ):
            return self.last_command
        return zero

    def _emit(self, command: np.ndarray, mode: str, reason: str) -> np.ndarray:
        self.mode, self.reason = mode, reason
        self.last_command = command.copy()
        return command
