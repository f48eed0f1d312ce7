"""A model whose every command carries a steady extra effort: ``f(x, u + d)``.

Offset-free MPC needs a disturbance model, and for a robot driven by efforts the natural one is an
effort the model does not know: a payload's weight, friction, a motor's bias, as the torque that
would explain it (core/estimation/model_offset.py's ``EffortOffset`` estimates ``d``). An offset on
the predicted state change instead, the other choice, is wrong for a rigid body whose inertia is
wrong: it is the model's own inverse inertia times the missing torque, at the configuration where
it was seen, so it does not follow the arm as it moves (measured: the iiwa with 2 kg at the flange,
planned on its URDF, ended 2-3 cm off its goals; with a state-change offset 2-4 cm, 1 rad/s per
step on the wrist; with this effort offset 2 mm; bench notes in README).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.core.util import module_device


class EffortOffsetDynamics(DynamicsModel):
    """``model`` with ``effort_offset [nu]`` added to every action it is given (zero: ``model``
    exactly). The offset is a buffer, not saved or sent with a model: set it in place
    (``set_effort_offset_``) and a compiled planner reads the new value on its next call."""

    def __init__(self, model: DynamicsModel) -> None:
        super().__init__()
        self.model = model
        self.state_dim, self.action_dim, self.dt = model.state_dim, model.action_dim, model.dt
        self.compile_rollout = model.compile_rollout
        self.register_buffer("effort_offset", torch.zeros(model.action_dim, device=module_device(model)),
                             persistent=False)

    def step(self, x: Tensor, u: Tensor) -> Tensor:
        return self.model.step(x, u + self.effort_offset)

    def rollout(self, x0: Tensor, actions: Tensor) -> Tensor:
        return self.model.rollout(x0, actions + self.effort_offset)

    def jacobians(self, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.jacobians(x, u + self.effort_offset)

    def hold_action(self, x: Tensor) -> Tensor | None:
        hold = self.model.hold_action(x)
        return None if hold is None else hold - self.effort_offset

    @torch.no_grad()
    def set_effort_offset_(self, offset: Tensor) -> None:
        self.effort_offset.copy_(offset)
