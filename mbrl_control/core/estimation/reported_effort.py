"""Prediction from the effort a robot reports with each reading (ros2_control's effort state),
rather than from the commands as sent: a robot that takes a command late, or not at all (lost
commands, a watchdog's zero), still reports what it applied. A reported change took over
somewhere since the previous reading: when the robot reports exactly a command sent in that
interval, from when that command was sent; otherwise from the interval's midpoint (within half a
reading interval of when)."""

from __future__ import annotations

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
        """A command sent at ``at``: if a reading reports it, it took over then (not at the midpoint)."""
        self.sent.append((at, np.array(command, dtype=np.float64)))

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
        estimator.apply_command(effort, self._took_over(effort, since, stamp))

    def _took_over(self, effort: np.ndarray, since: float, stamp: float) -> float:
        # The newest command sent by this reading that is what the robot reports; one sent before
        # the previous reading that it did not report yet took over after that reading.
        for at, command in reversed(self.sent):
            if at <= stamp and np.array_equal(command, effort):
                return min(max(at, since), stamp) if at >= since - (stamp - since) else 0.5 * (since + stamp)
        return 0.5 * (since + stamp)
