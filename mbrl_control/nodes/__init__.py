"""Thin ROS 2 nodes: parameters, topics, timing and safety around the pure core."""

from mbrl_control.dependencies import explain_missing_packages

explain_missing_packages()  # a node dying of a missing package names the pip package to install
