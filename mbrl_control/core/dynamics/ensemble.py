"""A probabilistic ensemble of MLPs (PETS) as a ``DynamicsModel``: learned one-period dynamics.

Each of ``members`` MLPs maps normalised features of ``(x, u)`` to a Gaussian over the normalised
state change ``x_next - x`` (mean and log-variance per state dimension). Every member's weights
live in one ``[E, out, in]`` tensor per layer, so all members run in a single batched matmul.
Angles listed in ``angle_dims`` are fed as (sin, cos) instead of the raw value, which winds past
+-pi; their deltas are predicted unwrapped, so rollouts keep winding like the robot's encoder.

Planning propagates particles by trajectory sampling (Chua et al. 2018):

- ``ts1``: every step, each particle is handed to a member drawn anew;
- ``tsinf``: each particle keeps one member for the whole rollout;
- ``expectation``: every member predicts every particle and the means are averaged (E x the work);

optionally adding noise drawn from the predicted Gaussian (``output_noise``). Members are
assigned by a random affine permutation of the particle slots, ``slot = (a*i + b) mod B`` with
``a`` coprime to ``B``: each particle's member is uniform and independent from step to step, and
every member gets exactly ``B/E`` particles (one ``bmm``), with no sort. The rollout keeps the
particles in slot order: the actions of all steps go into slot order in one gather before the
loop, the states back into particle order in one after it, and a TS1 step only moves the
particles into the next step's slots (the redraw itself, one small gather of the states).

On the CPU a frozen model's TS1/TS-infinity rollout runs in ``ensemble_kernel`` (one fused
AVX-512 loop, ``propagation.kernel: auto``): the same function to float rounding, several times
faster, on ``rollout_threads`` threads of its own; ``kernel_unsupported`` says why it does not run
where it does not (then the torch rollout above runs).

The random numbers of a rollout (``draw``) are a pure function of ``(seed, rollout counter)``:
the permutations' coefficients come from a CPU generator (a seed gives the same assignments on
every device), the index arithmetic and any output noise run on the model's device. A planner
draws them before its compiled rollout and passes them in, so the graph holds no random number
generation (a CUDA graph can replay it); ``rollout`` without them draws through one small custom
op that ``torch.compile`` keeps opaque. Results are the same in eager and compiled code, and
``reseed`` restarts them.

Device: parameters are initialised on the CPU from the seed, then moved (``device=``); the seed
and the rollout counter stay host tensors, so reading them never waits for a GPU.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mbrl_control.core.dynamics import ensemble_kernel
from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.core.util import matching_tensors, setting

PROPAGATIONS = ("ts1", "tsinf", "expectation")
TARGETS = ("state_change", "residual")
ACTIVATIONS = {"silu": F.silu, "relu": F.relu, "tanh": torch.tanh}
PLANNING_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
MAX_LOGVAR_INIT = 0.5  # PETS's initial soft bounds on the normalised log-variance
MIN_LOGVAR_INIT = -10.0
UNFITTED_RANGE = 1e9  # a residual model's input and output range before it has seen data: no clamp


@dataclass(frozen=True)
class EnsembleConfig:
    """The architecture: what a checkpoint or a model message must match to be loaded."""

    state_dim: int
    action_dim: int
    dt: float
    members: int = setting(5, "ensemble members (bootstrapped MLPs)", 1, 20)
    hidden: int = setting(64, "units per hidden layer", 4, 1024)
    layers: int = setting(3, "hidden layers", 1, 8)
    activation: str = setting("silu", "hidden activation", choices=("silu", "relu", "tanh"))
    angle_dims: tuple[int, ...] = setting((), "state dimensions that are angles, fed as (sin, cos)", 0, 64)
    learn_reward: bool = setting(False, "also predict the reward r(x, u): one more output of every member")
    action_margin: float = setting(
        -1.0, "a model learned from scratch is trusted only for actions within its data's range, widened on each side "
              "by this fraction of the range: outside, its action input is clamped, and the controller sends the "
              "clamped action (a trust region that grows with the data); < 0: off", -1.0, 10.0)
    # What the "state change" it predicts is: ``state_change`` (x_next - x: the dynamics learned
    # from scratch) or ``residual`` (x_next - f_urdf(x, u): the correction ``ResidualDynamics``
    # adds to the analytic model). Set by the ``model`` parameter, not a parameter of its own.
    target: str = "state_change"

    def __post_init__(self) -> None:
        object.__setattr__(self, "angle_dims", tuple(int(d) for d in self.angle_dims))
        if self.state_dim < 1 or self.action_dim < 1 or self.dt <= 0:
            raise ValueError("need state_dim >= 1, action_dim >= 1 and dt > 0")
        if self.members < 1 or self.hidden < 1 or self.layers < 1:
            raise ValueError("need members >= 1, hidden >= 1 and layers >= 1")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got '{self.activation}'")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got '{self.target}'")
        if len(set(self.angle_dims)) != len(self.angle_dims) or not all(
            0 <= d < self.state_dim for d in self.angle_dims
        ):
            raise ValueError(f"angle_dims {self.angle_dims} must be distinct state indices")

    @property
    def input_dim(self) -> int:
        return self.state_dim + len(self.angle_dims) + self.action_dim

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["angle_dims"] = list(self.angle_dims)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "EnsembleConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown ensemble config fields {sorted(unknown)}")
        return cls(**dict(d))


@dataclass(frozen=True)
class PropagationConfig:
    """How the model in use predicts: not part of the learned model, so free to differ per user.

    Changing it on a compiled model recompiles its rollout (tens of seconds): choose at build time.
    """

    mode: str = setting("ts1", "particle propagation: trajectory sampling (ts1, tsinf) or the members' mean",
                        choices=("ts1", "tsinf", "expectation"))
    output_noise: bool = setting(False, "add noise drawn from each member's predicted Gaussian")
    seed: int = setting(0, "seed of the member draws and the output noise (and of the initial weights)", 0, 2**31 - 1)
    dtype: str = setting("float32", "bfloat16: the hidden x hidden matmuls of step/rollout in bf16",
                         choices=("float32", "bfloat16"))
    kernel: str = setting("auto", "TS1/TS-infinity rollouts on the CPU: auto (the fused AVX-512 loop where this CPU "
                          "and a C++ compiler allow, else torch) or torch", choices=("auto", "torch"))

    def __post_init__(self) -> None:
        if self.mode not in PROPAGATIONS:
            raise ValueError(f"propagation mode must be one of {PROPAGATIONS}, got '{self.mode}'")
        if self.dtype not in PLANNING_DTYPES:
            raise ValueError(f"dtype must be one of {tuple(PLANNING_DTYPES)}, got '{self.dtype}'")
        if self.kernel not in ("auto", "torch"):
            raise ValueError(f"kernel must be auto or torch, got '{self.kernel}'")
        if not 0 <= self.seed < 2**31:
            raise ValueError("seed must be in [0, 2**31 - 1]")


class ModelStateError(ValueError):
    """A state dict that does not fit this model (missing or extra tensors, shapes, values)."""


@dataclass(frozen=True)
class CheckedState:
    """A state that ``check_state`` accepted for models of ``config``: its tensors in
    ``state_dict`` order."""

    config: EnsembleConfig
    tensors: tuple[Tensor, ...]


class EnsembleDynamics(DynamicsModel):
    """``E`` Gaussian MLPs over the state change, batched as one module; float32.

    ``step``/``rollout`` follow ``propagation``; ``mean_step`` is the deterministic ensemble mean
    (what ``jacobians`` differentiates, for the EKF and iLQR). ``predict`` gives every member's
    Gaussian; ``load_state_`` validates and copies new weights into the existing tensors, which is
    how a model in use (even a compiled one) is updated between ticks.
    """

    def __init__(self, config: EnsembleConfig, propagation: PropagationConfig = PropagationConfig(),
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        self.config = config
        self.propagation = propagation
        self.state_dim = config.state_dim
        self.action_dim = config.action_dim
        self.dt = float(config.dt)
        self._act = ACTIVATIONS[config.activation]
        nx, E, H = config.state_dim, config.members, config.hidden
        sizes = [config.input_dim] + [H] * config.layers + [2 * nx + int(config.learn_reward)]
        with torch.device("cpu"):  # initial weights from a CPU generator: a seed gives the same model on every device
            g = torch.Generator().manual_seed(propagation.seed)
            self.weights = torch.nn.ParameterList(
                [torch.nn.Parameter(_init_weight(E, n_out, n_in, g)) for n_in, n_out in zip(sizes[:-1], sizes[1:])]
            )
            self.biases = torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(E, 1, n)) for n in sizes[1:]])
            if config.target == "residual":  # an untrained residual adds nothing: the analytic model as it is
                self.weights[-1].data[:, :nx].zero_()
            self.max_logvar = torch.nn.Parameter(torch.full((nx,), MAX_LOGVAR_INIT))
            self.min_logvar = torch.nn.Parameter(torch.full((nx,), MIN_LOGVAR_INIT))
            # The normaliser is part of the learned model (fitted on data, saved, swapped with it).
            self.register_buffer("input_mean", torch.zeros(config.input_dim))
            self.register_buffer("input_std", torch.ones(config.input_dim))
            self.register_buffer("delta_mean", torch.zeros(nx))
            self.register_buffer("delta_std", torch.ones(nx))
            if config.learn_reward:
                self.register_buffer("reward_mean", torch.zeros(1))
                self.register_buffer("reward_std", torch.ones(1))
            if config.target == "residual":
                # The data's range, inputs (normalised) and residuals: a residual is trusted only
                # where it was learned. Outside, a network extrapolates freely (a model fitted on a
                # balancing pole predicted residuals 100x its data's spread on a swinging one), so
                # its inputs are clamped to the range and its output too. Wide open until fitted.
                self.register_buffer("input_low", torch.full((config.input_dim,), -UNFITTED_RANGE))
                self.register_buffer("input_high", torch.full((config.input_dim,), UNFITTED_RANGE))
                self.register_buffer("delta_low", torch.full((nx,), -UNFITTED_RANGE))
                self.register_buffer("delta_high", torch.full((nx,), UNFITTED_RANGE))
            if config.action_margin >= 0 and config.target != "residual":
                # The actions it was trained on, widened by the margin (physical units); wide open
                # until fitted. An arm's first model, fitted on gentle exploration, predicts full
                # torques nothing like the robot: iLQR on it drove the arm into its stops.
                self.register_buffer("action_low", torch.full((config.action_dim,), -UNFITTED_RANGE))
                self.register_buffer("action_high", torch.full((config.action_dim,), UNFITTED_RANGE))
            # Offset-free MPC (core/estimation/model_offset.py): the model's observed one-step
            # error, added to every predicted change. Not part of the learned model (not saved,
            # not on the wire, not copied by ``clone``): the controller's, zero unless it sets it.
            self.register_buffer("output_offset", torch.zeros(nx), persistent=False)
            self.register_buffer("_delta_center", torch.zeros(nx), persistent=False)  # the fused kernel's delta_mean + offset
            # The member draws' seed and rollout counter: host tensors (plain attributes, which
            # ``.to()`` leaves on the CPU: reading them never waits for a GPU), so that reseeding
            # and counting never invalidate a compiled graph.
            self._seed = torch.tensor(propagation.seed, dtype=torch.long)
            self._draws = torch.zeros((), dtype=torch.long)
        self._plain_dims = tuple(d for d in range(nx) if d not in config.angle_dims)
        self._residual = config.target == "residual"
        self._trusts_actions = hasattr(self, "action_low")
        self._plan_dtype = PLANNING_DTYPES[propagation.dtype]
        for k in range(1, config.layers):  # bf16 copies of the hidden x hidden weights, if asked for
            if self._plan_dtype != torch.float32:
                self.register_buffer(f"_plan_w{k}", self.weights[k].detach().to(self._plan_dtype), persistent=False)
        # The fused CPU rollout (ensemble_kernel), or why not: decided once, from the architecture.
        self.kernel_unsupported = ensemble_kernel.unsupported(self)
        self.rollout_threads = 1  # the kernel's threads per rollout (TrajectoryEvaluator sets it)
        if device is not None:
            self.to(device)

    @property
    def device(self) -> torch.device:
        return self.delta_std.device

    # -- features and normalisation ----------------------------------------------------------
    def features(self, x: Tensor, u: Tensor) -> Tensor:
        """Normalised network inputs ``[..., input_dim]``: plain state dims, sin and cos of the
        angles, the action."""
        # Static per-dimension slices, not an index_select: compiled, this stays a vector loop.
        angles = [x[..., d] for d in self.config.angle_dims]
        if self._trusts_actions:
            u = torch.clamp(u, self.action_low, self.action_high)
        parts = [x[..., d] for d in self._plain_dims] + [torch.sin(a) for a in angles] + [torch.cos(a) for a in angles]
        f = torch.stack(parts + [u[..., j] for j in range(self.action_dim)], dim=-1)
        f = (f - self.input_mean) / self.input_std
        return torch.clamp(f, self.input_low, self.input_high) if self._residual else f

    def trusted_actions(self) -> tuple[Tensor, Tensor] | None:
        """The actions this model was fitted for (``action_margin``), ``(low, high)``, else None."""
        return (self.action_low, self.action_high) if self._trusts_actions else None

    def _bounded(self, delta: Tensor) -> Tensor:
        """A residual model's physical output clamped to its data's range (else as it is)."""
        return torch.clamp(delta, self.delta_low, self.delta_high) if self._residual else delta

    @torch.no_grad()
    def fit_normalizer(self, states: Tensor, actions: Tensor, next_states: Tensor, rewards: Tensor | None = None) -> None:
        """Set the input and output statistics from data ``[N, ...]`` (std floored, never 0)."""
        self.input_mean.zero_()
        self.input_std.fill_(1.0)
        if self._residual:
            self.input_low.fill_(-UNFITTED_RANGE)
            self.input_high.fill_(UNFITTED_RANGE)
        if self._trusts_actions:
            low, high = actions.amin(0), actions.amax(0)
            widen = self.config.action_margin * (high - low)
            self.action_low.copy_(low - widen)
            self.action_high.copy_(high + widen)
        f = self.features(states, actions)
        _set_stats(self.input_mean, self.input_std, f)
        _set_stats(self.delta_mean, self.delta_std, next_states - states)
        if self._residual:
            normalised = (f - self.input_mean) / self.input_std
            self.input_low.copy_(normalised.amin(0))
            self.input_high.copy_(normalised.amax(0))
            # Zero always in range: a zeroed residual (``zero_residual_``) must add exactly nothing.
            self.delta_low.copy_((next_states - states).amin(0).clamp(max=0.0))
            self.delta_high.copy_((next_states - states).amax(0).clamp(min=0.0))
        if self.config.learn_reward:
            if rewards is None:
                raise ValueError("learn_reward needs rewards to fit the normaliser")
            _set_stats(self.reward_mean, self.reward_std, rewards.reshape(-1, 1))

    @torch.no_grad()
    def refit_normalizer(self, states: Tensor, actions: Tensor, next_states: Tensor, rewards: Tensor | None = None) -> None:
        """Refit the statistics to new data while the network keeps computing the same function.

        A warm-started round sees more data than the last (swings, not just hanging), so its
        statistics move; refitting them alone would scramble what the weights learned. Instead the
        first layer and the output layer absorb the change exactly (an affine reparametrisation),
        so training resumes from the model it had, in better-conditioned units.
        """
        old = {k: getattr(self, k).clone() for k in ("input_mean", "input_std", "delta_mean", "delta_std")}
        if self.config.learn_reward:
            old |= {k: getattr(self, k).clone() for k in ("reward_mean", "reward_std")}
        self.fit_normalizer(states, actions, next_states, rewards)
        w0, b0 = self.weights[0], self.biases[0]  # [E, H, in], [E, 1, H]
        ratio = self.input_std / old["input_std"]
        shift = (self.input_mean - old["input_mean"]) / old["input_std"]
        b0.add_(torch.einsum("ehi,i->eh", w0, shift).unsqueeze(1))
        w0.mul_(ratio)
        nx = self.state_dim
        wl, bl = self.weights[-1], self.biases[-1]  # [E, out, H], [E, 1, out]
        scale = old["delta_std"] / self.delta_std
        wl[:, :nx].mul_(scale.unsqueeze(-1))
        bl[..., :nx] = (bl[..., :nx] * old["delta_std"] + old["delta_mean"] - self.delta_mean) / self.delta_std
        logvar_shift = 2.0 * torch.log(scale)  # the same physical variance in the new units
        bl[..., nx : 2 * nx] += logvar_shift
        self.max_logvar.add_(logvar_shift)
        self.min_logvar.add_(logvar_shift)
        if self.config.learn_reward:
            r_scale = old["reward_std"] / self.reward_std
            wl[:, 2 * nx].mul_(r_scale)
            bl[..., 2 * nx] = (bl[..., 2 * nx] * old["reward_std"] + old["reward_mean"] - self.reward_mean) / self.reward_std
        self.refresh_planning_weights()

    # -- the network ---------------------------------------------------------------------------
    def _hidden(self, f: Tensor) -> Tensor:
        """Last hidden layer ``[E, N, H]`` for normalised features ``f[E, N, in]`` (fp32)."""
        h = f
        for k in range(self.config.layers):
            h = self._act(torch.baddbmm(self.biases[k], h, self.weights[k].transpose(1, 2)))
        return h

    def _bounded_logvar(self, raw: Tensor) -> Tensor:
        """PETS's soft clamp of the log-variance between the learned bounds (keeps gradients)."""
        logvar = self.max_logvar - F.softplus(self.max_logvar - raw)
        return self.min_logvar + F.softplus(logvar - self.min_logvar)

    def predict_normalized(self, f: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Each member's normalised delta mean and bounded log-variance ``[E, N, nx]`` and, with
        ``learn_reward``, normalised reward ``[E, N]``, for features ``f[E, N, in]`` (member ``e``
        sees ``f[e]``: bootstrapped batches in training)."""
        nx = self.state_dim
        out = torch.baddbmm(self.biases[-1], self._hidden(f), self.weights[-1].transpose(1, 2))
        reward = out[..., 2 * nx] if self.config.learn_reward else None
        return out[..., :nx], self._bounded_logvar(out[..., nx : 2 * nx]), reward

    def predict(self, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """Every member's Gaussian over the state change: mean and variance ``[E, B, nx]``."""
        f = self.features(x, u).unsqueeze(0).expand(self.config.members, -1, -1)
        mean_n, logvar_n, _ = self.predict_normalized(f)
        mean = self._bounded(mean_n * self.delta_std + self.delta_mean) + self.output_offset
        return mean, torch.exp(logvar_n) * self.delta_std**2

    def predict_reward(self, x: Tensor, u: Tensor) -> Tensor:
        """Learned reward of every pair ``x[..., nx]``, ``u[..., nu]``: shape ``[...]``.

        Each pair is scored by one member (the pairs, flattened, split into E contiguous blocks:
        with ``[B, T]`` pairs, each sample's steps mostly by one member), so scoring a planner's
        whole population costs one pass of one network, not E.
        """
        if not self.config.learn_reward:
            raise RuntimeError("this ensemble was built without learn_reward")
        lead = x.shape[:-1]
        E = self.config.members
        f = self.features(x.reshape(-1, self.state_dim), u.reshape(-1, self.action_dim))
        n = f.shape[0]
        G = -(-n // E)
        if G * E > n:
            f = torch.cat([f, f[:1].expand(G * E - n, -1)])
        h = self._hidden(f.view(E, G, -1))
        w, b = self.weights[-1][:, 2 * self.state_dim :], self.biases[-1][..., 2 * self.state_dim :]
        r = torch.baddbmm(b, h, w.transpose(1, 2)).reshape(-1)[:n]
        return (r * self.reward_std + self.reward_mean).reshape(lead)

    # -- propagation ---------------------------------------------------------------------------
    def mean_step(self, x: Tensor, u: Tensor) -> Tensor:
        """Deterministic: ``x`` plus the mean of the members' mean deltas."""
        return x + self.predict(x, u)[0].mean(0)

    def step(self, x: Tensor, u: Tensor) -> Tensor:
        return self.rollout(x, u.unsqueeze(1))[:, 1]

    def threads_itself(self) -> bool:
        """Whether rollouts run in the fused kernel, which takes ``rollout_threads`` itself (a
        frozen model on the CPU that the kernel supports)."""
        return self.kernel_unsupported is None and self.device.type == "cpu" and not self.weights[0].requires_grad

    def particles(self, batch: int) -> int:
        """Particles a rollout of ``batch`` runs: TS1 and TS-infinity pad to a multiple of the
        members, so that every member gets an equal group (one ``bmm``)."""
        E = self.config.members
        return batch if self.propagation.mode == "expectation" else -(-batch // E) * E

    def draw(self, batch: int, steps: int) -> tuple[Tensor, Tensor, Tensor]:
        """The random numbers of the next rollout of ``batch`` sequences over ``steps``, on the
        model's device: ``(to_slot, from_slot, noise)`` (see ``ensemble_draws``). Advances the
        rollout counter, so every call draws anew.

        A planner draws outside its compiled rollout and passes them in (``rollout(..., draws)``):
        the graph then holds no random number generation at all (what a CUDA graph needs).
        """
        mode, n = self.propagation.mode, self.particles(batch)
        assignments = {"expectation": 0, "tsinf": 1, "ts1": steps}[mode]
        noise = n * self.state_dim if self.propagation.output_noise else 0
        draws = torch.ops.mbrl_control.ensemble_draws(self._seed, self._draws, n, assignments, steps, noise,
                                                      self.device)
        self._draws.add_(1)
        return draws

    def rollout(self, x0: Tensor, actions: Tensor, draws: tuple[Tensor, Tensor, Tensor] | None = None) -> Tensor:
        """States ``[B, T+1, nx]``; ``draws`` from ``draw(B, T)``, else drawn here."""
        B, T = actions.shape[0], actions.shape[1]
        x0 = x0.expand(B, -1)
        n = self.particles(B)
        if n > B:
            x0 = torch.cat([x0, x0[:1].expand(n - B, -1)])
            actions = torch.cat([actions, actions[:1].expand(n - B, -1, -1)])
        to_slot, from_slot, noises = self.draw(B, T) if draws is None else draws
        if self.propagation.mode == "expectation":
            states = self._rollout_expectation(x0, actions, noises)
        else:
            states = self._rollout_in_slots(x0, actions, to_slot, from_slot, noises)
        return states[:B] if n > B else states

    def _rollout_in_slots(self, x: Tensor, actions: Tensor, to_slot: Tensor, from_slot: Tensor, noises: Tensor) -> Tensor:
        """TS1 (a member assignment per step) and TS-infinity (one for the rollout), particles
        kept in slot order: slot group ``e`` of ``E`` equal groups is moved by member ``e``.

        The actions of every step are put in slot order by one gather before the loop and the
        states back in particle order by one after it; a step only moves the particles into the
        next step's slots (TS1; TS-infinity keeps them), the redraw itself.
        """
        E, nx, nu = self.config.members, self.state_dim, self.action_dim
        n, T = actions.shape[0], actions.shape[1]
        G = n // E
        if self.threads_itself():
            # The fused loop reads the particles, their actions and the slots in place and writes
            # the states in particle order: none of the gathers below. Its normaliser is kept by
            # address (one tensor for the offset's sum, refreshed here).
            torch.add(self.delta_mean, self.output_offset, out=self._delta_center)
            return ensemble_kernel.fused_rollout(
                x, actions, from_slot, list(self.weights), list(self.biases),
                [self.weights[0]] + [getattr(self, f"_plan_w{k}") for k in range(1, self.config.layers)]
                if self._plan_dtype != torch.float32 else [],
                [self.input_mean, self.input_std, self._delta_center, self.delta_std], list(self._plain_dims),
                list(self.config.angle_dims), ensemble_kernel.ACTIVATIONS[self.config.activation], self.rollout_threads)
        to_slot, from_slot = to_slot.expand(T, n), from_slot.expand(T, n)  # TS-infinity: one row for all steps
        us = torch.gather(actions.transpose(0, 1), 1, from_slot.unsqueeze(-1).expand(T, n, nu))  # [T, n, nu]
        redrawn = self.propagation.mode == "ts1" and T > 1
        # moves[t, s]: the slot at step t of the particle that is in slot s at step t + 1
        moves = torch.gather(to_slot[:-1], 1, from_slot[1:]) if redrawn else None
        xs = x.index_select(0, from_slot[0])
        moved = []
        for t in range(T):
            xs = xs + self.grouped_delta(xs.view(E, G, nx), us[t].view(E, G, nu), noises[t]).reshape(n, nx)
            moved.append(xs)
            if redrawn and t < T - 1:
                xs = xs.index_select(0, moves[t])
        in_slots = torch.stack(moved)  # [T, n, nx]: step t's states in step t's slot order
        states = torch.gather(in_slots, 1, to_slot.unsqueeze(-1).expand(T, n, nx))
        return torch.cat([x.unsqueeze(1), states.transpose(0, 1)], dim=1)

    def _rollout_expectation(self, x: Tensor, actions: Tensor, noises: Tensor) -> Tensor:
        """Every member on every particle; the particle moves by the mean of their deltas."""
        E, nx, nu = self.config.members, self.state_dim, self.action_dim
        B = x.shape[0]
        states = [x]
        for t in range(actions.shape[1]):
            xs = x.unsqueeze(0).expand(E, B, nx)
            us = actions[:, t].unsqueeze(0).expand(E, B, nu)
            x = x + self.grouped_delta(xs, us, noises[t]).mean(0)  # one noise sample for all members
            states.append(x)
        return torch.stack(states, dim=1)

    def grouped_delta(self, xs: Tensor, us: Tensor, noise: Tensor) -> Tensor:
        """State change ``[E, G, nx]`` of group ``e`` (states ``xs[E, G, nx]``, actions ``us[E, G, nu]``)
        under member ``e``, with the output noise ``noise`` if asked for: the planning hot path
        (also ``ResidualDynamics``'s, between the analytic model's steps).

        Hidden layers are plain ``bmm`` (optionally in bf16) with bias and activation left to the
        compiler, which fuses them (and the casts) into one loop; the log-variance head runs only
        when noise is asked for.
        """
        nx, w, b = self.state_dim, self.weights, self.biases
        # bmm, then bias and activation: fused into one loop when compiled (baddbmm would first
        # copy the broadcast bias into its output).
        h = self._act(torch.bmm(self.features(xs, us), w[0].transpose(1, 2)) + b[0])
        for k in range(1, self.config.layers):
            if self._plan_dtype == torch.float32:
                h = self._act(torch.bmm(h, w[k].transpose(1, 2)) + b[k])
            else:
                w_plan = getattr(self, f"_plan_w{k}")
                h = self._act(torch.bmm(h.to(self._plan_dtype), w_plan.transpose(1, 2)).float() + b[k])
        # The mean head as W h^T ([E, nx, G]): a narrow output is the slow shape for the matmul.
        mean_n = torch.bmm(w[-1][:, :nx], h.transpose(1, 2)).transpose(1, 2) + b[-1][..., :nx]
        delta = mean_n * self.delta_std + self.delta_mean
        if self.propagation.output_noise:
            raw = torch.baddbmm(b[-1][..., nx : 2 * nx], h, w[-1][:, nx : 2 * nx].transpose(1, 2))
            delta = delta + torch.exp(0.5 * self._bounded_logvar(raw)) * self.delta_std * noise.view(-1, *delta.shape[1:])
        return self._bounded(delta) + self.output_offset

    def jacobians(self, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """Jacobians of the deterministic ensemble mean (``mean_step``), not of a sampled step."""

        def single(xi: Tensor, ui: Tensor) -> Tensor:
            return self.mean_step(xi.unsqueeze(0), ui.unsqueeze(0)).squeeze(0)

        return torch.func.vmap(torch.func.jacrev(single, argnums=(0, 1)))(x, u)

    def reseed(self, seed: int | None = None) -> None:
        """Restart the member draws and output noise (from ``seed``, default the configured one)."""
        self._seed.fill_(self.propagation.seed if seed is None else int(seed))
        self._draws.zero_()

    # -- weights in and out --------------------------------------------------------------------
    def check_state(self, state: "Mapping[str, Tensor] | CheckedState") -> "CheckedState":
        """Validate ``state`` for this model: the same tensor names, shapes and dtypes, finite
        values, std > 0. Raises ``ModelStateError`` naming the first problem; returns the state
        in a form ``load_state_`` copies without checking again (check off the tick, swap on it)."""
        if isinstance(state, CheckedState):
            if state.config != self.config:
                raise ModelStateError("checked for another architecture")
            return state
        own = self.state_dict()
        tensors = matching_tensors(own, state, ModelStateError)
        if not bool(torch.isfinite(torch.cat([t.reshape(-1) for t in tensors])).all()):  # one pass for all
            bad = next(name for name, t in zip(own, tensors) if not bool(torch.isfinite(t).all()))
            raise ModelStateError(f"'{bad}' has non-finite values")
        for name, t in zip(own, tensors):
            if name.endswith("_std") and not bool((t > 0).all()):
                raise ModelStateError(f"'{name}' must be positive")
        return CheckedState(self.config, tensors)

    @torch.no_grad()
    def load_state_(self, state: "Mapping[str, Tensor] | CheckedState") -> None:
        """Copy ``state`` into this model's existing tensors in place, after ``check_state``
        (skipped for a ``CheckedState``, which was checked already).

        Nothing is reallocated, so a compiled rollout holding these tensors stays valid and picks
        the new values up on its next call. Call it between planner ticks, from the ticking thread.
        On a validation error nothing has been changed.
        """
        checked = self.check_state(state)
        for own, new in zip(self.state_dict(keep_vars=True).values(), checked.tensors):
            own.copy_(new)
        self.refresh_planning_weights()

    @torch.no_grad()
    def set_output_offset_(self, offset: Tensor) -> None:
        """Add ``offset [nx]`` to every predicted state change from now on (zero: the model as learned)."""
        self.output_offset.copy_(offset)

    @torch.no_grad()
    def zero_residual_(self) -> None:
        """Make a residual model add nothing (its mean output zero): the analytic model alone."""
        if not self._residual:
            raise RuntimeError("only a residual model (target 'residual') can be zeroed")
        nx = self.state_dim
        self.weights[-1][:, :nx].zero_()
        self.biases[-1][..., :nx].zero_()
        self.delta_mean.zero_()

    @torch.no_grad()
    def keep_residual_dims_(self, dims: Sequence[int]) -> None:
        """Make a residual model correct only the state dimensions ``dims``: the others' output
        range becomes [0, 0], so their residual (mean and noise) is exactly zero, on the wire too."""
        if not self._residual:
            raise RuntimeError("only a residual model (target 'residual') has dimensions to keep")
        drop = torch.ones(self.state_dim, dtype=torch.bool, device=self.device)
        drop[list(dims)] = False
        self.delta_low[drop] = 0.0
        self.delta_high[drop] = 0.0

    def is_zero_residual(self) -> bool:
        """Whether this residual model adds nothing (untrained, or zeroed)."""
        nx = self.state_dim
        return self._residual and not bool(self.weights[-1][:, :nx].any() or self.biases[-1][..., :nx].any()
                                           or self.delta_mean.any())

    @torch.no_grad()
    def refresh_planning_weights(self) -> None:
        """Re-derive the reduced-precision planning copies after the weights changed."""
        for k in range(1, self.config.layers):
            if self._plan_dtype != torch.float32:
                getattr(self, f"_plan_w{k}").copy_(self.weights[k])

    def clone(self, propagation: PropagationConfig | None = None, trainable: bool = True) -> "EnsembleDynamics":
        """A separate copy (e.g. to train while this one plans); same config and weights."""
        copy = EnsembleDynamics(self.config, propagation or self.propagation, device=self.device)
        copy.load_state_(self.state_dict())
        return copy.requires_grad_(trainable)

    def freeze(self) -> "EnsembleDynamics":
        """No parameter gradients: the model in use for planning (compiles to an inference graph)."""
        return self.requires_grad_(False)


def moment_match(means: Tensor, variances: Tensor) -> tuple[Tensor, Tensor]:
    """One Gaussian for E member Gaussians ``[E, ...]``: the mean of the means, and the mean
    variance (aleatoric) plus the variance of the means (epistemic)."""
    return means.mean(0), variances.mean(0) + means.var(0, correction=0)


def _init_weight(members: int, n_out: int, n_in: int, g: torch.Generator) -> Tensor:
    """Truncated normal, std 1/(2 sqrt(fan_in)), as in PETS."""
    std = 1.0 / (2.0 * math.sqrt(n_in))
    w = torch.randn(members, n_out, n_in, generator=g) * std
    return torch.clamp(w, -2.0 * std, 2.0 * std)


def _set_stats(mean: Tensor, std: Tensor, data: Tensor) -> None:
    std_data, mean_data = torch.std_mean(data.reshape(-1, mean.shape[0]).float(), dim=0)
    mean.copy_(mean_data)
    std.copy_(torch.clamp(torch.nan_to_num(std_data, nan=1.0), min=1e-6))


# -- randomness: one opaque op per rollout, so torch.compile neither traces nor inlines it ---------


# Host work (a CPU generator, a copy to the device): never captured into a CUDA graph.
@torch.library.custom_op("mbrl_control::ensemble_draws", mutates_args=(), tags=(torch.Tag.cudagraph_unsafe,))
def _ensemble_draws(
    seed: Tensor, draw: Tensor, particles: int, assignments: int, steps: int, noise: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """``assignments`` random permutations of ``particles`` slots as index vectors
    ``to_slot[k, i]`` (the slot of particle ``i``) and ``from_slot[k, s]`` (the particle in slot
    ``s``), both ``[assignments, particles]``, and ``noise`` standard normals ``[steps, noise]``,
    on ``device``.

    The permutations are affine, ``slot(i) = (a*i + b) mod particles`` with ``a`` coprime to
    ``particles``: uniform slot per particle, no sort. A pure function of ``(seed, draw)``: a
    fresh generator seeded from both (torch.compile cannot trace a Generator, it keeps this op
    opaque). The permutations' few coefficients come from a CPU generator, so a seed gives the
    same member assignments on every device; the index arithmetic runs on ``device``. The
    output noise (one normal per particle, step and state) is drawn on ``device`` by its own
    generator: the same distribution everywhere, the same numbers only on the same kind of device.
    """
    key = int(seed) * 0x9E3779B1 + int(draw)
    g = torch.Generator(device="cpu").manual_seed(key)
    units, inverses = _units(particles)
    k = torch.randint(len(units), (assignments, 1), generator=g, device="cpu")
    b = torch.randint(particles, (assignments, 1), generator=g, device="cpu")
    coefficients = torch.cat([units[k], inverses[k], b], dim=1).to(device, non_blocking=True)
    a, a_inverse, b = coefficients[:, :1], coefficients[:, 1:2], coefficients[:, 2:]
    i = torch.arange(particles, device=device)
    to_slot = (a * i + b) % particles
    from_slot = (a_inverse * (i - b)) % particles
    if torch.device(device).type == "cpu":
        noises = torch.randn(steps, noise, generator=g, device="cpu")
    elif noise == 0:
        noises = torch.empty(steps, 0, device=device)
    else:
        noises = torch.randn(steps, noise, generator=torch.Generator(device=device).manual_seed(key), device=device)
    return to_slot, from_slot, noises


@_ensemble_draws.register_fake
def _(seed: Tensor, draw: Tensor, particles: int, assignments: int, steps: int, noise: int,
      device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    slots = torch.empty(assignments, particles, dtype=torch.long, device=device)
    return slots, slots.clone(), torch.empty(steps, noise, dtype=torch.float32, device=device)


@functools.lru_cache(maxsize=64)
def _units(n: int) -> tuple[Tensor, Tensor]:
    """The multipliers coprime to ``n`` and their inverses modulo ``n`` (CPU)."""
    units = [a for a in range(1, n) if math.gcd(a, n) == 1] or [1]
    inverses = [pow(a, -1, n) if n > 1 else 0 for a in units]
    return torch.tensor(units, device="cpu"), torch.tensor(inverses, device="cpu")
