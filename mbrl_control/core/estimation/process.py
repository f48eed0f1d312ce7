"""The controller's dynamics model as a Kalman filter's process model.

The filter predicts with the very ``DynamicsModel`` the planner uses (the analytic cart-pole now,
a learned ensemble later), Jacobians by autograd. Model evaluations run in the model's dtype;
means and covariances come back as float64 numpy, because covariance algebra (``F P F^T``, Joseph
updates) loses positive definiteness in float32 once variances span many orders of magnitude,
and at 4x4 numpy is faster than torch's per-op overhead anyway.
"""

from __future__ import annotations

import itertools
import logging
import math
import weakref
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.core.rollout import compile_or_eager

log = logging.getLogger(__name__)

# Compiled functions per model, so every filter built on one model shares one compilation. (The
# functions refer to their model, so an entry lives as long as the process; models do anyway.)
_COMPILED: "weakref.WeakKeyDictionary[DynamicsModel, dict]" = weakref.WeakKeyDictionary()

# A prediction covers whole model steps; a remainder up to this fraction of a step is stretched
# into the last step (Hermite extrapolation) rather than costing one more model evaluation.
STRETCH = 0.05


def model_dtype(model: DynamicsModel) -> torch.dtype:
    """The dtype a model computes in: its parameters' (a learned model), else float32."""
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def compile_traced(fn: Callable, example: tuple[Tensor, ...]) -> Callable:
    """``fn`` traced once to an aten graph (``make_fx``) and compiled by inductor, for calls with
    tensors shaped like ``example`` only.

    Why not ``torch.compile``: its dynamo guards (hundreds here, on every model attribute the
    step reads) are evaluated on each call and cost more than a 4-state filter's arithmetic; the
    traced graph has the model's constants baked in and no guards (about 60 -> 25 us per call). So
    a model whose attributes or weights change needs a new filter. Falls back to
    ``torch.compile``, then eager, if tracing or compiling fails or the result disagrees with eager.
    """
    # Imported here: they pull in sympy (0.4 s), which an eager filter never needs.
    from torch._guards import TracingContext, tracing
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    try:
        graph = make_fx(fn)(*example)
        # Inside a tracing context with a shape environment, as torch.compile's own calls are:
        # without one inductor bypasses its on-disk FX graph cache, and every estimator start
        # compiled its graphs afresh (12 s for the cart-pole's, every test and every launch).
        # (AOTAutograd's own cache cannot key this traced graph and warns: it stays off.)
        # The C++ wrapper calls the graph's kernels without a Python line each: a filter's model
        # step is many tiny kernels, and the wrapper was most of its cost (the iiwa's EKF step
        # 0.18 -> 0.11 ms, its plain step 0.13 -> 0.07 ms, timed alone on one thread).
        with tracing(TracingContext(FakeTensorMode(shape_env=ShapeEnv()))), \
                torch._functorch.config.patch(enable_autograd_cache=False), \
                torch._inductor.config.patch(cpp_wrapper=True):
            compiled = torch._inductor.compile(graph, list(example))
        # Within float32 rounding, relative to each output's scale: fused kernels round differently,
        # and through the iiwa's chain and Cholesky an entry near zero differed by 2.8e-6 at a scale
        # of 1.1, which a fixed 1e-6 took for a wrong graph (its step fell back to torch.compile).
        agree = all(
            torch.allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, float(a.abs().max())))
            for a, b in zip(torch.utils._pytree.tree_leaves(fn(*example)), torch.utils._pytree.tree_leaves(compiled(*example)))
        )
        if agree:
            return compiled
        log.warning("traced graph disagrees with eager; using torch.compile")
    except Exception as exc:  # an untraceable model, no C++ compiler, ...
        log.warning("tracing for inductor failed (%s: %s); using torch.compile", type(exc).__name__, exc)
    return compile_or_eager(fn, example)


def _has_analytic_jacobians(model: DynamicsModel) -> bool:
    return type(model).jacobians is not DynamicsModel.jacobians


def _step_and_state_jacobian(model: DynamicsModel) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """``(x[nx], u[nu]) -> (A[nx, nx], x_next[nx])`` in one pass.

    A model with ``step_and_state_jacobian`` computes both (in one batched step, for the rigid
    body); one that overrides ``jacobians`` (analytic) is used as is; otherwise reverse-mode
    autograd of ``step`` (``torch.func.jacrev`` with the value as auxiliary output, so the
    prediction and its Jacobian share one forward pass).
    """
    state_only = getattr(model, "step_and_state_jacobian", None)
    if state_only is not None:  # the model's own, cheaper than both Jacobians (see RigidBodyDynamics)

        def step_and_state(x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
            x_next, a = state_only(x.unsqueeze(0), u.unsqueeze(0))
            return a[0], x_next[0]

        return step_and_state
    if _has_analytic_jacobians(model):

        def analytic(x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
            a, _ = model.jacobians(x.unsqueeze(0), u.unsqueeze(0))
            return a[0], model.step(x.unsqueeze(0), u.unsqueeze(0))[0]

        return analytic

    return torch.func.jacrev(_one_step(model), argnums=0, has_aux=True)


def _one_step(model: DynamicsModel) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """One unbatched model step, its value twice: for ``jacrev(..., has_aux=True)``, which then
    returns the Jacobian and the value from one forward pass."""

    def step_one(x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        x_next = model.step(x.unsqueeze(0), u.unsqueeze(0)).squeeze(0)
        return x_next, x_next

    return step_one


def _step_and_jacobians(model: DynamicsModel) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]:
    """``(x[nx], u[nu]) -> (A[nx, nx], B[nx, nu], x_next[nx])``: the model's own Jacobians where it
    has them (analytic, or the rigid body's batched central differences), else reverse-mode autograd."""
    together = getattr(model, "step_and_jacobians", None)
    if together is not None:  # the model's own, the prediction in the same batched step (RigidBodyDynamics)

        def in_one_step(x: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            x_next, a, b = together(x.unsqueeze(0), u.unsqueeze(0))
            return a[0], b[0], x_next[0]

        return in_one_step
    if _has_analytic_jacobians(model):

        def analytic(x: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            a, b = model.jacobians(x.unsqueeze(0), u.unsqueeze(0))
            return a[0], b[0], model.step(x.unsqueeze(0), u.unsqueeze(0))[0]

        return analytic

    jacobians = torch.func.jacrev(_one_step(model), argnums=(0, 1), has_aux=True)

    def autograd(x: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        (a, b), x_next = jacobians(x, u)
        return a, b, x_next

    return autograd


def _linearized_step(model: DynamicsModel, dtype: torch.dtype, disturbed: bool = False) -> Callable[..., tuple[Tensor, Tensor]]:
    if disturbed:
        return _linearized_disturbed_step(model, dtype)
    step_and_jacobian = _step_and_state_jacobian(model)

    def linearized_step(mean: Tensor, cov: Tensor, u: Tensor, w0: Tensor, w1: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        jac, x_next = step_and_jacobian(mean.to(dtype), u.to(dtype))
        f = w0 + w1 @ jac.to(cov.dtype)
        new_cov = f @ cov @ f.T + noise
        return w0 @ mean + w1 @ x_next.to(mean.dtype), 0.5 * (new_cov + new_cov.T)

    return linearized_step


def _linearized_disturbed_step(model: DynamicsModel, dtype: torch.dtype) -> Callable[..., tuple[Tensor, Tensor]]:
    """The prediction of ``[x, d]``: the model steps ``x`` under the command plus the effort
    disturbance ``d``, which itself stays (a random walk: its doubt grows by the noise). ``w0 [n, n]``
    and ``w1 [n, nx]`` interpolate the state's rows and keep ``d``'s."""
    step_and_jacobians = _step_and_jacobians(model)

    def linearized_step(mean: Tensor, cov: Tensor, u: Tensor, w0: Tensor, w1: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        nx = w1.shape[1]
        a, b, x_next = step_and_jacobians(mean[:nx].to(dtype), (u + mean[nx:]).to(dtype))
        f = w0 + w1 @ torch.cat([a, b], dim=1).to(cov.dtype)
        new_cov = f @ cov @ f.T + noise
        return w0 @ mean + w1 @ x_next.to(mean.dtype), 0.5 * (new_cov + new_cov.T)

    return linearized_step


class ProcessModel:
    """Propagation of a mean (with its Jacobian) or of sigma points over any duration.

    The model steps whole control periods ``dt`` only (a learned model cannot do otherwise). A
    duration that is not a multiple of ``dt`` is split into equal sub-steps, each interpolated
    from one model step by a cubic Hermite curve through ``(q, qd)`` at both ends: exact at the
    ends, O(dt^4) in position between them, and linear in the two end states, so its Jacobian is
    ``W0 + W1 A``. The state must be ``[positions, velocities]`` (the ``DynamicsModel`` layout).

    Process noise is white acceleration per joint with spectral density ``q`` [m^2/s^3, rad^2/s^3]:
    over ``tau`` a joint's ``(q, qd)`` covariance grows by ``q [[tau^3/3, tau^2/2], [tau^2/2, tau]]``.

    With ``disturbance_density`` (one per command entry) ``linearized_step`` predicts the augmented
    state ``[x, d]``: an effort ``d`` the model does not know (a payload's weight, friction) acts
    with every command, and drifts as a random walk (its variance grows by ``density * tau``).
    """

    def __init__(self, model: DynamicsModel, accel_noise_density: Sequence[float], compile: bool = True,
                 disturbance_density: Sequence[float] = ()) -> None:
        if model.state_dim % 2:
            raise ValueError("the state must be [positions, velocities]: state_dim must be even")
        self.model = model
        self.nq = model.state_dim // 2
        self.dt = float(model.dt)
        self.density = np.asarray(accel_noise_density, dtype=np.float64)
        if self.density.shape != (self.nq,) or np.any(self.density < 0):
            raise ValueError(f"need {self.nq} non-negative acceleration noise densities")
        self.disturbance_density = np.asarray(disturbance_density, dtype=np.float64).reshape(-1)
        self.nd = self.disturbance_density.size
        if self.nd not in (0, model.action_dim) or np.any(self.disturbance_density < 0):
            raise ValueError(f"need no or {model.action_dim} non-negative disturbance densities")
        self.nx = model.state_dim
        self.compile = compile
        self.dtype = model_dtype(model)
        self._linearized_fn: Callable | None = None
        self._switch_fn: Callable | None = None
        self._batch_step_fns: dict[int, Callable] = {}
        self._interpolations: dict[float, tuple[np.ndarray, np.ndarray]] = {}
        self._noises: dict[float, np.ndarray] = {}
        whole_step = (*self._augmented(np.zeros((self.nx,) * 2), np.eye(self.nx)), self.noise(self.dt))  # x(dt) = x1
        self._whole_step_tensors = tuple(torch.from_numpy(a) for a in whole_step)

    # -- model evaluations ---------------------------------------------------------------------
    def _compiled(self, key: tuple, fn: Callable, example: tuple) -> Callable:
        if not self.compile:
            return fn
        cache = _COMPILED.setdefault(self.model, {})
        if key not in cache:
            cache[key] = compile_traced(fn, example)
        return cache[key]

    def linearized_step(self, mean: np.ndarray, cov: np.ndarray, u: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
        """EKF prediction over one sub-step ``tau``: ``(x(tau), F P F^T + Q(tau))`` with ``F`` the
        Jacobian of the (interpolated) model step.

        The model step, its autograd Jacobian, the interpolation and the covariance product run as
        one compiled call on float64 numpy buffers shared with torch (no copies): at 4x4 the cost
        is the call, not the arithmetic, so fewer calls is what makes it fast.
        """
        if abs(tau - self.dt) < 1e-12:
            constants = self._whole_step_tensors
        else:
            w0, w1 = self._augmented(*self.interpolation(tau))
            constants = (torch.from_numpy(w0), torch.from_numpy(w1), torch.from_numpy(self.noise(tau)))
        args = (torch.from_numpy(mean), torch.from_numpy(cov), torch.from_numpy(u), *constants)
        if self._linearized_fn is None:
            key = ("linearized_step", self.dtype, self.nd > 0)
            self._linearized_fn = self._compiled(key, _linearized_step(self.model, self.dtype, self.nd > 0), args)
        new_mean, new_cov = self._linearized_fn(*args)
        return new_mean.numpy(), new_cov.numpy()

    def step_batch(self, xs: np.ndarray, u: np.ndarray) -> np.ndarray:
        """One model step of every row of ``xs[B, nx]`` under the same command, float64."""
        xt, ut = torch.from_numpy(xs), torch.from_numpy(u)
        fn = self._batch_step_fns.get(xs.shape[0])
        if fn is None:
            model, dtype = self.model, self.dtype

            def step(x: Tensor, u: Tensor) -> Tensor:  # a plain function: make_fx cannot trace a bound method
                return model.step(x.to(dtype), u.to(dtype).expand(x.shape[0], -1)).to(x.dtype)

            fn = self._compiled(("step", self.dtype, xs.shape[0]), step, (xt, ut))
            self._batch_step_fns[xs.shape[0]] = fn
        return fn(xt, ut).numpy()

    def advance(self, x: np.ndarray, u: np.ndarray, duration: float) -> np.ndarray:
        """The mean alone ``duration`` seconds on under command ``u`` (whole or interpolated model
        steps, as the filter predicts), float64."""
        count, tau = self.substeps(duration)
        weights = self.interpolation(tau)
        for _ in range(count):
            x_next = self.step_batch(x[None], u)[0]
            x = x_next if weights is None else weights[0] @ x + weights[1] @ x_next
        return x

    def switch_acceleration(self, x: np.ndarray, u_old: np.ndarray, u_new: np.ndarray) -> np.ndarray:
        """How much faster each joint's velocity changes at ``x`` under ``u_new`` than under
        ``u_old`` [nq], float64 (for a rigid body ``M(q)^-1 (u_new - u_old)``): over one model step,
        so it holds for any model, learned ones included."""
        args = (torch.from_numpy(x), torch.from_numpy(u_old), torch.from_numpy(u_new))
        if self._switch_fn is None:
            model, dtype, nq, dt = self.model, self.dtype, self.nq, self.dt

            def switch(x: Tensor, u_old: Tensor, u_new: Tensor) -> Tensor:
                after = model.step(x.to(dtype).expand(2, -1), torch.stack([u_old, u_new]).to(dtype)).to(x.dtype)
                return (after[1, nq:] - after[0, nq:]) / dt

            self._switch_fn = self._compiled(("switch", self.dtype), switch, args)
        return self._switch_fn(*args).numpy()

    # -- time ----------------------------------------------------------------------------------
    def substeps(self, duration: float) -> tuple[int, float]:
        """``(count, tau)``: ``duration`` as ``count`` equal sub-steps of ``tau <= (1 + STRETCH) dt``."""
        count = max(1, math.ceil(duration / self.dt - STRETCH))
        return count, duration / count

    def interpolation(self, tau: float) -> tuple[np.ndarray, np.ndarray] | None:
        """``(W0, W1)`` with ``x(tau) = W0 x0 + W1 x1`` for ``x1 = step(x0)``; None when ``tau == dt``."""
        if abs(tau - self.dt) < 1e-12:
            return None
        key = round(tau, 12)
        if key not in self._interpolations:
            a, d = tau / self.dt, self.dt
            # Cubic Hermite basis (value rows) and its time derivative (velocity rows).
            h00, h10, h01, h11 = 2 * a**3 - 3 * a**2 + 1, a**3 - 2 * a**2 + a, -2 * a**3 + 3 * a**2, a**3 - a**2
            g00, g10, g01, g11 = 6 * a**2 - 6 * a, 3 * a**2 - 4 * a + 1, -6 * a**2 + 6 * a, 3 * a**2 - 2 * a
            eye = np.eye(self.nq)
            w0 = np.kron(np.array([[h00, h10 * d], [g00 / d, g10]]), eye)
            w1 = np.kron(np.array([[h01, h11 * d], [g01 / d, g11]]), eye)
            if len(self._interpolations) > 256:  # realtime jitter makes many distinct taus
                self._interpolations.clear()
            self._interpolations[key] = (w0, w1)
        return self._interpolations[key]

    def set_density(self, accel_noise_density: Sequence[float]) -> None:
        """Predict with these acceleration noise densities from now on (no recompilation: the
        compiled step takes its noise as an input)."""
        density = np.asarray(accel_noise_density, dtype=np.float64)
        if density.shape != (self.nq,) or np.any(density < 0):
            raise ValueError(f"need {self.nq} non-negative acceleration noise densities")
        self.density = density
        self._noises.clear()
        self._whole_step_tensors[2].copy_(torch.from_numpy(self.noise(self.dt)))

    def _augmented(self, w0: np.ndarray, w1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Interpolation weights of the state extended to ``[x, d]``: ``d`` is kept as it is."""
        if not self.nd:
            return w0, w1
        n = self.nx + self.nd
        a0, a1 = np.eye(n), np.zeros((n, self.nx))
        a0[: self.nx, : self.nx], a1[: self.nx] = w0, w1
        return a0, a1

    def noise(self, tau: float) -> np.ndarray:
        """Process noise covariance ``Q(tau)`` [n, n] (``n = nx + nd``: the disturbance's random walk
        last)."""
        key = round(tau, 12)
        q = self._noises.get(key)
        if q is None:
            q = np.kron(np.array([[tau**3 / 3, tau**2 / 2], [tau**2 / 2, tau]]), np.diag(self.density))
            if self.nd:
                q = np.block([[q, np.zeros((self.nx, self.nd))],
                              [np.zeros((self.nd, self.nx)), np.diag(tau * self.disturbance_density)]])
            if len(self._noises) > 256:
                self._noises.clear()
            self._noises[key] = q
        return q
