"""The goal publisher: a seeded sequence of goals a reach task can reach, one every ``period``
seconds of robot time, on ``/goal_pose`` (geometry_msgs/PoseStamped, as rviz's goal tool and
``ros2 topic pub`` send them).

It is what the demo and the benchmarks give a robot with a reach task; a user replaces it by rviz
or by their own node on the same topic. Goals are drawn in joint space inside the limits and
mapped through forward kinematics (``mbrl_control.core.tasks.goals``), so each is reachable. The
first goal goes out with the controller's first planned tick (its first sample on
``/<controller>/transitions``), once ``/goal_pose`` has its subscribers (the controller, the run
monitor): a goal sent before would be lost on a volatile topic.
"""

from __future__ import annotations

from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float64MultiArray

from mbrl_control.core.tasks.goals import random_goals
from mbrl_control.nodes.params import ROBOT_PARAMS, ParameterError, ParamSpec, declare_task_node_parameters
from mbrl_control.nodes.runtime import NodeDone, main_for

PARAMS = [
    *ROBOT_PARAMS,
    ParamSpec("enabled", True, "the launch starts this node for a task with a goal (false: goals come from elsewhere)"),
    ParamSpec("count", 10, "goals to send; the node ends after the last one's period", 1, 100000),
    ParamSpec("period", 3.0, "robot time per goal [s]", 0.1, 3600.0),
    ParamSpec("seed", 0, "random seed of the goal sequence", 0, 2**31 - 1),
    ParamSpec("margin", 0.15, "goals are drawn from joint positions this far inside the limits [rad or m]", 0.0, 1.0),
    ParamSpec("subscribers", 2, "wait for this many /goal_pose subscribers before the first goal", 0, 100),
    ParamSpec("frame_id", "world", "the frame of the goals (the URDF's root at the world origin)"),
    ParamSpec("controller_name", "mpc_controller", "the controller whose first planned tick starts the goals"),
]


class GoalPublisher(Node):
    def __init__(self) -> None:
        super().__init__("goal_publisher")
        p, task = declare_task_node_parameters(self, PARAMS)
        self.p = p
        try:
            self.goals = random_goals(task, p["count"], p["seed"], p["margin"])
        except ValueError as exc:
            raise ParameterError(str(exc)) from exc
        self.sent = 0
        self.pub = self.create_publisher(PoseStamped, "goal_pose", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.create_subscription(Float64MultiArray, f"/{p['controller_name']}/transitions", self._on_sample,
                                 QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.timer = None
        self.get_logger().info(f"{p['count']} goals, one every {p['period']:.1f} s, seed {p['seed']}")

    def _on_sample(self, msg: Float64MultiArray) -> None:
        if self.timer is None and self.pub.get_subscription_count() >= self.p["subscribers"]:
            self._send()
            self.timer = self.create_timer(self.p["period"], self._send)  # on the ROS clock: sim time in lockstep

    def _send(self) -> None:
        if self.sent >= len(self.goals):
            self.get_logger().info(f"sent all {self.sent} goals")
            raise NodeDone
        goal = self.goals[self.sent]
        msg = PoseStamped()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.p["frame_id"]
        msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in goal)
        msg.pose.orientation.w = 1.0
        self.pub.publish(msg)
        self.sent += 1
        self.get_logger().info(f"goal {self.sent}/{len(self.goals)}: {[round(float(v), 3) for v in goal]}")


main = main_for(GoalPublisher)

if __name__ == "__main__":
    main()
