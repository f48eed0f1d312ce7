"""Builds models, tasks and planners from plain configuration dicts (the nodes' parameters,
a benchmark's settings, a test's), so every caller gets the same objects from the same values."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mbrl_control.core.dynamics import CartPoleDynamics, CartPoleParams, DynamicsModel
from mbrl_control.core.dynamics.ensemble import EnsembleConfig, EnsembleDynamics, PropagationConfig
from mbrl_control.core.dynamics.urdf import angular_joints
from mbrl_control.core.mbpo.config import MBPOConfig
from mbrl_control.core.mbpo.policy import Policy, ValueFunction, load_policy, load_value, policy_spec
from mbrl_control.core.planners import (
    CEMConfig,
    CEMPlanner,
    DPConfig,
    DPPlanner,
    ICEMConfig,
    ICEMPlanner,
    ILQRConfig,
    ILQRPlanner,
    LQRConfig,
    LQRFallback,
    LQRPlanner,
    MPPIConfig,
    MPPIPlanner,
    Planner,
    PolicyConfig,
    PolicyPlanner,
)
from mbrl_control.core.planners.dp import solve_value
from mbrl_control.core.planners.lqr import solve_lqr
from mbrl_control.core.planners.policy import resolve_policy
from mbrl_control.core.rollout import TrajectoryEvaluator
from mbrl_control.core.tasks import CartPoleCostWeights, CartPoleSwingUp, Task
from mbrl_control.core.tasks.critic_terminal import ValueFunctionTerminalCost, ValueTerminalConfig
from mbrl_control.core.tasks.lqr_terminal import LQRTerminalCost
from mbrl_control.core.tasks.value_terminal import ValueTerminalCost
from mbrl_control.core.util import dataclass_from, resolve_device, section

ROBOTS = ("cartpole",)
MODELS = ("analytic", "learned")
PLANNERS = ("cem", "icem", "mppi", "ilqr", "lqr", "nmpc", "dp", "policy")
SAMPLING_PLANNERS = ("cem", "icem", "mppi")
TERMINALS = ("task", "lqr", "dp", "value")

# planner name -> its config dataclass (NMPC's lives beside casadi, imported on demand)
PLANNER_CONFIGS: dict[str, type] = {
    "cem": CEMConfig, "icem": ICEMConfig, "mppi": MPPIConfig, "ilqr": ILQRConfig, "lqr": LQRConfig, "dp": DPConfig,
    "policy": PolicyConfig,
}


def planner_config_class(name: str) -> type:
    if name == "nmpc":
        from mbrl_control.core.planners.nmpc import NMPCConfig  # casadi only when asked for

        return NMPCConfig
    if name not in PLANNER_CONFIGS:
        raise ValueError(f"unknown planner '{name}'; known: {PLANNERS}")
    return PLANNER_CONFIGS[name]


def robot_params(robot: str, urdf: str | Path, gravity: float = 9.81) -> CartPoleParams:
    if robot != "cartpole":
        raise ValueError(f"unknown robot '{robot}'; known: {ROBOTS}")
    return CartPoleParams.from_urdf(urdf, gravity=gravity)


def build_model(params: CartPoleParams, dt: float, integrator: str = "rk4", substeps: int = 1) -> DynamicsModel:
    return CartPoleDynamics(params, dt, substeps=substeps, integrator=integrator)


def build_task(params: CartPoleParams, cost: dict[str, Any] | None = None, **success: float) -> Task:
    return CartPoleSwingUp(params, dataclass_from(CartPoleCostWeights, cost or {}), **success)


def with_terminal(task: Task, model: DynamicsModel, kind: str = "task", weight: float = 1.0,
                  dp_config: dict[str, Any] | None = None, value: ValueFunction | str | Path | None = None) -> Task:
    """``task`` with the terminal cost the sampling planners should price the horizon's end with:
    its own (``task``), the LQR cost-to-go about upright (``lqr``), the DP value (``dp``), or
    MBPO's critic (``value``: a ``ValueFunction`` or the path of one saved with ``save_value``)."""
    if kind == "task":
        return task
    if kind == "lqr":
        return LQRTerminalCost(task, solve_lqr(model, task).P, weight=weight)
    if kind == "dp":
        value, _ = solve_value(model, task, dataclass_from(DPConfig, dp_config or {}))
        return ValueTerminalCost(task, value, weight=weight)
    if kind == "value":
        if value is None or (not isinstance(value, ValueFunction) and not str(value)):
            raise ValueError("terminal 'value' needs MBPO's critic: a ValueFunction or its file's path (value.path)")
        critic = value if isinstance(value, ValueFunction) else load_value(value)
        return ValueFunctionTerminalCost(task, critic, weight=weight)
    raise ValueError(f"unknown terminal cost '{kind}'; known: {TERMINALS}")


def build_planner(
    name: str,
    model: DynamicsModel,
    task: Task,
    config: dict[str, Any] | None = None,
    compile: bool = True,
    policy: Policy | str | Path | None = None,
    device: str | None = None,
    threads: int = 1,
) -> Planner:
    """A planner by name with its config section (e.g. the ``cem.*`` parameters).

    ``policy`` (a ``Policy`` or the path of a policy file): the policy planner's policy (else
    ``policy.path`` from its config), or iCEM's warm start (optional); other planners ignore it.
    ``device``: where it plans (``cpu``, ``cuda``, ``auto``; None: where the model is); model
    and task move there. ``threads``: CPU threads of a sampling planner's rollouts.
    """
    settings = dataclass_from(planner_config_class(name), config or {})
    device = None if device is None else resolve_device(device)
    if name in SAMPLING_PLANNERS:
        evaluator = TrajectoryEvaluator(model, task, compile=compile, device=device, threads=threads)
        if name == "icem":
            return ICEMPlanner(evaluator, settings, policy=resolve_policy(policy), compile=compile)
        return {"cem": CEMPlanner, "mppi": MPPIPlanner}[name](evaluator, settings)
    if name == "policy":
        resolved = resolve_policy(policy, settings.path)
        if resolved is None:
            raise ValueError("planner 'policy' needs a policy: pass one, or set policy.path to a policy file")
        return PolicyPlanner(model, task, resolved, settings, compile=compile, device=device)
    if name == "ilqr":
        return ILQRPlanner(model, task, settings, compile=compile, device=device)
    if name == "lqr":
        return LQRPlanner(model, task, settings, device=device)
    if name == "dp":
        return DPPlanner(model, task, settings, compile=compile, device=device)
    from mbrl_control.core.planners.nmpc import NMPCPlanner

    return NMPCPlanner(model, task, settings)


def build_ensemble(p: dict[str, Any], urdf: str | Path, propagation: dict[str, Any] | None = None,
                   device: str | None = None) -> EnsembleDynamics:
    """The learned model's architecture from ``ensemble.*`` (shared by learner and controller,
    so the weights one sends fit the other); angles (revolute or continuous joints of
    ``state_joints``) are fed as (sin, cos). ``propagation``: how this user predicts with it.
    ``device``: where it lives (``cpu``, ``cuda``, ``auto``; None: cpu)."""
    joints = list(p["state_joints"])
    nq = len(joints)
    angles = tuple(i for i, angular in enumerate(angular_joints(urdf, joints)) if angular)
    config = dataclass_from(EnsembleConfig, section(p, "ensemble") | {
        "state_dim": 2 * nq, "action_dim": len(p["command_joints"]), "dt": 1.0 / p["control_rate"], "angle_dims": angles,
    })
    return EnsembleDynamics(config, dataclass_from(PropagationConfig, propagation or {}), device=resolve_device(device))


@dataclass
class MPCSetup:
    """What a controller plans with: the model, the task, the planner, the LQR fallback (None
    for a learned model: a fallback from the true model would hide what the learner has not learned)."""

    model: DynamicsModel
    task: Task
    planner: Planner
    fallback: LQRFallback | None
    policy_pending: bool = False  # planner:=policy learning from scratch: no trained policy yet


def build_mpc(p: dict[str, Any], urdf: str | Path, planner: str | None = None) -> MPCSetup:
    """The controller's planning stack from its flat parameters (``robot``, ``gravity``,
    ``control_rate``, ``model.*``, ``cost.*``, ``terminal``, ``terminal_weight``, ``<planner>.*``,
    ``lqr.*``, ``compile``, ``policy.*``, ``value.*``): the node and ``mbrl-control warmup`` build
    exactly the same thing. ``policy.path`` is the policy planner's policy and, if set, iCEM's
    warm start; ``value.path`` is the critic of ``terminal:=value``."""
    name = planner or p["planner"]
    params = robot_params(p["robot"], urdf, p.get("gravity", 9.81))
    task = build_task(params, section(p, "cost"))
    analytic = build_model(params, 1.0 / p["control_rate"], **section(p, "model"))
    if p.get("model", "analytic") == "learned":
        if name == "nmpc":
            raise ValueError("planner 'nmpc' plans on the analytic model's CasADi expressions: use model:=analytic")
        propagation = section(p, "propagation")
        if name not in SAMPLING_PLANNERS:  # gradient and DP planners need a deterministic model
            propagation["mode"] = "expectation"
        if p.get("terminal", "task") not in ("task", "value"):  # the critic needs no model
            raise ValueError("terminal lqr and dp are solved once at start, from a model: use them with model:=analytic")
        model: DynamicsModel = build_ensemble(p, urdf, propagation).freeze()
        fallback = None
    else:
        model = analytic
        # Near upright, LQR takes over a tick whose planner missed its deadline or failed.
        fallback = LQRFallback.from_model(model, task, dataclass_from(LQRConfig, section(p, "lqr")))
    value_path = dataclass_from(ValueTerminalConfig, section(p, "value")).path
    planning_task = with_terminal(task, model, p.get("terminal", "task"), p.get("terminal_weight", 1.0),
                                  section(p, "dp"), value=value_path)
    policy_path = section(p, "policy").get("path", "")
    policy = load_policy(policy_path) if policy_path and name in ("icem", "policy") else None
    pending = name == "policy" and policy is None and p.get("model", "analytic") == "learned"
    if pending:
        # MBPO from scratch: the learner's policies arrive later; allocate (and compile) their
        # architecture now, so each one is copied in place between ticks.
        hidden = tuple(p.get("mbpo.hidden", MBPOConfig().hidden))
        policy = Policy(policy_spec(task, hidden, model.config.angle_dims))
    return MPCSetup(
        model=model,
        task=task,
        planner=build_planner(name, model, planning_task, section(p, name), p.get("compile", True), policy=policy),
        fallback=fallback,
        policy_pending=pending,
    )
