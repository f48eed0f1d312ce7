"""The state a command computed now will act on: an estimate stamped in the past, carried forward
over the controller's own latency.

In a realtime loop the estimate a controller plans from is already tens of milliseconds old when
its command reaches the motors (the estimator's period, transport, the plan itself): an arm moving
at 3 rad/s is 0.1 rad further on by then, and a high-gain plan from where it was makes the loop
oscillate (iLQR-MPC on the iiwa, exact states, the sim's plant: 3/3 goals at 10 ms of delay, 0/3
to 0/4 at 20-25 ms; carried forward, 3/3 at both). The lookahead predicts the estimate from its
stamp to when the command will act, under the commands the robot was given meanwhile (the
controller's own, as sent), stepping a model as the filter's process model does (a Smith
predictor's model half). Lockstep needs none: there the sim applies each command at the state's
own time.
"""

from __future__ import annotations

import bisect
import math
from collections import deque

import numpy as np

from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.core.estimation.process import ProcessModel

TIME_EPS = 1e-6


class StateLookahead:
    """``predict(x, stamp, t)``: ``x`` (the state at ``stamp``) at time ``t`` (at most ``max_span``
    after its stamp), under the commands sent before then (``command_sent``); the state as it is
    before any command was sent (the robot stands on its brakes, or is not ours yet)."""

    def __init__(self, model: DynamicsModel, max_span: float = math.inf, history: float = 1.0,
                 compile: bool = True) -> None:
        self.process = ProcessModel(model, [0.0] * (model.state_dim // 2), compile=compile)
        self.max_span = max_span  # carried at most this far: each model step is paid in the tick
        self.history = history
        self._times: deque[float] = deque()
        self._commands: deque[np.ndarray] = deque()

    def reset(self) -> None:
        self._times.clear()
        self._commands.clear()

    def warm_up(self, x: np.ndarray, u: np.ndarray) -> None:
        """Compile the model evaluations now, not in the first tick that needs them."""
        self.command_sent(u, 0.0)
        self.predict(np.asarray(x, dtype=np.float64), 0.0, 0.5 * self.process.dt)
        self.reset()

    def command_sent(self, u: np.ndarray, t: float) -> None:
        """Command ``u`` acts from ``t`` (sent in time order)."""
        if self._times and t < self._times[-1]:
            self.reset()  # a clock that went back (a new run, a sim reset): start the record over
        self._times.append(float(t))
        self._commands.append(np.array(u, dtype=np.float64))
        while len(self._times) > 1 and self._times[1] <= t - self.history:
            self._times.popleft()
            self._commands.popleft()

    def predict(self, x: np.ndarray, stamp: float, t: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        t = min(t, stamp + self.max_span)
        if t <= stamp + TIME_EPS or not self._times or self._times[0] > stamp:
            return x  # nothing to carry it over, or no record of what acted at the stamp
        times = list(self._times)
        k = bisect.bisect_right(times, stamp) - 1  # the command acting at the stamp
        at = stamp
        while at < t - TIME_EPS:
            until = min(times[k + 1], t) if k + 1 < len(times) else t
            if until > at + TIME_EPS:
                x = self.process.advance(x, self._commands[k], until - at)
            at, k = until, k + 1
        return x
