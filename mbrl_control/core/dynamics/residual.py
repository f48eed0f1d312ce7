"""The analytic model plus a learned ensemble of what it gets wrong: ``f(x, u) = f_urdf(x, u) + r(x, u)``.

The common real case is a URDF that is almost right: a tool or payload it does not know, friction it
leaves out. Learning the whole dynamics from scratch throws the URDF away; learning only the
residual ``r = x_next - f_urdf(x, u)`` keeps it, needs far less data (the residual is small and
smooth), and with no data at all is exactly the URDF model.

The residual is an ``EnsembleDynamics`` whose ``config.target`` is ``residual``: trained by the same
trainer on transitions whose next state is rewritten to ``x + r``
(``learning.transitions.residual_transitions``), so its
"state change" is the residual; sent, validated and hot-swapped like any learned model. Its mean
output layer starts at zero, so an untrained residual adds nothing.

Propagation follows the ensemble's (TS1, TS-infinity, expectation): a particle's residual comes from
the member its slot draws, with the same draws a planner hands the plain ensemble.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.core.dynamics.ensemble import EnsembleConfig, EnsembleDynamics


class ResidualDynamics(DynamicsModel):
    """``analytic.step(x, u)`` plus the ensemble ``residual``'s predicted correction, over batches."""

    def __init__(self, analytic: DynamicsModel, residual: EnsembleDynamics) -> None:
        super().__init__()
        if residual.config.target != "residual":
            raise ValueError("the residual ensemble must be built with target 'residual'")
        if (residual.state_dim, residual.action_dim) != (analytic.state_dim, analytic.action_dim):
            raise ValueError(f"residual sizes {(residual.state_dim, residual.action_dim)} differ from the analytic "
                             f"model's {(analytic.state_dim, analytic.action_dim)}")
        if abs(residual.dt - analytic.dt) > 1e-9:
            raise ValueError(f"residual dt {residual.dt} differs from the analytic model's {analytic.dt}")
        self.analytic = analytic
        self.residual = residual
        self.state_dim, self.action_dim, self.dt = analytic.state_dim, analytic.action_dim, analytic.dt
        self.compile_rollout = analytic.compile_rollout

    @property
    def config(self) -> EnsembleConfig:
        return self.residual.config

    def hold_action(self, x: Tensor) -> Tensor | None:
        return self.analytic.hold_action(x)

    def particles(self, batch: int) -> int:
        return self.residual.particles(batch)

    def draw(self, batch: int, steps: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.residual.draw(batch, steps)

    def step(self, x: Tensor, u: Tensor) -> Tensor:
        return self.rollout(x, u.unsqueeze(1))[:, 1]

    def mean_step(self, x: Tensor, u: Tensor) -> Tensor:
        """Deterministic: the analytic step plus the members' mean residual."""
        return self.analytic.step(x, u) + self.residual.predict(x, u)[0].mean(0)

    def jacobians(self, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """The analytic model's Jacobians (its own method: central differences for a rigid body)
        plus the mean residual's by autograd."""
        a, b = self.analytic.jacobians(x, u)

        def mean_residual(xi: Tensor, ui: Tensor) -> Tensor:
            return self.residual.predict(xi.unsqueeze(0), ui.unsqueeze(0))[0].mean(0).squeeze(0)

        ra, rb = torch.func.vmap(torch.func.jacrev(mean_residual, argnums=(0, 1)))(x, u)
        return a + ra, b + rb

    def rollout(self, x0: Tensor, actions: Tensor, draws: tuple[Tensor, Tensor, Tensor] | None = None) -> Tensor:
        """States ``[B, T+1, nx]``; ``draws`` from ``draw(B, T)``, else drawn here."""
        B, T = actions.shape[0], actions.shape[1]
        x = x0.expand(B, -1)
        n = self.residual.particles(B)
        if n > B:  # TS1 / TS-infinity: every member gets an equal group of slots
            x = torch.cat([x, x[:1].expand(n - B, -1)])
            actions = torch.cat([actions, actions[:1].expand(n - B, -1, -1)])
        to_slot, from_slot, noises = self.residual.draw(B, T) if draws is None else draws
        mode = self.residual.propagation.mode
        E, nx, nu = self.residual.config.members, self.state_dim, self.action_dim
        states = [x]
        for t in range(T):
            u = actions[:, t]
            if mode == "expectation":
                xs, us = x.unsqueeze(0).expand(E, n, nx), u.unsqueeze(0).expand(E, n, nu)
                correction = self.residual.grouped_delta(xs, us, noises[t]).mean(0)
            else:  # the particles in slot order, moved by their slot group's member, back in particle order
                k = t if mode == "ts1" else 0
                xs, us = x.index_select(0, from_slot[k]), u.index_select(0, from_slot[k])
                grouped = self.residual.grouped_delta(xs.view(E, n // E, nx), us.view(E, n // E, nu), noises[t])
                correction = grouped.reshape(n, nx).index_select(0, to_slot[k])
            x = self.analytic.step(x, u) + correction
            states.append(x)
        out = torch.stack(states, dim=1)
        return out[:B] if n > B else out

