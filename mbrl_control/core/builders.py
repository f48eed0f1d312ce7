"""Builds models, tasks and planners from plain configuration dicts (the nodes' parameters,
a benchmark's settings, a test's), so every caller gets the same objects from the same values."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from mbrl_control.core.dynamics import CartPoleDynamics, CartPoleParams, DynamicsModel
from mbrl_control.core.planners import CEMConfig, CEMPlanner, Planner
from mbrl_control.core.rollout import TrajectoryEvaluator
from mbrl_control.core.tasks import CartPoleCostWeights, CartPoleSwingUp, Task

ROBOTS = ("cartpole",)
PLANNERS = ("cem",)


def _fill(cls: type, values: dict[str, Any]) -> Any:
    """A dataclass from the keys of ``values`` that it has (others belong to someone else)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def robot_params(robot: str, urdf: str | Path, gravity: float = 9.81) -> CartPoleParams:
    if robot != "cartpole":
        raise ValueError(f"unknown robot '{robot}'; known: {ROBOTS}")
    return CartPoleParams.from_urdf(urdf, gravity=gravity)


def build_model(params: CartPoleParams, dt: float, integrator: str = "rk4", substeps: int = 1) -> DynamicsModel:
    return CartPoleDynamics(params, dt, substeps=substeps, integrator=integrator)


def build_task(params: CartPoleParams, cost: dict[str, Any] | None = None, **success: float) -> Task:
    return CartPoleSwingUp(params, _fill(CartPoleCostWeights, cost or {}), **success)


def build_planner(
    name: str,
    model: DynamicsModel,
    task: Task,
    config: dict[str, Any] | None = None,
    compile: bool = True,
) -> Planner:
    """A planner by name with its config section (e.g. the ``cem.*`` parameters)."""
    config = config or {}
    evaluator = TrajectoryEvaluator(model, task, compile=compile)
    if name == "cem":
        return CEMPlanner(evaluator, _fill(CEMConfig, config))
    raise ValueError(f"unknown planner '{name}'; known: {PLANNERS}")
