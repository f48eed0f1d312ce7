"""Offset-free MPC: the model's observed one-step error, fed back into its predictions.

A model is wrong in a consistent way where it is wrong at all: an early learned model where its
data were thin (a cart-pole's model trained on random swinging has seen the pole upright for a few
hundred steps), a URDF model where the robot carries what its URDF does not know. Replanning every
tick corrects a fast error, not a steady one: balancing on a model whose cart acceleration is
biased, the plan holds the pole where the model thinks it balances and the real cart drifts into its
track limit; an arm planned on its URDF with 2 kg at the flange sags 2-3 cm below its goals.
Offset-free MPC (the integrating disturbance model of process control; Pannocchia and Rawlings
2003) estimates that bias from what the model predicted one tick ago and what the estimate shows
now, and feeds it into every prediction, so the plan accounts for it. Two disturbance models:

- ``ModelOffset``, on a learned ensemble's predicted state change: an exponential average of the
  one-step errors on the joint velocities (positions follow from them; their one-step errors are
  the estimate's noise), each component bounded by the model's own typical change (``delta_std``):
  an error larger than that is a broken estimate or a new regime, not an offset.
- ``EffortOffset``, an effort added to every command the model is given
  (``dynamics.effort_offset.EffortOffsetDynamics``): the one-step velocity error mapped to the
  effort that explains it through the model's own ``df/du`` (least squares), averaged the same way
  and bounded by the effort limits. For a model with the URDF's dynamics (``model:=analytic`` or
  ``residual``): a payload is a torque that depends on where the arm is, and the model's inverse
  inertia turns it into the velocity error; averaged as a state change it is the inverse inertia
  where it was seen, wrong elsewhere (the iiwa with 2 kg: 1 rad/s per step on the wrist, the goals
  missed by 2-4 cm); as an effort it is 10, -9 and 1 N m on joints 2, 4 and 6 and the arm ends
  2 mm from its goals (2026-12-07, README).

Both: ``observe`` each tick's state and its time, then ``command_sent`` with the command that went
(a tick without one leaves the next state unused: it is not one model step from a known command).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.core.dynamics.effort_offset import EffortOffsetDynamics
from mbrl_control.core.dynamics.ensemble import EnsembleDynamics
from mbrl_control.core.dynamics.residual import ResidualDynamics
from mbrl_control.core.rollout import compile_or_eager


class _OneStepOffset:
    """What both disturbance models share: the time constant, the pairing of a state with the
    command before it, the counts; ``_update`` folds one step's error into the offset."""

    def __init__(self, model: DynamicsModel, time_constant: float, device: torch.device) -> None:
        if time_constant <= 0:
            raise ValueError(f"time_constant must be > 0 s, got {time_constant}")
        self.model = model
        self.rate = 1.0 - math.exp(-model.dt / time_constant)  # per model step
        self.device = device
        self.previous: tuple[Tensor, Tensor, float] | None = None
        self.updates = 0
        self.skipped = 0  # states that were not one model step after the last command

    def _mean_step(self, x: Tensor, u: Tensor) -> Tensor:
        return getattr(self.model, "mean_step", self.model.step)(x, u)  # an ensemble's mean, not a draw

    def _error(self, x_prev: Tensor, u_prev: Tensor, x: Tensor) -> tuple[Tensor, object]:
        """The model's one-step error ``x - f(x_prev, u_prev)`` (the offset included), and what
        ``_update`` needs besides."""
        return x - self._mean_step(x_prev.unsqueeze(0), u_prev.unsqueeze(0))[0], None

    def _update(self, error: Tensor, context: object) -> None:
        raise NotImplementedError

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
        error, context = self._error(x_prev, u_prev, x.to(self.device, torch.float32))
        if not bool(torch.isfinite(error).all()):
            self.skipped += 1
            return self.offset
        self._update(error, context)
        self.updates += 1
        return self.offset

    def command_sent(self, x: Tensor, u: Tensor, t: float) -> None:
        """The command ``u [nu]`` left for the state ``x`` of time ``t``."""
        # Copies: the caller may reuse its tensors (and a compiled update would recompile for an alias).
        self.previous = (x.to(self.device, torch.float32, copy=True), u.to(self.device, torch.float32, copy=True), t)


class ModelOffset(_OneStepOffset):
    """The disturbance of ``ensemble`` (the learned part of ``model``, which plans; ``model`` may
    be the ensemble itself or the analytic model plus a residual ensemble), on its predicted
    state change."""

    def __init__(self, model: EnsembleDynamics | ResidualDynamics, ensemble: EnsembleDynamics, time_constant: float,
                 dims: list[int] | None = None) -> None:
        super().__init__(model, time_constant, ensemble.device)
        self.ensemble = ensemble
        nx = model.state_dim
        dims = list(range(nx // 2, nx)) if dims is None else dims  # the joint velocities
        self.mask = torch.zeros(nx, device=ensemble.device)
        self.mask[dims] = 1.0
        self.offset = torch.zeros(nx, device=ensemble.device)

    def reset(self) -> None:
        """Forget the offset (a new episode, a new model: its error is not the old one's)."""
        self.offset.zero_()
        self.ensemble.set_output_offset_(self.offset)
        self.previous = None

    def _update(self, error: Tensor, context: object) -> None:
        bound = self.ensemble.delta_std
        self.offset.add_(self.rate * self.mask * error).clamp_(-bound, bound)
        self.ensemble.set_output_offset_(self.offset)


class EffortOffset(_OneStepOffset):
    """The effort ``d`` that ``shifted`` (inside ``model``, which plans) adds to every command:
    each step, the least-squares effort that explains the joint velocities' one-step error through
    ``model``'s ``df/du`` at the last state and command, averaged; each component within
    ``[-limit, limit]`` (the effort limits: a motor cannot deliver more).

    The prediction and ``df/du`` (central differences in the command) are one batched step of
    ``2 nu + 1`` points, compiled with ``compile`` (the iiwa's update, one thread: 1.9 ms p50 eager
    through the model's full Jacobians, 0.24 ms so)."""

    def __init__(self, model: DynamicsModel, shifted: EffortOffsetDynamics, time_constant: float, limit: Tensor,
                 compile: bool = False) -> None:
        device = shifted.effort_offset.device
        super().__init__(model, time_constant, device)
        self.targets = [shifted]
        self.limit = limit.to(device, torch.float32)
        self.offset = torch.zeros(model.action_dim, device=device)
        self._error_and_input_jacobian = self._error_and_input_jacobian_eager
        if compile:  # torch.compile, not a traced graph: the offset and a residual's weights change in place
            example = (torch.zeros(model.state_dim, device=device), torch.zeros(model.action_dim, device=device),
                       torch.zeros(model.state_dim, device=device))
            with torch.no_grad():  # as observe calls it: grad mode is a guard, and a recompile in a tick stalls it
                self._error_and_input_jacobian = compile_or_eager(self._error_and_input_jacobian_eager, example,
                                                                  device=device, cpp_wrapper=True, cuda_graphs=False)

    def _error_and_input_jacobian_eager(self, x_prev: Tensor, u_prev: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """The one-step error and ``d velocity / d effort [nq, nu]`` at ``(x_prev, u_prev)``."""
        nu, nq = u_prev.shape[-1], self.model.state_dim // 2
        h = torch.finfo(u_prev.dtype).eps ** (1.0 / 3.0) * (1.0 + u_prev.abs())  # as RigidBodyDynamics.jacobians
        du = torch.diag(h)
        commands = torch.cat([u_prev.unsqueeze(0), u_prev + du, u_prev - du])  # [2 nu + 1, nu]
        out = self._mean_step(x_prev.expand(2 * nu + 1, -1), commands)
        b = ((out[1 : 1 + nu] - out[1 + nu :]) / (2.0 * h.unsqueeze(-1))).t()[nq:]
        return x - out[0], b

    def _error(self, x_prev: Tensor, u_prev: Tensor, x: Tensor) -> tuple[Tensor, object]:
        return self._error_and_input_jacobian(x_prev, u_prev, x)

    def carry_into(self, shifted: EffortOffsetDynamics) -> None:
        """Give another model the same offset from now on: every model that predicts this robot
        for the controller must (the realtime lookahead's: carrying the state forward without it,
        the plans started from where the arm would be without its payload; the iiwa with 2 kg
        reached 1 and 5 of 10 goals in realtime, 10 of 10 with the lookahead off)."""
        shifted.set_effort_offset_(self.offset)
        self.targets.append(shifted)

    def _publish(self) -> None:
        for shifted in self.targets:
            shifted.set_effort_offset_(self.offset)

    def reset(self) -> None:
        """Forget the offset (a new episode: the robot may carry something else)."""
        self.offset.zero_()
        self._publish()
        self.previous = None

    def _update(self, error: Tensor, context: object) -> None:
        b = context  # d velocity / d effort [nq, nu]
        nq = self.model.state_dim // 2
        effort = torch.linalg.lstsq(b.double().cpu(), error[nq:].double().cpu().unsqueeze(-1)).solution[:, 0]
        self.offset.add_(self.rate * effort.to(self.offset)).clamp_(-self.limit, self.limit)
        self._publish()
