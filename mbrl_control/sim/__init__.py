"""Simulated robots (PyBullet) behind a small, ROS-free interface used by the sim node."""
