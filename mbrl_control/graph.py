"""The node graph per launch, as plain data: which nodes run, with which parameter files,
overrides and remappings, for given launch arguments.

``launch/mpc.launch.py`` turns it into launch_ros ``Node`` actions and the pip-only launcher
(``mbrl-control launch``) into processes, so the two cannot drift apart. No ROS imports here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbrl_control.paths import config_dir

PACKAGE = "mbrl_control"

# executable name (setup.py console_scripts, installed in lib/mbrl_control) -> module with main()
EXECUTABLES = {
    "sim_node": "mbrl_control.nodes.sim_node",
    "controller_node": "mbrl_control.nodes.controller_node",
    "run_monitor": "mbrl_control.nodes.run_monitor",
}

STATE_TOPIC = "/joint_states"
COMMAND_TOPIC = "/effort_controller/commands"


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

    @property
    def fqn(self) -> str:
        """Fully qualified node name, the key of its override parameters."""
        return f"{self.namespace.rstrip('/')}/{self.name}" if self.namespace.strip("/") else f"/{self.name}"

    @property
    def module(self) -> str:
        return EXECUTABLES[self.executable]


MPC_ARGUMENTS = [
    LaunchArgument("robot", "cartpole", "robot config: config/<robot>.yaml, or a path to a parameter file"),
    LaunchArgument("mode", "realtime", "realtime: wall-clock physics; lockstep: one step per command, /clock", ("realtime", "lockstep")),
    LaunchArgument("gui", "false", "open the PyBullet GUI", ("true", "false")),
    LaunchArgument("use_sim", "true", "start the PyBullet sim; false: a real robot provides the topics", ("true", "false")),
    LaunchArgument("planner", "cem", "planning algorithm", ("cem",)),
    LaunchArgument("duration", "0", "stop after this many seconds of robot time (0: run until stopped)"),
    LaunchArgument("summary_path", "", "write the run summary JSON here when the run ends"),
]


def _bool(value: str, name: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise ValueError(f"launch argument '{name}' must be true or false, got '{value}'")
    return value.lower() == "true"


def robot_config(robot: str) -> Path:
    """The parameter file of a robot: a name under config/, or a path."""
    path = Path(robot).expanduser()
    if path.suffix in (".yaml", ".yml"):
        return path.resolve()
    return config_dir() / f"{robot}.yaml"


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


def mpc_graph(args: dict[str, str]) -> list[NodeSpec]:
    """Nodes of ``mpc.launch.py`` for the given launch arguments."""
    a = with_defaults(args, MPC_ARGUMENTS)
    config = robot_config(a["robot"])
    if not config.is_file():
        raise ValueError(f"launch argument 'robot': no parameter file {config}")
    lockstep = a["mode"] == "lockstep"
    duration = float(a["duration"])
    if duration < 0:
        raise ValueError("launch argument 'duration' must be >= 0")
    common = {"mode": a["mode"], "use_sim_time": lockstep}
    nodes: list[NodeSpec] = []
    if _bool(a["use_sim"], "use_sim"):
        nodes.append(NodeSpec("sim_node", "sim", [str(config), common | {"gui": _bool(a["gui"], "gui")}]))
    nodes.append(
        NodeSpec(
            "controller_node",
            "mpc_controller",
            [str(config), common | {"planner": a["planner"]}],
            remappings=[("joint_states", STATE_TOPIC), ("effort_controller/commands", COMMAND_TOPIC)],
        )
    )
    if duration > 0:
        nodes.append(
            NodeSpec(
                "run_monitor",
                "run_monitor",
                [str(config), common | {"duration": duration, "planner": a["planner"], "summary_path": a["summary_path"]}],
                remappings=[("joint_states", STATE_TOPIC), ("effort_controller/commands", COMMAND_TOPIC)],
                ends_launch=True,
            )
        )
    return nodes


GRAPHS = {"mpc": (MPC_ARGUMENTS, mpc_graph)}
