"""Colored (power-law) Gaussian noise along time for sampling planners, in preallocated buffers.

Noise with power spectral density ``~ 1/f^beta`` along the horizon (Pinneri et al. 2020, iCEM):
``beta = 0`` is white noise, ``beta = 2`` is Brownian-like, smooth noise. Smooth action sequences
explore further with the same per-step spread and carry less chatter into the plan.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class ColoredNoise:
    """Fills ``out[T, nu, P]`` with unit-variance noise correlated along T (dimension 0).

    Each sequence is the inverse real FFT of complex Gaussian coefficients scaled by
    ``f^(-beta/2)`` (frequencies below ``1/T`` clipped to ``1/T``), divided by the exact standard
    deviation that scaling yields, so every time step has variance 1 whatever ``beta``.

    The noise is made on the CPU from ``generator`` (a CPU generator: a seed gives the same
    samples on every device) and, for another ``device``, copied there into a buffer of its own
    (one small copy per sample, queued without waiting).
    """

    def __init__(self, horizon: int, action_dim: int, population: int, beta: float, generator: torch.Generator,
                 device: torch.device | str | None = None) -> None:
        if beta < 0:
            raise ValueError("need a noise exponent beta >= 0")
        self.beta = float(beta)
        self.generator = generator
        device = torch.device("cpu" if device is None else device)
        self._on_device = torch.empty(horizon, action_dim, population, device=device) if device.type != "cpu" else None
        with torch.device("cpu"):
            self.out = torch.empty(horizon, action_dim, population)
            if self.beta == 0.0:
                return
            T, F = horizon, horizon // 2 + 1
            freqs = torch.fft.rfftfreq(T, dtype=torch.float64).clamp_min(1.0 / T)
            amplitude = freqs.pow(-0.5 * self.beta)
            # The DC term (and the Nyquist term for even T) is real; every other frequency also has
            # its mirror image in the real signal, which doubles its amplitude and so quadruples its variance.
            real_only = torch.zeros(F, dtype=torch.bool)
            real_only[0] = True
            if T % 2 == 0:
                real_only[-1] = True
            variance = torch.where(real_only, amplitude**2, 4.0 * amplitude**2).sum() / T**2
            scale = amplitude / math.sqrt(variance.item())
            self._real_scale = scale.float().view(F, 1, 1)
            self._imag_scale = torch.where(real_only, 0.0, scale).float().view(F, 1, 1)
            self._real = torch.empty(F, action_dim, population)
            self._imag = torch.empty(F, action_dim, population)
            self._spectrum = torch.empty(F, action_dim, population, dtype=torch.complex64)

    def sample(self) -> Tensor:
        """New noise (on the device), in a buffer that the next call reuses."""
        self._sample_host()
        if self._on_device is None:
            return self.out
        return self._on_device.copy_(self.out, non_blocking=True)

    def _sample_host(self) -> Tensor:
        # normal_ in place: torch.randn's numbers (it is empty + normal_), whatever the default device
        if self.beta == 0.0:
            return self.out.normal_(generator=self.generator)
        self._real.normal_(generator=self.generator)
        self._imag.normal_(generator=self.generator)
        self._real.mul_(self._real_scale)
        self._imag.mul_(self._imag_scale)
        torch.complex(self._real, self._imag, out=self._spectrum)
        return torch.fft.irfft(self._spectrum, n=self.out.shape[0], dim=0, out=self.out)
