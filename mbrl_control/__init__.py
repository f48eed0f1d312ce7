"""mbrl_control: model-based RL and MPC for robots on ROS 2.

``mbrl_control.core`` is the pure part (models, planners, estimators, learning, tasks) and imports
no rclpy; ``mbrl_control.nodes`` holds the thin ROS 2 nodes that call it.
"""

__version__ = "0.1.0"
