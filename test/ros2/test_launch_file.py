"""launch/mpc.launch.py, evaluated with the real launch API, gives exactly the node graph of
mbrl_control.graph.mpc_graph: same executables, names, namespaces, parameter files and override
dicts, remappings, command-line arguments, and the run monitor's exit ends the launch.

Needs a ROS 2 install (launch, launch_ros): the module carries the ``ros2_install`` marker, which CI
deselects by name. ``launch`` is imported inside the tests, so collecting this file never needs it.
Nothing is started here: the launch description is visited as ``ros2 launch`` would visit it, and
each Node action has its substitutions performed instead of being executed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from mbrl_control.graph import (
    FLEET_ARGUMENTS,
    LEARN_ARGUMENTS,
    MPC_ARGUMENTS,
    NodeSpec,
    fleet_graph,
    learn_graph,
    mpc_graph,
)

pytestmark = pytest.mark.ros2_install

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILE = ROOT / "launch" / "mpc.launch.py"
LEARN_LAUNCH_FILE = ROOT / "launch" / "learn.launch.py"
FLEET_LAUNCH_FILE = ROOT / "launch" / "fleet.launch.py"
DISCOVERY_RANGE = "ROS_AUTOMATIC_DISCOVERY_RANGE"


def require_launch() -> None:
    """Fail with what to do when the launch API isn't importable (no ROS 2 install sourced)."""
    try:
        import launch.actions  # noqa: F401  (a source tree's launch/ folder alone imports as a namespace)
        import launch_ros.actions  # noqa: F401
    except ImportError as e:
        error = e
    else:
        return
    pytest.fail(f"the ROS 2 launch API is not importable ({error}): run these tests on a ROS 2 install, "
                "after `source /opt/ros/$ROS_DISTRO/setup.bash`", pytrace=False)


def evaluate(args: dict[str, str], launch_file: Path = LAUNCH_FILE):
    """Include the launch file with ``args`` (as ``ros2 launch ... name:=value`` does) and visit it
    until the Node actions appear; return them with their substitutions performed, and the context."""
    require_launch()
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from launch_ros.actions import Node

    from launch import LaunchContext

    context = LaunchContext()
    include = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(launch_file)), launch_arguments=list(args.items())
    )
    queue = list(include.visit(context) or [])
    nodes = []
    while queue:  # depth first, in order, like LaunchService
        entity = queue.pop(0)
        if isinstance(entity, Node):
            entity._perform_substitutions(context)  # what Node.execute does before starting the process
            nodes.append(entity)
        else:
            queue[0:0] = list(entity.visit(context) or [])
    return nodes, context


def _text(part) -> str | None:
    """A command-line part made of plain text substitutions, as text; None for any other."""
    from launch.substitutions import TextSubstitution

    if all(isinstance(s, TextSubstitution) for s in part):
        return "".join(s.text for s in part)
    return None


class _ParamsLoader(yaml.SafeLoader):
    """launch_ros normalises list parameters to tuples and yaml.dump tags them !!python/tuple (rcl's
    parser reads the sequence and ignores the tag): read them back as the lists the graph gave."""


_ParamsLoader.add_constructor("tag:yaml.org,2002:python/tuple", lambda loader, node: loader.construct_sequence(node))


def parameters_of(node) -> list[str | dict]:
    """The node's --params-file arguments, in order: paths as given, override files as their content."""
    # launch_ros exposes no getter for these; its own tests read the same attribute.
    out = []
    for path, is_file in node._Node__expanded_parameter_arguments:
        assert is_file, f"{node.node_name}: a -p parameter rule {path!r}; the graph gives files and dicts only"
        if Path(path).name.startswith("launch_params_"):  # a dict of overrides, written by launch_ros
            out.append(yaml.load(Path(path).read_text(), Loader=_ParamsLoader))
            os.unlink(path)
        else:
            out.append(path)
    return out


def expected_parameters(spec: NodeSpec) -> list[str | dict]:
    return [p if isinstance(p, str) else {spec.fqn: {"ros__parameters": p}} for p in spec.parameters]


def assert_node_matches(node, spec: NodeSpec) -> None:
    from launch.actions import Shutdown

    where = f"{spec.package}/{spec.executable} ({spec.name})"
    assert (node.node_package, node.node_executable) == (spec.package, spec.executable), where
    assert node.node_name == spec.fqn, where
    assert node.expanded_node_namespace == "/" + spec.namespace.strip("/"), where
    assert parameters_of(node) == expected_parameters(spec), where
    assert list(node.expanded_remapping_rules or []) == list(spec.remappings), where
    # the process's command line: executable, then the graph's arguments, then --ros-args
    texts = [_text(part) for part in node.cmd]
    assert texts[1 : 1 + len(spec.arguments)] == spec.arguments, where
    assert texts[1 + len(spec.arguments)] == "--ros-args", where
    on_exit = node.get_sub_entities()
    if spec.ends_launch:
        assert len(on_exit) == 1 and isinstance(on_exit[0], Shutdown), f"{where}: its exit must end the launch"
    else:
        assert on_exit == [], f"{where}: only the run monitor (episode manager) ends the launch"


ARGUMENT_SETS = [
    {},
    {"mode": "lockstep", "duration": "5", "gui": "true"},
    {"mode": "lockstep", "duration": "8", "planner": "cem", "summary_path": "/tmp/summary.json"},
    {"use_sim": "false"},
    {"use_sim": "false", "hardware": "ros2_control"},
    {"use_sim": "false", "hardware": "loopback", "duration": "2"},
    {"use_sim": "false", "hardware": "my_robot.io:Motors"},
    {"state_topic": "/robot/joint_states", "command_topic": "/forward_effort_controller/commands", "duration": "3"},
    {"record": "true", "record_path": "/tmp/run.mcap", "foxglove": "true"},
    {"rviz": "true", "mode": "lockstep"},
    {"duration": "1", "summary_path": "123"},  # a string argument that looks like a number stays a string
    {"robot": str(ROOT / "config" / "cartpole.yaml")},
]


@pytest.mark.parametrize("args", ARGUMENT_SETS, ids=lambda a: " ".join(f"{k}:={v}" for k, v in a.items()) or "defaults")
def test_launch_file_nodes_are_the_graph(args, monkeypatch):
    monkeypatch.delenv(DISCOVERY_RANGE, raising=False)  # the launch file sets it; restored afterwards
    nodes, _ = evaluate(args)
    specs = mpc_graph(args)
    assert [n.node_executable for n in nodes] == [s.executable for s in specs]
    for node, spec in zip(nodes, specs):
        assert_node_matches(node, spec)


LEARN_ARGUMENT_SETS = [
    {"output_dir": "/tmp/learn_test"},
    {"output_dir": "/tmp/learn_test", "episodes": "3", "episode_length": "5", "randomize": "true", "mode": "realtime"},
    {"output_dir": "/tmp/learn_test", "planner": "mppi", "estimator": "none", "record": "true"},
    {"output_dir": "/tmp/learn_test", "robot": "iiwa", "model": "residual", "payload": "2.0"},
]
# Namespaced nodes too: launch_ros resolves each robot's node under its namespace, with its
# parameters keyed by that full name.
FLEET_ARGUMENT_SETS = [
    {"output_dir": "/tmp/fleet_test"},
    {"output_dir": "/tmp/fleet_test", "robots": "3", "part": "robots", "randomize": "episode"},
    {"output_dir": "/tmp/fleet_test", "robots": "4", "part": "learner", "device": "cpu"},
]
OTHER_LAUNCH_FILES = [(LEARN_LAUNCH_FILE, learn_graph, args) for args in LEARN_ARGUMENT_SETS] + [
    (FLEET_LAUNCH_FILE, fleet_graph, args) for args in FLEET_ARGUMENT_SETS]


@pytest.mark.parametrize("launch_file, graph, args", OTHER_LAUNCH_FILES,
                         ids=lambda v: v.stem if isinstance(v, Path) else " ".join(f"{k}:={x}" for k, x in v.items())
                         if isinstance(v, dict) else "")
def test_learn_and_fleet_launch_files_nodes_are_the_graph(launch_file, graph, args, monkeypatch):
    monkeypatch.delenv(DISCOVERY_RANGE, raising=False)
    nodes, _ = evaluate(args, launch_file)
    specs = graph(args)
    assert [n.node_executable for n in nodes] == [s.executable for s in specs]
    for node, spec in zip(nodes, specs):
        assert_node_matches(node, spec)


def test_override_values_keep_their_types(monkeypatch):
    monkeypatch.delenv(DISCOVERY_RANGE, raising=False)
    spec_args = {"mode": "lockstep", "duration": "8", "gui": "true", "summary_path": "42"}
    nodes, _ = evaluate(spec_args)
    overrides = {n.node_name: parameters_of(n)[1][n.node_name]["ros__parameters"] for n in nodes}
    assert overrides["/sim"]["gui"] is True and overrides["/sim"]["use_sim_time"] is True
    assert overrides["/run_monitor"]["duration"] == 8.0 and isinstance(overrides["/run_monitor"]["duration"], float)
    assert overrides["/run_monitor"]["summary_path"] == "42"


@pytest.mark.parametrize("launch_file, arguments", [(LAUNCH_FILE, MPC_ARGUMENTS), (LEARN_LAUNCH_FILE, LEARN_ARGUMENTS),
                                                   (FLEET_LAUNCH_FILE, FLEET_ARGUMENTS)], ids=["mpc", "learn", "fleet"])
def test_launch_file_declares_every_graph_argument_with_its_default_and_choices(launch_file, arguments):
    require_launch()
    from launch.launch_description_sources import get_launch_description_from_python_launch_file

    declared = {a.name: a for a in get_launch_description_from_python_launch_file(str(launch_file)).get_launch_arguments()}
    assert list(declared) == [a.name for a in arguments]
    for a in arguments:
        d = declared[a.name]
        assert _text(d.default_value) == a.default, a.name
        assert (d.choices or []) == list(a.choices), a.name


def test_discovery_stays_on_localhost_unless_set(monkeypatch):
    monkeypatch.delenv(DISCOVERY_RANGE, raising=False)
    _, context = evaluate({})
    assert context.environment[DISCOVERY_RANGE] == "LOCALHOST"
    monkeypatch.setenv(DISCOVERY_RANGE, "SUBNET")
    _, context = evaluate({})
    assert context.environment[DISCOVERY_RANGE] == "SUBNET"


@pytest.mark.parametrize(
    "args, words",
    [
        ({"mode": "fast"}, ["mode", "fast", "lockstep"]),
        ({"planner": "magic"}, ["planner", "magic"]),
        ({"gui": "maybe"}, ["gui", "maybe"]),
        ({"duration": "-1"}, ["duration", ">= 0"]),
        ({"use_sim": "false", "hardware": "gazebo"}, ["hardware", "gazebo"]),
        ({"robot": "unicycle"}, ["robot", "unicycle.yaml"]),
    ],
    ids=lambda v: " ".join(f"{k}:={x}" for k, x in v.items()) if isinstance(v, dict) else None,
)
def test_bad_arguments_fail_with_a_clear_error(args, words, monkeypatch):
    monkeypatch.delenv(DISCOVERY_RANGE, raising=False)
    with pytest.raises(Exception) as error:
        evaluate(args)
    for word in words:
        assert word in str(error.value), f"{error.value!r} does not mention {word!r}"


def test_launch_service_refuses_a_bad_argument_before_starting_anything(monkeypatch):
    """What `ros2 launch mbrl_control mpc.launch.py mode:=fast` runs: a non-zero return, no process."""
    require_launch()
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    from launch import LaunchService

    monkeypatch.delenv(DISCOVERY_RANGE, raising=False)
    service = LaunchService()
    service.include_launch_description(
        IncludeLaunchDescription(PythonLaunchDescriptionSource(str(LAUNCH_FILE)), launch_arguments=[("mode", "fast")])
    )
    assert service.run() != 0
