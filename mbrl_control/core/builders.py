"""The one place that turns a robot's configuration into what the stack runs: its description
(``RobotSpec``), its analytic model, its task, and the planners, terminal costs and learned models
built on them. Inputs are plain dicts of flat parameters (a node's, a benchmark's, a test's:
``mbrl_control.config.node_parameters`` reads them from config/<robot>.yaml), so every caller gets
the same objects from the same values, and nothing here knows any robot by name.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mbrl_control.core.dynamics import CartPoleDynamics, CartPoleParams, DynamicsModel
from mbrl_control.core.dynamics.effort_offset import EffortOffsetDynamics
from mbrl_control.core.dynamics.ensemble import EnsembleConfig, EnsembleDynamics, PropagationConfig
from mbrl_control.core.dynamics.residual import ResidualDynamics
from mbrl_control.core.dynamics.rigid_body import RigidBodyDynamics
from mbrl_control.core.estimation import KalmanFilter, build_estimator
from mbrl_control.core.learning.reward_task import LearnedRewardTask
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
    PolicyPlanner,
    PolicyPlannerConfig,
)
from mbrl_control.core.planners.dp import solve_value
from mbrl_control.core.planners.ilqr_offline import ILQROfflineConfig, ILQROfflinePlanner
from mbrl_control.core.planners.lqr import Equilibrium, rest_action, solve_lqr
from mbrl_control.core.planners.policy import resolve_policy
from mbrl_control.core.planners.smoothing import SmoothedPlanner
from mbrl_control.core.planners.velocity_commands import (
    ComputedTorque,
    VelocityCommandConfig,
    VelocityCommandModel,
    VelocityCommandPlanner,
    VelocityCommands,
    VelocityCommandTask,
)
from mbrl_control.core.robot import RobotSpec, RobotSpecError, robot_spec
from mbrl_control.core.rollout import TrajectoryEvaluator
from mbrl_control.core.tasks.base import Task
from mbrl_control.core.tasks.critic_terminal import ValueFunctionTerminalCost, ValueTerminalConfig
from mbrl_control.core.tasks.lqr_terminal import LearnedLQRTerminal, LQRTerminalCost
from mbrl_control.core.tasks.residual import ResidualTask, build_residual_task
from mbrl_control.core.tasks.terms import LinkPosition
from mbrl_control.core.tasks.value_terminal import ValueTerminalCost
from mbrl_control.core.util import dataclass_from, resolve_device, section, setting

MODELS = ("analytic", "learned", "residual")
PLANNERS = ("cem", "icem", "mppi", "ilqr", "ilqr_offline", "lqr", "nmpc", "dp", "policy")
SAMPLING_PLANNERS = ("cem", "icem", "mppi")
TERMINALS = ("task", "lqr", "dp", "value")
# What the planner maximises: the task's known cost, or the learned model's reward head
REWARDS = ("task", "learned")
DYNAMICS = ("rigid_body", "cartpole")
INTEGRATORS = ("rk4", "euler", "euler_implicit_damping")
DP_MAX_STATES = 4  # a grid of k points per dimension has k^nx cells: 15^4 = 50 625 is ~1 s to solve

# planner name -> its config dataclass (NMPC's lives beside casadi, imported on demand)
PLANNER_CONFIGS: dict[str, type] = {
    "cem": CEMConfig, "icem": ICEMConfig, "mppi": MPPIConfig, "ilqr": ILQRConfig, "ilqr_offline": ILQROfflineConfig,
    "lqr": LQRConfig, "dp": DPConfig, "policy": PolicyPlannerConfig,
}


@dataclass(frozen=True)
class ModelConfig:
    """``model.*``: the analytic model the controller plans and the estimator predicts with."""

    dynamics: str = setting("rigid_body", "rigid_body: any fixed-base URDF (CRBA + RNEA in torch); cartpole: the "
                                          "hand-written cart-on-a-rail-with-a-pole equations (faster, that shape only)",
                            choices=DYNAMICS)
    integrator: str = setting("rk4", "rk4; euler (PyBullet's semi-implicit step); euler_implicit_damping (stable at any "
                                     "step with stiff joint damping)", choices=INTEGRATORS)
    substeps: int = setting(1, "integrator substeps per control period", 1, 100)


def planner_config_class(name: str) -> type:
    if name == "nmpc":
        from mbrl_control.core.planners.nmpc import NMPCConfig  # casadi only when asked for

        return NMPCConfig
    if name not in PLANNER_CONFIGS:
        raise ValueError(f"unknown planner '{name}'; known: {PLANNERS}")
    return PLANNER_CONFIGS[name]


# -- the robot -------------------------------------------------------------------------------
def build_model(spec: RobotSpec, dt: float | None = None, dynamics: str = "rigid_body", integrator: str = "rk4",
                substeps: int = 1) -> DynamicsModel:
    """The robot's analytic model from its URDF, stepping ``dt`` (default: the control period)."""
    dt = spec.dt if dt is None else dt
    if dynamics == "cartpole":
        if integrator not in ("rk4", "euler"):
            raise RobotSpecError(f"parameter 'model.integrator': the cartpole dynamics integrate with rk4 or euler, "
                                 f"not {integrator}")
        if spec.nq != 2 or spec.action_dim != 1:
            raise RobotSpecError("parameter 'model.dynamics': cartpole needs two state joints (the rail's, the "
                                 "pole's) and one command joint")
        params = CartPoleParams.from_urdf(spec.urdf, gravity=spec.model_gravity, cart_joint=spec.state_joints[0],
                                          pole_joint=spec.state_joints[1])
        return CartPoleDynamics(params, dt, substeps=substeps, integrator=integrator)
    if dynamics != "rigid_body":
        raise RobotSpecError(f"parameter 'model.dynamics' must be one of {DYNAMICS}, got '{dynamics}'")
    return RigidBodyDynamics(spec.urdf, list(spec.state_joints), list(spec.command_joints), dt=dt, substeps=substeps,
                             integrator=integrator, gravity=spec.model_gravity)


def model_from_params(spec: RobotSpec, p: Mapping[str, Any], dt: float | None = None) -> DynamicsModel:
    """The analytic model configured by ``model.*`` in the flat parameters ``p``, stepping ``dt``
    (default: the control period)."""
    return build_model(spec, dt, **dataclasses.asdict(dataclass_from(ModelConfig, section(dict(p), "model"))))


def build_kinematics(spec: RobotSpec, model: DynamicsModel | None = None) -> RigidBodyDynamics:
    """Forward kinematics of the robot: the analytic model itself when it is the rigid-body one."""
    if isinstance(model, RigidBodyDynamics):
        return model
    return RigidBodyDynamics(spec.urdf, list(spec.state_joints), list(spec.command_joints), dt=spec.dt,
                             gravity=spec.model_gravity)


def estimator_from_params(spec: RobotSpec, p: Mapping[str, Any], model: DynamicsModel | None = None) -> KalmanFilter:
    """The state estimator of an estimator node's flat parameters ``p`` (``estimator.*``, its
    ``model.dt``): on ``model`` (default: the robot's model at that step), with the robot's angles,
    travel limits and commanded joints. ValueError names what does not fit."""
    model = model or model_from_params(spec, p, dt=p.get("model.dt") or None)
    config = {k[len("estimator."):]: v for k, v in p.items() if k.startswith("estimator.")}
    return build_estimator(config.pop("kind", "ekf"), model, config,
                           angular_joints=[i in spec.rotational_dims for i in range(spec.nq)],
                           position_limits=list(zip(spec.position_lower, spec.position_upper)),
                           command_index=spec.command_index)


def link_position_of(kinematics: RigidBodyDynamics) -> LinkPosition:
    """``(q, link, offset) -> [..., 3]``: where a point on a link is, by ``kinematics``."""

    def link_position(q: torch.Tensor, link: str, offset: torch.Tensor) -> torch.Tensor:
        return kinematics.forward_kinematics(q, link, offset)[0]

    return link_position


def build_task(spec: RobotSpec, p: Mapping[str, Any], kinematics: RigidBodyDynamics | None = None) -> ResidualTask:
    """The task of ``task.*`` in ``p``; its points on links (goals, markers) by ``kinematics``."""
    return build_residual_task(spec, dict(p), link_position_of(kinematics or build_kinematics(spec)))


def task_from_params(p: Mapping[str, Any]) -> ResidualTask:
    """The robot's task alone (monitors that judge runs need no dynamics)."""
    spec = robot_spec(p)
    return build_task(spec, p, build_kinematics(spec))


@dataclass
class Robot:
    """A robot as the stack uses it: description, analytic model (at the control period), task."""

    spec: RobotSpec
    model: DynamicsModel
    task: ResidualTask
    kinematics: RigidBodyDynamics

    def equilibrium(self) -> Equilibrium:
        """The posture it regulates about and the effort that holds it there."""
        spec = self.spec
        passive = tuple(i for i in range(spec.nq) if i not in spec.command_index)
        return Equilibrium(spec.x_eq, rest_action(self.model, spec.x_eq), spec.angle_dims, passive)


def build_robot(p: Mapping[str, Any], urdf: str | Path | None = None) -> Robot:
    """The robot of the flat parameters ``p`` (``RobotConfig``'s, ``model.*``, ``task.*``)."""
    spec = robot_spec(p, urdf)
    model = model_from_params(spec, p)
    kinematics = build_kinematics(spec, model)
    return Robot(spec, model, build_task(spec, p, kinematics), kinematics)


def load_robot(config: str | Path = "cartpole", node: str = "mpc_controller",
               overrides: Mapping[str, Any] | None = None) -> Robot:
    """The robot of config/<config>.yaml (or a parameter file's path) as ``node`` sees it, for
    tools, benchmarks and tests; ``overrides`` replaces flat parameters."""
    return build_robot(robot_parameters(config, node) | dict(overrides or {}))


def robot_parameters(config: str | Path = "cartpole", node: str = "mpc_controller") -> dict[str, Any]:
    """The flat parameters ``node`` reads from a robot's parameter file (a name under config/ or a path)."""
    from mbrl_control.config import node_parameters
    from mbrl_control.paths import config_dir, urdf_beside

    path = Path(config)
    if path.suffix not in (".yaml", ".yml"):
        path = config_dir() / f"{config}.yaml"
    p = node_parameters(path, node)
    if "urdf" in p:
        p["urdf"] = urdf_beside(path, p["urdf"])
    return p


# -- planners ------------------------------------------------------------------------------------
def planner_refusal(name: str, spec: RobotSpec, model: DynamicsModel) -> str | None:
    """Why ``name`` cannot plan for this robot (None: it can)."""
    if name == "dp" and spec.state_dim > DP_MAX_STATES:
        return (f"dp's grid grows as points^states: it takes at most {DP_MAX_STATES} states, this robot has "
                f"{spec.state_dim}")
    if name == "nmpc" and not isinstance(model, CartPoleDynamics):
        return "nmpc's CasADi model exists for the cartpole dynamics only (model.dynamics: cartpole, model:=analytic)"
    return None


def with_terminal(task: Task, model: DynamicsModel, kind: str = "task", weight: float = 1.0,
                  dp_config: dict[str, Any] | None = None, value: ValueFunction | str | Path | None = None,
                  equilibrium: Equilibrium = Equilibrium()) -> Task:
    """``task`` with the terminal cost the sampling planners should price the horizon's end with:
    its own (``task``), the LQR cost-to-go about the equilibrium (``lqr``), the DP value (``dp``), or
    MBPO's critic (``value``: a ``ValueFunction`` or the path of one saved with ``save_value``)."""
    if kind == "task":
        return task
    if kind == "lqr":
        P = solve_lqr(model, task, 1.0, equilibrium.x_eq, equilibrium.u_eq).P
        return LQRTerminalCost(task, P, equilibrium.x_eq, equilibrium.angle_dims, weight=weight)
    if kind == "dp":
        config = dataclass_from(DPConfig, (dp_config or {}) | {"periodic": equilibrium.angle_dims})
        value, _ = solve_value(model, task, config)
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
    equilibrium: Equilibrium = Equilibrium(),
    device: str | None = None,
    threads: int = 1,
) -> Planner:
    """A planner by name with its config section (e.g. the ``cem.*`` parameters).

    ``policy`` (a ``Policy`` or the path of a policy file): the policy planner's policy (else
    ``policy.path`` from its config), or iCEM's warm start (optional); other planners ignore it.
    ``equilibrium``: where LQR regulates to, DP's angles, and ilqr_offline's first nominal.
    ``device``: where it plans (``cpu``, ``cuda``, ``auto``; None: where the model is); model
    and task move there. ``threads``: CPU threads of a sampling planner's rollouts.
    """
    values = dict(config or {})
    if name == "dp":
        values["periodic"] = equilibrium.angle_dims
    settings = dataclass_from(planner_config_class(name), values)
    device = None if device is None else resolve_device(device)
    if name in SAMPLING_PLANNERS:
        evaluator = TrajectoryEvaluator(model, task, compile=compile, device=device, threads=threads)
        if name == "icem":
            sampler = ICEMPlanner(evaluator, settings, policy=resolve_policy(policy), compile=compile)
        else:
            sampler = {"cem": CEMPlanner, "mppi": MPPIPlanner}[name](evaluator, settings)
        if not settings.smoothing_window:
            return sampler
        # With a settled spread, smooth while settled only: a catch needs the plan's own command.
        active = (lambda: sampler.settled) if getattr(settings, "settled_std", 0.0) > 0.0 else None
        return SmoothedPlanner(sampler, settings.smoothing_window, task.action_low, task.action_high, active)
    if name == "policy":
        resolved = resolve_policy(policy, settings.path)
        if resolved is None:
            raise ValueError("planner 'policy' needs a policy: pass one, or set policy.path to a policy file")
        return PolicyPlanner(model, task, resolved, settings, compile=compile, device=device)
    if name == "ilqr":
        return ILQRPlanner(model, task, settings, compile=compile, device=device)
    if name == "ilqr_offline":
        lqr = solve_lqr(model, task, 1.0, equilibrium.x_eq, equilibrium.u_eq)
        x_eq = np.zeros(task.state_dim) if equilibrium.x_eq is None else equilibrium.x_eq
        u_eq = np.zeros(task.action_dim) if equilibrium.u_eq is None else equilibrium.u_eq
        return ILQROfflinePlanner(model, task, settings, compile=compile, angle_dims=equilibrium.angle_dims,
                                  initial_policy=(lqr.K, x_eq, u_eq), passive_dims=equilibrium.passive_dims,
                                  device=device)
    if name == "lqr":
        return LQRPlanner(model, task, settings, equilibrium, device=device)
    if name == "dp":
        return DPPlanner(model, task, settings, compile=compile, device=device)
    from mbrl_control.core.planners.nmpc import NMPCPlanner

    return NMPCPlanner(model, task, settings)


def build_ensemble(p: Mapping[str, Any], spec: RobotSpec, propagation: dict[str, Any] | None = None,
                   device: str | None = None) -> EnsembleDynamics:
    """The learned model's architecture from ``ensemble.*`` and ``model`` (shared by learner and
    controller, so the weights one sends fit the other): with ``model: residual`` it learns the
    analytic model's residual (``ResidualDynamics``), else the dynamics from scratch; continuous
    joints' angles are fed as (sin, cos). ``propagation``: how this user predicts with it.
    ``device``: where it lives (``cpu``, ``cuda``, ``auto``; None: cpu)."""
    config = dataclass_from(EnsembleConfig, section(dict(p), "ensemble") | {
        "state_dim": spec.state_dim, "action_dim": spec.action_dim, "dt": spec.dt, "angle_dims": spec.angle_dims,
        "target": "residual" if p.get("model") == "residual" else "state_change",
    })
    return EnsembleDynamics(config, dataclass_from(PropagationConfig, propagation or {}), device=resolve_device(device))


@dataclass
class MPCSetup:
    """What a controller plans with: the robot (its analytic model and task), the model planned on,
    the planner, the LQR fallback (None for a learned model: a fallback from the true model would
    hide what the learner has not learned)."""

    robot: Robot
    model: DynamicsModel
    task: ResidualTask
    planner: Planner
    fallback: LQRFallback | None
    learned: EnsembleDynamics | None = None  # the ensemble the learner's models are swapped into (model:=learned, residual)
    policy_pending: bool = False  # planner:=policy learning from scratch: no trained policy yet
    planning_task: Task | None = None  # what the planner prices plans with: ``task``, or it with a terminal cost
    effort_offset: EffortOffsetDynamics | None = None  # model_offset.kind effort: where its offset goes
    learned_terminal: LearnedLQRTerminal | None = None  # terminal lqr on a learned model: refit it after each swap


def checked_device(name: str) -> torch.device:
    """The device a ``device`` parameter names (``cpu``, ``cuda``, ``cuda:N``, ``auto``), checked
    here: ``cuda`` on a machine whose torch sees no GPU is an error, not a silent CPU run."""
    try:
        device = resolve_device(name)
    except RuntimeError:  # torch.device's own complaint about the string
        device = torch.device("meta")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu, cuda, cuda:N or auto; got '{name}'")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{name}': this torch ({torch.__version__}) sees no CUDA GPU; use cpu or auto")
    return device


def learned_reward_task(p: Mapping[str, Any], ensemble: EnsembleDynamics | None, task: Task) -> LearnedRewardTask:
    """``reward: learned``: the planner prices plans with the learned model's reward head instead
    of the task's cost (whose bounds, goal and success it keeps). ValueError naming the
    parameter that does not fit."""
    if ensemble is None:
        raise ValueError("reward 'learned' is the reward head of a model learned from scratch: use model:=learned")
    if not ensemble.config.learn_reward:
        raise ValueError("reward 'learned' needs ensemble.learn_reward: true (for the learner too, so its models "
                         "carry the reward head)")
    if p.get("terminal", "task") != "task":
        raise ValueError("reward 'learned' prices the horizon's end with the learned reward as well: use terminal:=task")
    return LearnedRewardTask(ensemble, task)


def build_mpc(p: Mapping[str, Any], planner: str | None = None, robot: Robot | None = None) -> MPCSetup:
    """The controller's planning stack from its flat parameters (the robot's, ``model``,
    ``model.*``, ``task.*``, ``terminal``, ``terminal_weight``, ``<planner>.*``, ``lqr.*``,
    ``compile``, ``policy.*``, ``value.*``, ``device``, ``rollout_threads``, ``reward``, ``sampling_actions``,
    ``velocity_command.*``): the node and
    ``mbrl-control warmup`` build exactly the same thing. ``policy.path`` is the policy planner's
    policy and, if set, iCEM's warm start; ``value.path`` is the critic of ``terminal:=value``.
    ``device`` (``cpu``, ``cuda``, ``auto``): where the planner and the learned model live; the
    robot's analytic model and task stay on the CPU for the node's own use (the planner plans with
    copies), and a plan's command always comes back on the CPU. Raises ValueError (or
    RobotSpecError) naming what does not fit."""
    p = dict(p)
    device = checked_device(p.get("device", "cpu"))
    name = planner or p["planner"]
    robot = robot or build_robot(p)
    spec, task = robot.spec, robot.task
    equilibrium = robot.equilibrium()
    kind = p.get("model", "analytic")
    learned = kind == "learned"
    refusal = planner_refusal(name, spec, robot.model)
    if refusal and not (name == "nmpc" and kind != "analytic"):
        raise ValueError(f"planner '{name}': {refusal}")
    ensemble = None
    if kind != "analytic":
        if name == "nmpc":
            raise ValueError("planner 'nmpc' plans on the analytic model's CasADi expressions: use model:=analytic")
        if name == "policy" and kind == "residual":
            raise ValueError("planner 'policy' (MBPO) trains its policy in rollouts of a learned model from scratch: "
                             "use model:=learned")
        propagation = section(p, "propagation")
        if name not in SAMPLING_PLANNERS:  # gradient and DP planners need a deterministic model
            propagation["mode"] = "expectation"
        if learned and p.get("terminal", "task") == "dp":
            raise ValueError("terminal dp is solved once at start, from a model: use it with model:=analytic or "
                             "residual (terminal lqr is re-solved for each learned model)")
        ensemble = build_ensemble(p, spec, propagation, device=str(device)).freeze()
    effort_offset = None
    if p.get("model_offset.kind") == "effort" and p.get("model_offset.time_constant", 0.0) > 0:
        if learned or name == "nmpc":
            raise ValueError("model_offset.kind 'effort' adds an effort to the URDF model's commands: it needs "
                             "model:=analytic or residual and a planner other than nmpc")
        effort_offset = EffortOffsetDynamics(robot.model)
    if learned:
        model: DynamicsModel = ensemble
        fallback = None
    else:
        analytic = robot.model if effort_offset is None else effort_offset
        model = analytic if ensemble is None else ResidualDynamics(analytic, ensemble)
        # Near the equilibrium, LQR takes over a tick whose planner missed its deadline or failed
        # (for model:=residual: LQR of the analytic model, which the residual corrects).
        fallback = LQRFallback.from_model(robot.model, task, dataclass_from(LQRConfig, section(p, "lqr")), equilibrium)
    value_path = dataclass_from(ValueTerminalConfig, section(p, "value")).path
    learned_terminal = None
    if learned and p.get("terminal", "task") == "lqr":  # no model yet: solved for each one the learner sends
        planning_task = LQRTerminalCost(task, np.zeros((task.state_dim, task.state_dim)), equilibrium.x_eq,
                                        equilibrium.angle_dims, weight=p.get("terminal_weight", 1.0))
        learned_terminal = LearnedLQRTerminal(planning_task, task, equilibrium.x_eq, equilibrium.u_eq)
    else:
        planning_task = with_terminal(task, robot.model if kind == "residual" else model, p.get("terminal", "task"),
                                      p.get("terminal_weight", 1.0), section(p, "dp"), value=value_path,
                                      equilibrium=equilibrium)
    if p.get("reward", "task") == "learned":
        planning_task = learned_reward_task(p, ensemble if learned else None, task)
    if device.type != "cpu" and kind != "learned":  # the node keeps the CPU originals (gravity hold, markers)
        model, planning_task = copy.deepcopy((model, planning_task))
        if ensemble is not None:
            model.to(device)
            ensemble = model.residual
        if effort_offset is not None:
            effort_offset = model.analytic if ensemble is not None else model
    policy_path = section(p, "policy").get("path", "")
    policy = load_policy(policy_path) if policy_path and name in ("icem", "policy") else None
    pending = name == "policy" and policy is None and learned
    if pending:
        # MBPO from scratch: the learner's policies arrive later; allocate (and compile) their
        # architecture now, so each one is copied in place between ticks.
        hidden = tuple(p.get("mbpo.hidden", MBPOConfig().hidden))
        policy = Policy(policy_spec(task, hidden, spec.angle_dims))
    commands = None
    if name in SAMPLING_PLANNERS and p.get("sampling_actions", "effort") == "velocity":
        kinematics = robot.kinematics if device.type == "cpu" else copy.deepcopy(robot.kinematics)
        try:
            if name == "icem" and policy is not None:
                raise ValueError("an MBPO policy's warm start is in efforts")
            commands = VelocityCommands(ComputedTorque(kinematics, spec.command_index, task.action_low, task.action_high),
                                        dataclass_from(VelocityCommandConfig, section(p, "velocity_command")))
            sampled_model, sampled_task = VelocityCommandModel(model, commands), VelocityCommandTask(planning_task, commands)
        except ValueError as exc:
            raise ValueError(f"sampling_actions 'velocity': {exc}") from exc
    planner = build_planner(name, sampled_model if commands else model, sampled_task if commands else planning_task,
                            section(p, name), p.get("compile", True), policy=policy, equilibrium=equilibrium,
                            device=None if device.type == "cpu" else str(device), threads=int(p.get("rollout_threads", 1)))
    return MPCSetup(
        robot=robot,
        model=model,
        task=task,
        planner=planner if commands is None else VelocityCommandPlanner(planner, commands),
        fallback=fallback,
        learned=ensemble,
        policy_pending=pending,
        planning_task=planning_task,
        effort_offset=effort_offset,
        learned_terminal=learned_terminal,
    )
