"""Helpers for integration tests with real rclpy nodes in subprocesses.

Every test gets its own ROS_DOMAIN_ID (held by a file lock, so parallel test runs on one machine
never share one) and localhost-only discovery, for its nodes and its own probe node alike.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from mbrl_control.graph import NodeSpec, mpc_graph
from mbrl_control.launcher import Launch, default_environment

LOCK_DIR = Path(os.environ.get("TMPDIR", "/tmp"))


def domains_in_use() -> set[int]:
    """ROS_DOMAIN_IDs of the processes running here (a benchmark's nodes hold no lock file)."""
    used = set()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            for item in environ.read_bytes().split(b"\0"):
                if item.startswith(b"ROS_DOMAIN_ID=") and item[14:].isdigit():
                    used.add(int(item[14:]))
        except OSError:
            continue
    return used


@contextlib.contextmanager
def isolated_domain() -> Iterator[int]:
    """Hold a ROS domain id no other test on this machine holds (and no running process uses), and
    point this process at it."""
    used = domains_in_use()
    ids = [d for d in range(1, 101) if d not in used]
    random.shuffle(ids)
    for domain in ids:
        handle = open(LOCK_DIR / f"mbrl_control_test_domain_{domain}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        saved = {k: os.environ.get(k) for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")}
        os.environ["ROS_DOMAIN_ID"] = str(domain)
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        try:
            yield domain
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        return
    raise RuntimeError("no free ROS domain id for the test")


def node_env(domain: int) -> dict[str, str]:
    env = default_environment()
    env["ROS_DOMAIN_ID"] = str(domain)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    return env


def start(specs: list[NodeSpec], domain: int, log_dir: Path) -> Launch:
    return Launch(specs, log_dir=log_dir, env=node_env(domain))


def run_to_end(specs: list[NodeSpec], domain: int, tmp_path: Path, timeout: float = 600.0) -> None:
    """Run a graph that ends itself (an episode manager's last episode) and check it ended cleanly."""
    launch = start(specs, domain, tmp_path / "logs")
    try:
        code = launch.wait(timeout)
    finally:
        launch.stop()
    assert code == 0, logs(tmp_path)


def run_mpc(args: dict[str, str], domain: int, tmp_path: Path, timeout: float = 600.0) -> tuple[int, dict]:
    """Run mpc.launch.py's graph with a run monitor until it reports; return (exit code, summary).

    The deadline is generous: on a loaded 2-core machine the nodes' warm-up alone took 90 s, and a
    lockstep run of 8 s of robot time past 300 s (exit 124 then, no summary)."""
    summary_path = tmp_path / "summary.json"
    specs = mpc_graph(args | {"summary_path": str(summary_path)})
    launch = start(specs, domain, tmp_path / "logs")
    code = launch.wait(timeout)
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return code, summary


def launcher_children(proc: subprocess.Popen) -> list[int]:
    """The node processes a running ``mbrl-control launch`` started (read while it is alive)."""
    out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def kill_launch(proc: subprocess.Popen, children: list[int]) -> None:
    """Cleanup after a failed stop: the launcher and its nodes (each in its own process group),
    so that real-time-priority nodes left behind cannot starve the tests after this one."""
    for pid in children:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def logs(tmp_path: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((tmp_path / "logs").glob("*.log")))


class Probe:
    """A node in the test process, in the test's domain, to publish and observe topics."""

    def __init__(self, domain: int, name: str = "probe") -> None:
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_until(self, condition: Callable[[], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.05)
            if condition():
                return True
        return condition()

    def spin_for(self, seconds: float) -> None:
        self.spin_until(lambda: False, seconds)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
