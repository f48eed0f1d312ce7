"""MBPO end to end through the nodes (learn.launch planner:=policy): the controller explores, the
learner fits the ensemble and then trains a SAC policy in rollouts of it after every episode and
publishes it, and the controller switches from exploring to the newest policy, all from data the
stack collected itself (episodes start near upright and end when the pole falls).

Whether those policies balance is bench/learning_curve.py's question (``--task balance
--variants baseline,mbpo``: MBPO first succeeds after ~7 episodes of 8000 SAC steps a round, more
than a CI run can afford), not this test's. A learner restarted on the same directory goes on
from its checkpointed SAC state."""

import json
import re
import time

import numpy as np
import torch
import yaml
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rosutil import logs, run_mpc, start

from mbrl_control.cli import train_offline
from mbrl_control.core.builders import load_robot
from mbrl_control.core.mbpo.policy import load_policy
from mbrl_control.core.safety import JointLimits, limit_effort
from mbrl_control.graph import learn_graph

EPISODES = 4


def wait_for_line(path, text: str, timeout: float) -> str:
    """The log at ``path`` once it holds ``text`` (or as it is after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        log = path.read_text() if path.is_file() else ""
        if text in log or time.monotonic() > deadline:
            return log
        time.sleep(0.5)


def test_mbpo_loop_trains_policies_from_the_stacks_own_data_and_runs_them(domain, tmp_path):
    overrides = tmp_path / "balance.yaml"
    overrides.write_text(yaml.safe_dump({
        "sim": {"ros__parameters": {"initial_position": [0.0, 0.1]}},
        "episode_manager": {"ros__parameters": {"fail_error": 0.8}},
        "mpc_controller": {"ros__parameters": {"explore": {"scale": 0.1}}},  # gentle: the pole falls in ~1 s
        "learner": {"ros__parameters": {"min_transitions": 50, "mbpo": {"sac_steps": 500}}},  # rounds, not a good policy
    }))
    out = tmp_path / "experiment"
    run = start(learn_graph({"planner": "policy", "episodes": str(EPISODES), "episode_length": "6",
                             "output_dir": str(out), "overrides": str(overrides)}), domain, tmp_path / "logs")
    try:
        assert run.wait(900) == 0, logs(tmp_path)
    finally:
        codes = run.stop()
    # Stopped during (or between) SAC rounds, the learner cancels its training thread and joins it
    # before exiting: a clean 0, not an abort from a thread left inside torch.
    assert codes["learner"] == 0, (codes, logs(tmp_path))
    learner_log = (tmp_path / "logs" / "learner.log").read_text()
    controller_log = (tmp_path / "logs" / "mpc_controller.log").read_text()
    assert "MBPO round failed" not in learner_log, logs(tmp_path)
    published = [int(v) for v in re.findall(r"published policy v(\d+) \(model v\d+\)", learner_log)]
    assert published[:2] == [1, 2], logs(tmp_path)  # a policy after every episode once there is a model
    assert re.search(r"published policy v2 .*continuing SAC", learner_log), logs(tmp_path)  # rounds go on from the last
    assert "policy update 1 in use" in controller_log, logs(tmp_path)
    assert (out / "learner" / "policies" / "policy.safetensors").is_file()
    assert (out / "learner" / "policies" / "value.safetensors").is_file()
    # A learner restarted on that directory goes on from the checkpointed SAC state.
    specs = learn_graph({"planner": "policy", "output_dir": str(out), "overrides": str(overrides)})
    learner = start([s for s in specs if s.name == "learner"], domain, tmp_path / "restart" / "logs")
    try:
        log = wait_for_line(tmp_path / "restart" / "logs" / "learner.log", "SAC state reloaded", 120)
    finally:
        codes = learner.stop()
    assert codes["learner"] == 0, (codes, logs(tmp_path / "restart"))
    assert "SAC state reloaded" in log and "not used" not in log, logs(tmp_path / "restart")

    curve = json.loads((out / "learning_curve.json").read_text())["curve"]
    assert len(curve) == EPISODES
    # The first episode explores (no policy yet) and, at 0.8 rad, ends early: the pole fell.
    assert curve[0]["policy_updates"] in ("none", "0") and curve[0]["ended_early"] and not curve[0]["success"], curve
    assert all(e["steps"] < 6 * 50 for e in curve if e["ended_early"]), curve

    # Offline from the same data: `mbrl-control train --from <learner dir> --policy`, then
    # planner:=policy with that file (policy.path) through mpc.launch's nodes.
    learned = tmp_path / "learned"
    assert train_offline([out / "learner"], learned, policy=True, mbpo={"sac_steps": "500", "epochs": "2"}) == 0
    overrides = tmp_path / "policy.yaml"
    overrides.write_text(yaml.safe_dump({"mpc_controller": {"ros__parameters": {
        "policy": {"path": str(learned / "policy.safetensors")}}}}))
    recording = tmp_path / "offline" / "run.mcap"
    code, summary = run_mpc({"mode": "lockstep", "duration": "3", "planner": "policy", "overrides": str(overrides),
                             "record": "true", "record_path": str(recording)}, domain, tmp_path / "offline")
    assert code == 0, logs(tmp_path / "offline")
    assert summary["planner"] == "policy" and summary["rejected_states"] == 0, summary
    # The controller ran that file's policy: every command it sent (its per-tick samples, fields by
    # the message's own labels) is the policy's action at the state it planned from.
    states, commands = recorded_samples(recording)
    # Every planned tick's sample (a lockstep run waits for its recorder; stale and waiting ticks
    # send the safe command and no sample: this briefly trained policy may throw the pole about).
    planned = summary["ticks"] - summary["stale_ticks"] - summary["waiting_ticks"]
    assert len(states) >= planned >= 50, (len(states), summary)
    policy = load_policy(learned / "policy.safetensors")
    with torch.no_grad():
        actions = policy(torch.from_numpy(states).float()).double().numpy()
    # ... through the safety layer, which refuses effort that pushes the cart further past the end
    # of its track (this briefly trained policy may drive it there): what the robot must be sent.
    spec = load_robot("cartpole").spec
    limits, joints = JointLimits.of_commanded_joints(spec), list(spec.command_index)
    expected = np.array([limit_effort(a, x[joints], x[[spec.nq + j for j in joints]], limits)
                         for a, x in zip(actions, states)])
    error = np.abs(commands - expected).max()
    assert error <= 1e-4, f"commands differ from the policy's actions by up to {error} N"


def recorded_samples(path) -> tuple[np.ndarray, np.ndarray]:
    """(states, commands) of the controller's per-tick samples in a recording, read by label."""
    states, commands = [], []
    with open(path, "rb") as f:
        for _, channel, _, msg in make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages():
            if channel.topic != "/mpc_controller/transitions":
                continue
            labels = msg.layout.dim[0].label.split(",")
            columns = lambda prefix: [i for i, name in enumerate(labels) if re.fullmatch(prefix + r"\d+", name)]
            states.append([msg.data[i] for i in columns("x")])
            commands.append([msg.data[i] for i in columns("u")])
    return np.array(states), np.array(commands)
