"""The state-estimator interface a node drives: commands and stamped joint readings in, a Gaussian
state estimate and its health out."""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

# Why a reading was not fused. Every rejection is counted under exactly one of these.
REJECT_REASONS = (
    "invalid",  # not convertible to a float vector
    "wrong_length",  # not as many values as the measurement model expects
    "nonfinite",  # NaN or inf in a value or the stamp
    "out_of_order",  # stamp not newer than the last fused reading's (duplicates included)
    "too_old",  # older than the history kept for delay compensation
    "future",  # stamped further ahead of the estimate than clocks can disagree
    "gate",  # innovation outside the chi-square gate: an outlier
    "distrusted",  # inside the gate, but just after readings that jumped about (a faulty sensor)
)


@dataclass
class EstimatorStatus:
    """What a node reports (diagnostics) and what a controller needs to decide to trust the estimate."""

    initialized: bool
    stale: bool  # no recent reading, or the uncertainty grew past its limit: fall back to a safe command
    time: float  # time of the estimate [s]; nan before initialisation
    measurement_age: float  # since the stamp of the last fused reading [s]
    std: np.ndarray  # sqrt of the covariance's diagonal, state order
    accepted: int
    rejected: dict[str, int] = field(default_factory=dict)  # by REJECT_REASONS
    events: dict[str, int] = field(default_factory=dict)  # reinitialisations, bad commands, ...
    nis_mean: float = float("nan")  # over the last readings; a consistent filter averages nis_dof
    nis_dof: int = 0
    disturbance: np.ndarray | None = None  # the estimated effort disturbance per command entry, if estimated


class Estimator(abc.ABC):
    """A recursive state estimator over ``x = [joint positions, joint velocities]``.

    Time is explicit: the estimate refers to ``time``; ``predict`` moves it forward under the
    command the robot was given, ``update`` fuses a reading taken at ``stamp`` (which may lie in the
    past: the reading's sample time, not its arrival). The first valid reading initialises it.
    """

    state_dim: int
    action_dim: int

    @abc.abstractmethod
    def predict(self, u: np.ndarray, dt: float) -> None:
        """Advance the estimate by ``dt`` seconds with command ``u`` applied; ``u`` is then held."""

    @abc.abstractmethod
    def update(self, z: np.ndarray, stamp: float) -> bool:
        """Fuse reading ``z`` sampled at ``stamp``; False (and counted) if rejected."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget everything; the next valid reading initialises the estimate."""

    @abc.abstractmethod
    def status(self, now: float | None = None) -> EstimatorStatus:
        """Health at ``now`` (default: the estimate's own time)."""

    @property
    @abc.abstractmethod
    def mean(self) -> np.ndarray:
        """State estimate ``[nx]`` (a copy)."""

    @property
    @abc.abstractmethod
    def cov(self) -> np.ndarray:
        """Its covariance ``[nx, nx]`` (a copy)."""

    @property
    @abc.abstractmethod
    def time(self) -> float:
        """Time the estimate refers to [s]; nan before initialisation."""

    @property
    @abc.abstractmethod
    def command(self) -> np.ndarray:
        """The command held since the last ``predict``."""

    @property
    def initialized(self) -> bool:
        return not math.isnan(self.time)

    @abc.abstractmethod
    def predicted(self, t: float, commands: Sequence[tuple[float, np.ndarray]] = ()) -> tuple[np.ndarray, np.ndarray]:
        """The estimate predicted to ``t`` (mean, covariance) with the held command, then each of
        ``commands`` (``(time, u)`` in time order) from its time on, the estimate itself left where
        it is: what a node publishes between readings. Readings stamped before ``t`` then still
        fuse in order, without re-predicting an estimate already moved past them."""

    def predict_to(self, t: float) -> None:
        """Advance to time ``t`` with the held command (no-op if the estimate is already there)."""
        if self.initialized and t > self.time:
            self.predict(self.command, t - self.time)

    def apply_command(self, u: np.ndarray, t: float, timing_std: float = 0.0) -> None:
        """Command ``u`` is applied from time ``t`` on: advance to ``t`` with the old one, hold ``u``.
        ``timing_std``: how well ``t`` is known [s] (a filter that models it widens its covariance
        by the switch's effect; this one ignores it)."""
        self.predict_to(t)
        self.predict(u, 0.0)
