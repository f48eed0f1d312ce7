"""Prediction from the effort a robot reports with each reading (ros2_control's effort state),
rather than from the commands as sent: a robot that takes a command late, or not at all (lost
commands, a watchdog's zero), still reports what it applied. A reported change took over
somewhere since the previous reading (when the robot reports exactly a command sent in that
interval, not before it was sent): it is applied from the middle of the interval in which it can
have taken over, with that interval's spread as the doubt of when (``timing_std``), which the
filter turns into velocity doubt. A robot takes a command at its next control cycle after it
arrives, milliseconds after it was sent on a busy host, and at an arm's 100 N m a switch a few
milliseconds off is many encoder sigmas: assuming it exact gated the readings that followed."""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from mbrl_control.core.estimation.base import Estimator

SENT_KEPT = 32  # commands remembered for timing: a few readings' worth at any control rate


class ReportedEffort:
    """Feeds an estimator the efforts its readings report, each from when it took over."""

    def __init__(self) -> None:
        self.last_stamp: float | None = None
        self.sent: deque[tuple[float, np.ndarray]] = deque(maxlen=SENT_KEPT)

    def reset(self) -> None:
        self.last_stamp = None
        self.sent.clear()

    def command_sent(self, command: np.ndarray, at: float) -> None:
        """A command sent at ``at``: a reading that reports it took it over no earlier."""
        self.sent.append((at, np.array(command, dtype=np.float64)))

    def sent_after(self, t: float) -> list[tuple[float, np.ndarray]]:
        """The commands sent after ``t`` (time order): what the robot is being told since its
        last reading, which its readings do not report yet."""
        return [(at, command) for at, command in self.sent if at > t]

    def apply(self, estimator: Estimator, effort: np.ndarray, stamp: float) -> None:
        """``effort`` (command joints' order) was acting at the reading stamped ``stamp``; call it
        before that reading's ``update``."""
        previous, self.last_stamp = self.last_stamp, stamp
        if not estimator.initialized:
            if np.any(effort):
                estimator.apply_command(effort, stamp)  # remembered until the first reading
            return
        if np.array_equal(effort, estimator.command):
            return
        since = previous if previous is not None and previous < stamp else stamp
        earliest = self._earliest(effort, since, stamp)
        estimator.apply_command(effort, 0.5 * (earliest + stamp), timing_std=(stamp - earliest) / math.sqrt(12.0))

    def _earliest(self, effort: np.ndarray, since: float, stamp: float) -> float:
        """When the reported effort can have taken over at the earliest: when the newest command
        equal to it was sent, if that was since the previous reading; else that reading."""
        for at, command in reversed(self.sent):
            if at <= stamp and np.array_equal(command, effort):
                return min(max(at, since), stamp)
        return since
