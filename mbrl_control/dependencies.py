"""The Python packages mbrl_control needs beyond a ROS 2 install (requirements.txt), by the name they
are imported as, and what to say when one is missing: which pip package to install.

A colcon build installs the nodes but not these (rosdep has no torch); ``ros2 launch`` then needs
``pip install -r requirements.txt`` first. Without it a node would die on a bare
``ModuleNotFoundError: No module named 'yaml'`` (the pip package is ``pyyaml``): the launch file
checks every package before it starts a node (``launch_adapter``), and a node started any other
way names the package as it exits (``explain_missing_packages``, installed by
``mbrl_control.nodes``). Standard library only, so it works where nothing else is installed.
"""

from __future__ import annotations

import importlib.util
import sys
from types import TracebackType

from mbrl_control.paths import share_dir

# import name -> pip package (as requirements.txt names it; test/unit/test_dependencies.py keeps them equal)
PIP_PACKAGES = {
    "torch": "torch",
    "pybullet": "pybullet",
    "pybullet_data": "pybullet",
    "casadi": "casadi",
    "numpy": "numpy",
    "scipy": "scipy",
    "threadpoolctl": "threadpoolctl",
    "yaml": "pyyaml",
    "safetensors": "safetensors",
    "stable_baselines3": "stable-baselines3",
    "gymnasium": "gymnasium",
    "matplotlib": "matplotlib",
    "mcap": "mcap",
    "mcap_ros2": "mcap-ros2-support",
    "rosbags": "rosbags",
    "foxglove": "foxglove-sdk",
    "websockets": "websockets",
    "tqdm": "tqdm",
}
# ROS 2 client library and messages: a sourced ROS 2 install provides them, or their PyPI wheels.
ROS_PACKAGES = {
    name: f"ros-{name.replace('_', '-')}"
    for name in ("rclpy", "std_msgs", "sensor_msgs", "geometry_msgs", "nav_msgs", "visualization_msgs",
                 "diagnostic_msgs", "std_srvs", "lifecycle_msgs", "rosgraph_msgs", "builtin_interfaces",
                 "rcl_interfaces")
}


def requirement(package: str) -> str:
    """``package`` as requirements.txt pins it (``torch==2.13.0``), or its bare name where the
    file is not at hand (an installed package without its source tree)."""
    path = share_dir() / "requirements.txt"
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return package
    for line in lines:
        spec = line.split("#", 1)[0].strip()
        name = spec.split(";")[0]
        for separator in ("==", ">=", "<=", "~=", "!=", "<", ">", "["):
            name = name.split(separator, 1)[0]
        if name.strip().lower() == package.lower():
            return spec
    return package


def missing_packages(modules: dict[str, str] = PIP_PACKAGES) -> list[str]:
    """The pip packages (sorted, each once) of the import names in ``modules`` that cannot be
    imported here. Looks without importing: cheap, and nothing heavy is loaded."""
    missing = set()
    for module, package in modules.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package missing, or a broken __spec__
            found = False
        if not found:
            missing.add(package)
    return sorted(missing)


def install_hint(packages: list[str]) -> str:
    """What to run to install ``packages`` (pip names)."""
    pinned = " ".join(f"'{requirement(p)}'" for p in packages)
    return (f"install mbrl_control's Python requirements: pip install -r requirements.txt (in the mbrl_control "
            f"source), or just these: pip install {pinned}")


def missing_packages_message(packages: list[str]) -> str:
    return f"mbrl_control needs Python packages that are not installed: {', '.join(packages)}; {install_hint(packages)}"


def package_of(module: str) -> str | None:
    """The pip package (or ROS 2 wheel) that provides top-level module ``module``, if it is ours."""
    top = module.split(".")[0]
    return PIP_PACKAGES.get(top) or ROS_PACKAGES.get(top)


def missing_module_message(error: ModuleNotFoundError) -> str | None:
    """A line naming what to install for ``error``, or None when the module is none of ours."""
    package = package_of(error.name or "")
    if package is None:
        return None
    if error.name.split(".")[0] in ROS_PACKAGES:
        return (f"the ROS 2 Python package '{error.name.split('.')[0]}' is missing: source your ROS 2 install "
                f"(source /opt/ros/<distro>/setup.bash), or pip install '{requirement(package)}'")
    return f"the Python package '{package}' is missing (import '{error.name}'); {install_hint([package])}"


def explain_missing_packages() -> None:
    """Name the pip package to install when this process dies of a ModuleNotFoundError for one
    of ours (after Python's own traceback). Changes nothing else."""
    previous = sys.excepthook

    def hook(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
        previous(kind, error, traceback)
        message = missing_module_message(error) if isinstance(error, ModuleNotFoundError) else None
        if message is not None:
            print(f"[FATAL] cannot start: {message}", file=sys.stderr, flush=True)

    if getattr(sys.excepthook, "__qualname__", "") != hook.__qualname__:  # once per process
        sys.excepthook = hook
