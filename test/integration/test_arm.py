"""A second robot through the same nodes: the 7-DoF KUKA iiwa (config/iiwa.yaml, the URDF shipped
with pybullet), lockstep, reaching goals the goal publisher sends on /goal_pose."""

import numpy as np
import yaml
from rosutil import logs, run_mpc

from mbrl_control.core.builders import load_robot


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
