"""planner:=X works through the real nodes for every planner (lockstep): the swing-up planners
from hanging, the balance controllers (LQR, DP: their region is around upright) from a tilt."""

import math

import pytest
import yaml
from rosutil import logs, run_mpc

from mbrl_control.graph import PLANNERS

BALANCE_ONLY = ("lqr", "dp")
# planner:=policy runs a policy trained on the stack's own data: test_policy_loop.py
ANALYTIC = [p for p in PLANNERS if p != "policy"]


@pytest.mark.parametrize("planner", ANALYTIC)
def test_every_planner_closes_the_loop(planner, domain, tmp_path):
    # iLQR's compiled graphs take minutes to build cold; lockstep needs no speed, so it runs eager.
    controller = {"compile": planner not in ("ilqr", "ilqr_offline")}
    sim = {"initial_position": [0.0, 0.15] if planner in BALANCE_ONLY else [0.0, math.pi]}
    overrides = tmp_path / "overrides.yaml"
    # Success is 2.5 s held at the end of 4.5: up within 2 s, as the 5 s of 7 the demo asks (the
    # planners' own tests hold longer; this one is the plumbing, and CI's time).
    overrides.write_text(yaml.safe_dump({"mpc_controller": {"ros__parameters": controller},
                                         "sim": {"ros__parameters": sim},
                                         "run_monitor": {"ros__parameters": {"task": {"success": {"window": 2.5}}}}}))
    code, summary = run_mpc({"mode": "lockstep", "duration": "4.5", "planner": planner, "overrides": str(overrides)},
                            domain, tmp_path)
    assert code == 0, logs(tmp_path)
    assert summary["planner"] == planner
    assert summary["success"], (summary, logs(tmp_path))
