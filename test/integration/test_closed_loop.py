"""The whole loop through real ROS 2 nodes in separate processes: sim, controller, run monitor."""

from rosutil import logs, run_mpc


def test_lockstep_swing_up_succeeds(domain, tmp_path):
    code, summary = run_mpc({"mode": "lockstep", "duration": "8"}, domain, tmp_path)
    assert code == 0, logs(tmp_path)
    assert summary["success"], (summary, logs(tmp_path))
    assert summary["mode"] == "lockstep" and summary["planner"] == "cem"
    assert summary["duration_s"] >= 8.0
    assert summary["rejected_states"] == 0 and summary["stale_ticks"] == 0


def test_realtime_swing_up_succeeds_with_few_missed_ticks(domain, tmp_path):
    code, summary = run_mpc({"mode": "realtime", "duration": "10"}, domain, tmp_path)
    assert code == 0, logs(tmp_path)
    assert summary["success"], (summary, logs(tmp_path))
    assert summary["ticks"] >= 400  # 50 Hz over ~10 s, up to the last 1 Hz diagnostics
    assert summary["missed_ticks"] / summary["ticks"] < 0.02, summary
