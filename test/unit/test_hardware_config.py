"""The ros2_control example files agree with the robot and the topics the controller uses."""

import yaml

from mbrl_control.core.urdf import read_urdf
from mbrl_control.graph import COMMAND_TOPIC
from mbrl_control.paths import config_dir


def test_ros2_control_urdf_has_the_same_joints_and_limits_as_the_sim_urdf():
    sim = read_urdf(config_dir() / "urdf" / "cartpole.urdf")
    hw = read_urdf(config_dir() / "urdf" / "cartpole_ros2_control.urdf")
    assert [j.name for j in sim.movable_joints] == [j.name for j in hw.movable_joints]
    for a, b in zip(sim.movable_joints, hw.movable_joints):
        assert (a.type, a.lower, a.upper, a.effort, list(a.axis)) == (b.type, b.lower, b.upper, b.effort, list(b.axis))


def test_controllers_yaml_provides_the_controllers_topics():
    doc = yaml.safe_load((config_dir() / "ros2_control_controllers.yaml").read_text())
    manager = doc["controller_manager"]["ros__parameters"]
    assert manager["joint_state_broadcaster"]["type"] == "joint_state_broadcaster/JointStateBroadcaster"
    # A controller named effort_controller publishes nothing and subscribes /effort_controller/commands.
    assert COMMAND_TOPIC == "/effort_controller/commands" and "effort_controller" in manager
    effort = doc["effort_controller"]["ros__parameters"]
    assert effort["interface_name"] == "effort" and effort["joints"] == ["slider_to_cart"]
