"""The URDF model, and a residual model (the zero residual until the learner publishes one), plan
from the first tick, so their offset-free MPC (``model_offset.time_constant``; on the URDF model an
effort offset, ``model_offset.kind: effort``) runs from then too; a model learned from scratch has
no offset until its first model arrives."""

import math

import numpy as np
import pytest
import rclpy
import torch
import yaml
from rclpy.time import Time
from sensor_msgs.msg import JointState

from mbrl_control.paths import config_dir


@pytest.mark.parametrize("model, kind, updates_before_a_model", [
    ("residual", "state_change", True), ("learned", "state_change", False), ("analytic", "effort", True)])
def test_offset_free_mpc_starts_with_the_first_tick_the_model_plans(domain, tmp_path, model, kind, updates_before_a_model):
    from mbrl_control.nodes.controller_node import ControllerNode

    values = {"mode": "realtime", "compile": False, "model": model, "model_offset": {"time_constant": 0.2, "kind": kind},
              "cem": {"population": 50, "elites": 5, "iterations": 1, "horizon": 10}}
    path = tmp_path / "controller.yaml"
    path.write_text(yaml.safe_dump({"mpc_controller": {"ros__parameters": values}}))
    rclpy.init(args=["--ros-args", "--params-file", str(config_dir() / "cartpole.yaml"), "--params-file", str(path)])
    node = ControllerNode()
    try:
        node.command_pub.publish = lambda msg: None
        node.sample_pub.publish = lambda msg: None
        assert node.receiver is None or node.receiver.version is None  # nothing from a learner
        state = JointState(name=list(node.spec.state_joints), position=[0.0, math.pi - 0.2], velocity=[0.0, 0.0])
        start = node.get_clock().now().nanoseconds
        for k in range(12):  # one control period apart: each state is one model step after a command
            state.header.stamp = Time(nanoseconds=start + k * node.period_ns).to_msg()
            node._on_state(state)
            node._tick(0.0)
        updates = node.model_offset.updates
        if updates_before_a_model:
            assert updates >= 8, (updates, node.model_offset.skipped)
            assert np.isfinite(node.model_offset.offset.numpy()).all()
        else:
            assert updates == 0
        if kind == "effort":  # the realtime lookahead predicts the robot too: with the same offset
            planned, carried = node.model_offset.targets
            assert planned is node.model and carried is not planned
            assert float(node.model_offset.offset.abs().max()) > 0.0
            torch.testing.assert_close(carried.effort_offset, node.model_offset.offset)
    finally:
        node.destroy_node()
        rclpy.shutdown()
