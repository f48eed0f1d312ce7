"""Fits an ``EnsembleDynamics`` to logged transitions: Gaussian NLL, bootstrapped minibatches per
member, a held-out split with early stopping, optional input-noise injection; and a background
runner that trains a copy while the model in use keeps planning."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from mbrl_control.core.dynamics.ensemble import EnsembleDynamics, moment_match
from mbrl_control.core.learning.background import BackgroundJob
from mbrl_control.core.learning.transitions import Transitions
from mbrl_control.core.util import setting


@dataclass(frozen=True)
class TrainerConfig:
    learning_rate: float = setting(1e-3, "AdamW learning rate", 1e-6, 0.1)
    weight_decay: float = setting(5e-5, "AdamW weight decay, on every weight", 0.0, 0.01)
    batch_size: int = setting(256, "minibatch per member", 1, 65536)
    max_epochs: int = setting(100, "epochs per training round at most", 1, 10000)
    patience: int = setting(8, "epochs without a held-out improvement before stopping", 1, 1000)
    min_improvement: float = setting(0.01, "relative held-out MSE gain that counts as an improvement", 0.0, 0.5)
    holdout_fraction: float = setting(0.2, "transitions held out (by a hash of their number) for early stopping", 0.01, 0.5)
    max_holdout: int = setting(5000, "held-out transitions used at most", 1, 1000000)
    bootstrap: bool = setting(True, "each member trains on its own resample (with replacement)")
    input_noise: float = setting(0.0, "std of Gaussian noise on the normalised inputs (noise injection)", 0.0, 1.0)
    logvar_bound_weight: float = setting(0.01, "pulls the learned log-variance bounds together", 0.0, 1.0)
    reward_weight: float = setting(1.0, "weight of the reward head's normalised MSE (learn_reward)", 0.0, 100.0)
    refit_normalizer: bool = setting(True, "refit the input/output normalisers on every round's data")
    max_seconds: float = setting(0.0, "wall-clock budget per round [s]; 0: none", 0.0, 3600.0)
    seed: int = setting(0, "seed of minibatches and bootstraps", 0, 2**31 - 1)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_epochs < 1 or self.patience < 1:
            raise ValueError("need batch_size, max_epochs and patience >= 1")
        if not 0.0 < self.holdout_fraction < 1.0 or self.max_holdout < 1:
            raise ValueError("need 0 < holdout_fraction < 1 and max_holdout >= 1")
        if self.learning_rate <= 0 or min(self.weight_decay, self.input_noise, self.max_seconds) < 0:
            raise ValueError("need learning_rate > 0 and weight_decay, input_noise, max_seconds >= 0")


@dataclass
class HeldOutScores:
    """Scores on held-out transitions, in units of the held-out state changes' own spread (per
    dimension), so that models with different normalisers compare fairly."""

    nll: float  # Gaussian NLL per state dimension, averaged over the members
    mse: float  # of the ensemble mean; 1.0 = no better than predicting the mean change
    mse_per_dim: list[float]  # of the ensemble mean, physical units
    coverage_2sigma: float  # fraction of true changes within 2 sigma of the ensemble mixture
    samples: int


@dataclass
class TrainResult:
    holdout: HeldOutScores  # of the trained model
    previous: HeldOutScores | None  # of the starting model on the same held-out data, if trained
    epochs: int
    best_epoch: int
    train_samples: int
    seconds: float
    stopped_by: str  # "patience" | "max_epochs" | "time" | "cancelled"

    @property
    def improved(self) -> bool:
        """Better than the starting model on this held-out set (or nothing to compare with)."""
        return self.previous is None or not math.isfinite(self.previous.mse) or self.holdout.mse < self.previous.mse


def holdout_mask(seq: np.ndarray, fraction: float) -> np.ndarray:
    """Which transitions are held out: a fixed hash of their sequence number, so a transition
    stays on the same side across retrains and the held-out error stays honest."""
    h = (seq.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)
    return (h % np.uint64(10_000)).astype(np.int64) < int(round(fraction * 10_000))


def split(data: Transitions, config: TrainerConfig) -> tuple[Transitions, Transitions]:
    """``(train, held_out)``; at most ``max_holdout`` held out (the rest go back to training)."""
    held = holdout_mask(data.seq, config.holdout_fraction)
    held_idx = np.flatnonzero(held)
    if len(held_idx) > config.max_holdout:
        held[held_idx[config.max_holdout :]] = False
    return data.select(~held), data.select(held)


@torch.no_grad()
def evaluate(model: EnsembleDynamics, data: Transitions) -> HeldOutScores:
    """Scores of ``model`` on ``data`` (all members on every transition)."""
    if len(data) == 0:
        nan = float("nan")
        return HeldOutScores(nan, nan, [nan] * model.state_dim, nan, 0)
    x, u, x_next, _ = _on(model, data)
    delta = x_next - x
    scale = delta.std(0, correction=0).clamp(min=1e-6)  # the data's own units
    means, variances = model.predict(x, u)
    z2 = (means - delta) ** 2 / variances
    nll = 0.5 * (z2 + torch.log(variances / scale**2) + math.log(2 * math.pi))
    mix_mean, mix_var = moment_match(means, variances)
    err2 = (mix_mean - delta) ** 2
    return HeldOutScores(
        nll=float(nll.mean()),
        mse=float((err2 / scale**2).mean()),
        mse_per_dim=err2.mean(0).tolist(),
        coverage_2sigma=float((err2 <= 4.0 * mix_var).float().mean()),
        samples=len(data),
    )


def train_ensemble(
    model: EnsembleDynamics,
    data: Transitions,
    config: TrainerConfig = TrainerConfig(),
    cancel: threading.Event | None = None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data`` (warm start from its current weights).

    Held-out transitions are chosen by ``holdout_mask``. Each epoch, every member takes one pass
    over its bootstrap resample; after each epoch a member whose held-out MSE improved by
    ``min_improvement`` is snapshotted, and training stops after ``patience`` epochs with no
    member improving. Every member ends at its best snapshot. Don't train a model that is
    planning: train ``model.clone()`` and hand its ``state_dict()`` over (``BackgroundTrainer``).
    ``progress(epoch, max_epochs, figures)``, if given, is called after every epoch (figures: the
    members' mean best held-out MSE in normalised units, epochs since one improved).

    Trains where the model is (``model.device``): the data moves there once. The bootstraps and
    minibatch orders come from a CPU generator (a seed gives the same training on every device,
    up to float rounding); input noise, a draw per minibatch, from one on the model's device.
    """
    start = time.perf_counter()
    cfg = config
    device = model.device
    g = torch.Generator(device="cpu").manual_seed(cfg.seed)
    noise_g = g if device.type == "cpu" else torch.Generator(device=device).manual_seed(cfg.seed)
    train, held = split(data, cfg)
    if len(train) < 2:
        raise ValueError(f"need at least 2 training transitions, got {len(train)}")
    # A residual model is judged against the one it replaces even before its first fit: the zero
    # residual, the analytic model alone (it must do better than no correction at all).
    compare = _has_been_fitted(model) or model.config.target == "residual"
    previous = evaluate(model, held) if compare and len(held) else None
    x, u, x_next, r = _on(model, train)
    rewards_in = r if model.config.learn_reward else None
    if not _has_been_fitted(model):
        model.fit_normalizer(x, u, x_next, rewards_in)
    elif cfg.refit_normalizer:
        model.refit_normalizer(x, u, x_next, rewards_in)  # the same function in the new data's units
    with torch.no_grad():
        inputs = model.features(x, u)
        targets = (x_next - x - model.delta_mean) / model.delta_std
        rewards = (r - model.reward_mean) / model.reward_std if model.config.learn_reward else None
    E, N = model.config.members, len(train)
    resample = (torch.randint(N, (E, N), generator=g, device="cpu") if cfg.bootstrap
                else torch.arange(N, device="cpu").expand(E, N)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    best_scores = _member_mse(model, held) if len(held) else torch.full((E,), math.inf, device=device)
    best = {k: v.detach().clone() for k, v in model.state_dict().items()}
    best_epoch, epoch, stale, stopped_by = 0, 0, 0, "max_epochs"
    while epoch < cfg.max_epochs:
        epoch += 1
        order = resample.gather(1, torch.argsort(torch.rand(E, N, generator=g, device="cpu"), dim=1).to(device))
        for lo in range(0, N, cfg.batch_size):
            if cancel is not None and cancel.is_set():  # an epoch over a large buffer takes seconds
                break
            idx = order[:, lo : lo + cfg.batch_size]
            loss = _loss(model, inputs[idx], targets[idx], None if rewards is None else rewards[idx], cfg, noise_g)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if len(held):
            scores = _member_mse(model, held)
            better = scores < best_scores * (1.0 - cfg.min_improvement)
            if bool(better.any()):
                _snapshot_members(model, best, better)
                best_scores = torch.where(better, scores, best_scores)
                best_epoch, stale = epoch, 0
            else:
                stale += 1
        if progress is not None:
            figures = {"holdout_mse": float(best_scores.mean()), "stale": stale} if len(held) else {}
            progress(epoch, cfg.max_epochs, figures)
        if len(held) and stale >= cfg.patience:
            stopped_by = "patience"
            break
        if cancel is not None and cancel.is_set():
            stopped_by = "cancelled"
            break
        if cfg.max_seconds > 0 and time.perf_counter() - start > cfg.max_seconds:
            stopped_by = "time"
            break
    if len(held):
        model.load_state_(best)
    model.refresh_planning_weights()
    return TrainResult(
        holdout=evaluate(model, held),
        previous=previous,
        epochs=epoch,
        best_epoch=best_epoch if len(held) else epoch,
        train_samples=N,
        seconds=time.perf_counter() - start,
        stopped_by=stopped_by,
    )


def _loss(
    model: EnsembleDynamics, inputs: Tensor, targets: Tensor, rewards: Tensor | None, cfg: TrainerConfig, g: torch.Generator
) -> Tensor:
    """Summed over members: Gaussian NLL (mean over batch and dims), the log-variance bound
    penalty, and the reward head's MSE."""
    if cfg.input_noise > 0:
        inputs = inputs + cfg.input_noise * torch.randn(inputs.shape, generator=g, device=inputs.device)
    mean, logvar, reward = model.predict_normalized(inputs)
    nll = (((mean - targets) ** 2) * torch.exp(-logvar) + logvar).mean(dim=(1, 2)).sum()
    loss = nll + cfg.logvar_bound_weight * (model.max_logvar.sum() - model.min_logvar.sum())
    if rewards is not None:
        loss = loss + cfg.reward_weight * ((reward - rewards) ** 2).mean(1).sum()
    return loss


@torch.no_grad()
def _member_mse(model: EnsembleDynamics, data: Transitions) -> Tensor:
    """Each member's held-out MSE ``[E]`` in normalised units (reward head included)."""
    x, u, x_next, r = _on(model, data)
    f = model.features(x, u).unsqueeze(0).expand(model.config.members, -1, -1)
    mean, _, reward = model.predict_normalized(f)
    mse = ((mean - (x_next - x - model.delta_mean) / model.delta_std) ** 2).mean(dim=(1, 2))
    if reward is not None:
        mse = mse + ((reward - (r - model.reward_mean) / model.reward_std) ** 2).mean(1)
    return mse


@torch.no_grad()
def _snapshot_members(model: EnsembleDynamics, best: dict[str, Tensor], members: Tensor) -> None:
    """Copy the improved members' slices (leading dim E) into ``best``; shared tensors whole."""
    for name, t in model.state_dict().items():
        if name.split(".")[0] in ("weights", "biases"):  # [E, ...]: per member
            best[name][members] = t[members]
        else:
            best[name].copy_(t)


def _on(model: EnsembleDynamics, data: Transitions) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``data.tensors()`` on the model's device."""
    return tuple(t.to(model.device) for t in data.tensors())


def _has_been_fitted(model: EnsembleDynamics) -> bool:
    return bool((model.delta_std != 1.0).any() or (model.delta_mean != 0.0).any())


@dataclass(frozen=True)
class GeneralizationCheck:
    """Did a residual trained on the earlier episodes predict the newest one better than the
    analytic model alone (a zero residual)? Scored per state dimension: the mean squared error over
    the tested transitions' own mean square residual (a zero residual scores 1.0). It passed if the
    scores' mean is below ``1 - min_gain``; ``dims``: the dimensions whose own score is, the only
    ones a published residual corrects."""

    dims: tuple[int, ...]
    dim_scores: tuple[float, ...]
    samples: int
    trained_on: int
    min_gain: float

    @property
    def model_score(self) -> float:
        """The scores' mean over the state dimensions."""
        return round(float(np.mean(self.dim_scores)), 4)

    @property
    def passed(self) -> bool:
        return self.model_score < 1.0 - self.min_gain

    def describe(self) -> str:
        scores = ", ".join(f"{s:.2f}" for s in self.dim_scores)
        verdict = f"corrects dimensions {list(self.dims)}" if self.passed else f"needs a mean below {1.0 - self.min_gain:g}"
        return (f"trained on {self.trained_on} transitions it scored [{scores}] per state dimension (mean "
                f"{self.model_score:.2f}) on the newest episode's last {self.samples} (a zero residual: 1.0); {verdict}")


def check_generalization(model: EnsembleDynamics, data: Transitions, config: TrainerConfig,
                         tail_fraction: float = 0.3, min_gain: float = 0.5,
                         cancel: threading.Event | None = None) -> GeneralizationCheck | None:
    """Train a fresh model of ``model``'s architecture on ``data`` (a residual model's rewritten
    transitions) without its newest episode, and score it on that episode, per state dimension;
    with only one episode, without and on its last ``tail_fraction``.

    Why: a residual is trusted only where it was learned, and held-out transitions drawn from the
    same states do not show that. A whole new episode is the closest thing to "the states the
    robot will see next" (the cart-pole's residual, the estimates' jitter, passed a test on the end
    of an episode, its balancing, learned from the balancing before, and then ruined the next
    swing-up); a residual that does not explain at least ``min_gain`` of the episode's residual
    (a mean score below ``1 - min_gain``) would add error where it extrapolates. Measured
    (bench/transfer.py, 2026-12-06): the cart-pole's residual, the estimates' jitter, scored
    0.72-0.81 on whole new episodes at times, and every time it was published it ruined the next
    swing-up. A residual that passes corrects only the dimensions it predicted (``dims``): a rigid
    body's positions follow from its velocities, so a payload's residual is in the velocities, and
    its position residual (half an acceleration error times dt^2, under the estimates' noise) is
    unpredictable even from the true states: trained on the true residual of the iiwa with 2 kg, the
    velocities of joints 3-7 scored 0.02-0.49 on the next episode (13 of 15 under 0.25), the
    positions 0.13-1.8 (offline, a recorded lockstep run, 2026-12-07). Not each dimension passed on
    its own score (tried): the cart-pole's pole angle and velocity, estimate jitter, scored
    0.42-0.60 by themselves, and the one time the angle's residual was published alone the next
    swing-up failed (bench/transfer.py, 2026-12-07). None: too little data to test.
    """
    newest = np.flatnonzero(data.episode == data.episode.max())
    if len(newest) == len(data):  # one episode: its end, learned from its beginning
        newest = newest[np.argsort(data.stamp[newest], kind="stable")]
        tail = newest[int(len(newest) * (1.0 - tail_fraction)):]
    else:
        tail = newest
    if len(tail) < 10 or len(data) - len(tail) < 20:
        return None
    test = np.zeros(len(data), bool)
    test[tail] = True
    validator = EnsembleDynamics(model.config, model.propagation, device=model.device)
    train_ensemble(validator, data.select(~test), config, cancel)
    x, u, x_next, _ = _on(validator, data.select(test))
    with torch.no_grad():
        residual = x_next - x
        predicted = validator.predict(x, u)[0].mean(0)
        scale = (residual**2).mean(0).clamp(min=1e-12)
        scores = (((residual - predicted) ** 2).mean(0) / scale).tolist()
    dims = tuple(d for d, score in enumerate(scores) if score < 1.0 - min_gain)
    return GeneralizationCheck(dims, tuple(round(v, 4) for v in scores), int(len(tail)), int(len(data) - len(tail)),
                               min_gain)


@dataclass
class TrainOutcome:
    """What a background run hands back: the trained weights (plain tensors) and its scores."""

    state: dict[str, Tensor] | None
    result: TrainResult | None
    error: str | None = None
    data_size: int = 0
    info: dict = field(default_factory=dict)


class BackgroundTrainer:
    """Trains a clone of the model in use on a worker thread (a ``BackgroundJob``); the model in
    use is never touched. ``start`` copies the model (and takes the data snapshot it is given),
    ``poll`` returns the outcome once, when done; the caller validates and publishes or
    hot-swaps ``outcome.state``.

    ``device``: where the copy trains (None: where the model in use is); e.g. a GPU learner for a
    controller planning on the CPU. The outcome's tensors are on that device; ``load_state_``
    and the model message (``encode``) take them from any device. ``prepare``: applied to each
    run's data on the worker thread before training (a residual model's targets). ``residual``:
    each run first checks that a residual generalizes (``check_generalization`` with
    ``residual_min_gain``); one that does not is not trained, and the outcome has no state and the
    check in ``info["check"]``; one that does corrects only the dimensions that passed.
    """

    def __init__(self, config: TrainerConfig = TrainerConfig(), device: torch.device | str | None = None,
                 prepare: Callable[[Transitions], Transitions] | None = None, residual: bool = False,
                 residual_min_gain: float = 0.5) -> None:
        self.config = config
        self.device = None if device is None else torch.device(device)
        self.prepare = prepare
        self.residual = residual
        self.residual_min_gain = residual_min_gain
        self._job: BackgroundJob[TrainOutcome] = BackgroundJob("ensemble-trainer")

    @property
    def busy(self) -> bool:
        return self._job.busy

    def start(self, model: EnsembleDynamics, data: Transitions) -> bool:
        """Begin training a copy of ``model`` on ``data``; False if a run is still going."""
        if self.busy:
            return False
        candidate = model.clone(trainable=True)
        if self.device is not None:
            candidate.to(self.device)

        def run(cancel) -> TrainOutcome:
            prepared = data if self.prepare is None else self.prepare(data)
            check = None
            if self.residual:
                check = check_generalization(candidate, prepared, self.config, min_gain=self.residual_min_gain,
                                             cancel=cancel)
                if check is None or not check.passed:
                    return TrainOutcome(state=None, result=None, data_size=len(data), info={"check": check})
            result = train_ensemble(candidate, prepared, self.config, cancel)
            if check is not None:
                candidate.keep_residual_dims_(check.dims)
            state = {k: v.detach().clone() for k, v in candidate.state_dict().items()}
            return TrainOutcome(state=state, result=result, data_size=len(data), info={"check": check} if self.residual else {})

        return self._job.start(run)

    def poll(self) -> TrainOutcome | None:
        """The finished run's outcome, once; None while running or idle."""
        outcome = self._job.poll()
        if outcome is None:
            return None
        return outcome.value if outcome.error is None else TrainOutcome(state=None, result=None, error=outcome.error)

    def cancel(self) -> None:
        """Ask the run to stop within its current minibatch (it still returns its best weights)."""
        self._job.cancel()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the run; True if it has finished."""
        return self._job.join(timeout)
