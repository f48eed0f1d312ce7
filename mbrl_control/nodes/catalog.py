"""Every node's parameters, collected from the nodes' own ``PARAMS`` lists: the code defaults a
parameter file may leave out (``mbrl_control.config.node_settings``), the check that a robot file
restates none of them (test/unit/test_config.py), and the reference ``docs/parameters.md``
(``mbrl-control params``), so every default lives once, in the code.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

from mbrl_control.nodes.params import ParamSpec, task_parameter_specs
from mbrl_control.nodes.scheduling import SCHEDULING_PARAMS

# ROS node name (the parameter file's section) -> module under mbrl_control.nodes with its PARAMS.
NODE_MODULES = {
    "sim": "sim_node",
    "mpc_controller": "controller_node",
    "estimator": "estimator_node",
    "learner": "learner_node",
    "episode_manager": "episode_manager",
    "run_monitor": "run_monitor",
    "goal_publisher": "goal_publisher",
    "mock_hardware": "mock_hardware_node",
    "driver": "driver_node",
    "recorder": "recorder_node",
    "foxglove_bridge": "foxglove_bridge_node",
}
# Nodes that build the task, so declare task.* (the learner only with mbpo.enabled).
TASK_NODES = ("mpc_controller", "run_monitor", "episode_manager", "learner", "goal_publisher")
# Nodes that apply their dynamic parameters while running (RuntimeParameters); elsewhere every
# parameter is read-only.
RUNTIME_NODES = ("mpc_controller", "estimator")
TERM_PLACEHOLDER = "<term>"


def node_specs(node: str, terms: list[str] | None = None) -> list[ParamSpec]:
    """What ``node`` declares: its PARAMS, the scheduling parameters every node has, and for a
    task node the task's (with ``terms``, each ``task.<term>.*`` too)."""
    specs = list(importlib.import_module(f"mbrl_control.nodes.{NODE_MODULES[node]}").PARAMS) + SCHEDULING_PARAMS
    if node in TASK_NODES:
        specs += task_parameter_specs() + (task_parameter_specs(terms) if terms else [])
    return specs


def node_defaults(node: str, terms: list[str] | None = None) -> dict[str, Any]:
    """``node``'s code defaults, by parameter name."""
    return {s.name: s.default for s in node_specs(node, terms)}


_TYPES = {"str": "string"}


def _type(spec: ParamSpec) -> str:
    d = spec.default
    if isinstance(d, list):
        element = spec.element or (type(d[0]) if d else str)
        return f"{_TYPES.get(element.__name__, element.__name__)}[]"
    return _TYPES.get(type(d).__name__, type(d).__name__)


def _value(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (str, list, bool)) else repr(v)


def _allowed(spec: ParamSpec) -> str:
    if spec.choices:
        return ", ".join(spec.choices)
    if spec.low is None and spec.high is None:
        return ""
    each = " each" if isinstance(spec.default, list) else ""
    return f"[{_value(spec.low) if spec.low is not None else '-inf'}, " \
           f"{_value(spec.high) if spec.high is not None else 'inf'}]{each}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def parameter_reference() -> str:
    """Markdown: every node's parameters (name, type, default, range or choices, settable at
    runtime or read-only, meaning), generated from the code (``mbrl-control params``)."""
    out = [
        "# Parameters",
        "",
        "<!-- Generated from the nodes' PARAMS by `mbrl-control params --write docs/parameters.md`: do not edit. -->",
        "",
        "Every parameter of every node, with its code default. A robot's parameter file "
        "(config/<robot>.yaml) sets only what differs for that robot; `/**` values reach every node "
        "that declares them. Runtime: *settable* parameters change with `ros2 param set` while the node "
        "runs (checked when set, applied at the next tick); the others are read at start. "
        f"`task.{TERM_PLACEHOLDER}.*` is declared for each term `task.terms` names.",
        "",
    ]
    for node in NODE_MODULES:
        out += [f"## {node}", "", "| parameter | type | default | range / choices | runtime | meaning |",
                "|---|---|---|---|---|---|"]
        for s in node_specs(node, [TERM_PLACEHOLDER]):
            runtime = "settable" if s.dynamic and node in RUNTIME_NODES else "read-only"
            out.append(f"| `{s.name}` | {_type(s)} | `{_value(s.default)}` | {_cell(_allowed(s))} | {runtime} | "
                       f"{_cell(s.description)} |")
        out.append("")
    return "\n".join(out)
