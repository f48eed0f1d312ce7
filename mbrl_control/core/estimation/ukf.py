"""Unscented Kalman filter: sigma points through the batched model, no Jacobians at all."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.core.estimation.kalman import EstimatorConfig, KalmanFilter


class UnscentedKalmanFilter(KalmanFilter):
    """Predicts with the scaled unscented transform (Julier / Wan-van der Merwe): ``2 nx + 1`` sigma
    points go through one batched model step, which is what a ``DynamicsModel`` (and a learned
    ensemble above all) evaluates best. The angle is kept unwrapped in the state, so sigma points
    never straddle +-pi and plain weighted means are correct.
    """

    def __init__(
        self,
        model: DynamicsModel,
        config: EstimatorConfig = EstimatorConfig(),
        angular_joints: Sequence[bool] | None = None,
        position_limits: Sequence[tuple[float, float]] | None = None,
        command_index: Sequence[int] | None = None,
    ) -> None:
        super().__init__(model, config, angular_joints, position_limits, command_index)
        if self.process.nd:
            raise ValueError("estimator config 'effort_disturbance_density': an effort disturbance is estimated by "
                             "the EKF only (kind: ekf)")
        n = self.state_dim
        alpha, beta, kappa = config.ukf_alpha, config.ukf_beta, config.ukf_kappa
        self._spread = alpha**2 * (n + kappa)  # n + lambda
        if self._spread <= 0:
            raise ValueError("UKF needs alpha^2 (n + kappa) > 0")
        lam = self._spread - n
        self._mean_weights = np.full(2 * n + 1, 0.5 / self._spread)
        self._mean_weights[0] = lam / self._spread
        self._cov_weights = self._mean_weights.copy()
        self._cov_weights[0] += 1.0 - alpha**2 + beta

    def _propagate(self, mean: np.ndarray, cov: np.ndarray, u: np.ndarray, duration: float) -> tuple[np.ndarray, np.ndarray]:
        process = self.process
        count, tau = process.substeps(duration)
        noise = process.noise(tau)
        weights = process.interpolation(tau)
        for _ in range(count):
            root = _sqrt_psd(self._spread * cov)
            points = np.concatenate([mean[None], mean + root.T, mean - root.T])
            moved = process.step_batch(points, u)
            if weights is not None:
                w0, w1 = weights
                moved = points @ w0.T + moved @ w1.T
            mean = self._mean_weights @ moved
            spread = moved - mean
            cov = (spread.T * self._cov_weights) @ spread + noise
        return mean, 0.5 * (cov + cov.T)


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    """``L`` with ``L L^T = a``: Cholesky, or an eigen-decomposition when rounding made ``a`` slightly
    indefinite (Cholesky would fail, and the filter must not)."""
    try:
        return np.linalg.cholesky(a)
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(0.5 * (a + a.T))
        return v * np.sqrt(np.clip(w, 0.0, None))
