"""The common ``main`` of every node: init, construct, spin, clean shutdown, and a non-zero exit
with a clear message when the node cannot start (a bad parameter value, a missing or garbled
parameter file)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import rclpy
import yaml
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.subscription import RCLError

from mbrl_control.nodes.params import ParameterError

EXIT_BAD_PARAMETER = 2


class NodeDone(Exception):
    """Raised from a callback when a node has finished its job; ends the spin cleanly."""


def parameter_file_problem(args: list[str]) -> str | None:
    """Why a ``--params-file`` in ``args`` cannot be read as a ROS 2 parameter file, or None."""
    for flag, value in zip(args, args[1:]):
        if flag != "--params-file":
            continue
        path = Path(value)
        try:
            doc = yaml.safe_load(path.read_text())
        except OSError as exc:
            return f"parameter file {path}: {exc.strerror or exc}"
        except yaml.YAMLError as exc:
            return f"parameter file {path} is not valid YAML: {' '.join(str(exc).split())}"
        if doc is not None and not isinstance(doc, dict):
            return f"parameter file {path} is not a ROS 2 parameter file (a mapping of node names to ros__parameters)"
    return None


def run_node(factory: Callable[[], Node], args: list[str] | None = None) -> int:
    problem = parameter_file_problem(sys.argv if args is None else args)
    if problem is not None:
        print(f"[FATAL] cannot start: {problem}", file=sys.stderr, flush=True)
        return EXIT_BAD_PARAMETER
    try:
        rclpy.init(args=args)
    except RCLError as exc:  # e.g. a parameter file rcl cannot parse
        print(f"[FATAL] cannot start: {exc}", file=sys.stderr, flush=True)
        return EXIT_BAD_PARAMETER
    try:
        try:
            node = factory()
        except (ParameterError, ValueError, FileNotFoundError) as exc:
            print(f"[FATAL] cannot start: {exc}", file=sys.stderr, flush=True)
            return EXIT_BAD_PARAMETER
        except KeyboardInterrupt:  # Ctrl-C while starting (e.g. compiling the planner)
            return 0
        except Exception:
            if not rclpy.ok():  # SIGINT/SIGTERM while starting: rclpy's handler shut the context down
                return 0
            raise
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        try:
            executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException, NodeDone):
            pass
        finally:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            executor.remove_node(node)
            node.destroy_node()
        return getattr(node, "exit_code", 0)
    finally:
        rclpy.try_shutdown()


def main_for(factory: Callable[[], Node]) -> Callable[[], None]:
    """A console-script ``main`` for a node class."""

    def main(args: list[str] | None = None) -> None:
        sys.exit(run_node(factory, args))

    return main
