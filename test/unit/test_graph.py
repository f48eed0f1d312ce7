"""One description of the node graph serves mpc.launch.py and the pip-only launcher."""

import importlib.util
import re
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from mbrl_control.graph import (
    EXECUTABLES,
    EXIT_BAD_PARAMETER,
    FLEET_ARGUMENTS,
    GRAPHS,
    LEARN_ARGUMENTS,
    MPC_ARGUMENTS,
    fleet_graph,
    learn_graph,
    mpc_graph,
    parameters,
    resolved_parameters,
)
from mbrl_control.launcher import node_command, parse_launch_args

ROOT = Path(__file__).resolve().parents[2]


def names(specs):
    return [s.name for s in specs]


def spec(specs, name):
    return next(s for s in specs if s.name == name)


def test_default_graph_is_sim_estimator_controller_wired_by_ros2_control_topics():
    specs = mpc_graph({})
    assert names(specs) == ["sim", "estimator", "mpc_controller"]
    robot = {"joint_states": "/joint_states", "effort_controller/commands": "/effort_controller/commands"}
    assert dict(spec(specs, "sim").remappings) == robot
    assert dict(spec(specs, "estimator").remappings) == robot  # readings in, commands for prediction
    controller = spec(specs, "mpc_controller")
    assert dict(controller.remappings) == robot | {"joint_states": "/estimator/state"}
    assert controller.parameters[0].endswith("config/cartpole.yaml")
    assert controller.parameters[1] == {"mode": "realtime", "use_sim_time": False}  # the config's planner
    assert spec(specs, "sim").parameters[1]["sensor.enabled"] is True


def test_without_estimator_the_controller_reads_exact_joint_states():
    specs = mpc_graph({"estimator": "none"})
    assert names(specs) == ["sim", "mpc_controller"]
    assert dict(specs[1].remappings)["joint_states"] == "/joint_states"
    assert specs[0].parameters[1]["sensor.enabled"] is False
    assert spec(mpc_graph({"estimator": "ukf"}), "estimator").parameters[1]["estimator.kind"] == "ukf"


def test_launch_arguments_change_the_graph():
    lockstep = mpc_graph({"mode": "lockstep", "duration": "5", "gui": "true"})
    assert names(lockstep) == ["sim", "estimator", "mpc_controller", "run_monitor"]
    assert all(s.parameters[1]["use_sim_time"] is True for s in lockstep)
    assert lockstep[0].parameters[1]["gui"] is True
    monitor = lockstep[3]
    assert monitor.ends_launch and monitor.parameters[1]["duration"] == 5.0
    assert dict(monitor.remappings)["ground_truth"] == "/sim/ground_truth"
    assert dict(monitor.remappings)["estimate"] == "/estimator/state"
    assert names(mpc_graph({"use_sim": "false"})) == ["mock_hardware", "estimator", "mpc_controller"]
    assert names(mpc_graph({"use_sim": "false", "hardware": "ros2_control", "estimator": "none"})) == ["mpc_controller"]
    driver = mpc_graph({"use_sim": "false", "hardware": "my_robot.io:Motors"})[0]
    assert driver.name == "driver" and driver.parameters[1]["device"] == "my_robot.io:Motors"
    assert driver.parameters[1]["autostart"] is True
    recorded = mpc_graph({"record": "true", "record_path": "/tmp/x.mcap"})
    assert names(recorded)[0] == "recorder" and recorded[0].parameters[1]["output"] == "/tmp/x.mcap"


def test_topic_arguments_remap_every_robot_facing_node():
    specs = mpc_graph({"use_sim": "false", "hardware": "mock", "state_topic": "/robot/joint_states",
                       "command_topic": "/forward_effort_controller/commands", "duration": "3"})
    for s in specs:
        remaps = dict(s.remappings)
        assert remaps["effort_controller/commands"] == "/forward_effort_controller/commands"
        expected = "/estimator/state" if s.name == "mpc_controller" else "/robot/joint_states"
        assert remaps["joint_states"] == expected, s.name
    assert dict(spec(specs, "run_monitor").remappings)["ground_truth"] == "/robot/joint_states"


def test_rviz_adds_ros2_install_nodes_the_pip_launcher_cannot_start():
    specs = mpc_graph({"rviz": "true"})
    rsp, rviz = specs[-2], specs[-1]
    assert (rsp.package, rviz.package) == ("robot_state_publisher", "rviz2")
    assert "<robot" in rsp.parameters[0]["robot_description"]
    assert rviz.arguments[0] == "-d" and rviz.arguments[1].endswith("mbrl_control.rviz")
    assert rsp.module is None and rviz.module is None


@pytest.mark.parametrize(
    "args, message",
    [
        ({"mode": "fast"}, "mode"),
        ({"planner": "magic"}, "planner"),
        ({"robot": "unicycle"}, "robot"),
        ({"colour": "red"}, "unknown launch arguments"),
        ({"duration": "-1"}, "duration"),
        ({"duration": "abc"}, "number of seconds"),
        ({"overrides": "/nonexistent.yaml"}, "overrides"),
        ({"use_sim": "false", "hardware": "gazebo"}, "hardware"),
    ],
)
def test_bad_launch_arguments_are_refused_by_name(args, message):
    with pytest.raises(ValueError, match=message):
        mpc_graph(args)


def test_lockstep_runs_wait_for_the_recorder_and_the_learner():
    assert spec(mpc_graph({"mode": "lockstep", "record": "true"}), "mpc_controller").parameters[-1]["lockstep_readers"] == [
        "recorder"]
    assert "lockstep_readers" not in spec(mpc_graph({"record": "true"}), "mpc_controller").parameters[-1]  # realtime
    learn = spec(learn_graph({"record": "true", "mode": "lockstep"}), "mpc_controller").parameters[-1]
    assert learn["lockstep_readers"] == ["recorder", "learner"]


def test_pip_launcher_command_passes_files_overrides_and_remaps(tmp_path):
    controller = spec(mpc_graph({"mode": "lockstep"}), "mpc_controller")
    cmd = node_command(controller, tmp_path)
    assert cmd[1:3] == ["-m", "mbrl_control.nodes.controller_node"]
    assert cmd[3:6] == ["--ros-args", "-r", "__node:=mpc_controller"]
    files = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--params-file"]
    assert files[0].endswith("cartpole.yaml")
    override = yaml.safe_load(Path(files[1]).read_text())
    assert override == {"/mpc_controller": {"ros__parameters": {"mode": "lockstep", "use_sim_time": True,
                                                                "lockstep_readers": [""]}}}
    assert "joint_states:=/estimator/state" in cmd
    assert parse_launch_args(["a:=1", "b:=x:=y"]) == {"a": "1", "b": "x:=y"}
    with pytest.raises(ValueError):
        parse_launch_args(["oops"])


def test_setup_py_installs_every_graph_executable():
    text = (ROOT / "setup.py").read_text()
    scripts = dict(re.findall(r'"(\w+) = ([\w.]+):main"', text))
    for exe, module in EXECUTABLES.items():
        assert scripts.get(exe) == module


class Recorded:
    """Stands in for one launch / launch_ros class: keeps what it was constructed with."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def fake_launch_api(monkeypatch, arguments: dict[str, str]) -> None:
    """Install recording stand-ins for the launch API the adapter imports (this environment has no
    ROS 2 install; test/ros2/test_launch_file.py evaluates the launch files with the real one).
    A ``LaunchConfiguration(name)`` performs to ``arguments[name]``, as ``ros2 launch name:=value`` would."""

    def module(name, **members):
        m = types.ModuleType(name)
        m.__dict__.update(members)
        monkeypatch.setitem(sys.modules, name, m)
        return m

    kinds = {k: type(k, (Recorded,), {}) for k in ("DeclareLaunchArgument", "OpaqueFunction", "SetEnvironmentVariable",
                                                   "Shutdown", "EnvironmentVariable", "LaunchDescription", "Node")}

    class LaunchConfiguration(Recorded):
        def perform(self, context):
            return context[self.args[0]]

    launch = module("launch", LaunchDescription=kinds["LaunchDescription"])
    launch.actions = module("launch.actions", **{k: kinds[k] for k in ("DeclareLaunchArgument", "OpaqueFunction",
                                                                       "SetEnvironmentVariable", "Shutdown")})
    launch.substitutions = module("launch.substitutions", EnvironmentVariable=kinds["EnvironmentVariable"],
                                  LaunchConfiguration=LaunchConfiguration)
    module("launch_ros", actions=module("launch_ros.actions", Node=kinds["Node"]))
    monkeypatch.delitem(sys.modules, "mbrl_control.launch_adapter", raising=False)  # re-imported on the stand-ins


def load_launch_file(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_launch", ROOT / "launch" / f"{name}.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ADAPTER_CASES = [
    ("mpc", {"mode": "lockstep", "duration": "5"}),
    ("mpc", {"record": "true", "record_path": "/tmp/x.mcap", "state_topic": "/robot/joint_states"}),
    ("mpc", {"use_sim": "false", "hardware": "mock"}),
    ("learn", {"episodes": "3", "output_dir": "/tmp/learn"}),
    ("fleet", {"robots": "3", "output_dir": "/tmp/fleet"}),
    ("fleet", {"robots": "2", "part": "learner", "output_dir": "/tmp/fleet"}),
]


@pytest.mark.parametrize("name, given", ADAPTER_CASES)
def test_launch_files_declare_every_argument_and_start_exactly_the_graphs_nodes(monkeypatch, name, given):
    """Each launch file, through the shared adapter: declares the graph's arguments (defaults,
    choices), builds its nodes from the graph with the arguments ``ros2 launch`` was given, passes
    every NodeSpec field through, and ends the launch when (only) an ``ends_launch`` node exits, or one that cannot start."""
    fake_launch_api(monkeypatch, {})
    arguments, build = GRAPHS[name]
    assert (arguments, build) == {"mpc": (MPC_ARGUMENTS, mpc_graph), "learn": (LEARN_ARGUMENTS, learn_graph),
                                  "fleet": (FLEET_ARGUMENTS, fleet_graph)}[name]
    description = load_launch_file(name).generate_launch_description()
    entities = description.args[0]
    declared = {e.args[0]: e.kwargs for e in entities if type(e).__name__ == "DeclareLaunchArgument"}
    assert list(declared) == [a.name for a in arguments]
    assert {"mode", "planner"} | ({"robot", "gui", "use_sim"} if name == "mpc" else set()) <= set(declared)
    for a in arguments:
        assert declared[a.name]["default_value"] == a.default and declared[a.name]["description"] == a.description
        assert declared[a.name]["choices"] == (list(a.choices) or None)
    discovery = next(e for e in entities if type(e).__name__ == "SetEnvironmentVariable")
    assert discovery.args[0] == "ROS_AUTOMATIC_DISCOVERY_RANGE"
    assert discovery.args[1].kwargs["default_value"] == "LOCALHOST"  # an existing setting wins
    (opaque,) = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    values = {a.name: a.default for a in arguments} | given
    nodes = opaque.kwargs["function"](values)
    specs = build(values)
    assert len(specs) == len(nodes) >= (1 if given.get("part") == "learner" else 2)
    for node, s in zip(nodes, specs):
        k = node.kwargs
        assert (k["package"], k["executable"], k["name"]) == (s.package, s.executable, s.name)
        assert k["namespace"] == s.namespace
        assert k["parameters"] == s.parameters and k["remappings"] == s.remappings and k["arguments"] == s.arguments
        if s.ends_launch:
            assert [type(a).__name__ for a in k["on_exit"]] == ["Shutdown"], s.name
        else:  # ends the launch only when it could not start with its parameters
            assert [type(a).__name__ for a in k["on_exit"](SimpleNamespace(returncode=EXIT_BAD_PARAMETER), None)] == ["Shutdown"]
            assert all(k["on_exit"](SimpleNamespace(returncode=code), None) is None for code in (0, 1, -9)), s.name
    assert any(s.ends_launch for s in specs) == ("duration" in given or name == "learn"
                                                 or (name == "fleet" and given.get("part") != "learner"))


def test_overrides_file_goes_on_top_of_the_robot_config_for_every_node(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("sim:\n  ros__parameters:\n    seed: 3\n")
    for s in mpc_graph({"overrides": str(extra), "duration": "1", "record": "true"}):
        assert s.parameters[1] == str(extra) and isinstance(s.parameters[2], dict), s.name


def test_launch_planner_choices_are_the_cores():
    from mbrl_control.core.builders import PLANNERS

    assert next(a for a in MPC_ARGUMENTS if a.name == "planner").choices == ("", *PLANNERS)  # "": the config's


def test_learn_graph_runs_the_controller_on_the_learned_model_with_learner_and_episode_manager(tmp_path):
    specs = learn_graph({"episodes": "3", "episode_length": "5", "output_dir": str(tmp_path)})
    assert names(specs) == ["sim", "estimator", "mpc_controller", "learner", "episode_manager"]
    assert spec(specs, "mpc_controller").parameters[-1]["model"] == "learned"
    assert spec(specs, "learner").parameters[-1]["data_dir"] == str(tmp_path / "learner")
    manager = spec(specs, "episode_manager")
    assert manager.ends_launch and manager.parameters[-1]["episodes"] == 3
    assert manager.parameters[-1]["wait_for_model"] is True  # lockstep by default
    assert spec(specs, "learner").parameters[-1]["mbpo.enabled"] is False
    mbpo = learn_graph({"planner": "policy", "output_dir": str(tmp_path)})  # MBPO: the learner trains policies too
    assert spec(mbpo, "learner").parameters[-1]["mbpo.enabled"] is True
    assert spec(mbpo, "mpc_controller").parameters[-1].items() >= {"planner": "policy", "model": "learned"}.items()
    with pytest.raises(ValueError, match="episodes"):
        learn_graph({"episodes": "0"})
    with pytest.raises(ValueError, match="planner"):
        learn_graph({"planner": "nmpc"})


def test_the_estimators_staleness_follows_the_controllers_state_timeout(tmp_path):
    def stale_after(overrides: str) -> float | None:
        path = tmp_path / "overrides.yaml"
        path.write_text(overrides)
        return spec(mpc_graph({"overrides": str(path)}), "estimator").parameters[-1].get("estimator.stale_after")

    config = yaml.safe_load((ROOT / "config" / "cartpole.yaml").read_text())
    assert "stale_after" not in config["estimator"]["ros__parameters"]["estimator"]  # one setting, not two
    assert stale_after("mpc_controller:\n  ros__parameters:\n    state_timeout: 0.25\n") == 0.25
    assert stale_after("/**:\n  ros__parameters:\n    state_timeout: 0.05\n") == 0.05
    agreeing = ("mpc_controller:\n  ros__parameters:\n    state_timeout: 0.2\n"
                "estimator:\n  ros__parameters:\n    estimator:\n      stale_after: 0.2\n")
    assert stale_after(agreeing) == 0.2
    with pytest.raises(ValueError, match=r"'estimator.stale_after' \(0.3 s\) is set by mpc_controller's "
                                         r"'state_timeout' \(0.2 s\)"):
        stale_after("mpc_controller:\n  ros__parameters:\n    state_timeout: 0.2\n"
                    "estimator:\n  ros__parameters:\n    estimator:\n      stale_after: 0.3\n")
    with pytest.raises(ValueError, match=r"'estimator.stale_after' \(0.1 s\) is set by mpc_controller's "
                                         r"'state_timeout' \(its default\)"):
        stale_after("estimator:\n  ros__parameters:\n    estimator:\n      stale_after: 0.1\n")


def test_without_a_configured_state_timeout_both_nodes_default_to_the_same_staleness(tmp_path):
    from mbrl_control.nodes import controller_node, estimator_node

    defaults = {s.name: s.default for s in [*controller_node.PARAMS, *estimator_node.PARAMS]}
    assert defaults["state_timeout"] == defaults["estimator.stale_after"]
    bare = tmp_path / "robot.yaml"
    bare.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"control_rate": 50.0}}}))
    assert "estimator.stale_after" not in spec(mpc_graph({"robot": str(bare)}), "estimator").parameters[-1]


def test_a_launch_without_the_python_requirements_names_the_pip_packages_before_starting_a_node(monkeypatch):
    fake_launch_api(monkeypatch, {})
    monkeypatch.setitem(sys.modules, "yaml", None)  # as if not installed (its pip name is pyyaml)
    monkeypatch.setitem(sys.modules, "mcap_ros2", None)
    description = load_launch_file("mpc").generate_launch_description()
    (opaque,) = [e for e in description.args[0] if type(e).__name__ == "OpaqueFunction"]
    with pytest.raises(RuntimeError, match=r"not installed: mcap-ros2-support, pyyaml; .*pip install -r "
                                           r"requirements.txt.*'mcap-ros2-support' 'pyyaml'"):
        opaque.kwargs["function"]({a.name: a.default for a in MPC_ARGUMENTS})


def test_a_garbled_parameter_file_is_refused_naming_it(tmp_path):
    garbled = tmp_path / "garbled.yaml"
    garbled.write_text("/**:\n  ros__parameters:\n    control_rate: [50.0\nsim: : :\n")
    for args in ({"robot": str(garbled)}, {"overrides": str(garbled)}):
        with pytest.raises(ValueError, match=r"garbled.yaml is not valid YAML"):
            mpc_graph(args)


def robot_with_layers(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A copy of the cart-pole's config as ``bot.yaml``, its file for 100 Hz and an overrides file."""
    robot = tmp_path / "bot.yaml"
    robot.write_text((ROOT / "config" / "cartpole.yaml").read_text().replace("urdf/", str(ROOT / "config" / "urdf") + "/"))
    at_100 = tmp_path / "bot.100hz.yaml"
    at_100.write_text("mpc_controller:\n  ros__parameters:\n    cem:\n      horizon: 60\n")
    extra = tmp_path / "extra.yaml"
    extra.write_text("sim:\n  ros__parameters:\n    seed: 3\n")
    return robot, at_100, extra


def test_control_rate_sets_every_nodes_rate_and_brings_the_robots_file_for_that_rate(tmp_path):
    robot, at_100, extra = robot_with_layers(tmp_path)
    specs = mpc_graph({"robot": str(robot), "control_rate": "100", "overrides": str(extra), "duration": "1"})
    for s in specs:
        assert s.parameters[-1]["control_rate"] == 100.0, s.name
        assert s.parameters[:3] == [str(robot), str(at_100), str(extra)], s.name  # the rate's file before overrides
    assert all(s.parameters[:2] == [str(robot), str(extra)] for s in mpc_graph(
        {"robot": str(robot), "control_rate": "200", "overrides": str(extra)}))  # no file for 200 Hz: none added
    assert all("control_rate" not in s.parameters[-1] for s in mpc_graph({}))  # the robot config's rate
    learn = learn_graph({"robot": str(robot), "control_rate": "100", "output_dir": str(tmp_path / "out")})
    assert {s.name for s in learn if s.parameters[-1].get("control_rate") == 100.0} == set(names(learn))
    assert all(str(at_100) in s.parameters for s in learn)
    for bad in ("0", "-50", "fast"):
        with pytest.raises(ValueError, match="control_rate"):
            mpc_graph({"control_rate": bad})


def test_planning_on_a_learned_model_brings_the_robots_file_for_that_model_before_overrides(tmp_path):
    robot, at_100, extra = robot_with_layers(tmp_path)
    learned = tmp_path / "bot.learned.yaml"
    learned.write_text("mpc_controller:\n  ros__parameters:\n    cem:\n      settled_std: 0.0\n")
    args = {"robot": str(robot), "control_rate": "100", "overrides": str(extra), "output_dir": str(tmp_path / "out")}
    for s in learn_graph(args):
        assert s.parameters[:4] == [str(robot), str(at_100), str(learned), str(extra)], s.name
    for model in ("residual", "analytic"):  # no bot.residual.yaml; the analytic model takes the robot's file as it is
        assert all(str(learned) not in s.parameters for s in learn_graph(args | {"model": model}))
    assert all(str(learned) not in s.parameters for s in mpc_graph({"robot": str(robot)}))
    fleet = fleet_graph({"robot": str(robot), "robots": "2", "output_dir": str(tmp_path / "fleet")})
    assert [s.parameters[-1]["cem.settled_std"] for s in fleet if s.name == "mpc_controller"] == [0.0, 0.0]  # (flattened)
    shipped = learn_graph({"output_dir": str(tmp_path / "shipped")})  # config/cartpole.learned.yaml
    assert parameters([p for p in spec(shipped, "mpc_controller").parameters if isinstance(p, str)],
                      "mpc_controller")["cem.settled_std"] == 0.0


def test_device_goes_to_the_controller_and_the_learner_only(tmp_path):
    specs = learn_graph({"device": "cuda", "output_dir": str(tmp_path)})
    assert {s.name for s in specs if s.parameters[-1].get("device") == "cuda"} == {"mpc_controller", "learner"}
    assert all("device" not in s.parameters[-1] for s in learn_graph({"output_dir": str(tmp_path)}))


def test_wait_for_model_holds_the_robot_for_training_in_realtime_only_when_asked(tmp_path):
    def waits(**args):
        return spec(learn_graph(args | {"output_dir": str(tmp_path)}), "episode_manager").parameters[-1]["wait_for_model"]

    assert waits(mode="lockstep") is True and waits(mode="realtime") is False  # the defaults
    assert waits(mode="realtime", wait_for_model="true") is True
    assert waits(mode="lockstep", wait_for_model="false") is False
    with pytest.raises(ValueError, match="wait_for_model"):
        learn_graph({"wait_for_model": "maybe", "output_dir": str(tmp_path)})


def test_the_learner_is_niced_beside_realtime_robots_only(tmp_path):
    def nice(graph, **args):
        learner = spec(graph(args | {"output_dir": str(tmp_path)}), "learner")
        return resolved_parameters(learner).get("scheduling.nice", 0)

    assert nice(learn_graph, mode="realtime") == 10  # the robot file's: training yields to control
    assert nice(learn_graph, mode="lockstep") == 0  # beside lockstep loops that never idle
    assert nice(fleet_graph, mode="lockstep", robots="2") == 0
    assert nice(fleet_graph, mode="lockstep", robots="2", part="learner") == 0


def test_learn_uses_the_parameter_files_planner_and_refuses_one_that_cannot_learn(tmp_path):
    assert spec(learn_graph({"output_dir": str(tmp_path)}), "mpc_controller").parameters[-1].get("planner") is None
    at_100 = learn_graph({"control_rate": "100", "output_dir": str(tmp_path)})  # config/cartpole.100hz.yaml: icem
    assert any(str(p).endswith("cartpole.100hz.yaml") for p in spec(at_100, "mpc_controller").parameters)
    nmpc = tmp_path / "nmpc.yaml"
    nmpc.write_text("mpc_controller:\n  ros__parameters:\n    planner: nmpc\n")
    with pytest.raises(ValueError, match="planner 'nmpc'"):
        learn_graph({"overrides": str(nmpc), "output_dir": str(tmp_path)})


def test_fleet_gives_each_robot_its_own_namespace_topics_clock_and_seeds_and_one_learner_all_of_them():
    specs = fleet_graph({"robots": "3", "output_dir": "/tmp/fleet"})
    single = learn_graph({"output_dir": "/tmp/fleet"})
    stack = [s.name for s in single if s.name not in ("learner", "episode_manager")]
    for i in range(3):
        ns = f"robot_{i}"
        mine = [s for s in specs if s.namespace == ns]
        assert [s.name for s in mine] == stack
        for s in mine:
            targets = [dst for _, dst in s.remappings]
            assert targets and all(d.startswith(f"/{ns}/") for d in targets), (s.fqn, targets)
            assert ("/clock", f"/{ns}/clock") in s.remappings  # lockstep: its own sim is its clock
            (values,) = s.parameters  # the files resolved: a section "sim" would not match /robot_0/sim
            assert values["use_sim_time"] is True
        sim = next(s for s in mine if s.name == "sim").parameters[0]
        assert (sim["seed"], sim["randomize.seed"], sim["randomize.enabled"], sim["randomize.every_reset"]) == (i, i, True, False)
        assert (sim["sensor.seed"], sim["fault.seed"]) == (i, i)
        assert sim["randomize.mass_scale"] == [0.95, 1.05] and sim["randomize.length_scale"] == [1.0, 1.0]  # one model's spread
        controller = next(s for s in mine if s.name == "mpc_controller").parameters[0]
        files = [f for f in spec(single, "mpc_controller").parameters if isinstance(f, str)]
        assert controller["model"] == "learned" and controller["lockstep_readers"] == ["learner"]
        assert all(controller[k] == i for k in ("explore.seed", "propagation.seed", "cem.seed", "icem.seed", "mppi.seed"))
        assert controller["cem.smoothing_window"] == parameters(files, "mpc_controller")["cem.smoothing_window"] == 7  # the robot file's
    learner, manager = spec(specs, "learner"), spec(specs, "episode_manager")
    assert learner.namespace == manager.namespace == "" and manager.ends_launch
    assert learner.parameters[-1]["sources"] == [f"/robot_{i}/mpc_controller/transitions" for i in range(3)]
    assert manager.parameters[-1]["robots"] == ["robot_0", "robot_1", "robot_2"]
    # No two robots share a topic; the process names (launcher keys, logs) are unique.
    per_robot = [{dst for s in specs if s.namespace == f"robot_{i}" for _, dst in s.remappings} for i in range(3)]
    assert all(per_robot) and not (per_robot[0] & per_robot[1] or per_robot[0] & per_robot[2] or per_robot[1] & per_robot[2])
    assert len({s.fqn for s in specs}) == len(specs)


def test_a_realtime_fleet_spreads_its_robots_controllers_and_estimators_across_the_control_period():
    """On one host, robots at one phase would all tick at once; lockstep has no phase (sim time)."""
    def phases(mode: str) -> dict[str, list]:
        specs = fleet_graph({"robots": "4", "mode": mode, "output_dir": "/tmp/fleet"})
        return {name: [s.parameters[-1].get("control_phase") for s in specs if s.name == name]
                for name in ("mpc_controller", "estimator", "sim")}

    realtime = phases("realtime")
    assert realtime["mpc_controller"] == realtime["estimator"] == [0.0, 0.25, 0.5, 0.75]
    assert realtime["sim"] == [None] * 4
    assert set(phases("lockstep")["mpc_controller"]) == {None}


def test_fleet_splits_into_a_robots_launch_and_a_learner_launch_that_together_are_the_whole():
    whole = fleet_graph({"robots": "2", "output_dir": "/tmp/fleet"})
    robots = fleet_graph({"robots": "2", "part": "robots", "output_dir": "/tmp/fleet"})
    learner = fleet_graph({"robots": "2", "part": "learner", "output_dir": "/tmp/fleet"})
    assert [s.name for s in learner] == ["learner"]
    assert "learner" not in [s.name for s in robots]
    assert [s.fqn for s in robots + learner] == [s.fqn for s in whole]
    with pytest.raises(ValueError, match="robots"):
        fleet_graph({"robots": "0"})
    for randomize, enabled, every_reset in (("episode", True, True), ("none", False, False)):
        sim = next(s for s in fleet_graph({"robots": "2", "randomize": randomize}) if s.name == "sim").parameters[0]
        assert (sim["randomize.enabled"], sim["randomize.every_reset"]) == (enabled, every_reset)
        assert "randomize.mass_scale" not in sim  # the files' ranges (the dataclass defaults here)


def test_fleet_seeds_follow_the_parameter_files(tmp_path):
    extra = tmp_path / "seeds.yaml"
    extra.write_text(yaml.safe_dump({"sim": {"ros__parameters": {"seed": 300, "randomize": {"seed": 40}}}}))
    specs = fleet_graph({"robots": "2", "overrides": str(extra), "output_dir": "/tmp/fleet"})
    sims = [s.parameters[0] for s in specs if s.name == "sim"]
    assert [(p["seed"], p["randomize.seed"]) for p in sims] == [(300, 40), (301, 41)]


def test_pip_launcher_starts_a_fleet_node_in_its_namespace(tmp_path):
    specs = fleet_graph({"robots": "2", "output_dir": "/tmp/fleet"})
    sim = next(s for s in specs if s.fqn == "/robot_1/sim")
    cmd = node_command(sim, tmp_path)
    assert cmd[cmd.index("__ns:=/robot_1") - 1] == "-r"
    (params_file,) = [cmd[i + 1] for i, c in enumerate(cmd) if c == "--params-file"]
    assert list(yaml.safe_load(Path(params_file).read_text())) == ["/robot_1/sim"]
    assert "/clock:=/robot_1/clock" in cmd


def test_every_random_stream_of_a_robot_stack_is_its_own_in_a_fleet():
    """ROBOT_SEEDS names every seed parameter the robot-stack nodes declare (a new one left out
    would give every fleet robot the same stream)."""
    from mbrl_control.graph import ROBOT_SEEDS
    from mbrl_control.nodes.catalog import NODE_MODULES, node_specs

    for node, module in NODE_MODULES.items():
        if module in ("sim_node", "controller_node", "goal_publisher", "estimator_node"):
            seeds = {s.name for s in node_specs(node) if s.name == "seed" or s.name.endswith(".seed")}
            assert seeds == set(ROBOT_SEEDS.get(module, ())), (node, seeds)


def test_learn_graph_model_residual_and_an_unknown_payload_reach_the_nodes_that_need_them(tmp_path):
    specs = learn_graph({"model": "residual", "payload_scale": "1.3", "output_dir": str(tmp_path)})
    assert spec(specs, "mpc_controller").parameters[-1]["model"] == "residual"
    assert "terminal" not in spec(specs, "mpc_controller").parameters[-1]  # the files' terminal cost stays
    assert spec(specs, "learner").parameters[-1]["model"] == "residual"
    assert spec(specs, "sim").parameters[-1]["payload.mass_scale"] == 1.3
    analytic = learn_graph({"model": "analytic", "payload": "2", "output_dir": str(tmp_path)})
    assert spec(analytic, "mpc_controller").parameters[-1]["model"] == "analytic"
    assert spec(analytic, "learner").parameters[-1]["model"] == "learned"  # records and trains; nobody plans on it
    assert spec(analytic, "sim").parameters[-1]["payload.mass"] == 2.0
    assert "payload.mass" not in spec(learn_graph({"output_dir": str(tmp_path)}), "sim").parameters[-1]
    with pytest.raises(ValueError, match="payload"):
        learn_graph({"payload": "-1", "output_dir": str(tmp_path)})
    with pytest.raises(ValueError, match="residual"):
        learn_graph({"model": "residual", "planner": "policy", "output_dir": str(tmp_path)})


def test_learning_a_reach_sends_goals_from_the_episode_manager_not_a_goal_publisher(tmp_path):
    names = [s.name for s in learn_graph({"robot": "iiwa", "output_dir": str(tmp_path)})]
    assert "goal_publisher" not in names and "episode_manager" in names
    assert "goal_publisher" in [s.name for s in mpc_graph({"robot": "iiwa"})]
