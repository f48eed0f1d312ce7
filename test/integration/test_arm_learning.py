"""The arm learned from scratch through the nodes: learn.launch.py robot:=iiwa (model:=learned) in
lockstep, two short episodes. The first explores (random accelerations through the URDF's inverse
dynamics); the learner fits the first ensemble on it; the second plans on that ensemble, and every
command it sends lies within the efforts the ensemble was fitted for (``ensemble.action_margin``):
iLQR on a model fitted on gentle exploration otherwise asks for full torques, and the arm hits its
stops."""

import json

import numpy as np
import yaml
from rosutil import run_to_end

from mbrl_control.core.learning import ReplayBuffer
from mbrl_control.core.learning.model_io import build_from_bytes, read_checkpoint
from mbrl_control.graph import learn_graph


def test_arm_learned_from_scratch_commands_only_the_efforts_its_first_model_knows(domain, tmp_path):
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text(yaml.safe_dump({  # eager, as test_residual_loop runs the arm (this judges the loop)
        "estimator": {"ros__parameters": {"compile": False}},
        "mpc_controller": {"ros__parameters": {"compile": False}},
        "episode_manager": {"ros__parameters": {"goal_seed": 4}},
        "learner": {"ros__parameters": {"min_transitions": 50, "trainer": {"max_seconds": 10.0}}},
    }))
    out = tmp_path / "experiment"
    specs = learn_graph({"robot": "iiwa", "episodes": "2", "episode_length": "2", "output_dir": str(out),
                         "overrides": str(overrides)})
    run_to_end(specs, domain, tmp_path)
    curve = json.loads((out / "learning_curve.json").read_text())["curve"]
    assert len(curve) == 2 and curve[0]["model_version"] == "none" and curve[1]["model_version"] == "1", curve
    model, _ = build_from_bytes(read_checkpoint(out / "learner" / "checkpoints" / "ensemble_v00000001.json"))
    low, high = (t.numpy() for t in model.trusted_actions())
    buffer = ReplayBuffer(14, 7, out / "learner" / "replay")
    data = buffer.snapshot()
    buffer.close()
    first = data.episode == data.episode.min()
    explored = data.action[first]
    # The range is the efforts the model was fitted on (the first episode's, less its held-out
    # part) widened by the margin (config/iiwa.learned.yaml) ...
    margin = model.config.action_margin * (explored.max(0) - explored.min(0))
    assert np.all(low >= explored.min(0) - margin - 1e-3) and np.all(high <= explored.max(0) + margin + 1e-3)
    assert ((explored >= low) & (explored <= high)).all(1).mean() > 0.9
    # ... and the model-planned episode's every command stays in it (or is the safety layer's zero
    # effort for a joint past its speed limit).
    planned = data.action[~first]
    assert len(planned) >= 10
    inside = ((planned >= low - 1e-3) & (planned <= high + 1e-3)) | (planned == 0.0)
    assert inside.all(), (planned[~inside.all(1)], low, high)
