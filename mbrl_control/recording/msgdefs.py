"""ROS 2 message definitions in the concatenated 'ros2msg' form that rosbag2 writes as MCAP schemas
and MCAP readers and Foxglove decode with, laid out as rosbag2 lays them out
(rosbag2_cpp/src/rosbag2_cpp/message_definitions/local_message_definition_source.cpp,
``get_full_text``): the type's .msg file as installed, then, depth first, each dependency not yet
written, in sorted order, after a line of 80 '=' and a line 'MSG: <package>/<Type>'
(docs/message_definition_encoding.md). A type's dependencies come from rosbags' .msg parser."""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

from rosbags.typesys import get_types_from_msg
from rosbags.typesys.base import Nodetype, TypesysError
from rosbags.typesys.msg import denormalize_msgtype

SEPARATOR = "=" * 80


def _search_prefixes() -> list[Path]:
    prefixes = [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    return prefixes + [Path(sys.prefix)]


def normalize(type_name: str) -> str:
    """'sensor_msgs/JointState' or 'sensor_msgs/msg/JointState' -> 'sensor_msgs/msg/JointState'."""
    parts = type_name.split("/")
    if len(parts) == 2:
        return f"{parts[0]}/msg/{parts[1]}"
    if len(parts) == 3:
        return type_name
    raise ValueError(f"not a message type name: '{type_name}'")


@lru_cache(maxsize=None)
def msg_text(type_name: str) -> str:
    """The .msg file of a message type, from an installed share/<package>/msg directory."""
    package, _, name = normalize(type_name).split("/")
    for prefix in _search_prefixes():
        path = prefix / "share" / package / "msg" / f"{name}.msg"
        if path.is_file():
            return path.read_text(encoding="utf-8")
    raise FileNotFoundError(f"no definition of {type_name} under {[str(p) for p in _search_prefixes()]}")


@lru_cache(maxsize=None)
def dependencies(type_name: str) -> tuple[str, ...]:
    """The message types a type's fields use ('pkg/Type'), each once, sorted (rosbag2 keeps them
    in a std::set<std::string>). A .msg that does not parse raises ValueError."""
    root = normalize(type_name)
    try:
        _, fields = get_types_from_msg(msg_text(root), root)[root]
    except TypesysError as exc:
        raise ValueError(f"the definition of {root} does not parse: {exc}") from exc
    used = set()
    for _, (kind, detail) in fields:
        if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
            kind, detail = detail[0]  # ((element kind, element type), size)
        if kind == Nodetype.NAME:
            used.add(denormalize_msgtype(detail))
    return tuple(sorted(used))


@lru_cache(maxsize=None)
def message_definition(type_name: str) -> str:
    """The full schema text of a message type, dependencies included."""
    written: set[str] = set()

    def with_dependencies(t: str) -> str:
        text = msg_text(t)
        for dep in dependencies(t):
            if dep not in written:
                written.add(dep)
                text += f"\n{SEPARATOR}\nMSG: {dep}\n" + with_dependencies(dep)
        return text

    return with_dependencies(normalize(type_name))
