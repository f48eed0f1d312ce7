"""Small helpers shared across the core."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch
    from torch import Tensor

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
    element: type | None = None  # a tuple field's element type (from its annotation)


_ELEMENTS = {"str": str, "float": float, "int": int, "bool": bool}


def _element_type(annotation: Any) -> type | None:
    """``tuple[float, ...]`` (or its string, under postponed annotations) -> float."""
    text = annotation if isinstance(annotation, str) else repr(annotation)
    if not text.startswith(("tuple[", "typing.Tuple[")):
        return None
    return _ELEMENTS.get(text.split("[", 1)[1].split(",")[0].strip())


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
            out.append(FieldInfo(f.name, f.default, m["doc"], m["low"], m["high"], m["choices"], _element_type(f.type)))
    return out


def matching_tensors(
    own: "Mapping[str, Tensor]", given: "Mapping[str, Tensor]", error: type[Exception]
) -> "tuple[Tensor, ...]":
    """``given``'s tensors in ``own``'s order if they have exactly its names, dtypes and shapes
    (weights received from outside, before anything is copied); else ``error`` naming the first
    difference. Values are the caller's to check."""
    from torch import Tensor

    missing, extra = sorted(set(own) - set(given)), sorted(set(given) - set(own))
    if missing or extra:
        raise error(f"tensor names differ: missing {missing}, unexpected {extra}")
    for name, ref in own.items():
        t = given[name]
        if not isinstance(t, Tensor):
            raise error(f"'{name}' is a {type(t).__name__}, not a tensor")
        if t.dtype != ref.dtype:
            raise error(f"'{name}' has dtype {t.dtype}, expected {ref.dtype}")
        if t.shape != ref.shape:
            raise error(f"'{name}' has shape {list(t.shape)}, expected {list(ref.shape)}")
    return tuple(given[name].detach() for name in own)


DEVICES = ("cpu", "cuda", "auto")


def resolve_device(name: "str | torch.device | None" = None) -> "torch.device":
    """The torch device a ``device`` setting names: ``auto`` is ``cuda`` when torch sees a GPU,
    else ``cpu``; None is ``cpu``; anything else (``cuda:1``, a ``torch.device``) as given."""
    import torch

    if name is None:
        return torch.device("cpu")
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def module_device(module: "torch.nn.Module") -> "torch.device":
    """Where a module's tensors live: its first parameter's or buffer's device (cpu if none)."""
    import torch

    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def synchronize(device: "torch.device") -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; a deadline check needs the
    time the work took, not the time it took to queue). No-op on the CPU."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
