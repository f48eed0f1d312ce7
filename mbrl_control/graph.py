"""The node graph per launch, as plain data: which nodes run, with which parameter files,
overrides and remappings, for given launch arguments.

``launch/mpc.launch.py`` turns it into launch_ros ``Node`` actions and the pip-only launcher
(``mbrl-control launch``) into processes, so the two cannot drift apart. No ROS imports here.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbrl_control.paths import DEFAULT_ROBOT, config_dir, resolve_urdf, urdf_beside

PACKAGE = "mbrl_control"
# A node's exit code when it cannot start with the parameters it was given (its log's [FATAL]
# line names the parameter): the stack cannot run without it, so the launch stops too.
EXIT_BAD_PARAMETER = 2

# executable name (setup.py console_scripts, installed in lib/mbrl_control) -> module with main()
EXECUTABLES = {
    "sim_node": "mbrl_control.nodes.sim_node",
    "controller_node": "mbrl_control.nodes.controller_node",
    "run_monitor": "mbrl_control.nodes.run_monitor",
    "mock_hardware_node": "mbrl_control.nodes.mock_hardware_node",
    "driver_node": "mbrl_control.nodes.driver_node",
    "recorder_node": "mbrl_control.nodes.recorder_node",
    "foxglove_bridge_node": "mbrl_control.nodes.foxglove_bridge_node",
    "estimator_node": "mbrl_control.nodes.estimator_node",
    "learner_node": "mbrl_control.nodes.learner_node",
    "episode_manager": "mbrl_control.nodes.episode_manager",
    "goal_publisher": "mbrl_control.nodes.goal_publisher",
}

# The planners of mbrl_control.core.builders.PLANNERS (a test keeps the two equal; this module
# stays free of torch so launch files load fast).
PLANNERS = ("cem", "icem", "mppi", "ilqr", "ilqr_offline", "lqr", "nmpc", "dp", "policy")
# nmpc needs the analytic model; policy: MBPO (the learner trains a policy on each model, the
# controller runs it).
PLANNERS_FOR_LEARNING = ("cem", "icem", "mppi", "ilqr", "policy")

STATE_TOPIC = "/joint_states"
COMMAND_TOPIC = "/effort_controller/commands"
ESTIMATE_TOPIC = "/estimator/state"
GROUND_TRUTH_TOPIC = "/sim/ground_truth"


@dataclass(frozen=True)
class LaunchArgument:
    name: str
    default: str
    description: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeSpec:
    executable: str
    name: str
    parameters: list[str | dict[str, Any]]  # parameter files, then override dicts, in order
    remappings: list[tuple[str, str]] = field(default_factory=list)
    ends_launch: bool = False  # its exit ends the whole launch (the run monitor)
    namespace: str = ""
    package: str = PACKAGE
    arguments: list[str] = field(default_factory=list)  # command-line arguments before --ros-args

    @property
    def fqn(self) -> str:
        """Fully qualified node name, the key of its override parameters."""
        return f"/{self.namespace.strip('/')}/{self.name}" if self.namespace.strip("/") else f"/{self.name}"

    @property
    def module(self) -> str | None:
        """The Python module to run, or None for another package's executable (rviz2, ...)."""
        return EXECUTABLES.get(self.executable) if self.package == PACKAGE else None


HARDWARE = ("mock", "ros2_control", "loopback")

RATE_AND_DEVICE = [
    LaunchArgument("control_rate", "", "control rate of every node [Hz] (empty: the robot config's); a file "
                   "<robot>.<rate>hz.yaml beside the robot config, if there, brings what that rate needs (e.g. a "
                   "planner budget) and is applied before overrides"),
    LaunchArgument("device", "", "where the controller plans and the learner trains: cpu, cuda, cuda:N, auto "
                   "(empty: the parameter files')"),
]

MPC_ARGUMENTS = [
    LaunchArgument("robot", DEFAULT_ROBOT, "robot config: config/<robot>.yaml, or a path to a parameter file"),
    LaunchArgument("overrides", "", "an extra parameter file applied on top of the robot config (any node's section)"),
    LaunchArgument("mode", "realtime", "realtime: wall-clock physics; lockstep: one step per command, /clock", ("realtime", "lockstep")),
    *RATE_AND_DEVICE,
    LaunchArgument("gui", "false", "open the PyBullet GUI", ("true", "false")),
    LaunchArgument("use_sim", "true", "start the PyBullet sim; false: hardware provides the topics", ("true", "false")),
    LaunchArgument(
        "hardware", "mock",
        "with use_sim:=false: mock (mirrors commands, like mock_components), ros2_control (your "
        "controller_manager provides the topics; nothing is started), loopback (the driver template "
        "on its loopback device), or your device class 'package.module:Class' for the driver template",
    ),
    LaunchArgument("state_topic", STATE_TOPIC, "joint states the controller reads (joint_state_broadcaster's)"),
    LaunchArgument("command_topic", COMMAND_TOPIC, "effort commands the controller writes (a forward_command_controller's)"),
    LaunchArgument("estimator", "ekf", "state estimator between joint_states and the controller; none: "
                   "the controller reads joint_states (and the sim publishes exact states)", ("ekf", "ukf", "none")),
    LaunchArgument("planner", "", "planning algorithm (empty: the robot config's)", ("", *PLANNERS)),
    LaunchArgument("duration", "0", "stop after this many seconds of robot time (0: run until stopped)"),
    LaunchArgument("summary_path", "", "write the run summary JSON here when the run ends"),
    LaunchArgument("record", "false", "record every topic to MCAP", ("true", "false")),
    LaunchArgument("record_path", "", "MCAP file to write (default runs/<stamp>/run.mcap)"),
    LaunchArgument("rviz", "false", "start rviz2 and robot_state_publisher (needs a ROS 2 install)", ("true", "false")),
    LaunchArgument("foxglove", "false", "stream every topic to Foxglove on ws://localhost:8765", ("true", "false")),
]


def _bool(value: str, name: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise ValueError(f"launch argument '{name}' must be true or false, got '{value}'")
    return value.lower() == "true"


def robot_config(robot: str) -> Path:
    """The parameter file of a robot: a name under config/, or a path. ValueError if there is none."""
    path = Path(robot).expanduser()
    path = path.resolve() if path.suffix in (".yaml", ".yml") else config_dir() / f"{robot}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(f.stem for f in path.parent.glob("*.yaml")))
        raise ValueError(f"robot '{robot}': no parameter file {path} (parameter files there: {known or 'none'})")
    return path


def with_defaults(args: dict[str, str], arguments: list[LaunchArgument]) -> dict[str, str]:
    """Launch arguments completed with defaults and checked against their choices."""
    known = {a.name: a for a in arguments}
    unknown = sorted(set(args) - set(known))
    if unknown:
        raise ValueError(f"unknown launch arguments {unknown}; known: {sorted(known)}")
    out = {a.name: a.default for a in arguments} | dict(args)
    for name, value in out.items():
        choices = known[name].choices
        if choices and value not in choices:
            raise ValueError(f"launch argument '{name}' must be one of {', '.join(choices)}; got '{value}'")
    return out


def mpc_graph(args: dict[str, str], model: str = "analytic") -> list[NodeSpec]:
    """Nodes of ``mpc.launch.py`` for the given launch arguments; ``model`` (learn.launch's):
    what the controller plans on, whose file beside the robot config (``model_config``) is applied
    after the rate's and before overrides."""
    a = with_defaults(args, MPC_ARGUMENTS)
    try:
        config = robot_config(a["robot"])
    except ValueError as exc:
        raise ValueError(f"launch argument {exc}") from None
    lockstep = a["mode"] == "lockstep"
    files = [str(config)]
    rate = {}
    if a["control_rate"]:
        rate = {"control_rate": _positive_float(a["control_rate"], "control_rate")}
        at_rate = rate_config(config, rate["control_rate"])
        if at_rate.is_file():
            files.append(str(at_rate))
    for_model = model_config(config, model)
    if for_model is not None and for_model.is_file():
        files.append(str(for_model))
    if a["overrides"]:
        overrides = Path(a["overrides"]).expanduser().resolve()
        if not overrides.is_file():
            raise ValueError(f"launch argument 'overrides': no parameter file {overrides}")
        files.append(str(overrides))
    try:
        duration = float(a["duration"])
    except ValueError:
        raise ValueError(f"launch argument 'duration' must be a number of seconds; got '{a['duration']}'") from None
    if duration < 0:
        raise ValueError("launch argument 'duration' must be >= 0")
    common = {"mode": a["mode"], "use_sim_time": lockstep} | rate | urdf_override(files)
    device = {"device": a["device"]} if a["device"] else {}
    robot_topics = [("joint_states", a["state_topic"]), ("effort_controller/commands", a["command_topic"])]
    estimator = a["estimator"]
    use_sim = _bool(a["use_sim"], "use_sim")
    # The controller reads the estimate when there is an estimator, the robot's joint states if not.
    controller_topics = robot_topics if estimator == "none" else [
        ("joint_states", ESTIMATE_TOPIC), ("effort_controller/commands", a["command_topic"])]
    nodes: list[NodeSpec] = []
    recording = _bool(a["record"], "record")
    if recording:  # first, so it sees the other nodes' topics appear
        nodes.append(NodeSpec("recorder_node", "recorder", [*files, common | {"output": a["record_path"]}]))
    if use_sim:
        sim = common | {"gui": _bool(a["gui"], "gui"), "sensor.enabled": estimator != "none"}
        nodes.append(NodeSpec("sim_node", "sim", [*files, sim], robot_topics))
    else:
        nodes += hardware_nodes(a["hardware"], files, common, robot_topics)
    if estimator != "none":
        nodes.append(NodeSpec("estimator_node", "estimator",
                              [*files, common | {"estimator.kind": estimator} | estimator_staleness(files)],
                              robot_topics))
    nodes.append(
        NodeSpec(
            "controller_node",
            "mpc_controller",
            # Lockstep runs start once the recorder reads the per-tick samples: none is lost to its start-up.
            [*files, common | device | ({"planner": a["planner"]} if a["planner"] else {})
             | ({"lockstep_readers": ["recorder" if recording else ""]} if lockstep else {})],
            remappings=controller_topics,
        )
    )
    if duration > 0:
        nodes.append(
            NodeSpec(
                "run_monitor",
                "run_monitor",
                [*files, common | {"duration": duration, "summary_path": a["summary_path"], "estimator": estimator}],
                remappings=robot_topics + [
                    ("ground_truth", GROUND_TRUTH_TOPIC if use_sim else a["state_topic"]),
                    ("estimate", ESTIMATE_TOPIC if estimator != "none" else a["state_topic"]),
                ],
                ends_launch=True,
            )
        )
    if has_goals(files):  # a reach task: its goals come on /goal_pose (this publisher, rviz, a user's node)
        nodes.append(NodeSpec("goal_publisher", "goal_publisher", [*files, common | {"subscribers": 1 + int(duration > 0)}],
                              robot_topics))
    if _bool(a["foxglove"], "foxglove"):
        nodes.append(NodeSpec("foxglove_bridge_node", "foxglove_bridge", [*files, common]))
    if _bool(a["rviz"], "rviz"):
        nodes += visualization_nodes(files, common, a["state_topic"])
    return nodes


def rate_config(robot_file: Path, rate: float) -> Path:
    """The parameter file that adapts a robot config to a control rate: ``<robot>.<rate>hz.yaml``
    beside it (``<robot>.100hz.yaml`` at 100 Hz); it need not exist."""
    return robot_file.with_name(f"{robot_file.stem}.{rate:g}hz.yaml")


def model_config(robot_file: Path, model: str) -> Path | None:
    """The parameter file that adapts a robot config to planning on a learned model (``model``
    learned or residual): ``<robot>.<model>.yaml`` beside it; it need not exist. Planning on the
    analytic model takes the robot config as it is."""
    return robot_file.with_name(f"{robot_file.stem}.{model}.yaml") if model != "analytic" else None


def urdf_override(files: list[str]) -> dict[str, str]:
    """``urdf`` for every node when the robot's file names one beside itself (nodes resolve relative
    paths against config/, not against a parameter file they never see the path of)."""
    urdf = parameters(files[:1], "sim").get("urdf", "")
    beside = urdf_beside(files[0], urdf) if isinstance(urdf, str) else urdf
    return {"urdf": beside} if beside != urdf else {}


def parameters(files: list[str], node: str) -> dict[str, Any]:
    """``node``'s flat parameters from the parameter files, later files overriding earlier ones;
    ValueError naming the file if one is not YAML."""
    import yaml

    from mbrl_control.config import node_parameters

    merged: dict[str, Any] = {}
    for path in files:
        try:
            merged |= node_parameters(path, node)
        except yaml.YAMLError as exc:
            raise ValueError(f"parameter file {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    return merged


def estimator_staleness(files: list[str]) -> dict[str, float]:
    """``estimator.stale_after`` from the controller's ``state_timeout``: one setting for how old
    the robot's state may get before the safe command goes out, whichever node sees it first (the
    estimator stops publishing when no reading fused for that long; the controller, when the
    estimate it holds is that old). An ``estimator.stale_after`` in the parameter files that
    differs is refused, never silently replaced. Neither set: the two nodes' defaults, equal
    (test/unit/test_graph.py)."""
    timeout = parameters(files, "mpc_controller").get("state_timeout")
    explicit = parameters(files, "estimator").get("estimator.stale_after")
    if explicit is not None and (timeout is None or float(explicit) != float(timeout)):
        raise ValueError(
            f"parameter 'estimator.stale_after' ({explicit} s) is set by mpc_controller's 'state_timeout' "
            f"({'its default' if timeout is None else f'{timeout} s'}): set state_timeout alone, for both nodes "
            f"(parameter files: {', '.join(files)})"
        )
    return {} if timeout is None else {"estimator.stale_after": float(timeout)}


def has_goals(files: list[str]) -> bool:
    """Whether the robot's task has a goal to reach (a ``link_position`` term): then a goal
    publisher runs, unless the config turns it off (``goal_publisher.enabled: false``)."""
    p = parameters(files, "goal_publisher")
    terms = p.get("task.terms") or []
    return bool(p.get("enabled", True)) and any(p.get(f"task.{t}.residual") == "link_position" for t in terms)


def hardware_nodes(hardware: str, files: list[str], common: dict, topics: list[tuple[str, str]]) -> list[NodeSpec]:
    """What stands in for the robot when there is no sim."""
    if hardware == "ros2_control":
        return []  # the user's controller_manager publishes and subscribes the topics
    if hardware == "mock":
        return [NodeSpec("mock_hardware_node", "mock_hardware", [*files, common], topics)]
    device = "mbrl_control.hardware.device:LoopbackDevice" if hardware == "loopback" else hardware
    if ":" not in device:
        raise ValueError(
            f"launch argument 'hardware' must be one of {', '.join(HARDWARE)} or 'package.module:DeviceClass'; got '{hardware}'"
        )
    return [NodeSpec("driver_node", "driver", [*files, common | {"device": device, "autostart": True}], topics)]


def visualization_nodes(files: list[str], common: dict, state_topic: str) -> list[NodeSpec]:
    """robot_state_publisher (TF from joint states), a static transform from ``world`` to the URDF's
    root link when they differ, and rviz2 with config/<robot>.rviz (else config/mbrl_control.rviz):
    ROS 2 install only."""
    p = parameters(files, "robot_state_publisher")
    urdf = resolve_urdf(p.get("urdf", ""))
    description, root = robot_description(urdf)
    frame = parameters(files, "mpc_controller").get("frame_id", "world")
    robot_rviz = Path(files[0]).with_suffix(".rviz")
    rviz = robot_rviz if robot_rviz.is_file() else config_dir() / "mbrl_control.rviz"
    nodes = [
        NodeSpec(
            "robot_state_publisher", "robot_state_publisher",
            [{"robot_description": description, "use_sim_time": common["use_sim_time"]}],
            [("joint_states", state_topic)], package="robot_state_publisher",
        ),
        NodeSpec("rviz2", "rviz2", [{"use_sim_time": common["use_sim_time"]}], package="rviz2", arguments=["-d", str(rviz)]),
    ]
    if root != frame:
        nodes.insert(1, NodeSpec("static_transform_publisher", "world_to_robot", [{"use_sim_time": common["use_sim_time"]}],
                                 package="tf2_ros", arguments=["--frame-id", frame, "--child-frame-id", root]))
    return nodes


def robot_description(urdf: Path) -> tuple[str, str]:
    """The URDF's text for robot_state_publisher, its relative mesh paths made ``file://`` URIs
    (rviz resolves no others outside a ROS package), and its root link."""
    import xml.etree.ElementTree as ET

    from mbrl_control.core.urdf import absolute_mesh_paths

    root = ET.parse(urdf).getroot()
    absolute_mesh_paths(root, urdf.parent, uri=True)
    children = {j.find("child").get("link") for j in root.iter("joint")}
    links = [link.get("name") for link in root.iter("link") if link.get("name") not in children]
    return ET.tostring(root, encoding="unicode"), links[0] if links else "world"


LEARN_ARGUMENTS = [
    LaunchArgument("robot", DEFAULT_ROBOT, "robot config: config/<robot>.yaml, or a path to a parameter file"),
    LaunchArgument("overrides", "", "an extra parameter file applied on top of the robot config (any node's section)"),
    LaunchArgument("mode", "lockstep", "lockstep: the sim waits for training between episodes; realtime: learning alongside",
                   ("realtime", "lockstep")),
    *RATE_AND_DEVICE,
    LaunchArgument("gui", "false", "open the PyBullet GUI", ("true", "false")),
    LaunchArgument("estimator", "ekf", "state estimator between joint_states and the controller", ("ekf", "ukf", "none")),
    LaunchArgument("planner", "", "planner on the learned model (empty: the parameter files' planner, cem if they "
                   "name none); policy: MBPO (the learner trains a SAC policy in rollouts of each model and the "
                   "controller runs it)", ("", *PLANNERS_FOR_LEARNING)),
    LaunchArgument("wait_for_model", "", "between episodes, hold the robot (paused, reset) until the learner has "
                   "trained on them, as PETS does (empty: in lockstep only; realtime then learns alongside)",
                   ("", "true", "false")),
    LaunchArgument("episodes", "10", "episodes of the experiment"),
    LaunchArgument("episode_length", "10", "robot time per episode [s]"),
    LaunchArgument("randomize", "false", "domain randomization: new physical parameters every episode", ("true", "false")),
    LaunchArgument("model", "learned", "what the controller plans on: learned (the learner's ensemble, from scratch), "
                   "residual (the analytic model plus the learner's ensemble of its residual), analytic (the URDF "
                   "model alone: the baseline; the learner still records and trains); a file <robot>.<model>.yaml "
                   "beside the robot config, if there, brings what planning on that model needs and is applied "
                   "before overrides", ("learned", "residual", "analytic")),
    LaunchArgument("payload", "", "a point mass [kg] the robot carries and its URDF does not know (the parameter "
                   "files' payload.link and offset; empty: theirs)"),
    LaunchArgument("payload_scale", "", "multiplier on the mass of the parameter files' payload.link, unknown to the "
                   "model (a link 30 % heavier: 1.3; empty: theirs)"),
    LaunchArgument("output_dir", "", "learning curve, replay buffer and checkpoints go here (default runs/learn-<stamp>)"),
    LaunchArgument("record", "false", "record every topic to MCAP (in output_dir)", ("true", "false")),
]


def learn_graph(args: dict[str, str]) -> list[NodeSpec]:
    """Nodes of ``learn.launch.py``: the mpc graph's sim, estimator and controller (on the learned
    model), plus the learner and the episode manager, whose exit ends the launch."""
    a = with_defaults(args, LEARN_ARGUMENTS)
    output_dir = Path(a["output_dir"] or f"runs/learn-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    base = mpc_graph({
        "robot": a["robot"], "overrides": a["overrides"], "mode": a["mode"], "gui": a["gui"],
        "control_rate": a["control_rate"], "device": a["device"],
        "estimator": a["estimator"], "planner": a["planner"], "record": a["record"],
        "record_path": str(output_dir / "run.mcap"),
    }, model=a["model"])
    files = [p for p in base[-1].parameters if isinstance(p, str)]
    planner = a["planner"] or parameters(files, "mpc_controller").get("planner", "cem")
    model = a["model"]
    if model == "learned" and planner not in PLANNERS_FOR_LEARNING:
        raise ValueError(f"planner '{planner}' (from the parameter files) does not plan on a learned model; "
                         f"launch argument 'planner' must be one of {', '.join(PLANNERS_FOR_LEARNING)}")
    if model == "residual" and planner in ("nmpc", "policy"):
        raise ValueError(f"planner '{planner}' does not plan on a residual model (nmpc: the analytic model's CasADi "
                         f"expressions; policy: MBPO learns from scratch); use model:=learned or another planner")
    physics = {"randomize.enabled": _bool(a["randomize"], "randomize")}
    if a["payload"]:
        physics["payload.mass"] = _non_negative_float(a["payload"], "payload")
    if a["payload_scale"]:
        physics["payload.mass_scale"] = _positive_float(a["payload_scale"], "payload_scale")
    common = {"mode": a["mode"], "use_sim_time": a["mode"] == "lockstep"} | urdf_override(files)
    if a["control_rate"]:
        common["control_rate"] = _positive_float(a["control_rate"], "control_rate")
    nodes = []
    for spec in base:
        if spec.name == "goal_publisher":  # a reach task's goals: the episode manager's, one per episode
            continue
        extra = {}
        if spec.name == "mpc_controller":
            extra = {"model": model} | ({"terminal": "task"} if model == "learned" else {})
            if a["mode"] == "lockstep":  # and the learner: no episode's first ticks go untrained on
                readers = [n for n in spec.parameters[-1].get("lockstep_readers", []) if n]
                extra["lockstep_readers"] = readers + ["learner"]
        elif spec.name == "sim":
            extra = physics
        nodes.append(dataclasses.replace(spec, parameters=[*spec.parameters[:-1], spec.parameters[-1] | extra]))
    learner = {"data_dir": str(output_dir / "learner"), "mbpo.enabled": planner == "policy",
               "model": "residual" if model == "residual" else "learned"} | (
        {"device": a["device"]} if a["device"] else {})
    if a["mode"] == "lockstep":
        # The robot files nice the learner (10) so that training yields to realtime control, whose
        # nodes idle most of each period. A lockstep loop has no deadline and never idles: beside
        # several of them a niced learner runs on leftovers, while its rounds within an episode are
        # meant to train as they would beside realtime robots; at nice 0 it gets a fair share.
        # (Measured: no effect on episodes to success beyond the runs' spread; README, the fleet.)
        learner["scheduling.nice"] = 0
    nodes.append(NodeSpec("learner_node", "learner", [*files, common | learner]))
    nodes.append(NodeSpec(
        "episode_manager", "episode_manager",
        [*files, common | {"episodes": _positive_int(a["episodes"], "episodes"),
                           "episode_length": _positive_float(a["episode_length"], "episode_length"),
                           "wait_for_model": _bool(a["wait_for_model"], "wait_for_model") if a["wait_for_model"]
                           else a["mode"] == "lockstep", "output_dir": str(output_dir)}],
        remappings=[("ground_truth", GROUND_TRUTH_TOPIC)],
        ends_launch=True,
    ))
    return nodes


def _positive_int(value: str, name: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"launch argument '{name}' must be a positive integer; got '{value}'")
    return n


def _non_negative_float(value: str, name: str) -> float:
    try:
        x = float(value)
    except ValueError:
        x = -1.0
    if not x >= 0:
        raise ValueError(f"launch argument '{name}' must be a number >= 0; got '{value}'")
    return x


def _positive_float(value: str, name: str) -> float:
    try:
        x = float(value)
    except ValueError:
        x = 0.0
    if not x > 0:
        raise ValueError(f"launch argument '{name}' must be a positive number; got '{value}'")
    return x


FLEET_ARGUMENTS = [
    LaunchArgument("robots", "2", "how many robot stacks (sim, estimator, controller), in namespaces robot_0 ... robot_<n-1>"),
    LaunchArgument("part", "all", "which half runs here: all; robots (the robot stacks and the episode manager, on "
                   "the robots' host); learner (the learner alone, on the GPU host): two launches find each other "
                   "over DDS (README: a learner on another host)", ("all", "robots", "learner")),
    *[a for a in LEARN_ARGUMENTS if a.name not in ("randomize", "record")],
    LaunchArgument("randomize", "robot", "robot: each robot its own physical parameters drawn once from its own seed "
                   "within a manufacturing spread (mass and motor gain +-5 %, damping up to 0.01, same geometry), as "
                   "a fleet of one model is never identical; episode: drawn anew at every reset within the parameter "
                   "files' randomize ranges (domain randomization); none: identical robots", ("robot", "episode", "none")),
]
FLEET_NAMESPACE = "robot_{}"
# randomize:=robot: how far robots of one model differ (tolerances of mass, friction and motor
# constant), not domain randomization's +-20 % of a pole's length: one model is learned for all.
FLEET_SPREAD = {"randomize.mass_scale": [0.95, 1.05], "randomize.length_scale": [1.0, 1.0],
                "randomize.joint_damping": [0.0, 0.01], "randomize.motor_gain": [0.95, 1.05]}
LEARNER_NODES = ("learner", "episode_manager")
# Every random stream of a robot's stack, by executable: a fleet robot's are the files' seeds plus
# its index, so robots explore, sample and draw differently (identical streams would make four
# robots' first episodes near copies of one). test_graph checks this against the nodes' parameters.
ROBOT_SEEDS = {
    "sim_node": ("seed", "sensor.seed", "randomize.seed", "fault.seed"),
    "controller_node": ("explore.seed", "propagation.seed", "cem.seed", "icem.seed", "mppi.seed"),
    "goal_publisher": ("seed",),
}


def fleet_graph(args: dict[str, str]) -> list[NodeSpec]:
    """Nodes of ``fleet.launch.py``: the learn graph's robot stack once per robot, each in its own
    namespace (its own topics, services and, in lockstep, its own /clock), one learner taking every
    robot's transitions and publishing the one model all controllers follow, one episode manager
    running the robots' episodes in step."""
    a = with_defaults(args, FLEET_ARGUMENTS)
    count = _positive_int(a["robots"], "robots")
    learn_args = {k: v for k, v in a.items() if k not in ("robots", "part", "randomize")}
    single = learn_graph(learn_args | {"randomize": "false" if a["randomize"] == "none" else "true"})
    lockstep = a["mode"] == "lockstep"
    namespaces = [FLEET_NAMESPACE.format(i) for i in range(count)]
    nodes: list[NodeSpec] = []
    if a["part"] in ("all", "robots"):
        for i, ns in enumerate(namespaces):
            for spec in single:
                if spec.name in LEARNER_NODES:
                    continue
                given = parameters([f for f in spec.parameters if isinstance(f, str)], spec.name)
                extra: dict[str, Any] = {key: int(given.get(key, 0)) + i for key in ROBOT_SEEDS.get(spec.executable, ())}
                if spec.name == "sim":  # its own robot
                    extra["randomize.every_reset"] = a["randomize"] == "episode"
                    if a["randomize"] == "robot":
                        extra |= FLEET_SPREAD
                if spec.executable in ("goal_publisher", "run_monitor"):  # they follow their robot's controller
                    extra["controller_name"] = f"{ns}/mpc_controller"
                if not lockstep and spec.executable in ("controller_node", "estimator_node"):
                    # Spread across the period: the robots of one host do not all tick at once.
                    extra["control_phase"] = i / count
                nodes.append(in_namespace(spec, ns, lockstep, extra))
        manager = next(s for s in single if s.name == "episode_manager")
        nodes.append(dataclasses.replace(
            manager, remappings=[],
            parameters=[*manager.parameters[:-1], manager.parameters[-1] | {"robots": namespaces, "use_sim_time": False}]))
    if a["part"] in ("all", "learner"):
        learner = next(s for s in single if s.name == "learner")
        sources = [f"/{ns}/mpc_controller/transitions" for ns in namespaces]
        # On the wall clock: with one /clock per robot there is no fleet sim time (it stamps nothing itself).
        nodes.append(dataclasses.replace(
            learner, parameters=[*learner.parameters[:-1], learner.parameters[-1] | {"sources": sources, "use_sim_time": False}]))
    return nodes


def resolved_parameters(spec: NodeSpec) -> dict[str, Any]:
    """``spec``'s flat parameters as ROS applies them: its files' section for the node, then its
    dicts, later ones winning."""
    merged = parameters([f for f in spec.parameters if isinstance(f, str)], spec.name)
    for override in spec.parameters:
        if isinstance(override, dict):
            merged |= override
    return merged


def in_namespace(spec: NodeSpec, namespace: str, lockstep: bool, extra: dict[str, Any]) -> NodeSpec:
    """``spec`` moved under ``/namespace``: its robot topics (the remapping targets) with it, its
    /clock its own sim's in lockstep, and its parameters from the files resolved into one dict
    (a parameter file's section named ``sim`` does not match a node ``/robot_0/sim``)."""
    merged = resolved_parameters(spec)
    remappings = [(src, f"/{namespace}{dst}" if dst.startswith("/") else dst) for src, dst in spec.remappings]
    if lockstep:
        remappings.append(("/clock", f"/{namespace}/clock"))
    return dataclasses.replace(spec, namespace=namespace, parameters=[merged | extra], remappings=remappings)


GRAPHS = {"mpc": (MPC_ARGUMENTS, mpc_graph), "learn": (LEARN_ARGUMENTS, learn_graph), "fleet": (FLEET_ARGUMENTS, fleet_graph)}
