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
