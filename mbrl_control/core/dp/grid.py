"""A regular grid over a box of the state space, multilinear interpolation on it, and a value
function stored on it (``GridValue``: a terminal cost and the DP planner's lookahead)."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from mbrl_control.core.angles import wrap


class StateGrid(torch.nn.Module):
    """``points[d]`` evenly spaced values per state dimension from ``low[d]`` to ``high[d]``.

    Grid points are numbered in C order (the last dimension fastest). Dimensions in ``periodic``
    are angles: states are wrapped to [-pi, pi) before they are looked up.
    """

    def __init__(
        self,
        low: Sequence[float],
        high: Sequence[float],
        points: Sequence[int],
        periodic: Sequence[int] = (),
    ) -> None:
        super().__init__()
        if not len(low) == len(high) == len(points):
            raise ValueError("low, high and points need one entry per state dimension")
        if any(n < 2 for n in points) or any(h <= lo for lo, h in zip(low, high)):
            raise ValueError("need at least 2 points and low < high in every dimension")
        if any(not 0 <= d < len(points) for d in periodic):
            raise ValueError(f"periodic dimensions {tuple(periodic)} out of range")
        self.dim = len(points)
        self.sizes = tuple(int(n) for n in points)
        strides = [1] * self.dim
        for d in range(self.dim - 2, -1, -1):
            strides[d] = strides[d + 1] * self.sizes[d + 1]
        self.size = strides[0] * self.sizes[0]
        low_t = torch.tensor(low, dtype=torch.float64)
        last = torch.tensor(self.sizes, dtype=torch.float64) - 1
        self.register_buffer("low", low_t)
        self.register_buffer("high", torch.tensor(high, dtype=torch.float64))
        self.register_buffer("spacing", (self.high - low_t) / last)
        self.register_buffer("last", last)  # the last point's index per dimension
        self.register_buffer("strides", torch.tensor(strides))
        # The 2**dim corners of a cell: which end of each axis (bit d of corner c), and the
        # index offset from the cell's lowest corner.
        corner_bits = (torch.arange(2**self.dim).unsqueeze(-1) >> torch.arange(self.dim - 1, -1, -1)) & 1
        self.register_buffer("corner_upper", corner_bits.bool())
        self.register_buffer("corner_offsets", (corner_bits * self.strides).sum(-1))
        self.register_buffer("periodic", torch.zeros(self.dim, dtype=torch.bool))
        self.periodic[list(periodic)] = True

    def points(self) -> Tensor:
        """All grid points ``[size, dim]`` in index order."""
        axes = [lo + h * torch.arange(n, dtype=lo.dtype) for lo, h, n in zip(self.low, self.spacing, self.sizes)]
        return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(self.size, self.dim)

    def locate(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Multilinear interpolation stencils of ``x[..., dim]``.

        Returns the ``2**dim`` corner indices ``[..., 2**dim]`` (int64), their weights (same
        shape, summing to 1) and whether each state lies in the closed box ``[...]``. States
        outside get the stencil of the nearest cell, clamped; NaN counts as outside.
        """
        x = self._wrap(x)
        inside = self._inside(x)
        u = torch.nan_to_num((x - self.low) / self.spacing, nan=-1.0)  # position in grid steps
        cell = torch.minimum(u.floor().clamp(min=0), self.last - 1)
        frac = (u - cell).clamp(0.0, 1.0)
        index = (cell.long() * self.strides).sum(-1, keepdim=True) + self.corner_offsets
        frac = frac.unsqueeze(-2)  # [..., 1, dim] against the corners' [2**dim, dim]
        weight = torch.where(self.corner_upper, frac, 1.0 - frac).prod(-1)
        return index, weight, inside

    def inside(self, x: Tensor) -> Tensor:
        """Whether each state of ``x[..., dim]`` lies in the grid's box."""
        return self._inside(self._wrap(x))

    def _wrap(self, x: Tensor) -> Tensor:
        # Only angles off [-pi, pi): wrapping rounds, which could move a boundary point outside.
        return torch.where(self.periodic & ((x < -math.pi) | (x >= math.pi)), wrap(x), x)

    def _inside(self, x: Tensor) -> Tensor:
        # Against the bounds themselves, not the position in grid steps: a point on the boundary
        # stays inside after rounding to float32. NaN compares false: outside.
        return ((x >= self.low) & (x <= self.high)).all(-1)


class GridValue(torch.nn.Module):
    """``V(x)``: values at the grid points, interpolated multilinearly; ``exit_value`` outside.

    ``exit_value`` is the cost-to-go the DP charged for leaving the grid, so by default the value
    outside the box is the one the solve itself assumed; ``outside`` overrides it per state.
    Works in the dtype of ``values`` (float32 for planners), batched over any leading shape and
    free of data-dependent control flow, so it compiles into a planner's rollout.
    """

    def __init__(self, grid: StateGrid, values: Tensor, exit_value: float) -> None:
        super().__init__()
        if values.shape != (grid.size,):
            raise ValueError(f"values must be [{grid.size}], got {tuple(values.shape)}")
        self.grid = copy.deepcopy(grid).to(values.dtype)  # Module.to works in place
        self.exit_value = float(exit_value)
        self.register_buffer("values", values.clone())

    def forward(self, x: Tensor, outside: Tensor | float | None = None) -> Tensor:
        """``V`` at ``x[..., dim] -> [...]``, in ``x``'s dtype; ``outside[...]`` off the grid."""
        index, weight, inside = self.grid.locate(x.to(self.values.dtype))
        value = (self.values[index] * weight).sum(-1).to(x.dtype)
        return torch.where(inside, value, self.exit_value if outside is None else outside)
