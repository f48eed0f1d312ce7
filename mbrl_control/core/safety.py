"""Safety primitives shared by the controller and the hardware drivers (pure, no ROS).

What a real robot needs between a planner and its motors: effort clamped to the joint limits,
effort that never drives a joint further past its position or velocity limit, a watchdog that
zeroes a stale command, and an e-stop that latches until someone resets it deliberately.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from mbrl_control.core.util import setting

if TYPE_CHECKING:
    from mbrl_control.core.robot import RobotSpec


@dataclass(frozen=True)
class JointLimits:
    """Per-joint limits, arrays in the joints' order; +-inf where a joint has none."""

    effort: np.ndarray
    position_lower: np.ndarray
    position_upper: np.ndarray
    velocity: np.ndarray

    @classmethod
    def of_commanded_joints(cls, spec: "RobotSpec") -> "JointLimits":
        """The URDF's limits of a robot's command joints (command order)."""
        i = list(spec.command_index)
        return cls(spec.effort_limit.copy(), spec.position_lower[i], spec.position_upper[i], spec.velocity_limit[i])


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


STALE_ACTIONS = ("zero", "hold", "gravity_hold")


@dataclass(frozen=True)
class SafetyConfig:
    """The controller's ``safety.*`` and ``state_timeout`` (its node declares them from the
    ``setting`` fields; ``effort_limit`` and ``limits`` come from the robot)."""

    effort_limit: np.ndarray  # per commanded joint
    rate_limit: float = setting(2000.0, "max command change per second in normal operation [N/s or N m/s]", 0.0, 1e9)
    state_timeout: float = setting(0.1, "a state older than this is stale: the safe command goes out [s]", 0.001, 10.0)
    # The safe command: 'zero' effort (a cart-pole, anything that rests safely unpowered), 'hold' the
    # last command for at most hold_timeout, or 'gravity_hold' (an arm: the effort that holds it
    # where it was last seen against gravity; the layer's ``hold_effort``).
    stale_action: str = setting("zero", "command while the state is stale or a plan unusable: zero effort, hold the "
                                        "last command, or gravity_hold (the effort holding the robot where it was "
                                        "last seen: an arm)", choices=STALE_ACTIONS)
    hold_timeout: float = setting(0.2, "'hold' keeps the last command at most this long, then zero [s]", 0.0, 10.0)
    # A gravity hold is right only while the arm stays where it was last seen. Held on while the
    # robot is gone (a driver or sim restarting), it releases the returning arm's brakes and pushes
    # it from a posture it no longer has; so after this long nothing goes out, and the robot's own
    # safe stop (its brakes, the driver's command watchdog) takes over until the state returns.
    gravity_hold_timeout: float = setting(0.0, "'gravity_hold' goes out at most this long, then no command at all, so "
                                               "the robot's own safe stop (brakes, the driver's command watchdog) "
                                               "takes over until the state returns; 0: hold until then [s]", 0.0, 60.0)
    limits: JointLimits | None = None  # with a state, effort past a position or velocity limit is refused

    def __post_init__(self) -> None:
        if self.stale_action not in STALE_ACTIONS:
            raise ValueError(f"stale_action must be one of {', '.join(STALE_ACTIONS)}, got '{self.stale_action}'")


class SafetyLayer:
    """The last word on every command the controller sends.

    Normal operation (``running``): the planner's action, clamped to the effort limits,
    rate-limited, and (given the commanded joints' state) refused where it would push a joint
    further past its position or velocity limit. ``degraded``: the state is stale or the plan was
    unusable (non-finite), so the safe command goes out (``stale_action``). ``stopped``: the e-stop
    is latched and the safe command goes out until it is reset (zero effort; for ``gravity_hold``
    the gravity hold, a controlled stop that keeps an arm where it is). Going safe is never
    rate-limited: the safe command goes out on the very tick the fault is seen.

    ``hold_effort()``: the gravity-hold effort, computed by the caller from the last state it saw
    (required with ``stale_action='gravity_hold'``). A gravity hold longer than
    ``gravity_hold_timeout`` gives way to no command (``command`` returns None): the robot's own
    safe stop.
    """

    def __init__(self, config: SafetyConfig, hold_effort: "Callable[[], np.ndarray] | None" = None) -> None:
        if config.stale_action == "gravity_hold" and hold_effort is None:
            raise ValueError("stale_action 'gravity_hold' needs a hold_effort function (the robot's gravity torques)")
        self.config = config
        self.hold_effort = hold_effort
        self.estop = EStopLatch()
        self.mode = RUNNING
        self.reason = ""
        self.last_command = np.zeros_like(config.effort_limit, dtype=float)
        self.last_good_time: float | None = None
        self.safe_since: float | None = None  # when the fallback began (None: running)
        self.counts = {"stale_state": 0, "unsafe_plan": 0, "clamped": 0, "rate_limited": 0, "joint_limited": 0,
                       "estop": 0, "released_to_robot": 0}

    def command(self, now: float, action: np.ndarray | None, state_age: float, dt: float,
                position: np.ndarray | None = None, velocity: np.ndarray | None = None) -> np.ndarray | None:
        """The command to send at time ``now`` given the planner's ``action`` (None: no plan);
        ``position``, ``velocity``: the commanded joints' state, for the joint-limit check. None:
        send nothing (a gravity hold past ``gravity_hold_timeout``)."""
        cfg = self.config
        zero = np.zeros_like(self.last_command)
        if self.estop.latched:
            self.counts["estop"] += 1
            stop = self._gravity_hold() if cfg.stale_action == "gravity_hold" else zero
            return self._emit(stop, STOPPED, "e-stop latched")
        if not state_age <= cfg.state_timeout:  # also catches NaN and inf (no state yet)
            self.counts["stale_state"] += 1
            return self._degraded(now, zero, "state stale")
        if action is None or not np.all(np.isfinite(action)):
            self.counts["unsafe_plan"] += 1
            return self._degraded(now, zero, "plan rejected (non-finite)")
        clamped = np.clip(action, -cfg.effort_limit, cfg.effort_limit)
        self.counts["clamped"] += int(not np.array_equal(clamped, action))
        step = cfg.rate_limit * dt
        limited = np.clip(clamped, self.last_command - step, self.last_command + step)
        self.counts["rate_limited"] += int(not np.array_equal(limited, clamped))
        if cfg.limits is not None and position is not None and velocity is not None:
            within = limit_effort(limited, position, velocity, cfg.limits)
            self.counts["joint_limited"] += int(not np.array_equal(within, limited))
            limited = within
        self.last_good_time = now
        self.safe_since = None
        return self._emit(limited, RUNNING, "")

    def _degraded(self, now: float, zero: np.ndarray, reason: str) -> np.ndarray | None:
        cfg = self.config
        self.safe_since = now if self.safe_since is None else self.safe_since
        if cfg.stale_action == "gravity_hold" and 0.0 < cfg.gravity_hold_timeout < now - self.safe_since:
            self.counts["released_to_robot"] += 1
            self.mode, self.reason = DEGRADED, f"{reason}; no command: the robot's own safe stop"
            return None
        return self._emit(self._fallback(now, zero), DEGRADED, reason)

    def _fallback(self, now: float, zero: np.ndarray) -> np.ndarray:
        cfg = self.config
        if cfg.stale_action == "gravity_hold":
            return self._gravity_hold()
        if (
            cfg.stale_action == "hold"
            and self.last_good_time is not None
            and now - self.last_good_time <= cfg.hold_timeout
        ):
            return self.last_command
        return zero

    def _gravity_hold(self) -> np.ndarray:
        effort = np.asarray(self.hold_effort(), dtype=float)
        if not np.all(np.isfinite(effort)):  # no state ever seen, or a broken model: nothing better than zero
            return np.zeros_like(self.last_command)
        return np.clip(effort, -self.config.effort_limit, self.config.effort_limit)

    def _emit(self, command: np.ndarray, mode: str, reason: str) -> np.ndarray:
        self.mode, self.reason = mode, reason
        self.last_command = command.copy()
        return command
