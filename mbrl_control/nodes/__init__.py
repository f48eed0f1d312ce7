"""Thin ROS 2 nodes: parameters, topics, timing and safety around the pure core."""
