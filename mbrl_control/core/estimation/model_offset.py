"""Offset-free MPC on a learned model: its observed one-step error, fed back into its predictions.

An early learned model is wrong in a consistent way where its data were thin (a cart-pole's model
trained on random swinging has seen the pole upright for a few hundred steps). Replanning every tick
corrects a fast error, not a steady one: balancing on a model whose cart acceleration is biased, the
plan holds the pole where the model thinks it balances and the real cart drifts into its track
limit. Offset-free MPC (the integrating disturbance model of process control; Pannocchia and
Rawlings 2003) estimates that bias from what the model predicted one tick ago and what the estimate
shows now, and adds it to every predicted change, so the plan accounts for it.

Here the disturbance is an exponential average of the one-step errors on the joint velocities
(positions follow from them; their one-step errors are the estimate's noise), with a time constant
in seconds, each component bounded by the model's own typical change (``delta_std``): an error
larger than that is a broken estimate or a new regime, not an offset.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mbrl_control.core.dynamics.ensemble import EnsembleDynamics
from mbrl_control.core.dynamics.residual import ResidualDynamics


class ModelOffset:
    """The disturbance of ``ensemble`` (the learned part of ``model``, which plans; ``model`` may
    be the ensemble itself or the analytic model plus a residual ensemble): call ``observe`` with
    each tick's state and its time, then ``command_sent`` with the command that went (a tick
    without one leaves the next state unused: it is not one model step from a known command)."""

    def __init__(self, model: EnsembleDynamics | ResidualDynamics, ensemble: EnsembleDynamics, time_constant: float,
                 dims: list[int] | None = None) -> None:
        if time_constant <= 0:
            raise ValueError(f"time_constant must be > 0 s, got {time_constant}")
        self.model, self.ensemble = model, ensemble
        self.rate = 1.0 - math.exp(-model.dt / time_constant)  # per model step
        nx = model.state_dim
        dims = list(range(nx // 2, nx)) if dims is None else dims  # the joint velocities
        self.mask = torch.zeros(nx, device=ensemble.device)
        self.mask[dims] = 1.0
        self.offset = torch.zeros(nx, device=ensemble.device)
        self.previous: tuple[Tensor, Tensor, float] | None = None
        self.updates = 0
        self.skipped = 0  # states that were not one model step after the last command

    def reset(self) -> None:
        """Forget the offset (a new episode, a new model: its error is not the old one's)."""
        self.offset.zero_()
        self.ensemble.set_output_offset_(self.offset)
        self.previous = None

    @torch.no_grad()
    def observe(self, x: Tensor, t: float) -> Tensor:
        """The state ``x [nx]`` at time ``t`` [s]: update the offset from the model's prediction
        of it, if the last state and command were one model step before; the offset in use."""
        previous, self.previous = self.previous, None
        if previous is None:
            return self.offset
        x_prev, u_prev, t_prev = previous
        if abs((t - t_prev) - self.model.dt) > 0.5 * self.model.dt:  # a missed tick: not one step
            self.skipped += 1
            return self.offset
        x = x.to(self.offset.device, torch.float32)
        error = x - self.model.mean_step(x_prev.unsqueeze(0), u_prev.unsqueeze(0))[0]  # the offset included
        if not bool(torch.isfinite(error).all()):
            self.skipped += 1
            return self.offset
        bound = self.ensemble.delta_std
        self.offset.add_(self.rate * self.mask * error).clamp_(-bound, bound)
        self.ensemble.set_output_offset_(self.offset)
        self.updates += 1
        return self.offset

    def command_sent(self, x: Tensor, u: Tensor, t: float) -> None:
        """The command ``u [nu]`` left for the state ``x`` of time ``t``."""
        self.previous = (x.to(self.offset.device, torch.float32), u.to(self.offset.device, torch.float32), t)
