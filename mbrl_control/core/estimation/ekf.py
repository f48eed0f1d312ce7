"""Extended Kalman filter: the model's one-step prediction, linearised by autograd."""

from __future__ import annotations

import numpy as np

from mbrl_control.core.estimation.kalman import KalmanFilter


class ExtendedKalmanFilter(KalmanFilter):
    """Predicts the mean with the model and the covariance with its Jacobian ``F``: ``F P F^T + Q``.

    One model evaluation (value and Jacobian in one autograd pass) per control period predicted.
    """

    def _propagate(self, mean: np.ndarray, cov: np.ndarray, u: np.ndarray, duration: float) -> tuple[np.ndarray, np.ndarray]:
        count, tau = self.process.substeps(duration)
        for _ in range(count):
            mean, cov = self.process.linearized_step(mean, cov, u, tau)
        return mean, cov
