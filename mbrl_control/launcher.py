"""The pip-only launcher: starts the nodes of a graph (graph.py) as processes, exactly as
``ros2 launch`` would start them from the same description, for machines without a ROS 2 install.

Each node runs as ``python -m <module> --ros-args -r __node:=<name> --params-file ...`` with the
same parameter files, overrides (written to a temporary YAML file, as launch_ros does) and
remappings. Ctrl-C (or SIGTERM) stops every node with SIGINT, then SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

import yaml

from mbrl_control.graph import EXIT_BAD_PARAMETER, GRAPHS, NodeSpec

STOP_GRACE_S = 5.0


def node_command(spec: NodeSpec, scratch: Path) -> list[str]:
    if spec.module is None:
        raise ValueError(f"{spec.package}/{spec.executable} is not part of mbrl_control")
    cmd = [sys.executable, "-m", spec.module, *spec.arguments, "--ros-args", "-r", f"__node:={spec.name}"]
    if spec.namespace.strip("/"):
        cmd += ["-r", f"__ns:=/{spec.namespace.strip('/')}"]
    for i, params in enumerate(spec.parameters):
        if isinstance(params, dict):
            # Keyed by the fully qualified node name, as launch_ros does for a node given a name
            # and namespace: a '/**' key would lose to the node's own section of the config file.
            path = scratch / f"{process_name(spec).replace('/', '.')}_{i}.yaml"
            path.write_text(yaml.safe_dump({spec.fqn: {"ros__parameters": params}}))
            params = str(path)
        cmd += ["--params-file", str(params)]
    for src, dst in spec.remappings:
        cmd += ["-r", f"{src}:={dst}"]
    return cmd


def process_name(spec: NodeSpec) -> str:
    """What the launcher calls a node (``Launch.procs``, ``kill``, log prefixes): its name, under
    its namespace in a fleet (``robot_0/sim``)."""
    return spec.fqn.lstrip("/")


def default_environment() -> dict[str, str]:
    env = dict(os.environ)
    # Security default: DDS discovery stays on this machine unless the user opts out.
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _pump(stream: IO[bytes], prefix: str, sink: IO[str], log: IO[str] | None) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip("\n")
        sink.write(f"[{prefix}] {line}\n")
        sink.flush()
        if log is not None:
            log.write(line + "\n")
            log.flush()


class Launch:
    """A running graph: one process per node."""

    def __init__(self, specs: list[NodeSpec], log_dir: Path | None = None, env: dict[str, str] | None = None,
                 output: IO[str] = sys.stderr) -> None:
        self.specs = specs
        self._scratch = tempfile.TemporaryDirectory(prefix="mbrl_control_launch_")
        self.env = env or default_environment()
        self.procs: dict[str, subprocess.Popen] = {}
        self._threads: list[threading.Thread] = []
        self._logs = []
        self._log_dir = log_dir
        self._output = output
        for spec in specs:
            self._spawn(spec)

    def _spawn(self, spec: NodeSpec) -> None:
        log = None
        if self._log_dir is not None:
            self._log_dir.mkdir(parents=True, exist_ok=True)
            log = open(self._log_dir / f"{process_name(spec).replace('/', '.')}.log", "a")
            self._logs.append(log)
        proc = subprocess.Popen(
            node_command(spec, Path(self._scratch.name)),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # we forward signals ourselves, once, in order
        )
        self.procs[process_name(spec)] = proc
        t = threading.Thread(target=_pump, args=(proc.stdout, process_name(spec), self._output, log), daemon=True)
        t.start()
        self._threads.append(t)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Signal one node (fault injection); returns its exit code once it is gone."""
        proc = self.procs[name]
        os.killpg(proc.pid, sig)
        return proc.wait(timeout=30)

    def restart(self, name: str) -> None:
        """Start one node again, as it was started (after ``kill``)."""
        self._spawn(next(s for s in self.specs if process_name(s) == name))

    def wait(self, timeout: float | None = None) -> int:
        """Run until a launch-ending node exits, every node exits, or ``timeout``; then stop all.

        Returns the exit code of the launch-ending node (or the first non-zero one). A node that
        cannot start with its parameters (``EXIT_BAD_PARAMETER``) ends the launch with that code:
        the stack is not running without it, and its [FATAL] line says why."""
        deadline = None if timeout is None else time.monotonic() + timeout
        enders = [process_name(s) for s in self.specs if s.ends_launch]
        code = 0
        try:
            while True:
                done = {n: p.poll() for n, p in self.procs.items()}
                ended = [n for n in enders if done[n] is not None]
                if ended:
                    code = done[ended[0]]
                    break
                refused = [n for n, c in done.items() if c == EXIT_BAD_PARAMETER]
                if refused:
                    print(f"[launch] {refused[0]} could not start with its parameters (its [FATAL] line above says "
                          f"which): stopping the launch", file=self._output, flush=True)
                    code = EXIT_BAD_PARAMETER
                    break
                if all(c is not None for c in done.values()):
                    code = next((c for c in done.values() if c), 0)
                    break
                if deadline is not None and time.monotonic() > deadline:
                    code = 124
                    break
                time.sleep(0.05)
        finally:
            self.stop()
        return code

    def stop(self) -> dict[str, int]:
        for sig, grace in ((signal.SIGINT, STOP_GRACE_S), (signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
            alive = [p for p in self.procs.values() if p.poll() is None]
            if not alive:
                break
            for p in alive:
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
            end = time.monotonic() + grace
            while time.monotonic() < end and any(p.poll() is None for p in alive):
                time.sleep(0.05)
        for t in self._threads:
            t.join(timeout=1.0)
        for log in self._logs:
            log.close()
        self._scratch.cleanup()
        return {n: p.returncode for n, p in self.procs.items()}


def parse_launch_args(items: list[str]) -> dict[str, str]:
    args = {}
    for item in items:
        if ":=" not in item:
            raise ValueError(f"launch arguments are name:=value, got '{item}'")
        name, value = item.split(":=", 1)
        args[name] = value
    return args


def launch(graph: str, args: dict[str, str], log_dir: Path | None = None, timeout: float | None = None) -> int:
    """Start graph ``graph`` with launch ``args``; block until it ends or Ctrl-C."""
    if graph not in GRAPHS:
        raise ValueError(f"unknown launch file '{graph}'; known: {sorted(GRAPHS)}")
    _, build = GRAPHS[graph]
    specs = build(args)
    for spec in [s for s in specs if s.module is None]:
        print(f"[launch] skipping {spec.package}/{spec.executable}: it needs a ROS 2 install "
              "(use ros2 launch there)", file=sys.stderr)

    def on_signal(signum, frame):  # Ctrl-C or SIGTERM: stop the nodes cleanly, then leave
        raise KeyboardInterrupt

    # SIGINT too, explicitly (as ros2 launch does), and before the nodes start: a launcher run as a
    # script's background job or under nohup inherits SIGINT ignored, and so would its nodes (an
    # exec keeps an ignored signal ignored, but resets a handled one to the default).
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    running = None
    try:
        running = Launch([s for s in specs if s.module is not None], log_dir)
        return running.wait(timeout)
    except KeyboardInterrupt:
        if running is not None:
            running.stop()
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
