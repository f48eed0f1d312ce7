"""Angles: the one place that wraps them.

Which state entries are angles is the robot's business (``RobotSpec.angle_dims``: the positions of
continuous joints, which wind without limit); everything that wraps asks it and calls these.
Revolute joints with limits never reach +-pi and are left as they are.
"""

from __future__ import annotations

import math
from typing import Sequence, TypeVar

import numpy as np
import torch
from torch import Tensor

ArrayT = TypeVar("ArrayT", Tensor, np.ndarray)


def wrap(a: ArrayT) -> ArrayT:
    """Angles wrapped to [-pi, pi), for torch tensors and numpy arrays alike."""
    if isinstance(a, Tensor):
        return torch.remainder(a + math.pi, 2 * math.pi) - math.pi
    return np.remainder(np.asarray(a) + math.pi, 2 * math.pi) - math.pi


def wrap_dims(x: ArrayT, dims: Sequence[int]) -> ArrayT:
    """``x[..., d]`` wrapped for every ``d`` in ``dims``, the rest unchanged (a copy)."""
    dims = list(dims)
    if isinstance(x, Tensor):
        if not dims:
            return x
        mask = torch.zeros(x.shape[-1], dtype=torch.bool, device=x.device)
        mask[dims] = True
        return torch.where(mask, wrap(x), x)
    out = np.array(x, dtype=np.float64)
    if dims:
        out[..., dims] = wrap(out[..., dims])
    return out


def angle_mask(size: int, dims: Sequence[int], device: torch.device | str | None = None) -> Tensor:
    """A boolean mask ``[size]`` of the angle entries (kept as a buffer by hot-path users, so a
    compiled graph wraps with one ``torch.where`` and no index tensors)."""
    mask = torch.zeros(size, dtype=torch.bool, device=device)
    mask[list(dims)] = True
    return mask


def wrap_masked(x: Tensor, mask: Tensor) -> Tensor:
    """``x`` with the entries ``mask`` marks wrapped (``mask`` from ``angle_mask``)."""
    return torch.where(mask, wrap(x), x)
