"""A missing Python requirement is named by the pip package to install, at launch and when a node
starts without it (mbrl_control.dependencies)."""

import subprocess
import sys
from pathlib import Path

import pytest

from mbrl_control.dependencies import PIP_PACKAGES, ROS_PACKAGES, missing_packages, requirement

ROOT = Path(__file__).resolve().parents[2]


def requirements(path: Path = ROOT / "requirements.txt") -> dict[str, str]:
    """A requirements file: package name (lower case, '-' for '_') -> its line."""
    out = {}
    for line in path.read_text().splitlines():
        spec = line.split("#", 1)[0].strip()
        if spec:
            out[spec.split("==")[0].strip().lower().replace("_", "-")] = spec
    return out


def test_the_table_names_every_requirement_and_nothing_else():
    listed = requirements()
    products = {p for p in listed if not p.startswith("ros-") and p != "pytest"}  # pytest: for the tests only
    assert set(PIP_PACKAGES.values()) == products
    assert set(ROS_PACKAGES.values()) <= set(listed)
    assert requirement("torch") == listed["torch"] and "==" in requirement("torch")  # pinned as the file pins it
    assert requirement("not-a-requirement") == "not-a-requirement"


def test_every_import_name_is_what_its_installed_package_provides():
    # The requirements are installed wherever the tests run: a wrong import name shows up as missing.
    assert missing_packages() == []
    assert missing_packages({"no_such_module_here": "some-package"}) == ["some-package"]


@pytest.mark.parametrize("blocked, package, node", [("yaml", "pyyaml", "recorder_node"),
                                                    ("torch", "torch==2.13.0", "controller_node"),
                                                    ("mcap", "mcap", "recorder_node")])
def test_a_node_started_without_a_requirement_says_which_pip_package_to_install(blocked, package, node):
    code = (f"import sys; sys.modules[{blocked!r}] = None\n"  # as if not installed
            f"from mbrl_control.nodes.{node} import main")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "ModuleNotFoundError" in result.stderr  # Python's own traceback stays
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("[FATAL] cannot start: the Python package") and f"pip install '{package}'" in last, last


def test_other_errors_pass_through_unchanged():
    code = "import mbrl_control.nodes\nimport no_such_module_here"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "No module named 'no_such_module_here'" in result.stderr
    assert "[FATAL]" not in result.stderr


def test_the_peer_benchmark_venv_gets_every_package_that_planners_py_imports():
    # `make bench-peers` installs bench/requirements-peers.txt alone: a package the core comes to
    # import must go there too, or the benchmark stops at its first line (safetensors did, then
    # threadpoolctl). What importing bench/planners.py loads here is what that venv needs.
    code = ("import sys; sys.path.insert(0, 'bench'); import planners; "
            "print(' '.join(sorted({name.split('.')[0] for name in sys.modules})))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    needed = {PIP_PACKAGES[name] for name in result.stdout.split() if name in PIP_PACKAGES}
    assert {"torch", "numpy", "threadpoolctl"} <= needed  # the import did reach the core
    assert needed - set(requirements(ROOT / "bench" / "requirements-peers.txt")) == set()
