"""End to end through the ROS 2 CLI: `ros2 launch mbrl_control mpc.launch.py mode:=lockstep
duration:=8` on the colcon-built package starts sim, controller and run monitor; the run monitor's
summary reports a successful swing-up, and its exit ends the launch with nothing left running.

Needs a ROS 2 install and this package built and sourced:
    colcon build --packages-select mbrl_control && source install/setup.bash
The module carries the ``ros2_install`` marker, which CI deselects by name. Each test holds its own
ROS_DOMAIN_ID (a file lock shared with the integration tests) and keeps discovery on localhost.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from mbrl_control.graph import MPC_ARGUMENTS

pytestmark = pytest.mark.ros2_install

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "mbrl_control"
LOCK_DIR = Path(os.environ.get("TMPDIR", "/tmp"))
# First run on a machine: the controller's torch.compile warm-up alone takes ~70 s.
LAUNCH_TIMEOUT_S = float(os.environ.get("MBRL_ROS2_LAUNCH_TIMEOUT", "600"))
BUILD_HINT = (
    "build and source the package first: in your colcon workspace (with this repo under src/), "
    "`source /opt/ros/$ROS_DISTRO/setup.bash && colcon build --packages-select mbrl_control && "
    "source install/setup.bash`, then run pytest from that shell"
)


@contextlib.contextmanager
def isolated_domain() -> Iterator[int]:
    """A ROS domain id no other test on this machine holds (same lock files as test/integration)."""
    ids = list(range(1, 101))
    random.shuffle(ids)
    for domain in ids:
        handle = open(LOCK_DIR / f"mbrl_control_test_domain_{domain}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        try:
            yield domain
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        return
    raise RuntimeError("no free ROS domain id for the test")


def ros2_env(domain: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
    return env


def installed_share() -> Path:
    """share/mbrl_control of the sourced workspace; fails with what to do when it isn't there."""
    if shutil.which("ros2") is None:
        pytest.fail(f"no `ros2` command on PATH (source /opt/ros/<distro>/setup.bash); {BUILD_HINT}", pytrace=False)
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError as e:
        pytest.fail(f"ament_index_python is not importable ({e}); {BUILD_HINT}", pytrace=False)
    try:
        share, missing = Path(get_package_share_directory(PACKAGE)), None
    except (PackageNotFoundError, LookupError, OSError) as e:  # OSError: no AMENT_PREFIX_PATH at all
        share, missing = None, e
    if missing is not None:
        pytest.fail(f"package '{PACKAGE}' is not in the ament index ({missing}); {BUILD_HINT}", pytrace=False)
    for rel in ("launch/mpc.launch.py", "config/cartpole.yaml", "package.xml"):
        installed, here = share / rel, ROOT / rel
        if not installed.is_file():
            pytest.fail(f"{installed} is missing: the install is incomplete; {BUILD_HINT}", pytrace=False)
        if installed.read_bytes() != here.read_bytes():
            pytest.fail(f"{installed} differs from {here}: the install is stale, rebuild it; {BUILD_HINT}", pytrace=False)
    return share


def run_ros2(args: list[str], domain: int, cwd: Path, log: Path, timeout: float) -> int:
    """Run `ros2 ...` in its own process group; on timeout, stop it (SIGINT, then SIGKILL) and fail.
    Fails too if any process of the group outlives it."""
    with open(log, "w") as out:
        proc = subprocess.Popen(["ros2", *args], env=ros2_env(domain), cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # ros2 launch must have stopped every node it started: nothing may be left in its process group.
    leftovers = False
    deadline = time.monotonic() + 10
    while True:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        if time.monotonic() > deadline:
            leftovers = True
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    if timed_out:
        pytest.fail(f"`ros2 {' '.join(args)}` ran past {timeout:.0f} s; its log ends:\n{tail(log)}", pytrace=False)
    if leftovers:
        pytest.fail(f"`ros2 {' '.join(args)}` exited but left processes running; its log ends:\n{tail(log)}", pytrace=False)
    return proc.returncode


def tail(log: Path, lines: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@pytest.mark.slow
def test_ros2_launch_lockstep_run_succeeds_and_the_monitor_ends_it(tmp_path):
    installed_share()
    summary_path = tmp_path / "summary.json"
    log = tmp_path / "ros2_launch.log"
    with isolated_domain() as domain:
        rc = run_ros2(
            ["launch", PACKAGE, "mpc.launch.py", "mode:=lockstep", "duration:=8", f"summary_path:={summary_path}"],
            domain, tmp_path, log, LAUNCH_TIMEOUT_S,
        )
    text = log.read_text(errors="replace")
    assert rc == 0, f"ros2 launch exited {rc}; its log ends:\n{tail(log)}"
    for exe in ("sim_node", "controller_node", "run_monitor"):
        assert re.search(rf"\[{exe}-\d+\]: process started", text), f"{exe} never started; log ends:\n{tail(log)}"
    assert re.search(r"\[run_monitor-\d+\]: process has finished cleanly", text), f"run_monitor failed:\n{tail(log)}"
    logged = re.search(r"\[run_monitor\]: run finished: (\{.*\})", text)
    assert logged, f"the run monitor logged no summary; log ends:\n{tail(log)}"
    summary = json.loads(logged.group(1))
    assert summary_path.is_file(), f"no summary at {summary_path}; log ends:\n{tail(log)}"
    assert json.loads(summary_path.read_text()) == summary
    assert summary["mode"] == "lockstep" and summary["planner"] == "cem"
    assert summary["duration_s"] >= 8.0 - 0.05, summary
    assert summary["success"] is True, f"swing-up failed: {summary}"


def test_ros2_launch_show_args_lists_every_argument(tmp_path):
    installed_share()
    log = tmp_path / "show_args.log"
    with isolated_domain() as domain:
        rc = run_ros2(["launch", PACKAGE, "mpc.launch.py", "--show-args"], domain, tmp_path, log, 120)
    text = log.read_text()
    assert rc == 0, text
    for a in MPC_ARGUMENTS:
        assert f"'{a.name}':" in text and f"(default: '{a.default}')" in text, f"{a.name} missing:\n{text}"


def test_ros2_launch_refuses_a_bad_argument_by_name(tmp_path):
    installed_share()
    log = tmp_path / "bad.log"
    with isolated_domain() as domain:
        rc = run_ros2(["launch", PACKAGE, "mpc.launch.py", "mode:=fast"], domain, tmp_path, log, 120)
    text = log.read_text()
    assert rc != 0, text
    assert 'Argument "mode" provided value "fast" is not valid' in text, text
    assert "process started" not in text, text
