"""The whole loop through real ROS 2 nodes in separate processes: sim, controller, run monitor."""

import json

from diagnostic_msgs.msg import DiagnosticArray
from rosutil import logs, run_mpc, start
from std_msgs.msg import Float64MultiArray

from mbrl_control.graph import mpc_graph


def test_lockstep_swing_up_succeeds(domain, tmp_path):
    code, summary = run_mpc({"mode": "lockstep", "duration": "8"}, domain, tmp_path)
    assert code == 0, logs(tmp_path)
    assert summary["success"], (summary, logs(tmp_path))
    assert summary["mode"] == "lockstep" and summary["planner"] == "cem"
    assert summary["duration_s"] >= 8.0
    assert summary["rejected_states"] == 0 and summary["stale_ticks"] == 0


def test_realtime_swing_up_succeeds_with_few_missed_ticks(domain, probe, tmp_path):
    """Realtime, judged over 10 s from when the controller plans: the monitor starts with the graph
    but watches from the controller's first sample (a tick planned from a fresh estimate), since on
    a loaded machine the estimator's warm-up can outlast the controller's by seconds, during which
    the controller sends the safe zero command. (Started once the stack ran, the monitor itself
    took 13-27 s to come up beside three SCHED_FIFO nodes on two cores.)"""
    summary_path = tmp_path / "summary.json"
    specs = mpc_graph({"mode": "realtime", "duration": "10", "summary_path": str(summary_path)})
    running = start(specs, domain, tmp_path / "logs")
    try:
        planning, controller = [], {}
        probe.node.create_subscription(Float64MultiArray, "/effort_controller/commands",
                                       lambda m: planning.append(1) if abs(m.data[0]) > 0 else None, 10)
        probe.node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: controller.update(
            {kv.key: kv.value for s in m.status if s.name == "mpc_controller" for kv in s.values}), 50)
        assert probe.spin_until(lambda: planning and "ticks" in controller, 300), logs(tmp_path)
        periods_before = int(controller["ticks"]) + int(controller["missed_ticks"])
        code = running.wait(120)  # until the monitor reports (it ends the launch)
    finally:
        running.stop()
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    assert code == 0 and summary, logs(tmp_path)
    assert summary["success"], (summary, logs(tmp_path))
    # 50 Hz timer periods (ticks that ran or were missed) while the monitor watched 10 s: 500, less
    # up to ~2 s since periods_before is read after the watch began (the first plan, then the next
    # 1 Hz diagnostics) and the last count is up to 1 s old.
    assert summary["ticks"] + summary["missed_ticks"] - periods_before >= 350, (periods_before, summary)
    # The realtime figure itself is bench/'s, on a quiet machine (README: 0 missed in 1000 ticks).
    # Here other jobs share the 2 cores: the bound only catches a controller that cannot keep the
    # rate at all (an eager planner at 54 ms a tick misses more than half of them).
    assert summary["missed_ticks"] / summary["ticks"] < 0.25, summary
