"""The estimator node between noisy, late encoder readings and the controller: the loop closes
through it with 30 ms of latency, and bad readings never crash it or reach the controller."""

import math

import numpy as np
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import qos_profile_sensor_data
from rosutil import logs, run_mpc, start
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from mbrl_control.graph import mpc_graph


def test_lockstep_swing_up_through_the_ekf_with_30ms_latency(domain, tmp_path):
    overrides = tmp_path / "latency.yaml"
    overrides.write_text(yaml.safe_dump({"sim": {"ros__parameters": {"sensor": {"latency": 0.03}}}}))
    code, summary = run_mpc({"mode": "lockstep", "duration": "8", "overrides": str(overrides)}, domain, tmp_path)
    assert code == 0, logs(tmp_path)
    assert summary["estimator"] == "ekf" and summary["success"], (summary, logs(tmp_path))
    assert all(0 < v < 0.5 for v in summary["velocity_rmse"]), summary


def test_estimator_node_survives_bad_readings_and_dropouts(domain, probe, tmp_path):
    spec = next(s for s in mpc_graph({}) if s.name == "estimator")
    running = start([spec], domain, tmp_path / "logs")
    try:
        states, covariances, diag = [], [], {}
        probe.node.create_subscription(JointState, "/estimator/state", states.append, qos_profile_sensor_data)
        probe.node.create_subscription(Float64MultiArray, "/estimator/covariance", covariances.append, 10)
        probe.node.create_subscription(
            DiagnosticArray, "/diagnostics",
            lambda m: diag.update({kv.key: kv.value for s in m.status if s.name == "estimator" for kv in s.values}), 10)
        pub = probe.node.create_publisher(JointState, "/joint_states", 10)
        joints = ["slider_to_cart", "cart_to_pole"]

        def reading(position, stamp_offset=0.0, names=joints):
            msg = JointState(name=names, position=position)
            t = probe.node.get_clock().now().nanoseconds * 1e-9 + stamp_offset
            msg.header.stamp.sec, msg.header.stamp.nanosec = int(t), int((t % 1) * 1e9)
            return msg

        def stream(seconds, bad=None):
            for i in range(int(seconds * 100)):
                pub.publish(reading([0.1, math.pi - 0.01]))
                if bad is not None:
                    pub.publish(bad())
                probe.spin_for(0.01)

        assert probe.spin_until(lambda: "initialized" in diag, 120), logs(tmp_path)  # warmed up
        stream(1.0)
        assert len(states) > 20 and diag["stale"] == "False", diag
        stream(0.3, lambda: reading([math.nan, 3.0]))
        stream(0.3, lambda: reading([0.1]))  # wrong length
        stream(0.3, lambda: reading([0.1, 3.1], stamp_offset=-0.2))  # older than the last fused reading
        stream(0.3, lambda: reading([7.0, 3.1]))  # a 7 m spike: gated
        published_before_gap = len(states)
        probe.spin_for(0.5)  # no readings at all: the estimate goes stale and is not published
        stale_period = len(states) - published_before_gap
        stream(1.0)
        probe.spin_for(1.2)  # a diagnostics period
        assert stale_period <= 8, "published a stale estimate for most of a 0.5 s dropout"
        assert len(states) > published_before_gap + 30, "did not recover after the dropout"
        assert all(np.all(np.isfinite(list(s.position) + list(s.velocity))) for s in states)
        assert all(np.all(np.isfinite(c.data)) and len(c.data) == 16 for c in covariances)
        assert covariances[-1].layout.dim[0].size == 4 and covariances[-1].layout.dim[1].stride == 4
        for key in ("rejected_nonfinite", "rejected_wrong_length", "rejected_out_of_order", "rejected_gate"):
            assert int(diag.get(key, 0)) > 5, (key, diag)
        assert abs(states[-1].position[0] - 0.1) < 0.01
    finally:
        running.stop()
