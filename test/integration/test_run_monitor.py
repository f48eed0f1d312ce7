"""The run monitor reports the controller's tick statistics for the whole watched window. The
controller reports on /diagnostics once a second, so when the window closes its last report can
be up to a second old: the monitor waits for the first report stamped at or after the window's
end, and, where none comes (a dead controller), reports the last one after ``report_timeout``.
(A clean-clone CI run on 2026-12-07 failed here: a 2 s lockstep run reported 50 ticks, the
controller's report from 1 s in.)"""

import json

import pytest
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.duration import Duration
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from mbrl_control.nodes.runtime import NodeDone
from mbrl_control.paths import config_dir

DURATION, TIMEOUT = 1.0, 0.3  # [s]


@pytest.fixture
def monitor(domain, tmp_path):
    from mbrl_control.nodes.run_monitor import RunMonitor

    values = {"duration": DURATION, "report_timeout": TIMEOUT, "summary_path": str(tmp_path / "summary.json")}
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump({"run_monitor": {"ros__parameters": values}}))
    rclpy.init(args=["--ros-args", "--params-file", str(config_dir() / "cartpole.yaml"), "--params-file", str(path)])
    node = RunMonitor()
    try:
        yield node
    finally:
        node.destroy_node()
        rclpy.shutdown()


def _report(node, t: float, ticks: int) -> None:
    msg = DiagnosticArray()
    msg.header.stamp = (node.start + Duration(seconds=t)).to_msg()
    msg.status = [DiagnosticStatus(name="mpc_controller", values=[KeyValue(key="ticks", value=str(ticks))])]
    node._on_diagnostics(msg)


def _watch_until_the_window_closes(node) -> None:
    node._on_sample(Float64MultiArray())  # the controller's first planned tick opens the window
    _report(node, 0.4, 20)
    for k in range(51):  # ground truth at 50 Hz up to the window's end
        state = JointState(name=list(node.task.spec.state_joints), position=[0.0, 3.0], velocity=[0.0, 0.0])
        state.header.stamp = (node.start + Duration(seconds=k / 50)).to_msg()
        node._on_state(state)


def _summary(tmp_path) -> dict:
    return json.loads((tmp_path / "summary.json").read_text())


def test_the_summary_waits_for_the_controllers_report_that_covers_the_window(monitor, tmp_path):
    _watch_until_the_window_closes(monitor)
    assert not (tmp_path / "summary.json").exists()  # the last report (0.4 s) does not cover it
    _report(monitor, 0.9, 45)  # a report from inside the window is not enough either
    assert not (tmp_path / "summary.json").exists()
    with pytest.raises(NodeDone):
        _report(monitor, 1.4, 70)
    assert _summary(tmp_path)["ticks"] == 70
    assert _summary(tmp_path)["duration_s"] == DURATION  # ground truth after the end is not judged


def test_a_controller_that_reports_no_more_leaves_its_last_report_after_the_timeout(monitor, tmp_path):
    _watch_until_the_window_closes(monitor)
    with pytest.raises(NodeDone):
        for _ in range(20):
            rclpy.spin_once(monitor, timeout_sec=TIMEOUT)
    assert _summary(tmp_path)["ticks"] == 20
