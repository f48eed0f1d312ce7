"""The learned ensemble's rollout as one fused AVX-512 loop (ensemble_kernel.cpp), where it runs.

Measured before writing it (bench/ensemble_rollout.py, this 2-core EPYC, one thread): the torch
rollout of CEM's 500 x 30 on the 5 x 3 x 64 SiLU ensemble takes 6.3 ms compiled, of which the
[100, 64] x [64, 64] matmuls, at the CPU's GEMM peak (90 of 102 GFLOP/s), are under half; the
rest is the passes around them (bias and SiLU, features, state update, bf16 conversions). The
kernel runs 16 particles at a time through the whole network in registers; on several threads
(its own small pool) each takes a share of every step's blocks. See ``bench/ensemble_rollout.py``
for the figures it reaches.

Built on first use with the system's C++ compiler (``$CXX``, else ``g++``/``c++``: one file, no
torch headers, about a second) into ``$XDG_CACHE_HOME/mbrl_control`` (``~/.cache``), keyed by the
source and the compiler; loaded with ctypes, which releases the GIL during the call, so the
evaluator's rollout threads run it on several cores at once. Where there is no compiler, no
AVX-512, or the model has a shape the kernel does not take, ``unsupported`` says why and the
ensemble uses its torch rollout (the same function, to float rounding: a test checks).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("ensemble_kernel.cpp")
FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-pthread", "-fno-math-errno")
MAX_STATE_DIM = 64  # the kernel's per-lane state and head registers
ACTIVATIONS = {"silu": 0, "relu": 1}
SUPPORT_F32, SUPPORT_BF16 = 1, 2


class _Net(ctypes.Structure):
    """ensemble_kernel.cpp's ``Net``: the network, read in place from the model's tensors."""

    _fields_ = [
        ("members", ctypes.c_int), ("layers", ctypes.c_int), ("hidden", ctypes.c_int), ("in_dim", ctypes.c_int),
        ("nx", ctypes.c_int), ("nu", ctypes.c_int), ("out_dim", ctypes.c_int), ("n_plain", ctypes.c_int),
        ("n_angle", ctypes.c_int), ("plain_dims", ctypes.c_void_p), ("angle_dims", ctypes.c_void_p),
        ("input_mean", ctypes.c_void_p), ("input_std", ctypes.c_void_p), ("delta_mean", ctypes.c_void_p),
        ("delta_std", ctypes.c_void_p), ("weights", ctypes.c_void_p), ("biases", ctypes.c_void_p),
        ("weights_bf16", ctypes.c_void_p), ("activation", ctypes.c_int),
    ]


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "mbrl_control"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++"):
        if name and shutil.which(name):
            return name
    return None


@functools.lru_cache(maxsize=1)
def _library() -> tuple[ctypes.CDLL | None, int, str]:
    """(library, support bits, why not) of this process: compiled once per machine and source."""
    compiler = _compiler()
    if compiler is None:
        return None, 0, "no C++ compiler (set CXX, or install g++)"
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
        key = hashlib.sha256(SOURCE.read_bytes() + version.encode() + " ".join(FLAGS).encode()).hexdigest()[:16]
        target = _cache_dir() / f"ensemble_kernel-{key}.so"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:  # built aside, then renamed: atomic
                built = Path(tmp) / target.name
                result = subprocess.run([compiler, *FLAGS, "-o", str(built), str(SOURCE)], capture_output=True,
                                        text=True, timeout=300)
                if result.returncode != 0:
                    return None, 0, f"{compiler} failed: {result.stderr.strip()[-500:]}"
                os.replace(built, target)
        lib = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError) as exc:
        return None, 0, f"could not build or load the kernel: {exc}"
    lib.mbrl_kernel_support.restype = ctypes.c_int
    lib.mbrl_ensemble_rollout.restype = ctypes.c_int
    lib.mbrl_ensemble_rollout.argtypes = [ctypes.POINTER(_Net), ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                          ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_long,
                                          ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_int]
    support = lib.mbrl_kernel_support()
    return lib, support, "" if support else "this CPU has no AVX-512"


def unsupported(model) -> str | None:
    """Why ``model`` (an ``EnsembleDynamics``) cannot plan with the fused rollout, or None."""
    config, propagation = model.config, model.propagation
    if propagation.kernel != "auto":
        return f"propagation.kernel is '{propagation.kernel}'"
    if config.target == "residual":
        return "a residual model clamps its inputs and outputs to its data's range; the kernel does not"
    if model.trusted_actions() is not None:
        return "the model clamps its actions to its data's range (ensemble.action_margin); the kernel does not"
    if propagation.mode == "expectation":
        return "the kernel runs trajectory sampling (ts1, tsinf), not the members' expectation"
    if propagation.output_noise:
        return "the kernel runs trajectory sampling without output noise"
    if config.activation not in ACTIVATIONS:
        return f"the kernel has no '{config.activation}' activation"
    if config.state_dim > MAX_STATE_DIM:
        return f"the kernel takes at most {MAX_STATE_DIM} states"
    bf16 = propagation.dtype == "bfloat16"
    if bf16 and config.hidden % 2:
        return "bf16 needs an even hidden size"
    lib, support, why = _library()
    if lib is None or not support:
        return why
    if bf16 and not support & SUPPORT_BF16:
        return "this CPU has no AVX512-BF16"
    return None


def _transposed(w: Tensor, rows: int | None = None) -> Tensor:
    """W^T ``[E, in, out]`` of a float32 layer (of its first ``rows`` outputs: the mean head)."""
    return (w if rows is None else w[:, :rows]).transpose(1, 2)


def _pairs(w: Tensor) -> Tensor:
    """A bf16 layer's (W[n][k], W[n][k+1]) pairs, ``[E, K/2, N, 2]``."""
    return w.view(w.shape[0], w.shape[1], w.shape[2] // 2, 2).permute(0, 2, 1, 3)


class _Packed:
    """The kernel's copies of one model's weights (``Net``'s layouts), refreshed in place when a
    weight tensor's version counter moved (an in-place update: a swap, a training step, a refit)."""

    def __init__(self, weights: list[Tensor], weights_bf16: list[Tensor], nx: int) -> None:
        self.head_rows = [None] * (len(weights) - 1) + [nx]
        self.f32 = [_transposed(w, rows).contiguous() for w, rows in zip(weights, self.head_rows)]
        self.bf16 = [_pairs(w).contiguous() if k > 0 else w for k, w in enumerate(weights_bf16)]  # 0: unused
        self.versions = tuple(t._version for t in (*weights, *weights_bf16))

    @torch.no_grad()
    def refresh(self, weights: list[Tensor], weights_bf16: list[Tensor]) -> None:
        versions = tuple(t._version for t in (*weights, *weights_bf16))
        if versions != self.versions:
            for w, rows, packed in zip(weights, self.head_rows, self.f32):
                packed.copy_(_transposed(w, rows))
            for packed, w in zip(self.bf16[1:], weights_bf16[1:]):
                packed.copy_(_pairs(w))
            self.versions = versions


# Per model, keyed by its tensors' addresses: the packed copies and the Net over them. An entry
# holds the tensors themselves, so no other tensor can take those addresses while it exists; a few
# entries (the models planning in this process), the oldest forgotten. Under a lock: the
# evaluator's rollout threads enter together after a swap; the first refreshes, in place, before
# any of them runs the kernel (swaps happen between ticks, never during a rollout).
_packed: dict[tuple[int, ...], tuple[_Packed, "_Net", dict, list[Tensor]]] = {}
_lock = threading.Lock()
CACHED_MODELS = 8


def _prepared(weights: list[Tensor], biases: list[Tensor], weights_bf16: list[Tensor], normalizer: list[Tensor],
              shape: tuple[int, ...], dims: tuple[tuple[int, ...], tuple[int, ...]]) -> "_Net":
    key = (*(t.data_ptr() for t in (*weights, *biases, *weights_bf16, *normalizer)), *shape, *dims[0], -1, *dims[1])
    with _lock:
        entry = _packed.get(key)
        if entry is None:
            if len(_packed) >= CACHED_MODELS:
                _packed.pop(next(iter(_packed)))
            packed = _Packed(weights, weights_bf16, shape[4])
            held = [*weights, *biases, *weights_bf16, *normalizer]
            entry = _packed[key] = (packed, *_net(packed, biases, normalizer, shape, dims), held)
        else:
            entry[0].refresh(weights, weights_bf16)
        return entry[1]


def _net(packed: _Packed, biases: list[Tensor], normalizer: list[Tensor], shape: tuple[int, ...],
         dims: tuple[tuple[int, ...], tuple[int, ...]]) -> tuple[_Net, dict]:
    members, layers, hidden, in_dim, nx, nu, out_dim, activation = shape
    plain, angles = dims
    input_mean, input_std, delta_mean, delta_std = (t.data_ptr() for t in normalizer)
    arrays = {
        "plain": (ctypes.c_int32 * max(1, len(plain)))(*plain),
        "angles": (ctypes.c_int32 * max(1, len(angles)))(*angles),
        "weights": (ctypes.c_void_p * len(packed.f32))(*(w.data_ptr() for w in packed.f32)),
        "biases": (ctypes.c_void_p * len(biases))(*(b.data_ptr() for b in biases)),
        "weights_bf16": (ctypes.c_void_p * max(1, len(packed.bf16)))(*(w.data_ptr() for w in packed.bf16)),
    }
    net = _Net(members, layers, hidden, in_dim, nx, nu, out_dim, len(plain), len(angles),
               ctypes.addressof(arrays["plain"]), ctypes.addressof(arrays["angles"]), input_mean, input_std,
               delta_mean, delta_std, ctypes.addressof(arrays["weights"]), ctypes.addressof(arrays["biases"]),
               ctypes.addressof(arrays["weights_bf16"]), activation)
    return net, arrays  # the arrays must live as long as the struct points at them


@torch.library.custom_op("mbrl_control::ensemble_rollout", mutates_args=())
def fused_rollout(x0: Tensor, actions: Tensor, from_slot: Tensor, weights: list[Tensor], biases: list[Tensor],
                  weights_bf16: list[Tensor], normalizer: list[Tensor], plain_dims: list[int], angle_dims: list[int],
                  activation: int, threads: int = 1) -> Tensor:
    """States ``[n, T+1, nx]`` of ``n`` particles from ``x0[n, nx]`` under ``actions[n, T, nu]``
    (any strides: the actions are read in place), particle order. ``from_slot[T or 1, n]``: the particle in slot
    ``s`` at each step (one row: the same every step, TS-infinity); member ``e`` moves slots
    ``[e G, (e+1) G)``. ``weights_bf16``: bf16 copies of the hidden x hidden layers (index 0 a
    placeholder), or empty for float32. ``normalizer``: input mean and std, delta mean and std.
    ``threads``: the calling thread and ``threads - 1`` workers of the kernel's own pool, each a
    share of every step's blocks, meeting after each step."""
    n, T, nu = actions.shape
    members, hidden, in_dim = weights[0].shape
    nx, out_dim = x0.shape[1], weights[-1].shape[1]
    tensors = [from_slot, *weights, *biases, *weights_bf16, *normalizer]
    if not all(t.is_contiguous() and t.device.type == "cpu" for t in tensors) or actions.device.type != "cpu":
        raise ValueError("the fused rollout takes CPU tensors (contiguous, but for the states and actions)")
    if actions.dtype != torch.float32 or from_slot.dtype != torch.int64:
        raise ValueError("the fused rollout takes float32 actions and int64 slots")
    bf16 = len(weights_bf16) > 0
    net = _prepared(weights, biases, weights_bf16, normalizer,
                    (members, len(weights) - 1, hidden, in_dim, nx, nu, out_dim, activation),
                    (tuple(plain_dims), tuple(angle_dims)))
    states = torch.empty(n, T + 1, nx, dtype=torch.float32, device=x0.device)
    states[:, 0] = x0
    u_row, u_step, u_elem = actions.stride()
    status = _library()[0].mbrl_ensemble_rollout(
        ctypes.byref(net), int(bf16), n, T, from_slot.data_ptr(), from_slot.shape[0], actions.data_ptr(),
        u_row, u_step, u_elem, states.data_ptr(), threads)
    if status != 0:
        raise MemoryError("the fused rollout could not allocate its scratch")
    return states


@fused_rollout.register_fake
def _(x0, actions, from_slot, weights, biases, weights_bf16, normalizer, plain_dims, angle_dims, activation, threads=1):
    return x0.new_empty(actions.shape[0], actions.shape[1] + 1, x0.shape[1])
