"""Reads a node's parameters from a ROS 2 parameter file without ROS, so tools, benchmarks and
tests build exactly what the node would from the same config/ file: ``node_parameters`` what the
file sets, ``node_settings`` that over the node's code defaults (what the node reads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def node_parameters(path: str | Path, node: str) -> dict[str, Any]:
    """Dotted parameter names -> values for ``node``: the ``/**`` section, then the node's own."""
    doc = yaml.safe_load(Path(path).read_text()) or {}
    params: dict[str, Any] = {}
    for key in ("/**", node, f"/{node}"):
        section = doc.get(key, {})
        if not isinstance(section, dict) or "ros__parameters" not in section:
            continue
        params.update(_flatten(section["ros__parameters"]))
    return params


def node_settings(path: str | Path, node: str) -> dict[str, Any]:
    """What ``node`` reads: its declared code defaults (mbrl_control.nodes.catalog), overridden by
    the parameter file's values (``node_parameters``; a robot file sets only what differs)."""
    from mbrl_control.nodes.catalog import node_defaults

    given = node_parameters(path, node)
    return node_defaults(node, list(given.get("task.terms", []))) | given
