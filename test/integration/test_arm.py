"""A second robot through the same nodes: the 7-DoF KUKA iiwa (config/iiwa.yaml, the URDF shipped
with pybullet), lockstep, reaching goals the goal publisher sends on /goal_pose."""

import numpy as np
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosutil import logs, run_mpc, start
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from mbrl_control.core.builders import load_robot
from mbrl_control.graph import COMMAND_TOPIC, GROUND_TRUTH_TOPIC, mpc_graph


def test_lockstep_arm_reaches_its_goals_through_the_nodes(domain, tmp_path):
    overrides = tmp_path / "two_goals.yaml"
    overrides.write_text(yaml.safe_dump({
        "goal_publisher": {"ros__parameters": {"count": 2, "period": 3.0, "seed": 1}},
    }))
    code, summary = run_mpc({"robot": "iiwa", "mode": "lockstep", "duration": "6", "overrides": str(overrides)},
                            domain, tmp_path, timeout=900)
    assert code == 0, logs(tmp_path)
    assert summary["robot"] == "lbr_iiwa" and summary["task"] == "iiwa_reach", summary
    assert summary["goals"] == 2 and summary["goals_reached"] == 2, (summary, logs(tmp_path))
    assert summary["ee_error_median_m"] < 0.02 and summary["success"], summary
    spec = load_robot("iiwa").spec
    q = np.array(summary["final_state"][:7])
    assert np.all((q > spec.position_lower) & (q < spec.position_upper)), q  # never chased into a limit
    assert summary["rejected_states"] == 0 and summary["stale_ticks"] == 0
    assert len(summary["command_delta_rms"]) == 7


def test_an_arm_carrying_2_kg_its_urdf_lacks_reaches_its_goals_with_offset_free_mpc_on_the_effort(domain, tmp_path):
    """2 kg at the flange: planned on its URDF the arm sags 2-3 cm below its goals (README); with
    the effort offset (model_offset.kind: effort) it ends within 1 cm. From true states (the
    estimate's share is measured in the README), eager (its wrapped model is not in the warm-up)."""
    overrides = tmp_path / "payload.yaml"
    overrides.write_text(yaml.safe_dump({
        "goal_publisher": {"ros__parameters": {"count": 2, "period": 3.0, "seed": 1}},
        "sim": {"ros__parameters": {"payload": {"mass": 2.0}}},
        "mpc_controller": {"ros__parameters": {"compile": False,
                                               "model_offset": {"kind": "effort", "time_constant": 0.2}}},
    }))
    code, summary = run_mpc({"robot": "iiwa", "mode": "lockstep", "duration": "6", "estimator": "none",
                             "overrides": str(overrides)}, domain, tmp_path, timeout=900)
    assert code == 0, logs(tmp_path)
    assert summary["goals"] == 2 and summary["goals_reached"] == 2, (summary, logs(tmp_path))
    assert max(summary["goal_errors_m"]) < 0.01, summary


def test_realtime_arm_sim_brakes_until_commanded_and_again_when_the_commands_stop(domain, probe, tmp_path):
    """sim.brakes (config/iiwa.yaml), as a real arm's brakes and drive watchdog: held still before
    the first command; released by it (zero effort: the arm falls); braked again once no command
    came for command_timeout, where it stays, reporting the brakes' holding torque as its effort.
    The arm carries its own weight here (config/iiwa.yaml has it compensated, where zero effort
    holds it): what the brakes hold is then its weight."""
    carrying = tmp_path / "carrying_its_weight.yaml"
    carrying.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"gravity_compensated": False}}}))
    sim = next(s for s in mpc_graph({"robot": "iiwa", "mode": "realtime", "overrides": str(carrying)})
               if s.name == "sim")
    running = start([sim], domain, tmp_path / "logs")
    truth, status = [], {}
    reliable = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
    probe.node.create_subscription(JointState, GROUND_TRUTH_TOPIC, truth.append, reliable)
    probe.node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: status.update(
        {s.name: s.message for s in m.status}), reliable)
    commands = probe.node.create_publisher(Float64MultiArray, COMMAND_TOPIC, reliable)

    def moved(since: int) -> float:
        q = np.array([m.position for m in truth[since:]])
        return float(np.abs(q - q[0]).max()) if len(q) > 1 else 0.0

    try:
        assert probe.spin_until(lambda: len(truth) > 50, 120), logs(tmp_path)
        first = len(truth)
        probe.spin_for(1.0)  # before any command: on its brakes
        assert len(truth) > first + 20 and moved(first) < 1e-9, moved(first)
        assert np.abs(truth[-1].effort).max() > 1.0  # the brakes' holding torque, not the motors' zero
        released = len(truth)
        for _ in range(25):  # 0.5 s of zero effort: brakes off, the arm falls
            commands.publish(Float64MultiArray(data=[0.0] * 7))
            probe.spin_for(0.02)
        assert moved(released) > 0.01, moved(released)
        probe.spin_for(0.5)  # no command for longer than command_timeout (0.1 s): braked again
        braked = len(truth)
        probe.spin_for(1.0)
        assert len(truth) > braked + 20 and moved(braked) < 1e-9, moved(braked)
        assert np.allclose(np.array([m.velocity for m in truth[braked:]]), 0.0)
        assert np.abs(truth[-1].effort).max() > 1.0
        assert probe.spin_until(lambda: status.get("sim", "").startswith("no fresh command: braked"), 5), status
    finally:
        running.stop()
