"""Scheduled fault injection for the sim: one fault that starts and clears at set times of sim time.

Pure numpy, no ROS. The sim node declares :class:`FaultConfig` as its ``fault.*`` parameters, asks
:class:`ScheduledFault` whether each reading (by its sample stamp) or command (by the sim time it
arrives) falls in the window ``[start, start + duration)``, and lets it corrupt the reading:

- ``dropout``: no reading is delivered;
- ``nan_reading`` / ``inf_reading``: joint ``joint``'s position reads NaN / +-inf;
- ``wrong_length``: the reading misses its last position;
- ``spike``: joint ``joint``'s position jumps by +-``spike_magnitude`` (random sign);
- ``command_loss``: commands never reach the robot (the topic is lost); its command watchdog
  applies zero effort.

Unlike the sensor's per-sample fault probabilities, every reading in the window is hit, and the
fault clears at the window's end, so a test sees the stack go safe and come back. (Not ``nan`` and
``inf``: ROS parameter files and ``-p`` would read those as floats.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mbrl_control.core.util import setting

KINDS = ("none", "dropout", "nan_reading", "inf_reading", "wrong_length", "spike", "command_loss")
READING_FAULTS = ("dropout", "nan_reading", "inf_reading", "wrong_length", "spike")


@dataclass(frozen=True)
class FaultConfig:
    kind: str = setting("none", "scheduled fault injected during [start, start + duration) of sim time", choices=KINDS)
    start: float = setting(0.0, "when the scheduled fault starts [s of sim time since the sim started]", 0.0, 1e7)
    duration: float = setting(0.0, "how long the scheduled fault lasts [s]; 0: no fault", 0.0, 1e7)
    joint: int = setting(1, "nan_reading, inf_reading, spike: the joint whose position goes bad (URDF order)", 0, 63)
    spike_magnitude: float = setting(1.0, "spike: size of the jump [m or rad]", 0.0, 100.0)
    seed: int = setting(0, "random seed of the spikes' signs", 0, 2**31 - 1)


class ScheduledFault:
    """The window and its effect; counts what it did for the sim's diagnostics."""

    def __init__(self, config: FaultConfig, joint_count: int) -> None:
        if config.kind not in KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(KINDS)}, got '{config.kind}'")
        if config.kind in ("nan_reading", "inf_reading", "spike") and not 0 <= config.joint < joint_count:
            raise ValueError(f"fault joint {config.joint} is not one of the robot's {joint_count} joints")
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        self.readings_faulted = 0  # readings corrupted or withheld
        self.commands_lost = 0
        self.started_at: float | None = None  # ROS time [s] of the first fault event (for monitors)
        self.ended_at: float | None = None  # ROS time [s] the window was first seen over
        self.active = False

    @property
    def enabled(self) -> bool:
        return self.config.kind != "none" and self.config.duration > 0

    @property
    def end(self) -> float:
        return self.config.start + self.config.duration

    def in_window(self, t: float) -> bool:
        return self.enabled and self.config.start <= t < self.end

    def update(self, sim_time: float, ros_time: float) -> None:
        """Track the window at the sim's current time (for diagnostics: when it began and ended)."""
        active = self.in_window(sim_time)
        if active and self.started_at is None:
            self.started_at = ros_time
        if not active and self.active:
            self.ended_at = ros_time
        self.active = active

    def corrupt(self, stamp: float, position: np.ndarray) -> np.ndarray | None:
        """The reading sampled at ``stamp`` as delivered: unchanged outside the window (or for a
        command fault), None when it is lost, else corrupted (a copy)."""
        kind = self.config.kind
        if kind not in READING_FAULTS or not self.in_window(stamp):
            return position
        self.readings_faulted += 1
        if kind == "dropout":
            return None
        out = np.array(position, dtype=np.float64)
        j = self.config.joint
        if kind == "nan_reading":
            out[j] = math.nan
        elif kind == "inf_reading":
            out[j] = math.inf * self.rng.choice((-1.0, 1.0))
        elif kind == "wrong_length":
            out = out[:-1]
        elif kind == "spike":
            out[j] += self.config.spike_magnitude * self.rng.choice((-1.0, 1.0))
        return out

    def loses_command(self, sim_time: float) -> bool:
        """Whether a command arriving at ``sim_time`` is lost (and counts it)."""
        lost = self.config.kind == "command_loss" and self.in_window(sim_time)
        self.commands_lost += int(lost)
        return lost

    def diagnostics(self) -> dict[str, object]:
        cfg = self.config
        return {
            "fault_kind": cfg.kind,
            "fault_window": f"[{cfg.start:.3f}, {self.end:.3f})" if self.enabled else "off",
            "fault_active": self.active,
            "fault_readings": self.readings_faulted,
            "fault_commands_lost": self.commands_lost,
            "fault_started_at": f"{self.started_at:.6f}" if self.started_at is not None else "",
            "fault_ended_at": f"{self.ended_at:.6f}" if self.ended_at is not None else "",
        }
