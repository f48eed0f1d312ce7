"""A fleet through real nodes, as two hosts would run it: the robots' launch (two robot stacks in
namespaces robot_0 and robot_1, one episode manager) and the learner's launch, apart, finding each
other over DDS. One model reaches both controllers; each transition keeps its robot; samples
from a stream of another robot or malformed are rejected and counted; a robot whose stack is
killed mid-run sits episodes out while the other goes on, and once restarted gets the newest model
at once and rejoins."""

import json
import math

import numpy as np
import yaml
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosutil import logs, start
from std_msgs.msg import Float64MultiArray, MultiArrayDimension
from test_learning_loop import Diagnostics

from mbrl_control.core.learning import ReplayBuffer, SampleLayout
from mbrl_control.graph import fleet_graph

ROBOT_1_STACK = ("robot_1/sim", "robot_1/mpc_controller")


def sample(layout: SampleLayout, values: list[float]) -> Float64MultiArray:
    msg = Float64MultiArray(data=values)
    msg.layout.dim = [MultiArrayDimension(label=layout.label, size=layout.size, stride=layout.size)]
    return msg


def test_two_robots_and_a_learner_in_separate_launches_learn_together_and_survive_a_robot_crash(domain, probe, tmp_path):
    # A CI-sized planning budget and training rounds (40 epochs, not 200: the plumbing is judged
    # here, the learning by bench/fleet.py); a crashed robot is noticed in 5 s.
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text(yaml.safe_dump({
        "mpc_controller": {"ros__parameters": {"cem": {"population": 200, "iterations": 3}}},
        "learner": {"ros__parameters": {"trainer": {"max_epochs": 40}}},
        "episode_manager": {"ros__parameters": {"robot_timeout": 5.0}},
    }))
    out = tmp_path / "fleet"
    # Without estimators (the controllers read each sim's exact states): half the processes on two
    # cores, and a restarted robot is back sooner; the estimator has its own tests.
    args = {"robots": "2", "episodes": "7", "episode_length": "3", "output_dir": str(out), "overrides": str(overrides),
            "estimator": "none"}
    robots = start(fleet_graph(args | {"part": "robots"}), domain, tmp_path / "logs")
    learner = start(fleet_graph(args | {"part": "learner"}), domain, tmp_path / "logs")
    diag = Diagnostics(probe)
    controller = {i: f"robot_{i}/mpc_controller" for i in (0, 1)}
    try:
        # One model, both controllers.
        assert probe.spin_until(lambda: diag.number("learner", "model_version") >= 1 and all(
            diag.number(controller[i], "model_version") >= 1 for i in (0, 1)), 400), logs(tmp_path)

        # Another robot's stream (14 states, 7 efforts) and a malformed sample on robot_1's topic: rejected, counted.
        rejected = diag.number("learner", "robot_1_rejected_samples")
        pub = probe.node.create_publisher(Float64MultiArray, "/robot_1/mpc_controller/transitions",
                                          QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        arm, cartpole = SampleLayout(14, 7), SampleLayout(4, 1)
        probe.spin_until(lambda: pub.get_subscription_count() >= 1, 10)
        pub.publish(sample(arm, [0.5] * arm.size))
        pub.publish(sample(cartpole, [math.nan] * cartpole.size))
        assert probe.spin_until(lambda: diag.number("learner", "robot_1_rejected_samples") >= rejected + 2, 30), diag.by_node

        # robot_1's stack killed mid-run: robot_0 goes on.
        for name in ROBOT_1_STACK:
            robots.kill(name)
        ticks = diag.number(controller[0], "ticks")
        assert probe.spin_until(lambda: diag.number(controller[0], "ticks") > ticks + 100, 120), logs(tmp_path)

        # Restarted, it has the newest model before it plans (transient-local), and rejoins.
        newest = diag.number("learner", "model_version")
        diag.by_node.pop(controller[1], None)
        for name in ROBOT_1_STACK:
            robots.restart(name)
        assert probe.spin_until(lambda: diag.number(controller[1], "model_version") >= newest, 120), logs(tmp_path)

        manager = robots.procs["episode_manager"]
        assert probe.spin_until(lambda: manager.poll() is not None, 600), logs(tmp_path)
        assert manager.returncode == 0, logs(tmp_path)
    finally:
        robots.stop()
        learner.stop()
    summary = json.loads((out / "learning_curve.json").read_text())
    curves = {name: [r["episode"] for r in s["curve"]] for name, s in summary["robots"].items()}
    assert curves["robot_0"] == list(range(7)), curves  # never stopped
    gap = sorted(set(range(7)) - set(curves["robot_1"]))
    assert gap and curves["robot_1"][0] == 0 and curves["robot_1"][-1] > gap[0], curves  # sat out, then back
    assert summary["fleet"]["robots"] == 2 and len(summary["curve"]) == 7
    assert [r["robots"] for r in summary["curve"]] == [1 + (e in curves["robot_1"]) for e in range(7)]

    buffer = ReplayBuffer(4, 1, out / "learner" / "replay")
    data = buffer.snapshot()
    buffer.close()
    assert np.isfinite(data.state).all() and np.isfinite(data.next_state).all()  # nothing rejected was kept
    # Each robot's transitions under its own id, from the episodes it ran (robot_1's also from the one
    # it was killed in, and from before its rejoining episode while its fresh stack waited to be
    # paused), and from before the first (-1: the controllers tick until the manager pauses them).
    by_robot = {i: set(np.unique(data.episode[data.robot == i]).tolist()) - {-1} for i in (0, 1)}
    assert by_robot[0] == set(range(7)), by_robot
    assert set(curves["robot_1"]) <= by_robot[1] <= set(curves["robot_1"]) | set(gap), (by_robot, curves)
    assert set(np.unique(data.robot).tolist()) == {0, 1}
    assert (out / "learning_curve.png").stat().st_size > 10_000
