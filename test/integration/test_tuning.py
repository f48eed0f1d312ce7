"""Tuning while it runs (issue 17): dynamic parameters are checked when set (a bad value refused
with the reason, the old one kept), applied at the start of the next tick, and change the plan;
through rclpy's parameter service of a running controller, too."""

import math

import numpy as np
import pytest
import rclpy
import yaml
from rcl_interfaces.msg import SetParametersResult
from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.time import Time
from rosutil import logs, start
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from mbrl_control.core.learning.sample_layout import SampleLayout
from mbrl_control.graph import mpc_graph
from mbrl_control.nodes.params import ParamSpec, RuntimeParameters, declare_parameters
from mbrl_control.paths import config_dir

SPECS = [
    ParamSpec("gain", 1.0, "a gain", 0.0, 10.0, dynamic=True),
    ParamSpec("offset", 0.5, "kept below the gain", 0.0, 10.0, dynamic=True),
    ParamSpec("limits", [1.0, 2.0], "per joint", 0.0, 5.0, dynamic=True),
    ParamSpec("rate", 50.0, "ticks per second", 1.0, 1000.0, fixed_because="the timers run at it"),
]


@pytest.fixture
def tuned(domain):
    """A node with SPECS declared through RuntimeParameters; its applied changes in ``applied``."""
    context = Context()
    rclpy.init(context=context, domain_id=domain)
    node = Node("tuned", context=context)
    applied = []
    runtime = RuntimeParameters(
        node, lambda changes, values: "offset must stay below gain" if values["offset"] >= values["gain"] else None,
        applied.append)
    declare_parameters(node, SPECS, runtime)
    yield node, runtime, applied
    node.destroy_node()
    rclpy.shutdown(context=context)


def set_one(node: Node, name: str, value) -> SetParametersResult:
    return node.set_parameters([Parameter(name, value=value)])[0]


def test_a_change_is_checked_when_set_and_applied_only_between_ticks(tuned):
    node, runtime, applied = tuned
    assert set_one(node, "gain", 2.0).successful
    assert applied == [] and runtime.values["gain"] == 1.0  # stored, not in use before the next tick
    assert set_one(node, "gain", 3).successful  # an integer for a float: taken as 3.0
    runtime.apply_pending()  # the start of a tick: the last value set, once
    assert applied == [{"gain": 3.0}] and runtime.values["gain"] == 3.0 and runtime.applied == 1
    runtime.apply_pending()
    assert len(applied) == 1  # nothing new


@pytest.mark.parametrize("name, value, reason", [
    ("gain", 11.0, "out of range"),  # rclpy's range check (the descriptor's)
    ("gain", math.nan, "out of range"),
    ("limits", [1.0, 6.0], "out of range: must be in [0.0, 5.0]"),  # lists: ours, per element
    ("offset", 2.0, "offset must stay below gain"),  # the node's own rule, across parameters
    ("rate", 100.0, "read-only"),
])
def test_a_bad_value_is_refused_with_the_reason_and_the_old_one_kept(tuned, name, value, reason):
    node, runtime, applied = tuned
    before = node.get_parameter(name).value
    result = set_one(node, name, value)
    assert not result.successful and reason in result.reason
    assert node.get_parameter(name).value == before and runtime.pending == {}
    runtime.apply_pending()
    assert applied == []


def test_read_only_parameters_say_why(tuned):
    node, _, _ = tuned
    (rate,) = node.describe_parameters(["rate"])
    assert rate.read_only and rate.additional_constraints == "read-only: the timers run at it"
    (gain,) = node.describe_parameters(["gain"])
    assert not gain.read_only and "settable at runtime" in gain.additional_constraints


def controller_args(directory, **overrides) -> list[str]:
    """The controller's arguments: the cart-pole's parameters, then a small eager CEM (a file's
    node section: it wins over the robot file's, as a global ``-p`` would not)."""
    values = {"mode": "lockstep", "compile": False, "cem": {"population": 100, "elites": 10, "iterations": 3,
                                                             "horizon": 20}} | overrides
    path = directory / "controller.yaml"
    path.write_text(yaml.safe_dump({"mpc_controller": {"ros__parameters": values}}))
    return ["--ros-args", "--params-file", str(config_dir() / "cartpole.yaml"), "--params-file", str(path)]


def controller_ticked_by_hand(tmp_path, **overrides):
    """The controller node in this process, in lockstep (a tick runs on each state of the next
    tick time, with no deadline: the test's load cannot cut a plan short), and ``tick()``, which
    hands it a hanging pole's state and returns its plan and command."""
    from mbrl_control.nodes.controller_node import ControllerNode

    rclpy.init(args=controller_args(tmp_path, **overrides))
    node = ControllerNode()
    commands = []
    node.command_pub.publish = lambda msg: commands.append(list(msg.data))
    msg = JointState(name=list(node.spec.state_joints), position=[0.0, math.pi - 0.1], velocity=[0.0, 0.0])
    stamp = [0]

    def tick():
        stamp[0] = max(node.get_clock().now().nanoseconds, stamp[0] + node.period_ns)
        msg.header.stamp = Time(nanoseconds=stamp[0]).to_msg()
        sent = len(commands)
        node._on_state(msg)
        assert len(commands) == sent + 1, "the state did not tick the controller"
        return node.last_plan, commands[-1]

    return node, tick


@pytest.fixture
def controller(domain, tmp_path):
    node, tick = controller_ticked_by_hand(tmp_path)
    yield node, tick
    node.destroy_node()
    rclpy.shutdown()


def test_controller_applies_changes_at_the_next_tick_and_the_plan_follows(controller):
    node, tick = controller
    upright = node.task.names.index("upright")
    plan_before, command_before = tick()
    assert abs(command_before[0]) > 5.0  # swinging up: a large force
    for name, value in (("task.upright.weight", 5.0), ("cem.iterations", 2), ("safety.effort_scale", 0.25)):
        assert set_one(node, name, value).successful, name
    # Nothing changes before the next tick ...
    assert float(node.task.weights[upright]) == 1.0 and node.planner.config.iterations == 3
    assert node.safety.config.effort_limit[0] == 20.0
    # ... which plans with all of it.
    plan, command = tick()
    assert float(node.task.weights[upright]) == 5.0 and plan.iterations == 2
    assert plan.cost > 3.0 * plan_before.cost  # the hanging pole is priced five times higher
    assert abs(command[0]) <= 5.0 + 1e-9  # a quarter of the 20 N limit
    assert node.safety.counts["clamped"] >= 1
    assert node.tuning.applied == 3


@pytest.mark.parametrize("name, value, reason", [
    ("terminal_weight", 2.0, "task.terminal"),  # terminal:=task: the weight to tune is the task's
    ("mppi.samples", 50, "plans with cem"),  # another planner's budget is read at start only
    ("cem.elites", 1000, "elites"),  # more elites than the population
    ("cem.population", 200, "allocated at start"),
    ("safety.effort_scale", 1.5, "out of range"),  # effort limits only go down
    ("planner", "mppi", "read-only"),
    ("cem.horizon", 10, "read-only"),
])
def test_controller_refuses_what_it_cannot_apply(controller, name, value, reason):
    node, tick = controller
    before = node.get_parameter(name).value
    result = set_one(node, name, value)
    assert not result.successful and reason in result.reason, result.reason
    assert node.get_parameter(name).value == before
    tick()
    assert node.tuning.applied == 0


@pytest.mark.slow
def test_a_compiled_controller_takes_weights_and_iterations_without_recompiling_and_refuses_a_new_population(
        domain, tmp_path):
    """Weights live in buffers the compiled rollout reads; a population it has no graph for would
    compile one inside a tick, so it is refused."""
    import torch

    node, tick = controller_ticked_by_hand(tmp_path, compile=True, cem={
        "population": 100, "elites": 10, "iterations": 3, "horizon": 5})  # a short horizon compiles fast
    try:
        plan_before, _ = tick()
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        assert graphs > 0, "the rollout did not compile"
        result = set_one(node, "cem.population", 50)
        assert not result.successful and "would compile a new rollout graph" in result.reason
        assert set_one(node, "task.upright.weight", 5.0).successful
        assert set_one(node, "cem.iterations", 1).successful
        plan, _ = tick()
        assert plan.iterations == 1 and plan.cost > 3.0 * plan_before.cost
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs  # nothing recompiled
    finally:
        node.destroy_node()
        rclpy.shutdown()


def test_a_weight_set_through_the_parameter_service_changes_the_running_controllers_commands(domain, probe, tmp_path):
    """Lockstep sim and controller (the sim waits for each command, so no tick is lost to the
    test's load); the probe sets the effort weight through /mpc_controller/set_parameters, as
    ``ros2 param set`` does, and the swing-up's forces collapse: effort became expensive."""
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text(yaml.safe_dump({"mpc_controller": {"ros__parameters": {
        "compile": False, "cem": {"population": 150, "elites": 15, "iterations": 3}}}}))
    specs = [s for s in mpc_graph({"mode": "lockstep", "estimator": "none", "overrides": str(overrides)})
             if s.name in ("sim", "mpc_controller")]
    layout = SampleLayout(4, 1)
    samples = []  # (seq, action) of each tick

    def on_sample(msg: Float64MultiArray) -> None:
        sample = layout.unpack(msg.data)
        samples.append((sample.seq, float(sample.action[0])))

    probe.node.create_subscription(Float64MultiArray, "/mpc_controller/transitions", on_sample, 100)
    client = AsyncParameterClient(probe.node, "/mpc_controller")
    running = start(specs, domain, tmp_path / "logs")
    try:
        assert probe.spin_until(lambda: len(samples) >= 25, 300), logs(tmp_path)
        before = [a for _, a in samples[-10:]]

        def call(future_of):
            future = future_of()
            assert probe.spin_until(future.done, 30), logs(tmp_path)
            return future.result()

        bad = call(lambda: client.set_parameters([Parameter("task.effort.weight", value=-1.0)])).results[0]
        assert not bad.successful and "out of range" in bad.reason
        response = call(lambda: client.set_parameters([Parameter("task.effort.weight", value=100.0)]))
        assert response.results[0].successful, response.results[0].reason
        set_at = samples[-1][0]
        assert probe.spin_until(lambda: samples[-1][0] >= set_at + 15, 120), logs(tmp_path)
        after = [a for seq, a in samples if seq > set_at + 5][:10]
        values = call(lambda: client.get_parameters(["task.effort.weight", "planner"])).values
        assert [values[0].double_value, values[1].string_value] == [100.0, "cem"]
        refused = call(lambda: client.set_parameters([Parameter("planner", value="mppi")])).results[0]
        assert not refused.successful and "read-only" in refused.reason
        (described,) = call(lambda: client.describe_parameters(["planner"])).descriptors
        assert "restart" in described.additional_constraints
    finally:
        running.stop()
    # Swinging up: forces of many newtons. An effort weight of 100 prices 1 N at 100 a step, fifty
    # times a hanging pole's whole running cost: the plan keeps the cart almost still (what is
    # left is CEM's sampling noise in the best sequence).
    rms_before, rms_after = np.sqrt(np.mean(np.square(before))), np.sqrt(np.mean(np.square(after)))
    assert rms_before > 5.0, before
    assert rms_after < 0.2 * rms_before, (before, after)
    assert "parameter 'task.effort.weight': 0.0001 -> 100.0" in logs(tmp_path)


def test_estimator_takes_new_noise_before_its_next_estimate(domain, tmp_path):
    from mbrl_control.nodes.estimator_node import EstimatorNode

    path = tmp_path / "estimator.yaml"
    path.write_text(yaml.safe_dump({"estimator": {"ros__parameters": {"estimator": {"compile": False}}}}))
    rclpy.init(args=["--ros-args", "--params-file", str(config_dir() / "cartpole.yaml"), "--params-file", str(path)])
    try:
        node = EstimatorNode()
        density = node.filter.config.accel_noise_density
        result = set_one(node, "estimator.accel_noise_density", [2.0, 3.0, 4.0])
        assert not result.successful and "2 values" in result.reason  # two joints
        assert not set_one(node, "estimator.position_noise_std", [0.0]).successful  # a reading is never exact
        assert set_one(node, "estimator.accel_noise_density", [0.5]).successful
        assert node.filter.config.accel_noise_density == density  # not before the next estimate ...
        node._publish()
        assert node.filter.config.accel_noise_density == (0.5, 0.5)  # ... one value: every joint's
        assert node.tuning.applied == 1
        (described,) = node.describe_parameters(["estimator.kind"])
        assert described.read_only and "restart" in described.additional_constraints
        node.destroy_node()
    finally:
        rclpy.shutdown()
