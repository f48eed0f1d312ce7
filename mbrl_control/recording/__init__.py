"""Recording runs to MCAP (readable by ros2 bag and Foxglove) and reading them back, without ROS."""
