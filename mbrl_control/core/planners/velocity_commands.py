"""Joint velocity commands over an effort-controlled robot: the action space sampling planners
search on an arm.

A sampled sequence of torques mostly fights gravity and itself: on the iiwa CEM, iCEM and MPPI
reached 0 of 10 goals sampling efforts (bench/arm.py, 2026-12-05), their plans' cost falling while
the hand stayed put. A sampled sequence of joint speeds moves the arm somewhere, and the planner
only has to choose where. So the sampling planners plan joint velocity commands, and an inner
velocity loop in the model turns each into the effort that would track it, by the URDF's inverse
dynamics (computed torque: ``qdd = gain (v_cmd - qd)``, efforts clamped to the robot's bounds).
What leaves a tick is still an effort (the robot's command interface does not change): the plan's
commands converted along the states it predicts. The planner, the task's costs (efforts priced as
efforts) and the learned parts know nothing of it.

This is the velocity interface a ros2_control robot offers on top of its effort interface, moved
inside the model so planning sees it. It needs every state joint commanded (an underactuated
robot has no inverse dynamics for its passive joints) and a deterministic model (the learned
ensemble's particles are drawn inside its fused rollout)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.core.dynamics.rigid_body import RigidBodyDynamics
from mbrl_control.core.planners.base import Plan, Planner
from mbrl_control.core.tasks.base import Task
from mbrl_control.core.util import setting

SAMPLING_ACTIONS = ("effort", "velocity")


@dataclass(frozen=True)
class VelocityCommandConfig:
    gain: float = setting(10.0, "[1/s] bandwidth of the inner velocity loop (qdd = gain (v_cmd - qd)); stable below "
                                "2 / control period", 0.1, 1000.0)
    limit: tuple[float, ...] = setting((1.5,), "[rad/s, m/s] commanded joint speeds within +-this (one for every "
                                               "joint, or one per state joint)", 1e-3, 100.0)


def velocity_command_problem(config: VelocityCommandConfig, joints: int, dt: float) -> str | None:
    """Why ``config`` cannot command ``joints`` joints at control period ``dt``, or None."""
    if len(config.limit) not in (1, joints):
        return f"velocity_command.limit needs 1 or {joints} values, got {len(config.limit)}"
    if config.gain * dt >= 2.0:
        return (f"velocity_command.gain {config.gain:g} /s is unstable at a {dt * 1e3:g} ms control period "
                f"(needs gain < {2.0 / dt:g})")
    return None


class ComputedTorque(torch.nn.Module):
    """``efforts(x, qdd)``: the command joints' efforts, held for one control period from states
    ``x``, that accelerate the joints at ``qdd`` (any leading dimensions), by ``kinematics``'
    inverse dynamics, clamped to the effort bounds. Every state joint must be commanded.

    The joints' damping is paid at the velocity the period should end at, ``qd + dt qdd``, not at
    ``qd``: a wrist joint's damper (0.5 N m s on ~0.001 kg m^2 on the iiwa) settles it within
    milliseconds, so under an effort held for 20 ms its speed ends near effort / damping, and an
    effort that paid the damping at the old speed only left the wrist at a tenth of the speed asked."""

    def __init__(self, kinematics: RigidBodyDynamics, command_index: Sequence[int], effort_low: Tensor,
                 effort_high: Tensor) -> None:
        super().__init__()
        if list(command_index) != list(range(kinematics.n_joints)):
            raise ValueError(f"computed torque needs every state joint commanded, in order ({kinematics.n_joints} "
                             f"state joints, commanded {list(command_index)}; an underactuated robot samples efforts)")
        self.kinematics, self.nq, self.dt = kinematics, kinematics.n_joints, float(kinematics.dt)
        self.register_buffer("effort_low", effort_low.detach().float().clone())
        self.register_buffer("effort_high", effort_high.detach().float().clone())

    def efforts(self, x: Tensor, qdd: Tensor) -> Tensor:
        nq = self.nq
        q, qd, qdd_flat = x[..., :nq].reshape(-1, nq), x[..., nq:].reshape(-1, nq), qdd.reshape(-1, nq)
        effort = self.kinematics.inverse_dynamics(q, qd, qdd_flat, damped=qd + self.dt * qdd_flat)
        effort = torch.maximum(torch.minimum(effort, self.effort_high), self.effort_low)
        return effort.reshape(qdd.shape)


class VelocityCommands(torch.nn.Module):
    """``efforts(x, v)``: the efforts that make joint velocities ``qd`` track ``v`` (any leading
    dimensions): computed torque for ``qdd = gain (v - qd)``."""

    def __init__(self, torque: ComputedTorque, config: VelocityCommandConfig = VelocityCommandConfig()) -> None:
        super().__init__()
        nq = torque.nq
        problem = velocity_command_problem(config, nq, torque.dt)
        if problem:
            raise ValueError(problem)
        self.torque, self.config = torque, config
        limit = torch.as_tensor(config.limit, dtype=torch.float32).expand(nq).clone()
        self.register_buffer("low", -limit)
        self.register_buffer("high", limit)

    @property
    def effort_low(self) -> Tensor:
        return self.torque.effort_low

    def efforts(self, x: Tensor, v: Tensor) -> Tensor:
        qd = x[..., self.torque.nq:]
        return self.torque.efforts(x, self.config.gain * (v - qd))


class VelocityCommandModel(DynamicsModel):
    """``model`` driven by joint velocity commands: ``step(x, v) = model.step(x, efforts(x, v))``."""

    def __init__(self, model: DynamicsModel, commands: VelocityCommands) -> None:
        super().__init__()
        if hasattr(model, "draw"):
            raise ValueError("velocity commands need a deterministic model: a learned ensemble draws its particles "
                             "inside its own rollout (plan on model:=analytic, or sample efforts)")
        self.model, self.commands = model, commands
        self.state_dim, self.action_dim, self.dt = model.state_dim, model.action_dim, model.dt
        self.compile_rollout = model.compile_rollout

    def step(self, x: Tensor, u: Tensor) -> Tensor:
        return self.model.step(x, self.commands.efforts(x, u))

    def hold_action(self, x: Tensor) -> Tensor:
        return torch.zeros(x.shape[0], self.action_dim, dtype=x.dtype, device=x.device)  # standing still


class VelocityCommandTask(Task):
    """``task`` over velocity commands: its bounds are the commanded speeds', its costs see the
    efforts the commands become (an effort term still prices torque)."""

    def __init__(self, task: Task, commands: VelocityCommands) -> None:
        super().__init__()
        self.task, self.commands = task, commands
        self.state_dim, self.action_dim = task.state_dim, task.action_dim
        self.action_low, self.action_high = commands.low, commands.high

    def running_cost(self, x: Tensor, u: Tensor) -> Tensor:
        return self.task.running_cost(x, self.commands.efforts(x, u))

    def terminal_cost(self, x: Tensor) -> Tensor:
        return self.task.terminal_cost(x)

    def success(self, states: Any, times: Any) -> bool:
        return self.task.success(states, times)


class VelocityCommandPlanner(Planner):
    """``planner`` (planning velocity commands) whose plans leave as efforts: each command turned
    into the effort that tracks it from the state the plan predicts there. Everything else
    (budgets, settled, evaluator) is the wrapped planner's."""

    def __init__(self, planner: Planner, commands: VelocityCommands) -> None:
        self.planner, self.commands = planner, commands
        self.horizon = planner.horizon

    def reset(self) -> None:
        self.planner.reset()

    @torch.no_grad()
    def plan(self, x0: Tensor, deadline: float | None = None) -> Plan:
        plan = self.planner.plan(x0, deadline)
        commands = self.commands
        states = plan.states[:-1].to(commands.effort_low.device)
        efforts = commands.efforts(states, plan.actions.to(states.device)).cpu()
        plan.actions = efforts
        return plan

    def __getattr__(self, name: str) -> Any:
        if name == "planner":  # not yet set (during construction or unpickling)
            raise AttributeError(name)
        return getattr(self.planner, name)
