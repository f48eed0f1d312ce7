"""The common ``main`` of every node: init, construct, spin, clean shutdown, and a non-zero exit
with a clear message when the node cannot start (a bad parameter value, a missing or garbled
parameter file)."""

from __future__ import annotations

import _thread
import gc
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import rclpy
import yaml
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import uninstall_signal_handlers
from rclpy.subscription import RCLError

from mbrl_control.graph import EXIT_BAD_PARAMETER
from mbrl_control.nodes.params import ParameterError, declare_parameters
from mbrl_control.nodes.scheduling import SCHEDULING_PARAMS, apply_scheduling

INTERRUPT_REDELIVERY_S = 0.02  # [s] after a Ctrl-C that landed where Python could not raise it


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


def redeliver_lost_interrupts() -> None:
    """Ctrl-C that lands in code Python cannot raise from (a weakref callback or ``__del__``, run
    by the garbage collector mid start-up: torch's compile caches have many) is printed as
    "Exception ignored ... KeyboardInterrupt" with a traceback and lost. Deliver it again instead,
    a moment later, from another thread (raised at once, it would land in this hook and be lost
    again; should the redelivery land in such code too, it comes back here), so a node stopped
    while starting stops, quietly."""
    default = sys.unraisablehook

    def hook(unraisable) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            timer = threading.Timer(INTERRUPT_REDELIVERY_S, _thread.interrupt_main)
            timer.daemon = True
            timer.start()
        else:
            default(unraisable)

    sys.unraisablehook = hook


def run_node(factory: Callable[[], Node], args: list[str] | None = None) -> int:
    problem = parameter_file_problem(sys.argv if args is None else args)
    if problem is not None:
        print(f"[FATAL] cannot start: {problem}", file=sys.stderr, flush=True)
        return EXIT_BAD_PARAMETER
    if threading.current_thread() is threading.main_thread():
        # A node started with SIGINT ignored (inherited from a background job) must still stop on
        # the launcher's SIGINT: Python leaves an inherited SIG_IGN in place, and so would rclpy.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        redeliver_lost_interrupts()
    try:
        rclpy.init(args=args)
    except RCLError as exc:  # e.g. a parameter file rcl cannot parse
        print(f"[FATAL] cannot start: {exc}", file=sys.stderr, flush=True)
        return EXIT_BAD_PARAMETER
    try:
        try:
            node = factory()
            # After the node's start-up work (compiling a planner), which must not run at real-time priority.
            scheduling = declare_parameters(node, SCHEDULING_PARAMS)
            if node.has_parameter("mode") and node.get_parameter("mode").value == "lockstep":
                # Simulated time has no deadline to protect, and a lockstep loop at real-time
                # priority never idles: it would starve the recorder and the learner.
                scheduling["scheduling.priority"] = 0
            node.scheduling, warning = apply_scheduling(scheduling)
            # What start-up built (modules, compiled graphs: hundreds of thousands of objects) stays
            # for the node's life: out of the cyclic collector's sight, a collection mid-run scans
            # only what the run allocates, not milliseconds' worth of start-up objects in a tick.
            gc.freeze()
            if warning:
                node.get_logger().warning(warning)
            elif node.scheduling != "SCHED_OTHER nice 0":
                node.get_logger().info(f"scheduling: {node.scheduling}")
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
            if getattr(node, "drain_on_stop", 0.0) > 0:
                spin_then_drain(executor, node)
            else:
                executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException, NodeDone):
            pass
        except RuntimeError:
            if rclpy.ok():
                raise
            # rclpy taking a message while SIGINT shuts the context down under it: a normal stop.
        finally:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            executor.remove_node(node)
            node.destroy_node()
        return getattr(node, "exit_code", 0)
    finally:
        rclpy.try_shutdown()


def spin_then_drain(executor: SingleThreadedExecutor, node: Node) -> None:
    """Spin until SIGINT/SIGTERM, then keep taking messages until none arrived for a moment (at
    most ``node.drain_on_stop`` seconds): a consumer of data (the learner) stopped together with
    its producers still stores what they sent before they stopped, instead of leaving it in the
    middleware's queue. ``node.drain_count()`` counts the messages taken so far; ``node.on_stop()``,
    if there is one, runs first."""
    stop = threading.Event()
    wake = node.create_guard_condition(lambda: None)
    uninstall_signal_handlers()  # rclpy's would shut the context down at once

    def on_signal(signum, frame) -> None:
        stop.set()
        wake.trigger()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stop.is_set() and rclpy.ok():
        executor.spin_once(timeout_sec=0.1)
    stopping = getattr(node, "on_stop", None)  # e.g. cancel background work, so draining gets the CPU
    if stopping is not None:
        stopping()
    end = time.monotonic() + node.drain_on_stop
    last, quiet_since = node.drain_count(), time.monotonic()
    while time.monotonic() < end and time.monotonic() - quiet_since < 0.3:
        executor.spin_once(timeout_sec=0.05)
        if node.drain_count() != last:
            last, quiet_since = node.drain_count(), time.monotonic()


def main_for(factory: Callable[[], Node]) -> Callable[[], None]:
    """A console-script ``main`` for a node class."""

    def main(args: list[str] | None = None) -> None:
        sys.exit(run_node(factory, args))

    return main
