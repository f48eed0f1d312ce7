"""The arm carrying what its URDF does not know, through the nodes: learn.launch.py robot:=iiwa
model:=residual payload:=2.0 in lockstep, two short episodes. Each episode starts (the arm's
controller and estimator pick the new episode up without stalling the lockstep loop), has its own
goal from the episode manager, and ends in the learning curve; the learner tests a residual on
every round and the controller plans on the URDF model until one generalizes."""

import json
import re

import numpy as np
import yaml
from rosutil import run_to_end

from mbrl_control.core.learning import ReplayBuffer
from mbrl_control.graph import learn_graph


def test_arm_learns_its_residual_through_the_nodes_with_a_goal_per_episode(domain, tmp_path):
    overrides = tmp_path / "overrides.yaml"
    # Eager, as test_faults runs the arm: this judges the loop, and compiling the residual model's
    # iLQR graphs took 46 s of the test's 101 (test_arm runs the arm's compiled graphs).
    overrides.write_text(yaml.safe_dump({
        "estimator": {"ros__parameters": {"estimator": {"accel_noise_density": [30.0], "compile": False}}},
        "mpc_controller": {"ros__parameters": {"compile": False}},
        "episode_manager": {"ros__parameters": {"goal_seed": 4}},
        "learner": {"ros__parameters": {"min_transitions": 50}},  # a round after the first episode
    }))
    out = tmp_path / "experiment"
    specs = learn_graph({"robot": "iiwa", "model": "residual", "payload": "2.0", "episodes": "2",
                         "episode_length": "2", "output_dir": str(out), "overrides": str(overrides)})
    run_to_end(specs, domain, tmp_path)
    curve = json.loads((out / "learning_curve.json").read_text())["curve"]
    assert len(curve) == 2 and all(e["steps"] >= 90 for e in curve), curve  # 2 s at 50 Hz each, no stall
    goals = [np.array(e["goal"]) for e in curve]
    assert np.linalg.norm(goals[0] - goals[1]) > 0.05, goals  # a new goal each episode
    assert all(e["final_error"] is not None and np.isfinite(e["final_error"]) for e in curve)
    controller = (tmp_path / "logs" / "mpc_controller.log").read_text()
    received = [np.array(json.loads(m)) for m in re.findall(r"new goal (\[[^\]]*\])", controller)]
    assert len(received) >= 2 and all(min(np.linalg.norm(r - g) for r in received) < 0.01 for g in goals), received
    learner = (tmp_path / "logs" / "learner.log").read_text()
    # Every round tested a residual: published when it generalized, else the URDF model stays.
    assert re.search(r"published model v1: \d+ transitions, held-out|the residual stays zero", learner), learner
    buffer = ReplayBuffer(14, 7, out / "learner" / "replay")
    assert len(buffer) >= 180
    buffer.close()
