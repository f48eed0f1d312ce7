"""Malformed commands and states are rejected, counted in /diagnostics, and never applied."""

import math
import time

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import qos_profile_sensor_data
from rosutil import logs, start
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from mbrl_control.graph import ESTIMATE_TOPIC, mpc_graph


def _spec(name):
    return next(s for s in mpc_graph({"mode": "realtime"}) if s.name == name)


class Watch:
    """Latest diagnostics of one node and the messages of one topic, seen by the probe."""

    def __init__(self, probe, node_name, topic=None, msg_type=None, qos=10):
        self.values, self.messages = {}, []
        probe.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 50)
        if topic:
            probe.node.create_subscription(msg_type, topic, self.messages.append, qos)
        self.node_name = node_name

    def _on_diag(self, msg):
        for s in msg.status:
            if s.name == self.node_name:
                self.values = {kv.key: kv.value for kv in s.values}


def publish_until(probe, pub, message, condition, timeout: float = 10.0) -> bool:
    """Publish ``message`` (or ``message()``) every 20 ms until ``condition()`` holds; whether it did."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pub.publish(message() if callable(message) else message)
        probe.spin_for(0.02)
        if condition():
            return True
    return False


def test_sim_rejects_and_counts_bad_commands(domain, probe, tmp_path):
    sim = start([_spec("sim")], domain, tmp_path / "logs")
    try:
        watch = Watch(probe, "sim", "/joint_states", JointState, qos_profile_sensor_data)
        pub = probe.node.create_publisher(Float64MultiArray, "/effort_controller/commands", 10)
        assert probe.spin_until(lambda: len(watch.messages) > 5, 30), logs(tmp_path)
        bad = [[math.nan], [math.inf], [20.0, 20.0], []]
        watch.messages.clear()
        for _ in range(5):
            for data in bad:
                pub.publish(Float64MultiArray(data=data))
                probe.spin_for(0.02)
        assert probe.spin_until(lambda: int(watch.values.get("rejected_commands", 0)) >= 20, 20), watch.values
        # JointState.effort is the effort the sim applied: zero throughout.
        assert watch.messages and all(m.effort[0] == 0.0 for m in watch.messages), "a rejected command was applied"
        # A valid command is applied (clamped to the URDF's effort limit of 20 N): commanded until
        # a state shows it (10 s deadline; on a loaded machine the states arrive late).
        assert publish_until(probe, pub, Float64MultiArray(data=[50.0]), lambda: watch.messages[-1].effort[0] == 20.0)
        assert max(m.effort[0] for m in watch.messages) == 20.0
    finally:
        sim.stop()


def test_controller_rejects_and_counts_bad_states_and_commands_zero(domain, probe, tmp_path):
    controller = start([_spec("mpc_controller")], domain, tmp_path / "logs")
    try:
        watch = Watch(probe, "mpc_controller", "/effort_controller/commands", Float64MultiArray)
        pub = probe.node.create_publisher(JointState, ESTIMATE_TOPIC, 10)  # what the controller reads
        assert probe.spin_until(lambda: len(watch.messages) > 0, 120), logs(tmp_path)  # after warm-up

        def state(names, pos, vel):
            msg = JointState(name=names, position=pos, velocity=vel)
            msg.header.stamp = probe.node.get_clock().now().to_msg()
            return msg

        joints = ["slider_to_cart", "cart_to_pole"]
        bad = [
            state(joints, [0.0, math.nan], [0.0, 0.0]),  # non-finite
            state(joints, [0.0, 3.0], [0.0]),  # wrong length
            state(["a", "b"], [0.0, 3.0], [0.0, 0.0]),  # unknown joint names
        ]
        for _ in range(10):
            for msg in bad:
                pub.publish(msg)
                probe.spin_for(0.02)
        assert probe.spin_until(lambda: int(watch.values.get("rejected_states", 0)) >= 30, 20), watch.values
        assert all(m.data[0] == 0.0 for m in watch.messages), "planned from a rejected state"
        assert int(watch.values["waiting_ticks"]) > 0  # no valid state yet: the safe command
        # A valid state near upright makes it plan and act (fresh states until it does, 10 s deadline).
        watch.messages.clear()
        acting = lambda: any(abs(m.data[0]) > 0.1 for m in watch.messages)  # noqa: E731
        assert publish_until(probe, pub, lambda: state(joints, [0.0, 0.3], [0.0, 0.0]), acting), watch.values
    finally:
        controller.stop()
