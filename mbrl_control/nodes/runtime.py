"""The common ``main`` of every node: init, construct, spin, clean shutdown, and a non-zero exit
with a clear message when the node cannot start."""

from __future__ import annotations

import sys
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from mbrl_control.nodes.params import ParameterError

EXIT_BAD_PARAMETER = 2


class NodeDone(Exception):
    """Raised from a callback when a node has finished its job; ends the spin cleanly."""


def run_node(factory: Callable[[], Node], args: list[str] | None = None) -> int:
    rclpy.init(args=args)
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
