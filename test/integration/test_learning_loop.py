"""Model-based RL from scratch through real nodes: the controller explores, the learner trains and
publishes models, the controller plans on them and gets better; killing the learner (SIGKILL)
mid-run stops nothing and loses no recorded transition; a restarted learner resumes."""

import json
import math

import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rosutil import logs, start

from mbrl_control.core.learning import ReplayBuffer
from mbrl_control.graph import learn_graph


class Diagnostics:
    def __init__(self, probe):
        self.by_node: dict[str, dict[str, str]] = {}
        probe.node.create_subscription(DiagnosticArray, "/diagnostics", self._on, 50)

    def _on(self, msg):
        for s in msg.status:
            self.by_node[s.name] = {kv.key: kv.value for kv in s.values}

    def get(self, node, key, default=None):
        return self.by_node.get(node, {}).get(key, default)

    def number(self, node, key):
        v = self.get(node, key)
        return int(v) if v not in (None, "none") else -1


def test_learns_from_scratch_and_survives_a_learner_sigkill(domain, probe, tmp_path):
    overrides = tmp_path / "overrides.yaml"  # a CI-sized planning budget on the ensemble
    overrides.write_text(yaml.safe_dump({"mpc_controller": {"ros__parameters": {"cem": {"population": 200, "iterations": 3}}}}))
    out = tmp_path / "experiment"
    specs = learn_graph({"episodes": "4", "episode_length": "6", "output_dir": str(out), "overrides": str(overrides)})
    launch = start(specs, domain, tmp_path / "logs")
    diag = Diagnostics(probe)
    try:
        assert probe.spin_until(lambda: diag.number("mpc_controller", "model_version") >= 1, 400), logs(tmp_path)
        version = diag.number("mpc_controller", "model_version")
        recorded = diag.number("learner", "next_seq")
        launch.kill("learner")  # SIGKILL, mid-episode
        ticks = diag.number("mpc_controller", "ticks")
        probe.spin_for(3.0)
        assert diag.number("mpc_controller", "ticks") > ticks + 20, "control stopped with the learner"
        assert diag.number("mpc_controller", "model_version") == version  # still planning on the last model
        buffer = ReplayBuffer(4, 1, out / "learner" / "replay")
        on_disk = len(buffer)
        buffer.close()
        assert on_disk >= recorded > 0, f"{recorded} transitions recorded before the kill, {on_disk} on disk after"
        launch.restart("learner")
        assert probe.spin_until(lambda: diag.number("learner", "reloaded_transitions") >= on_disk, 120), logs(tmp_path)
        assert diag.number("learner", "model_version") >= version  # resumed from its checkpoint
        manager = launch.procs["episode_manager"]
        assert probe.spin_until(lambda: manager.poll() is not None, 600), logs(tmp_path)
        assert manager.returncode == 0, logs(tmp_path)
    finally:
        launch.stop()
    curve = json.loads((out / "learning_curve.json").read_text())["curve"]
    assert len(curve) == 4 and curve[0]["model_version"] == "none"  # the first episode explores
    random_return, last = curve[0]["return"], curve[-1]
    assert math.isfinite(random_return) and last["return"] > 0.5 * random_return, curve  # costs at least halved
    assert last["in_tolerance_fraction"] > curve[0]["in_tolerance_fraction"] + 0.2, curve
    assert (out / "learning_curve.png").stat().st_size > 10_000
    assert list((out / "learner" / "checkpoints").glob("ensemble_v*.safetensors"))
