"""A third robot with no Python change: a URDF and a parameter file written here, nothing else.

A two-link planar arm (shoulder and elbow about y, gravity along -z), torque-controlled, reaching a
point with its tip. The same builders the nodes use (load_robot, build_mpc) make its model, task
and planner from the two files; the launch graph takes the file's path as ``robot:=``.
"""

import textwrap

import numpy as np
import pytest
import torch

from mbrl_control.core.builders import build_mpc, load_robot, robot_parameters
from mbrl_control.graph import mpc_graph

URDF = """<?xml version="1.0"?>
<robot name="planar_arm">
  <link name="base"/>
  <link name="upper">
    <inertial><origin xyz="0 0 0.25"/><mass value="1.0"/><inertia ixx="0.021" iyy="0.021" izz="0.001" ixy="0" ixz="0" iyz="0"/></inertial>
  </link>
  <link name="fore">
    <inertial><origin xyz="0 0 0.2"/><mass value="0.6"/><inertia ixx="0.008" iyy="0.008" izz="0.0005" ixy="0" ixz="0" iyz="0"/></inertial>
  </link>
  <link name="tip"/>
  <joint name="shoulder" type="revolute">
    <parent link="base"/><child link="upper"/><origin xyz="0 0 0.1"/><axis xyz="0 1 0"/>
    <limit lower="-2.5" upper="2.5" effort="30" velocity="5"/><dynamics damping="0.1"/>
  </joint>
  <joint name="elbow" type="revolute">
    <parent link="upper"/><child link="fore"/><origin xyz="0 0 0.5"/><axis xyz="0 1 0"/>
    <limit lower="-2.5" upper="2.5" effort="15" velocity="5"/><dynamics damping="0.05"/>
  </joint>
  <joint name="tool" type="fixed"><parent link="fore"/><child link="tip"/><origin xyz="0 0 0.4"/></joint>
</robot>
"""


def robot_files(tmp_path) -> str:
    urdf = tmp_path / "planar_arm.urdf"
    urdf.write_text(URDF)
    config = textwrap.dedent("""\
        /**:
          ros__parameters:
            urdf: planar_arm.urdf       # beside this file
            state_joints: [shoulder, elbow]
            command_joints: [shoulder, elbow]
            control_rate: 50.0
            model: {dynamics: rigid_body, integrator: rk4}
            equilibrium: [0.3, 0.6]
            keypoint_links: [fore, tip]
            task:
              name: planar_reach
              terms: [reach, joint_velocity, effort, joint_limits]
              terminal: 10.0
              reach: {residual: link_position, norm: smooth_abs, link: tip, smoothing: 0.02, weight: 5.0}
              joint_velocity: {residual: joint_velocity, weight: 0.1}
              effort: {residual: effort, weight: 1.0e-4}
              joint_limits: {residual: joint_limit, margin: 0.2, weight: 100.0}
              success: {kind: reach, tolerance: 0.02}
              goal: [0.5, 0.0, 0.6]
              goal_region: {center: [0.0, 0.0, 0.1], radius: 0.85, min_z: 0.05}
        mpc_controller:
          ros__parameters:
            planner: ilqr
            ilqr: {horizon: 15, iterations: 1}
        """)
    path = tmp_path / "planar_arm.yaml"
    path.write_text(config)
    return str(path)


def test_a_robot_from_a_urdf_and_a_parameter_file_reaches_its_goal(tmp_path):
    config = robot_files(tmp_path)
    robot = load_robot(config)
    assert robot.spec.state_dim == 4 and robot.spec.action_dim == 2
    # The URDF's geometry: straight up, the tip is 0.1 + 0.5 + 0.4 m above the base.
    np.testing.assert_allclose(robot.task.keypoints(np.zeros(4))[0, -1], [0.0, 0.0, 1.0], atol=1e-5)

    mpc = build_mpc(robot_parameters(config) | {"compile": False})  # what the controller node builds
    assert mpc.planner.horizon == 15
    goal = np.array([0.45, 0.0, 0.55])
    assert mpc.task.set_goal(goal) == ""  # inside the goal region: not clamped
    x = torch.tensor([0.3, 0.6, 0.0, 0.0])
    for _ in range(100):  # 2 s
        u = mpc.planner.plan(x).actions[0]
        assert torch.all(u.abs() <= mpc.task.action_high + 1e-6)
        x = mpc.model.step(x.unsqueeze(0), u.unsqueeze(0))[0]
    assert float(mpc.task.error(x.numpy())[0]) < 0.02
    # An unreachable goal is clamped into the region, and says so.
    assert mpc.task.set_goal(np.array([3.0, 0.0, 0.5]))
    assert np.linalg.norm(mpc.task.goal_position() - [0.0, 0.0, 0.1]) <= 0.85 + 1e-6


def test_the_launch_graph_takes_the_files_path(tmp_path):
    config = robot_files(tmp_path)
    graph = mpc_graph({"robot": config})
    assert {"sim", "estimator", "mpc_controller", "goal_publisher"} <= {s.name for s in graph}
    assert all(config in [p for p in s.parameters if isinstance(p, str)] for s in graph)
    # Its URDF, named relative to the parameter file, reaches every node as an absolute path.
    assert all(s.parameters[-1]["urdf"] == str(tmp_path / "planar_arm.urdf") for s in graph)
    with pytest.raises(ValueError):
        mpc_graph({"robot": str(tmp_path / "no_such_robot.yaml")})
