"""The core must import no ROS: it is tested and benchmarked without ROS and reused offline."""

import pkgutil
import subprocess
import sys

import mbrl_control.core


def test_importing_every_core_module_loads_no_rclpy():
    modules = [m.name for m in pkgutil.walk_packages(mbrl_control.core.__path__, "mbrl_control.core.")]
    assert len(modules) > 5
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('rclpy', 'rcl_interfaces', 'launch', 'launch_ros'))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"core imported ROS modules: {result.stdout} {result.stderr[-2000:]}"
