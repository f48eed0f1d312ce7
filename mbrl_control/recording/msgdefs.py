"""ROS 2 message definitions in the concatenated 'ros2msg' form that rosbag2, MCAP readers and
Foxglove use as a schema: the type's .msg text, then each dependency once, after a separator."""

from __future__ import annotations

import os
import re
import sys
from functools import lru_cache
from pathlib import Path

SEPARATOR = "=" * 80
BUILTIN = {
    "bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16",
    "int32", "uint32", "int64", "uint64", "string", "wstring",
}


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
            return path.read_text()
    raise FileNotFoundError(f"no definition of {type_name} under {[str(p) for p in _search_prefixes()]}")


def _dependencies(package: str, text: str) -> list[str]:
    deps = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        field_type, rest = (line.split(None, 1) + [""])[:2]
        if rest.split(" ", 1)[0].find("=") >= 0 or rest[len(rest.split()[0]):].lstrip().startswith("="):
            continue  # a constant, 'uint8 ARROW=0': builtin-typed, no dependency
        base = re.sub(r"\[.*\]$", "", field_type)
        base = re.sub(r"<=\d+$", "", base)
        if base in BUILTIN:
            continue
        deps.append(normalize(base if "/" in base else f"{package}/{base}"))
    return deps


@lru_cache(maxsize=None)
def message_definition(type_name: str) -> str:
    """The full schema text of a message type, dependencies included (depth-first, once each)."""
    root = normalize(type_name)
    seen: list[str] = []

    def visit(t: str) -> None:
        package = t.split("/")[0]
        for dep in _dependencies(package, msg_text(t)):
            if dep not in seen:
                seen.append(dep)
                visit(dep)

    visit(root)
    parts = [msg_text(root).rstrip("\n")]
    for dep in seen:
        package, _, name = dep.split("/")
        parts.append(f"{SEPARATOR}\nMSG: {package}/{name}\n{msg_text(dep).rstrip(chr(10))}")
    return "\n".join(parts) + "\n"
