"""Monte-Carlo evaluation of an estimator against a simulated truth, for tests and benchmarks.

The truth is a plant model stepped at the physics rate (the sim's own integrator) under the
commands plus white acceleration noise, the unmodelled forces the filter's process noise stands
for. Readings come from any sensor with ``reset/observe/deliver`` (``mbrl_control.sim.sensor``).
The filter is driven as its node would drive it: each command applied at its tick, each reading
fused when it is delivered, stamped with its sample time.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np
import torch
from scipy.stats import chi2

from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.core.estimation.base import Estimator

Policy = Callable[[np.ndarray, np.random.Generator], np.ndarray]  # states [R, nx] -> commands [R, nu]


class Reading(Protocol):
    stamp: float
    position: np.ndarray
    velocity: np.ndarray


class Sensor(Protocol):
    def reset(self, start_time: float = 0.0) -> None: ...

    def observe(self, t: float, position: np.ndarray, velocity: np.ndarray) -> None: ...

    def deliver(self, now: float) -> Sequence[Reading]: ...


@dataclass
class Truth:
    """``runs`` simulated trajectories on one time grid."""

    times: np.ndarray  # [N+1] physics times [s]
    states: np.ndarray  # [R, N+1, nx]
    commands: np.ndarray  # [R, ticks, nu]; the filter is told command k starts at times[k * control_every]
    control_every: int  # physics steps per control tick


@dataclass
class FilterRun:
    tick_times: np.ndarray  # [K] control ticks at which the filter was initialised
    tick_errors: np.ndarray  # [K, nx] estimate - truth at the tick (angles wrapped)
    tick_nees: np.ndarray  # [K]
    tick_stale: np.ndarray  # [K] the status' stale flag at the tick
    nis: dict[float, float]  # the fused reading's stamp (rounded to 1 ns) -> NIS
    velocity_errors: np.ndarray  # [M, nq] right after each fused reading
    finite_difference_errors: np.ndarray  # [M', nq] of consecutive readings' differences
    outcomes: list[tuple[float, str, bool]]  # per delivered reading: (stamp, injected fault, accepted)
    predict_seconds: np.ndarray  # per apply_command (the prediction to the tick)
    update_seconds: np.ndarray  # per delivered reading
    finite: bool = True  # the estimate never became NaN or inf
    extra: dict = field(default_factory=dict)


def cart_excitation(position_gain: float, velocity_gain: float, force_std: float, force_limit: float) -> Policy:
    """Keeps a cart-pole's cart near the origin and shakes it: ``-kp x - kd xd + noise``, clipped."""

    def policy(states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        nq = states.shape[1] // 2
        force = -position_gain * states[:, 0] - velocity_gain * states[:, nq] + force_std * rng.standard_normal(len(states))
        return np.clip(force, -force_limit, force_limit)[:, None]

    return policy


def simulate_truth(
    plant: DynamicsModel,
    x0: np.ndarray,
    ticks: int,
    control_every: int,
    policy: Policy,
    accel_noise_density: Sequence[float],
    rng: np.random.Generator,
    command_delay_steps: tuple[int, int] = (0, 0),
) -> Truth:
    """All runs at once (batched): ``plant`` steps one physics period ``plant.dt``.

    The acceleration noise is added to the velocities after each step, and its effect on the
    positions too (``h dv``), as the semi-implicit Euler step would have integrated it.
    ``command_delay_steps`` (low, high): the plant takes up each command a uniformly drawn number
    of physics steps in [low, high] after its tick (per run and tick; the previous command runs
    meanwhile), while ``Truth.commands`` says it started at the tick: a realtime transport's
    delay the filter does not know of. (0, 0), the default, draws nothing from ``rng``.
    """
    h, nq = plant.dt, plant.state_dim // 2
    scale = np.sqrt(np.asarray(accel_noise_density, dtype=np.float64) * h)
    low, high = command_delay_steps
    if not 0 <= low <= high < control_every:
        raise ValueError(f"command_delay_steps {command_delay_steps} must satisfy 0 <= low <= high < {control_every}")
    x = np.array(x0, dtype=np.float64)
    states, commands = [x.copy()], []
    previous = None
    for _ in range(ticks):
        u = policy(x, rng)
        commands.append(u)
        delay = rng.integers(low, high + 1, size=(len(x), 1)) if high > 0 else np.zeros((len(x), 1), dtype=np.int64)
        before = u if previous is None else previous
        previous = u
        for step in range(control_every):
            ut = torch.from_numpy(np.where(step < delay, before, u))
            x = plant.step(torch.from_numpy(x), ut).numpy().copy()
            dv = scale * rng.standard_normal((len(x), nq))
            x[:, nq:] += dv
            x[:, :nq] += h * dv
            states.append(x.copy())
    times = np.arange(ticks * control_every + 1) * h
    return Truth(times, np.stack(states, axis=1), np.stack(commands, axis=1), control_every)


def run_filter(estimator: Estimator, truth: Truth, run: int, sensor: Sensor, angular_joints: Sequence[bool]) -> FilterRun:
    """Drive ``estimator`` through run ``run`` of ``truth`` with readings from ``sensor``."""
    states, commands, h = truth.states[run], truth.commands[run], truth.times[1] - truth.times[0]
    nq = states.shape[1] // 2
    angles = np.flatnonzero(angular_joints)
    estimator.reset()
    sensor.reset(truth.times[0])
    ticks, errors, nees, stale, nis = [], [], [], [], {}
    velocity_errors, fd_errors, outcomes, predict_s, update_s = [], [], [], [], []
    previous = None  # the last well-formed reading, for finite differences
    finite = True

    def index(t: float) -> int:
        return int(round((t - truth.times[0]) / h))

    def error(mean: np.ndarray, i: int) -> np.ndarray:
        e = mean - states[i]
        e[angles] = np.remainder(e[angles] + math.pi, 2 * math.pi) - math.pi
        return e

    for i, t in enumerate(truth.times):
        sensor.observe(t, states[i, :nq], states[i, nq:])
        for reading in sensor.deliver(t):
            z = np.concatenate([reading.position, reading.velocity])
            start = time.perf_counter()
            accepted = estimator.update(z, reading.stamp)
            update_s.append(time.perf_counter() - start)
            outcomes.append((reading.stamp, getattr(reading, "fault", ""), accepted))
            finite &= bool(np.isfinite(estimator.mean).all() and np.isfinite(estimator.cov).all())
            if accepted:
                velocity_errors.append(error(estimator.mean, index(estimator.time))[nq:])
                nis_value = getattr(estimator, "last_nis", math.nan)
                if math.isfinite(nis_value):
                    nis[round(reading.stamp, 9)] = nis_value
            p = reading.position
            if p.shape == (nq,) and np.isfinite(p).all():
                if previous is not None and reading.stamp > previous.stamp:
                    step = p - previous.position
                    step[angles] = np.remainder(step[angles] + math.pi, 2 * math.pi) - math.pi
                    fd = step / (reading.stamp - previous.stamp)
                    fd_errors.append(fd - states[index(reading.stamp), nq:])
                previous = reading
        tick = i // truth.control_every
        if i % truth.control_every == 0 and tick < len(commands):
            start = time.perf_counter()
            estimator.apply_command(commands[tick], t)
            predict_s.append(time.perf_counter() - start)
            if estimator.initialized:
                e = error(estimator.mean, i)
                ticks.append(t)
                errors.append(e)
                nees.append(float(e @ np.linalg.solve(estimator.cov, e)))
                stale.append(estimator.status(t).stale)
    nx = states.shape[1]
    return FilterRun(
        tick_times=np.array(ticks),
        tick_errors=np.array(errors).reshape(-1, nx),
        tick_nees=np.array(nees),
        tick_stale=np.array(stale, dtype=bool),
        nis=nis,
        velocity_errors=np.array(velocity_errors).reshape(-1, nq),
        finite_difference_errors=np.array(fd_errors).reshape(-1, nq),
        outcomes=outcomes,
        predict_seconds=np.array(predict_s),
        update_seconds=np.array(update_s),
        finite=finite,
    )


def chi2_interval(dof: int, runs: int, probability: float = 0.95) -> tuple[float, float]:
    """Two-sided interval of the mean of ``runs`` independent chi-square(``dof``) samples."""
    tail = (1.0 - probability) / 2.0
    return float(chi2.ppf(tail, dof * runs) / runs), float(chi2.ppf(1.0 - tail, dof * runs) / runs)


def consistency(runs: Sequence[FilterRun], state_dim: int, measurement_dim: int, burn_in: float = 0.5) -> dict[str, float]:
    """Bar-Shalom's Monte-Carlo tests: NEES (at the ticks) and NIS (per reading), each averaged over
    the runs at every instant, then over time, against the interval of an average over the runs.
    ``burn_in`` seconds after the first tick are left out (the filter starts from a loose prior).
    Also the shares of instants whose run average lies inside, below and above the interval (a
    consistent filter has about 95 % inside) and the sample counts behind each figure."""
    start = min(r.tick_times[0] for r in runs) + burn_in
    length = min(len(r.tick_times) for r in runs)
    nees = np.stack([r.tick_nees[:length] for r in runs])[:, np.asarray(runs[0].tick_times[:length]) >= start]
    stamps = sorted(s for s in set.intersection(*(set(r.nis) for r in runs)) if s >= start)
    nis = np.array([[r.nis[s] for s in stamps] for r in runs]).reshape(len(runs), -1)
    nees_lo, nees_hi = chi2_interval(state_dim, len(runs))
    nis_lo, nis_hi = chi2_interval(measurement_dim, len(runs))
    nees_by_time, nis_by_time = nees.mean(axis=0), nis.mean(axis=0)
    if not nis_by_time.size:  # no reading was fused at the same stamp in every run
        nis_by_time = np.full(1, math.nan)
    return {
        "runs": len(runs),
        "nees_mean": float(nees_by_time.mean()),
        "nees_lo": nees_lo,
        "nees_hi": nees_hi,
        "nees_inside_fraction": float(np.mean((nees_by_time >= nees_lo) & (nees_by_time <= nees_hi))),
        "nees_below_fraction": float(np.mean(nees_by_time < nees_lo)),
        "nees_above_fraction": float(np.mean(nees_by_time > nees_hi)),
        "nees_instants": int(nees.shape[1]),
        "nees_samples": int(nees.size),
        "nis_mean": float(nis_by_time.mean()),
        "nis_lo": nis_lo,
        "nis_hi": nis_hi,
        "nis_inside_fraction": float(np.mean((nis_by_time >= nis_lo) & (nis_by_time <= nis_hi))),
        "nis_below_fraction": float(np.mean(nis_by_time < nis_lo)),
        "nis_above_fraction": float(np.mean(nis_by_time > nis_hi)),
        "nis_instants": int(nis.shape[1]),
        "nis_samples": int(nis.size),
    }


def rmse(errors: Sequence[np.ndarray]) -> np.ndarray:
    """Root mean square per component over all the rows of all the arrays."""
    return np.sqrt(np.mean(np.square(np.concatenate(errors)), axis=0))
