"""Small helpers shared across the core."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def dataclass_from(cls: type[T], values: dict[str, Any]) -> T:
    """A (frozen) config dataclass from the keys of ``values`` that are its fields; other keys
    belong to someone else. Lists become tuples, as ROS parameters arrive as lists."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names})


def section(values: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The ``prefix.*`` entries of a flat parameter dict (dotted ROS names), without the prefix."""
    p = prefix + "."
    return {k[len(p):]: v for k, v in values.items() if k.startswith(p)}


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    """What a config field means and which values it takes; nodes turn it into a ROS parameter
    descriptor, so defaults, ranges and descriptions live once, beside the code that uses them."""

    name: str
    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()


def setting(default: Any, doc: str, low: float | None = None, high: float | None = None,
            choices: tuple[str, ...] = ()) -> Any:
    """A config dataclass field with its meaning and range (``low``/``high`` per element for tuples)."""
    return dataclasses.field(default=default, metadata={"doc": doc, "low": low, "high": high, "choices": choices})


def settings_of(cls: type) -> list[FieldInfo]:
    """The fields of a config dataclass declared with ``setting``, in order."""
    out = []
    for f in dataclasses.fields(cls):
        if "doc" in f.metadata:
            m = f.metadata
            out.append(FieldInfo(f.name, f.default, m["doc"], m["low"], m["high"], m["choices"]))
    return out
