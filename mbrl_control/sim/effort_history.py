"""What effort the sim's joints were under at a given sample time, for readings that go out late.

An encoder reading is delivered a latency after it was sampled; the effort it reports (as
ros2_control's joint_state_broadcaster reports the effort interface) must be the one that acted
during the physics step that ended at its sample time, not the one applied when it is published.
"""

from __future__ import annotations

from collections import deque

import numpy as np


class EffortHistory:
    """Efforts by the physics time they started acting, kept for ``horizon_ns``."""

    def __init__(self, horizon_ns: int) -> None:
        self.horizon_ns = horizon_ns
        self._starts: deque[tuple[int, np.ndarray]] = deque()

    def reset(self, t_ns: int, effort: np.ndarray) -> None:
        self._starts = deque([(t_ns, effort.copy())])

    def record(self, t_ns: int, effort: np.ndarray) -> None:
        """``effort`` acts from ``t_ns`` on (the start of the next physics step)."""
        if self._starts and np.array_equal(self._starts[-1][1], effort):
            return
        self._starts.append((t_ns, effort.copy()))
        while len(self._starts) > 1 and self._starts[1][0] <= t_ns - self.horizon_ns:
            self._starts.popleft()

    def during_step_ending(self, t_ns: int) -> np.ndarray:
        """The effort that acted in the physics step that ended at ``t_ns`` (started before it)."""
        for start, effort in reversed(self._starts):
            if start < t_ns:
                return effort
        return self._starts[0][1]
