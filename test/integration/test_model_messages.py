"""The controller hot-swaps models it receives and rejects bad ones with a reason, keeping its
current model: garbage bytes, another architecture, non-finite weights, an older version."""

import array
import dataclasses

import torch
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rosutil import logs, start
from std_msgs.msg import UInt8MultiArray

from mbrl_control.config import node_settings
from mbrl_control.core.builders import build_ensemble
from mbrl_control.core.dynamics.ensemble import EnsembleDynamics
from mbrl_control.core.learning import ModelInfo, encode
from mbrl_control.core.robot import robot_spec
from mbrl_control.graph import mpc_graph, robot_config
from mbrl_control.nodes.model_receiver import MODEL_QOS


def message(model: EnsembleDynamics, version: int) -> UInt8MultiArray:
    return UInt8MultiArray(data=array.array("B", encode(model, ModelInfo(model.config, version, 100, 0.5, 0.1))))


def test_controller_swaps_good_models_and_rejects_bad_ones(domain, probe, tmp_path):
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text(yaml.safe_dump({"mpc_controller": {"ros__parameters": {
        "model": "learned", "compile": False, "cem": {"population": 50, "iterations": 1},
        "model_offset": {"time_constant": 0.2}}}}))
    # The sim too: offset-free MPC compares each state with the model's prediction of it.
    running = start(mpc_graph({"overrides": str(overrides), "estimator": "none"}), domain, tmp_path / "logs")
    try:
        diag: dict[str, str] = {}
        probe.node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diag.update(
            {kv.key: kv.value for s in m.status if s.name == "mpc_controller" for kv in s.values}), 10)
        pub = probe.node.create_publisher(UInt8MultiArray, "/learner/model", MODEL_QOS)
        assert probe.spin_until(lambda: "model_version" in diag, 120), logs(tmp_path)

        p = node_settings(robot_config("cartpole"), "mpc_controller")
        model = build_ensemble(p, robot_spec(p))
        model.fit_normalizer(torch.randn(64, 4), torch.randn(64, 1), torch.randn(64, 4))
        other = EnsembleDynamics(dataclasses.replace(model.config, members=3))
        poisoned = build_ensemble(p, robot_spec(p))
        with torch.no_grad():
            poisoned.weights[0][0, 0, 0] = float("nan")
        bad = [UInt8MultiArray(data=array.array("B", b"not a model at all")), message(other, 1), message(poisoned, 1)]
        for i, msg in enumerate(bad, start=1):
            pub.publish(msg)
            assert probe.spin_until(lambda: int(diag.get("rejected_models", 0)) >= i, 10), diag
            assert diag["model_version"] == "none"
        assert "architecture" in diag["last_model_reject_reason"] or "finite" in diag["last_model_reject_reason"]
        pub.publish(message(model, 1))
        assert probe.spin_until(lambda: diag.get("model_version") == "1", 10), diag
        assert float(diag["model_swap_ms_last"]) > 0.0
        # Offset-free MPC runs on the model in use: states one tick after a command update it.
        assert probe.spin_until(lambda: int(diag.get("model_offset_updates", 0)) >= 20, 30), diag
        assert len(diag["model_offset"].split()) == 4
        pub.publish(message(model, 1))  # not newer than the one in use
        assert probe.spin_until(lambda: int(diag.get("rejected_models", 0)) >= 4, 10), diag
        assert diag["model_version"] == "1" and "not newer" in diag["last_model_reject_reason"]
    finally:
        running.stop()
