"""Prediction from the effort a robot reports with each reading (ros2_control's effort state),
rather than from the commands as sent: a robot that takes a command late still reports when it
acted. The change happened somewhere since the previous reading; the midpoint is within half a
reading interval of when."""

from __future__ import annotations

import numpy as np

from mbrl_control.core.estimation.base import Estimator


class ReportedEffort:
    """Feeds an estimator the efforts its readings report, each from when it took over."""

    def __init__(self) -> None:
        self.last_stamp: float | None = None

    def reset(self) -> None:
        self.last_stamp = None

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
        estimator.apply_command(effort, 0.5 * (since + stamp))
