"""The controller's side of MBPO: the trained actor and critic as small torch modules of our own,
and their safetensors format.

SAC (stable-baselines3) trains them; the weights are copied out of its actor and critic into
``Policy`` and ``ValueFunction``, so the controller runs them without SB3 (or gymnasium) and a
policy travels as bytes exactly like a learned model: a safetensors blob whose metadata holds
``format``, ``format_version``, the architecture as JSON (``spec``), ``version``, ``created`` and
free-form ``extra``. Loading checks all of it against the tensors (names, shapes, dtype, finite
values) and refuses anything else with a ``PolicyFormatError`` saying why. Never pickle.

Observations: the policy sees the state with every angle in ``angle_dims`` replaced by its
(sin, cos) (``observe``), so a pole that has wound past +-pi looks the same to it; the controller
hands it the raw state.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor

from mbrl_control.core.learning.storage import checked_metadata, write_atomic
from mbrl_control.core.util import matching_tensors

POLICY_FORMAT = "mbrl_control.policy"
VALUE_FORMAT = "mbrl_control.value"
FORMAT_VERSION = 1
MAX_HIDDEN = 1024  # per layer: bounds what a received spec can make us allocate before its tensors are checked
MAX_LAYERS = 4


class PolicyFormatError(ValueError):
    """Bytes or files that are not a loadable policy or value function; the message says why."""


def observe(x: Tensor, angle_dims: tuple[int, ...]) -> Tensor:
    """Network input ``[..., nx + len(angle_dims)]`` for states ``x[..., nx]``: the non-angle
    dimensions in order, then the sines, then the cosines of the angles (as the ensemble does)."""
    if not angle_dims:
        return x
    # Static slices, not index_select: stays one fused loop under torch.compile.
    plain = [x[..., d] for d in range(x.shape[-1]) if d not in angle_dims]
    angles = [x[..., d] for d in angle_dims]
    return torch.stack(plain + [torch.sin(a) for a in angles] + [torch.cos(a) for a in angles], dim=-1)


@dataclass(frozen=True)
class PolicySpec:
    """The policy's architecture and interface: what bytes must match to be loaded."""

    state_dim: int
    action_dim: int
    hidden: tuple[int, ...]
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    angle_dims: tuple[int, ...] = ()
    activation: str = "relu"

    def __post_init__(self) -> None:
        for name in ("hidden", "angle_dims"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        for name in ("action_low", "action_high"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if not 1 <= self.state_dim <= 1024 or not 1 <= self.action_dim <= 64:
            raise ValueError(f"need 1 <= state_dim <= 1024, 1 <= action_dim <= 64: {self.state_dim}, {self.action_dim}")
        if not 1 <= len(self.hidden) <= MAX_LAYERS or not all(1 <= h <= MAX_HIDDEN for h in self.hidden):
            raise ValueError(f"need 1..{MAX_LAYERS} hidden layers of 1..{MAX_HIDDEN} units, got {self.hidden}")
        if len(self.action_low) != self.action_dim or len(self.action_high) != self.action_dim:
            raise ValueError("action bounds need one value per action dimension")
        bounds = zip(self.action_low, self.action_high)
        if not all(math.isfinite(lo) and math.isfinite(hi) and lo < hi for lo, hi in bounds):
            raise ValueError(f"action bounds must be finite with low < high, got {self.action_low}, {self.action_high}")
        angles = self.angle_dims
        if len(set(angles)) != len(angles) or not all(0 <= d < self.state_dim for d in angles):
            raise ValueError(f"angle_dims {self.angle_dims} must be distinct state indices")
        if self.activation != "relu":
            raise ValueError(f"activation must be 'relu' (SB3's default for SAC), got '{self.activation}'")

    @property
    def obs_dim(self) -> int:
        return self.state_dim + len(self.angle_dims)

    def to_dict(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    @classmethod
    def from_dict(cls, d: Mapping) -> "PolicySpec":
        return _from_dict(cls, d)


def policy_spec(task, hidden: tuple[int, ...], angle_dims: tuple[int, ...]) -> PolicySpec:
    """The spec of a policy acting on ``task`` (a ``Task``: sizes and actuator bounds): the one
    MBPO exports and the one a controller allocates before its first policy arrives."""
    return PolicySpec(state_dim=task.state_dim, action_dim=task.action_dim, hidden=tuple(hidden),
                      action_low=tuple(task.action_low.tolist()), action_high=tuple(task.action_high.tolist()),
                      angle_dims=tuple(angle_dims))


@dataclass(frozen=True)
class ValueSpec:
    """The critic's architecture and how to read it as a cost-to-go.

    ``V(x) = q_scale * min(Q_0, Q_1)(observe(x), a(x))`` with ``a(x)`` the policy's action
    (normalised to [-1, 1], as SAC's critic saw it); ``q_scale`` undoes the training's reward
    scale, so ``-V`` is in task cost units. ``region`` is the box of half-widths around the goal
    (angles wrapped) where the critic was trained: outside it, ``exit_value`` is what leaving
    it cost in training.
    """

    policy: PolicySpec
    hidden: tuple[int, ...]
    gamma: float
    region: tuple[float, ...]
    exit_value: float
    q_scale: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(v) for v in self.hidden))
        object.__setattr__(self, "region", tuple(float(v) for v in self.region))
        if not 1 <= len(self.hidden) <= MAX_LAYERS or not all(1 <= h <= MAX_HIDDEN for h in self.hidden):
            raise ValueError(f"need 1..{MAX_LAYERS} hidden layers of 1..{MAX_HIDDEN} units, got {self.hidden}")
        if len(self.region) != self.policy.state_dim or not all(r > 0 for r in self.region):
            raise ValueError("region needs one positive half-width per state dimension")
        if not 0.0 < self.gamma < 1.0 or not math.isfinite(self.exit_value) or not self.q_scale > 0:
            raise ValueError("need 0 < gamma < 1, a finite exit_value and q_scale > 0")

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return d | {"policy": self.policy.to_dict(), "hidden": list(self.hidden), "region": list(self.region)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "ValueSpec":
        if not isinstance(d, Mapping) or not isinstance(d.get("policy"), Mapping):
            raise ValueError("value spec is not an object with a policy")
        return _from_dict(cls, dict(d) | {"policy": PolicySpec.from_dict(d["policy"])})


def _from_dict(cls: type, d: Mapping):
    if not isinstance(d, Mapping):
        raise ValueError(f"{cls.__name__} is not a JSON object")
    names = {f.name for f in dataclasses.fields(cls)}
    if unknown := set(d) - names:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}")
    return cls(**dict(d))


def _mlp(sizes: list[int]) -> torch.nn.Sequential:
    """Linear layers with ReLU between them, indexed like SB3's ``create_mlp`` (weights copy by name)."""
    layers: list[torch.nn.Module] = []
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(n_in, n_out))
        if k < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


class _ValidatedModule(torch.nn.Module):
    """In-place, validated weight loading shared by the policy and the value function."""

    def check_state(self, state: Mapping[str, Tensor]) -> tuple[Tensor, ...]:
        """``state``'s tensors in ``state_dict`` order if they fit this module exactly (names,
        shapes, float32, finite); else ``PolicyFormatError`` naming the first problem."""
        own = self.state_dict()
        tensors = matching_tensors(own, state, PolicyFormatError)
        for name, t in zip(own, tensors):
            if not bool(torch.isfinite(t).all()):
                raise PolicyFormatError(f"'{name}' has non-finite values")
        return tensors

    @torch.no_grad()
    def load_state_(self, state: "Mapping[str, Tensor] | torch.nn.Module") -> None:
        """Copy weights (a state dict, or a module of the same architecture) into this module's
        existing tensors, after ``check_state``: nothing is reallocated, so a compiled rollout
        holding them stays valid. On an error nothing has changed."""
        if isinstance(state, torch.nn.Module):
            if getattr(state, "spec", None) != self.spec:
                raise PolicyFormatError(f"architecture differs: {getattr(state, 'spec', None)} vs {self.spec}")
            state = state.state_dict()
        for own, new in zip(self.state_dict(keep_vars=True).values(), self.check_state(state)):
            own.copy_(new)


class Policy(_ValidatedModule):
    """Deterministic SAC actor: ``u = low + (tanh(mean(observe(x))) + 1) (high - low) / 2``.

    ``forward(x[..., nx]) -> u[..., nu]`` in physical units within the actuator bounds; float32.
    ``latent`` and ``mean`` are SB3's ``actor.latent_pi`` and ``actor.mu`` (same layer indices).
    """

    def __init__(self, spec: PolicySpec, version: int = 0, extra: dict | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.version = int(version)
        self.extra = dict(extra or {})
        self.state_dim, self.action_dim = spec.state_dim, spec.action_dim
        self.latent = _mlp([spec.obs_dim, *spec.hidden])
        self.latent.append(torch.nn.ReLU())  # SB3's latent_pi ends with its activation
        self.mean = torch.nn.Linear(spec.hidden[-1], spec.action_dim)
        low, high = torch.tensor(spec.action_low), torch.tensor(spec.action_high)
        # Not persistent: the bounds travel in the spec, once.
        self.register_buffer("action_low", low, persistent=False)
        self.register_buffer("action_high", high, persistent=False)
        self.register_buffer("_center", 0.5 * (low + high), persistent=False)
        self.register_buffer("_half_range", 0.5 * (high - low), persistent=False)
        self.requires_grad_(False)

    def normalized(self, x: Tensor) -> Tensor:
        """The action in [-1, 1] (SAC's action space) for states ``x[..., nx]``."""
        return torch.tanh(self.mean(self.latent(observe(x, self.spec.angle_dims))))

    def forward(self, x: Tensor) -> Tensor:
        return torch.addcmul(self._center, self._half_range, self.normalized(x))


class ValueFunction(_ValidatedModule):
    """SAC's critic read as a state value: ``V(x) = q_scale * min_i Q_i(observe(x), a(x))``.

    ``a(x)`` is ``policy``'s deterministic action; ``q0``/``q1`` are SB3's ``critic.qf0/qf1``.
    ``V`` is a discounted sum of rewards (minus task costs), so ``-V`` is a cost-to-go.
    """

    def __init__(self, spec: ValueSpec, version: int = 0, extra: dict | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.version = int(version)
        self.extra = dict(extra or {})
        self.policy = Policy(spec.policy)
        obs_dim, nu = spec.policy.obs_dim, spec.policy.action_dim
        self.q0 = _mlp([obs_dim + nu, *spec.hidden, 1])
        self.q1 = _mlp([obs_dim + nu, *spec.hidden, 1])
        self.register_buffer("region", torch.tensor(spec.region), persistent=False)
        angle_mask = torch.zeros(spec.policy.state_dim, dtype=torch.bool)
        angle_mask[list(spec.policy.angle_dims)] = True
        self.register_buffer("_angle_mask", angle_mask, persistent=False)
        self.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        """``V(x)`` for states ``x[..., nx]``: shape ``[...]``."""
        features = torch.cat([observe(x, self.spec.policy.angle_dims), self.policy.normalized(x)], dim=-1)
        q = torch.minimum(self.q0(features), self.q1(features)).squeeze(-1)
        return self.spec.q_scale * q

    def inside(self, x: Tensor) -> Tensor:
        """Whether states ``x[..., nx]`` lie in the region the critic was trained on (angles wrapped)."""
        wrapped = torch.where(self._angle_mask, torch.remainder(x + math.pi, 2 * math.pi) - math.pi, x)
        return (wrapped.abs() <= self.region).all(-1)


# -- bytes and files ---------------------------------------------------------------------------


def _encode(module: Policy | ValueFunction, fmt: str, created: float | None = None) -> bytes:
    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    meta = {
        "format": fmt,
        "format_version": str(FORMAT_VERSION),
        "spec": json.dumps(module.spec.to_dict()),
        "version": str(module.version),
        "created": repr(time.time() if created is None else float(created)),
        "extra": json.dumps(module.extra, allow_nan=True),
    }
    return save_safetensors(state, metadata=meta)


def _decode(data: bytes, fmt: str, spec_class: type, module_class: type):
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PolicyFormatError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    meta = checked_metadata(data, fmt, FORMAT_VERSION, PolicyFormatError)
    try:
        spec = spec_class.from_dict(json.loads(meta["spec"]))
        version = int(meta.get("version", "0"))
        extra = json.loads(meta.get("extra", "{}"))
        if not isinstance(extra, dict):
            raise ValueError("extra is not a JSON object")
    except (ValueError, KeyError, TypeError) as exc:
        raise PolicyFormatError(f"bad metadata: {exc}") from exc
    try:
        state = load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise PolicyFormatError(f"malformed tensors: {exc}") from exc
    module = module_class(spec, version=version, extra=extra)
    module.load_state_(state)
    return module


def policy_to_bytes(policy: Policy) -> bytes:
    """The policy as a safetensors blob with its spec, version and extra in the metadata."""
    return _encode(policy, POLICY_FORMAT)


def policy_from_bytes(data: bytes) -> Policy:
    """A new ``Policy`` from ``policy_to_bytes`` output; ``PolicyFormatError`` (a ValueError)
    with the reason for anything else: malformed bytes, another format or version, a bad spec,
    tensors that do not fit it (names, shapes, dtype) or are not finite."""
    return _decode(data, POLICY_FORMAT, PolicySpec, Policy)


def value_to_bytes(value: ValueFunction) -> bytes:
    return _encode(value, VALUE_FORMAT)


def value_from_bytes(data: bytes) -> ValueFunction:
    """A new ``ValueFunction`` from ``value_to_bytes`` output; validated like ``policy_from_bytes``."""
    return _decode(data, VALUE_FORMAT, ValueSpec, ValueFunction)


def save_policy(path: str | Path, policy: Policy) -> Path:
    """Write the policy atomically (the file holds the old policy or all of the new one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, policy_to_bytes(policy))
    return path


def load_policy(path: str | Path) -> Policy:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PolicyFormatError(f"cannot read policy file {path}: {exc}") from exc
    return policy_from_bytes(data)


def save_value(path: str | Path, value: ValueFunction) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, value_to_bytes(value))
    return path


def load_value(path: str | Path) -> ValueFunction:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PolicyFormatError(f"cannot read value file {path}: {exc}") from exc
    return value_from_bytes(data)
