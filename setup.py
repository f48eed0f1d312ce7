"""ament_python package setup: colcon build installs the nodes in lib/mbrl_control and launch/ and
config/ under share/mbrl_control; pip install -e . gives the same modules plus the mbrl-control CLI."""

import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "mbrl_control"


def data_tree(folder: str) -> list[tuple[str, list[str]]]:
    """(install dir, files) pairs for every file under ``folder``, its layout kept: every regular
    file (with or without an extension), no bytecode caches, no directories."""
    pairs: dict[str, list[str]] = {}
    for path in sorted(glob(f"{folder}/**/*", recursive=True)):
        if not os.path.isfile(path) or "__pycache__" in path.split("/") or path.endswith(".pyc"):
            continue
        pairs.setdefault(f"share/{PACKAGE}/{os.path.dirname(path)}", []).append(path)
    return sorted(pairs.items())


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["core/dynamics/*.cpp"]},  # the ensemble's fused rollout, built on first use
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *data_tree("launch"),
        *data_tree("config"),
    ],
    install_requires=["setuptools", "numpy", "scipy", "pyyaml"],
    zip_safe=True,
    maintainer="mbrl_control maintainers",
    maintainer_email="maintainers@mbrl-control.dev",
    description="Model-based RL and MPC for robots on ROS 2",
    license="Apache-2.0",
    extras_require={"test": ["pytest"]},  # tests_require is gone from setuptools (>= 72)
    entry_points={
        "console_scripts": [
            # Node executables: the same table as mbrl_control.graph.EXECUTABLES (a test checks).
            "sim_node = mbrl_control.nodes.sim_node:main",
            "controller_node = mbrl_control.nodes.controller_node:main",
            "run_monitor = mbrl_control.nodes.run_monitor:main",
            "mock_hardware_node = mbrl_control.nodes.mock_hardware_node:main",
            "driver_node = mbrl_control.nodes.driver_node:main",
            "recorder_node = mbrl_control.nodes.recorder_node:main",
            "foxglove_bridge_node = mbrl_control.nodes.foxglove_bridge_node:main",
            "estimator_node = mbrl_control.nodes.estimator_node:main",
            "learner_node = mbrl_control.nodes.learner_node:main",
            "episode_manager = mbrl_control.nodes.episode_manager:main",
            "goal_publisher = mbrl_control.nodes.goal_publisher:main",
            "mbrl-control = mbrl_control.cli:main",
        ],
    },
)
