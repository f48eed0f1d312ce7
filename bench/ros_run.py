"""Running the launch graph from a benchmark: one isolated run, its summary back."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import random
import re
import tempfile
from pathlib import Path
from typing import IO, Iterator

import yaml
from tqdm import tqdm

from mbrl_control.graph import GRAPHS
from mbrl_control.launcher import Launch, default_environment


@contextlib.contextmanager
def claimed_domain() -> Iterator[int]:
    """A ROS domain id held for the duration: locked like the integration tests' (so a test run
    never shares it) and used by no running process's ROS_DOMAIN_ID (a benchmark started with
    ``private_domain``)."""
    in_use = set()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            for item in environ.read_bytes().split(b"\0"):
                if item.startswith(b"ROS_DOMAIN_ID="):
                    in_use.add(item.split(b"=", 1)[1].decode(errors="replace"))
        except OSError:
            continue
    ids = [d for d in range(1, 101) if str(d) not in in_use]
    random.shuffle(ids)
    for domain in ids:
        handle = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"mbrl_control_test_domain_{domain}.lock", "w")
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
    raise RuntimeError("no free ROS domain id")


def private_domain(salt: object = None) -> int:
    """A ROS domain id in 1..101 unlikely to be shared with a parallel run."""
    return random.Random(os.getpid() ^ hash(str(salt))).randint(102, 200) % 101 + 1


# The episode manager's line per finished episode (mbrl_control/nodes/episode_manager.py, _episode_line),
# as the launcher passes it on: "[episode_manager] [INFO] [...] [episode_manager]: episode 3 (4 of 10): return ..."
EPISODE_LINE = re.compile(r"^\[episode_manager\] .*: episode \d+ \((\d+) of (\d+)\): return (\S+), ([a-z ]+)")


class EpisodeProgress(io.TextIOBase):
    """A launch's output sink for a learning run: moves ``bar`` to each finished episode, with its
    return and success beside it; every other line is dropped (each node's log is on disk)."""

    def __init__(self, bar: tqdm) -> None:
        self.bar = bar

    def write(self, text: str) -> int:
        for line in text.splitlines():
            match = EPISODE_LINE.match(line)
            if match:
                done, total, ret, success = int(match[1]), int(match[2]), match[3], match[4]
                self.bar.total = total
                self.bar.set_postfix_str(f"last: return {ret.rstrip(',')}, {success.strip()}", refresh=False)
                self.bar.update(done - self.bar.n)
        return len(text)


def run_graph(args: dict[str, str], overrides: dict | None = None, timeout: float = 600.0,
              keep_dir: Path | None = None, graph: str = "mpc", domain: int | None = None,
              output: IO[str] | None = None) -> dict:
    """Run a launch graph (``mpc`` with a run monitor, or ``learn``) on a private ROS domain
    (localhost only) and return its summary; ``overrides`` is a parameter-file dict
    ({node: {ros__parameters: {...}}}) applied on top. ``output`` gets every node's output lines
    (prefixed ``[node]``; e.g. an ``EpisodeProgress``), else they go to the logs only."""
    work = Path(tempfile.mkdtemp(prefix="mbrl_bench_")) if keep_dir is None else keep_dir
    work.mkdir(parents=True, exist_ok=True)
    if overrides:
        (work / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        args = args | {"overrides": str(work / "overrides.yaml")}
    env = default_environment()
    env["ROS_DOMAIN_ID"] = str(private_domain(work) if domain is None else domain)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    if graph == "mpc":
        summary_path = work / "summary.json"
        args = args | {"summary_path": str(summary_path)}
    else:
        summary_path = work / "learning_curve.json"
        args = args | {"output_dir": str(work)}
    launch = Launch(GRAPHS[graph][1](args), log_dir=work / "logs", env=env, output=output or open(os.devnull, "w"))
    code = launch.wait(timeout)
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {"success": False}
    summary["exit_code"] = code
    summary["work_dir"] = str(work)
    return summary


class SpinningNode:
    """An rclpy node of this process on a run's domain, spun by a daemon thread: a benchmark's
    probe. ``close`` tears it down within a timeout (rclpy's teardown has hung before)."""

    def __init__(self, domain: int, name: str) -> None:
        import threading

        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()
        self.teardown_error: Exception | None = None

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # shut down under it
            pass

    def close(self, timeout: float = 10.0) -> bool:
        """False when rclpy's teardown did not finish within ``timeout`` (it is left behind in a
        daemon thread: leave the process with os._exit once the figures are out)."""
        import threading

        import rclpy

        def teardown() -> None:
            try:
                self.executor.shutdown(timeout_sec=2.0)
                self.node.destroy_node()
                rclpy.shutdown(context=self.context)
            except Exception as exc:  # already shut down under it
                self.teardown_error = exc

        thread = threading.Thread(target=teardown, daemon=True)
        thread.start()
        thread.join(timeout)
        return not thread.is_alive()


class TimingProbe:
    """The controller's own per-tick records (``~/timing``: tick time, lateness, sequence number)
    and its /diagnostics counts, gathered on a run's domain by a node spinning in a thread: a
    realtime run's timing judged tick by tick, with lost records found by the sequence numbers."""

    def __init__(self, domain: int, controller: str = "mpc_controller") -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from std_msgs.msg import Float64MultiArray

        from mbrl_control.nodes.diagnostics import values_of

        self.controller = controller
        self.records: list[list[float]] = []
        self.fields: list[str] = []
        self.counts: dict[str, str] = {}
        self._values_of = values_of
        self.spinning = SpinningNode(domain, "timing_probe")
        node = self.spinning.node
        node.create_subscription(Float64MultiArray, f"/{controller}/timing", self._on_timing,
                                 QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)

    def _on_timing(self, msg) -> None:
        if not self.fields and msg.layout.dim:
            self.fields = msg.layout.dim[0].label.split(",")
        self.records.append(list(msg.data))

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name == self.controller:
                self.counts = self._values_of(status)

    def close(self) -> bool:
        return self.spinning.close()

    def save(self, path: Path) -> None:
        """Every record as CSV, one row a tick, under its fields' names (where a run's slow ticks
        fell: in which episode, after which model)."""
        rows = [r for r in self.records if len(r) == len(self.fields)]
        if self.fields:
            path.write_text(",".join(self.fields) + "\n" + "".join(",".join(f"{v:.6g}" for v in r) + "\n" for r in rows))

    def figures(self, period: float) -> dict:
        """Tick p50/p99 over every tick and over the planning ticks, ticks that overran the period
        (lateness + tick time past it), records lost by sequence number, and the controller's own
        missed-tick count (releases skipped + ticks that ended after the next release)."""
        import numpy as np

        if not self.records or not self.fields:
            return {"records": 0}
        rows = np.array([r for r in self.records if len(r) == len(self.fields)])
        col = {name: rows[:, i] for i, name in enumerate(self.fields)}
        seq, tick, late = col["seq"], col["tick_ms"], col["lateness_ms"]
        planned = tick[col["plan_iterations"] > 0]
        ticks = int(float(self.counts.get("ticks", "nan"))) if self.counts.get("ticks") else None
        missed = int(float(self.counts["missed_ticks"])) if self.counts.get("missed_ticks") else None
        return {
            "records": len(rows),
            "records_lost_by_seq": int(seq.max() - seq.min() + 1 - len(np.unique(seq))),
            "tick_ms_p50": round(float(np.percentile(tick, 50)), 3),
            "tick_ms_p99": round(float(np.percentile(tick, 99)), 3),
            "planning_ticks": len(planned),
            "planning_tick_ms_p99": round(float(np.percentile(planned, 99)), 3) if len(planned) else None,
            "overrun_ticks": int(np.sum(late + tick > period * 1e3)),
            "lateness_ms_p99": round(float(np.percentile(late, 99)), 3),
            "controller_ticks": ticks,
            "controller_missed_ticks": missed,
            "missed_fraction": round(missed / ticks, 5) if ticks and missed is not None else None,
        }
