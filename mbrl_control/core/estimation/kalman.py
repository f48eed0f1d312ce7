"""What the EKF and the UKF share: the measurement update, gating, delay compensation, health.

The measurement is the joints' positions (and velocities, if the encoders report them): linear in
the state, so the Kalman update below is exact for both filters (the unscented transform of a
linear function is the linear transform); they differ only in how they predict.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections import Counter, deque
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
from scipy.special import chdtri  # the chi-square quantile; scipy.stats costs 0.75 s to import

from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.core.estimation.base import REJECT_REASONS, Estimator, EstimatorStatus
from mbrl_control.core.estimation.process import ProcessModel
from mbrl_control.core.util import setting

TIME_EPS = 1e-9  # stamps closer than this are the same instant [s]
REACTION_PROBE = 1.0  # effort added to find a stop's reaction [N, N m]; any size: the step is affine in it


@dataclass(frozen=True)
class EstimatorConfig:
    """``estimator.*``. Per-joint tuples are in the state's joint order; one value stands for every
    joint (``for_joints``). The defaults are generic; a robot's parameter file sets its own (the
    measurement noise from its encoders' data sheet, equal to the sim's ``sensor.*``).
    """

    position_noise_std: tuple[float, ...] = setting(
        (1e-3,), "reading noise per joint [m, rad] (one value: every joint's)", 1e-9, 1.0)
    position_resolution: tuple[float, ...] = setting(
        (0.0,), "encoder step per joint (adds step^2/12 to the reading variance)", 0.0, 0.1)
    measure_velocity: bool = setting(False, "readings are [positions, velocities], not positions only")
    velocity_noise_std: tuple[float, ...] = setting(
        (0.01,), "velocity reading noise per joint [m/s, rad/s], when measured", 1e-9, 10.0)
    accel_noise_density: tuple[float, ...] = setting(
        (1.0,), "unmodelled acceleration per joint [m^2/s^3, rad^2/s^3]", 0.0, 100.0)
    initial_velocity_std: tuple[float, ...] = setting(
        (1.0,), "velocity prior per joint at (re)initialisation [m/s, rad/s]", 0.01, 100.0)
    # An effort the model does not know (a payload's weight, friction, a motor gain off), estimated
    # as part of the state: the model predicts under the command plus it, so the velocities follow
    # the robot rather than the model (a disturbance observer). EKF only.
    effort_disturbance_density: tuple[float, ...] = setting(
        (0.0,), "random-walk density of an unknown effort on each command entry, estimated with the state "
                "[N^2/s, N^2 m^2/s] (one value: every entry's; 0: none estimated)", 0.0, 1e6)
    initial_disturbance_std: tuple[float, ...] = setting(
        (10.0,), "that effort's prior std per command entry at (re)initialisation [N, N m]", 1e-6, 1e4)
    gate_probability: float = setting(0.999, "chi-square gate on the innovations; 1 disables gating", 0.9, 1.0)
    # This many gated readings in a row that agree with each other (one trajectory, moving no faster
    # than 3 initial_velocity_std): re-initialise from them (0: never). Disagreeing ones (spikes) never
    # do, and after them no reading is fused until this many agree again.
    reinit_after_rejections: int = setting(
        20, "re-initialise after this many gated readings in a row that agree with each other (0: never)", 0, 1000)
    held_until_commanded: bool = setting(
        False, "the robot stands still until its first command (brakes, a drive holding position): predict no "
               "motion before it, not the model under zero effort (an arm would fall)")
    delay_compensation: bool = setting(True, "fuse a late reading at its stamp, then re-predict to now")
    history_duration: float = setting(0.5, "oldest reading fused [s] (>= the worst latency)", 0.0, 5.0)
    max_future: float = setting(0.1, "readings stamped further ahead of the estimate are rejected [s]", 0.0, 1.0)
    max_prediction: float = setting(
        1.0, "a longer single prediction is a clock jump: forget the estimate; a reading after longer without "
             "one starts the estimate over [s]", 0.05, 60.0)
    stale_after: float = setting(0.1, "no reading fused for this long: stale [s] (the launch sets it to the "
                                      "controller's state_timeout)", 0.001, 10.0)
    stale_position_std: tuple[float, ...] = setting(
        (0.1,), "position std per joint above this: stale [m, rad]", 1e-4, 10.0)
    stale_velocity_std: tuple[float, ...] = setting(
        (1.0,), "velocity std per joint above this: stale [m/s, rad/s]", 1e-3, 100.0)
    limit_tolerance: float = setting(
        0.005, "a commanded joint this close to its travel limit (or past it), known to move no more than this "
               "in a model step, rests on its stop: the stop holds it [m, rad]", 0.0, 0.1)
    nis_window: int = setting(100, "readings in the running NIS mean", 1, 100000)
    ukf_alpha: float = setting(1.0, "UKF sigma-point spread", 1e-3, 1.0)
    ukf_beta: float = setting(2.0, "UKF prior knowledge of the distribution, 2 for Gaussian", 0.0, 10.0)
    ukf_kappa: float = setting(0.0, "UKF secondary scaling", -3.0, 10.0)
    compile: bool = setting(True, "torch.compile the model evaluations (eager without a compiler)")

    PER_JOINT = ("position_noise_std", "position_resolution", "velocity_noise_std", "accel_noise_density",
                 "initial_velocity_std", "stale_position_std", "stale_velocity_std")

    def for_joints(self, nq: int) -> "EstimatorConfig":
        """This config with every one-value per-joint tuple repeated for ``nq`` joints (one value
        in a parameter file stands for every joint); others are left for the filter to check."""
        return dataclasses.replace(self, **{name: tuple(getattr(self, name)) * nq for name in self.PER_JOINT
                                            if len(getattr(self, name)) == 1})

    def measurement_variance(self) -> np.ndarray:
        pos = np.square(self.position_noise_std) + np.square(self.position_resolution) / 12.0
        return np.concatenate([pos, np.square(self.velocity_noise_std)]) if self.measure_velocity else pos


class _Snapshot(NamedTuple):
    time: float  # the estimate (mean, cov) at this time ...
    mean: np.ndarray
    cov: np.ndarray
    command: np.ndarray  # ... and the command applied from then until the next snapshot


class KalmanFilter(Estimator):
    """A Gaussian filter on the controller's ``DynamicsModel``; subclasses say how to predict.

    Delay compensation keeps the estimate (mean, covariance) and the command at the start of every
    prediction for ``history_duration`` seconds. A reading stamped in the past is fused at its
    stamp, from the snapshot before it, and the estimate is re-predicted to the present with the
    commands that were actually applied in between. Readings must arrive in stamp order; an older
    one than the last fused is rejected (re-fusing out-of-order readings would need the whole
    history re-run, and a transport delivers in order anyway).

    Before its first command a robot may stand on its brakes (``held_until_commanded``): the
    estimate is then predicted not to move (velocities zero, covariance grown by the process
    noise); from the first command on, the model predicts. Predicting a braked arm under zero
    effort makes it fall in the model, into its end stops, and every reading is gated.

    The estimate never becomes NaN: readings are validated before use, a prediction that turns
    non-finite is replaced by the old mean with grown covariance, and covariances are kept
    symmetric (Joseph-form update).

    Joint limits (``position_limits``, the URDF's travel limits): the model knows no end stops, so
    a prediction that carries a joint on past its limit is an impact (or a push against the stop)
    the model cannot predict. The joint is held at its limit with zero velocity, and the velocities'
    covariance is reset to the re-initialisation prior (the impact moves every joint; the positions'
    grows by as much as that prior moves them over the step): the estimate
    says it no longer knows the velocities, and is stale (``stale_velocity_std``) until readings
    have pinned them down again, instead of dead-reckoning a robot through its end stop (counted as
    the event ``limit_contact``). A commanded joint already resting on its stop, and known to be
    slow, is not a new impact: the stop holds it (``_against_the_stops``, event ``limit_rest``).
    """

    def __init__(
        self,
        model: DynamicsModel,
        config: EstimatorConfig = EstimatorConfig(),
        angular_joints: Sequence[bool] | None = None,
        position_limits: Sequence[tuple[float, float]] | None = None,
        command_index: Sequence[int] | None = None,
    ) -> None:
        config = config.for_joints(model.state_dim // 2)
        self.config = config
        nu = model.action_dim
        disturbance = _per_command(config.effort_disturbance_density, nu, "effort_disturbance_density")
        self._disturbance_var = np.square(_per_command(config.initial_disturbance_std, nu, "initial_disturbance_std"))
        disturbance = disturbance if np.any(disturbance > 0) else np.zeros(0)
        self.process = ProcessModel(model, config.accel_noise_density, compile=config.compile,
                                    disturbance_density=disturbance)
        nq = self.process.nq
        self.state_dim, self.action_dim = 2 * nq, nu
        # The filter's own state: the robot's, then the estimated effort disturbance (if any).
        self._nx, self._n = 2 * nq, 2 * nq + self.process.nd
        per_joint = ("position_noise_std", "position_resolution", "velocity_noise_std", "initial_velocity_std",
                     "stale_position_std", "stale_velocity_std")
        for name in per_joint:
            if len(getattr(config, name)) != nq:
                raise ValueError(f"estimator config '{name}' needs {nq} values (one per joint)")
        if not 0.0 < config.gate_probability <= 1.0 or config.nis_window < 1 or config.history_duration < 0:
            raise ValueError("need 0 < gate_probability <= 1, nis_window >= 1, history_duration >= 0")
        angular = tuple(angular_joints) if angular_joints is not None else (False,) * nq
        if len(angular) != nq:
            raise ValueError(f"angular_joints needs {nq} flags")
        self._angles = np.flatnonzero(angular)  # measured positions that are angles (wrap innovations)
        limits = np.array(position_limits if position_limits is not None else [(-math.inf, math.inf)] * nq, dtype=float)
        if limits.shape != (nq, 2) or np.any(limits[:, 0] >= limits[:, 1]):
            raise ValueError(f"position_limits needs {nq} (lower, upper) pairs with lower < upper")
        self._lower, self._upper = limits[:, 0], limits[:, 1]
        # The command entry of each joint that has one (``command_index``: the state joint of each
        # command entry); only a commanded joint's stop reaction can be given to the model.
        self._command_of_joint = np.full(nq, -1)
        for c, j in enumerate(command_index or ()):
            self._command_of_joint[j] = c
        self._commanded_joint = self._command_of_joint >= 0
        self._measured_count = 2 * nq if config.measure_velocity else nq
        self._measurement_cov = np.diag(config.measurement_variance())
        self._gate = chdtri(self._measured_count, 1.0 - config.gate_probability) if config.gate_probability < 1 else math.inf
        self._initial_velocity_var = np.square(config.initial_velocity_std)
        self._stale_std = np.concatenate([config.stale_position_std, config.stale_velocity_std])
        self._eye = np.eye(self._n)
        self.reset()

    # -- interface -----------------------------------------------------------------------------
    def reset(self) -> None:
        self._mean = np.zeros(self._n)
        self._cov = np.eye(self._n)
        self._time = math.nan
        self._command = np.zeros(self.action_dim)
        self._commanded = False  # a command has arrived (held_until_commanded: motion starts with it)
        self._history: deque[_Snapshot] = deque()
        self._early_commands: deque[tuple[float, np.ndarray]] = deque()  # (time, command) before the first reading
        self._last_stamp = -math.inf
        self._gated_in_a_row = 0
        self._gated: deque[tuple[float, np.ndarray]] = deque(maxlen=max(1, self.config.reinit_after_rejections))
        self._distrust = False  # after readings that jumped about: none fused until they agree
        self._fusing_at = math.nan
        self.accepted = 0
        self.rejected: Counter[str] = Counter({r: 0 for r in REJECT_REASONS})
        self.events: Counter[str] = Counter()
        self._nis = np.full(self.config.nis_window, math.nan)
        self._nis_count = 0
        self.last_nis = math.nan

    @property
    def mean(self) -> np.ndarray:
        return self._mean[: self._nx].copy()

    @property
    def cov(self) -> np.ndarray:
        return self._cov[: self._nx, : self._nx].copy()

    @property
    def disturbance(self) -> tuple[np.ndarray, np.ndarray]:
        """The estimated effort disturbance per command entry and its std (empty when none is
        estimated: ``effort_disturbance_density`` 0)."""
        nx = self._nx
        return self._mean[nx:].copy(), np.sqrt(np.maximum(np.diag(self._cov)[nx:], 0.0))

    @property
    def time(self) -> float:
        return self._time

    @property
    def command(self) -> np.ndarray:
        return self._command.copy()

    def predicted(self, t: float, commands: Sequence[tuple[float, np.ndarray]] = ()) -> tuple[np.ndarray, np.ndarray]:
        nx = self._nx
        if not self.initialized or t <= self._time + TIME_EPS:
            return self.mean, self.cov
        events = self.events.copy()
        mean, cov, at, u = self._mean, self._cov, self._time, self._command
        for start, command in commands:
            if at < start < t:
                mean, cov = self._safe_propagate(mean, cov, u, start - at)
                at = start
            if start < t:
                u = self._checked_command(command)
        mean, cov = self._safe_propagate(mean, cov, u, t - at)
        self.events = events  # a look-ahead's end-stop contacts are counted when the estimate gets there
        return mean[:nx].copy(), cov[:nx, :nx].copy()

    def predict(self, u: np.ndarray, dt: float) -> None:
        u = self._checked_command(u)
        dt = float(dt)
        if not math.isfinite(dt) or dt < 0:
            self.events["bad_dt"] += 1
            return
        if self.initialized and dt > self.config.max_prediction:
            self.events["time_jump"] += 1  # a clock jump, not a gap: start over from the next reading
            self.reset_estimate()
        if self.initialized and dt > TIME_EPS:
            self._history.append(_Snapshot(self._time, self._mean, self._cov, u))
            self._mean, self._cov = self._safe_propagate(self._mean, self._cov, u, dt)
            self._time += dt
            self._forget_old_snapshots()
        self._command = u

    def update(self, z: np.ndarray, stamp: float) -> bool:
        try:
            z = np.asarray(z, dtype=np.float64).reshape(-1)
            stamp = float(stamp)
        except (TypeError, ValueError):
            return self._reject("invalid")
        if z.shape[0] != self._measured_count:
            return self._reject("wrong_length")
        if not (np.isfinite(z).all() and math.isfinite(stamp)):
            return self._reject("nonfinite")
        if not self.initialized:
            self._mean, self._cov = self._initial_estimate(z)
            self._time = stamp
            self._history.clear()
            self.last_nis = math.nan
            self._catch_up_with_early_commands()
            return self._accept(stamp)
        if stamp <= self._last_stamp + TIME_EPS:
            return self._reject("out_of_order")
        if stamp > self._time + self.config.max_future:
            return self._reject("future")
        if stamp - self._last_stamp > self.config.max_prediction:
            # Nothing fused for longer than any prediction is trusted: the estimate is the model's
            # guess alone, and fusing would only drag it along (an arm predicted for 5 s under its
            # last command, its sim restarting, had thrown itself into its stops in the model, and
            # the restarted arm's first readings left its velocities 8-17 rad/s off). Start over.
            self._mean, self._cov = self._restart_from(z, "reinitialized_after_gap")
            self._time = stamp
            self._history.clear()
            return self._accept(stamp)
        if self._time - stamp > self.config.history_duration:
            return self._reject("too_old")
        # Without compensation a late reading is fused as if it were taken now.
        at = stamp if self.config.delay_compensation else max(stamp, self._time)
        return self._accept(stamp) if self._fuse(at, z) else False

    def apply_command(self, u: np.ndarray, t: float, timing_std: float = 0.0) -> None:
        if self.initialized and t < self._time - TIME_EPS and self.config.delay_compensation:
            self._apply_late_command(u, t, timing_std)
            return
        if self.initialized:
            self.predict_to(t)  # as before (held, if still uncommanded), then u
            u = self._checked_command(u)
            self._cov = self._switch_doubt(self._mean, self._cov, self._command, u, timing_std)
            self.predict(u, 0.0)
            self._commanded = True
            return
        self._commanded = True
        # Before the first reading there is no estimate to advance, but the first reading arrives
        # late: remember when each command started, to predict from that reading's stamp with them.
        self._command = self._checked_command(u)
        self._early_commands.append((float(t), self._command))
        while len(self._early_commands) > 1 and self._early_commands[1][0] <= t - self.config.history_duration:
            self._early_commands.popleft()

    def status(self, now: float | None = None) -> EstimatorStatus:
        now = self._time if now is None else now
        std = np.sqrt(np.maximum(np.diag(self._cov)[: self._nx], 0.0))
        age = now - self._last_stamp if self.initialized else math.inf
        stale = not self.initialized or age > self.config.stale_after or bool(np.any(std > self._stale_std))
        filled = self._nis[: min(self._nis_count, len(self._nis))]
        return EstimatorStatus(
            initialized=self.initialized,
            stale=stale,
            time=self._time,
            measurement_age=age,
            std=std,
            accepted=self.accepted,
            rejected=dict(self.rejected),
            events=dict(self.events),
            nis_mean=float(filled.mean()) if filled.size else math.nan,
            nis_dof=self._measured_count,
            disturbance=self.disturbance[0] if self.process.nd else None,
        )

    def warm_up(self) -> None:
        """Compile the model evaluations now (seconds, once per model and process) rather than on
        the first control tick; then start over, counters included."""
        self.update(np.zeros(self._measured_count), 0.0)
        self._commanded = True  # the model's predictions, even for a robot held until commanded
        self.predict(self._command, self.process.dt)
        self.predict(self._command, 0.5 * self.process.dt)
        self._switch_acceleration(self._mean, self._command, self._command + 1.0)
        self.reset()

    def reset_estimate(self) -> None:
        """Uninitialise, keeping the counters: the next valid reading starts a new estimate."""
        self._time = math.nan
        self._history.clear()
        self._early_commands.clear()
        self._last_stamp = -math.inf
        self._gated_in_a_row = 0
        self._gated.clear()
        self._distrust = False

    # -- the noise model, changed at runtime by a node between its ticks -------------------------
    NOISE_SETTINGS = ("position_noise_std", "velocity_noise_std", "accel_noise_density")

    def noise_problem(self, **noise: Sequence[float]) -> str | None:
        """Why ``noise`` (``NOISE_SETTINGS``, one value per joint or one for all) cannot be used
        (None: it can)."""
        unknown = set(noise) - set(self.NOISE_SETTINGS)
        if unknown:
            return f"no runtime noise setting {sorted(unknown)} (they are {', '.join(self.NOISE_SETTINGS)})"
        nq = self.process.nq
        for name, values in noise.items():
            values = np.asarray(values, dtype=np.float64)
            if values.shape not in ((1,), (nq,)):
                return f"'{name}' needs {nq} values (one per joint) or one for all, got {values.size}"
            positive = name != "accel_noise_density"  # a reading is never exact; a model may be
            if not np.all(np.isfinite(values)) or np.any(values <= 0 if positive else values < 0):
                return f"'{name}' must be finite and {'> 0' if positive else '>= 0'}, got {values.tolist()}"
        return None

    def set_noise(self, **noise: Sequence[float]) -> None:
        """Predict and fuse with ``noise`` from now on (the estimate is kept); ValueError
        (``noise_problem``'s reason) and no change if it does not fit. The compiled model
        evaluations take the noise as an input: nothing recompiles."""
        problem = self.noise_problem(**noise)
        if problem:
            raise ValueError(problem)
        config = dataclasses.replace(self.config, **{k: tuple(v) for k, v in noise.items()}).for_joints(self.process.nq)
        self.process.set_density(config.accel_noise_density)
        self._measurement_cov = np.diag(config.measurement_variance())
        self.config = config

    # -- prediction, by the subclass -----------------------------------------------------------
    @abc.abstractmethod
    def _propagate(self, mean: np.ndarray, cov: np.ndarray, u: np.ndarray, duration: float) -> tuple[np.ndarray, np.ndarray]:
        """Mean and (symmetric) covariance ``duration`` seconds later under command ``u``."""

    def _safe_propagate(self, mean: np.ndarray, cov: np.ndarray, u: np.ndarray, duration: float) -> tuple[np.ndarray, np.ndarray]:
        if duration <= TIME_EPS:
            return mean, cov
        if self.config.held_until_commanded and not self._commanded:
            # Held still: the velocities are known to be zero (as well as the process noise
            # allows); the positions keep what the readings told, with the noise's doubt added.
            nq, nx, noise = self.process.nq, self._nx, self.process.noise(duration)
            held, held_cov = mean.copy(), cov + noise
            held[nq:nx] = 0.0
            held_cov[nq:nx, :] = 0.0
            held_cov[:, nq:nx] = 0.0
            held_cov[nq:nx, nq:nx] = noise[nq:nx, nq:nx]
            return held, held_cov
        new_mean, new_cov = self._propagate(mean, cov, u, duration)
        if np.isfinite(new_mean).all() and np.isfinite(new_cov).all():
            new_mean, new_cov, resting = self._against_the_stops(mean, cov, u, duration, new_mean, new_cov)
            return self._at_limits(mean, new_mean, new_cov, duration, resting)
        # A model that diverged (a learned one far from its data): hold the mean, grow the doubt.
        self.events["nonfinite_prediction"] += 1
        return mean, cov + self.process.noise(duration)

    def _against_the_stops(self, before: np.ndarray, cov: np.ndarray, u: np.ndarray, duration: float,
                           mean: np.ndarray, new_cov: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A commanded joint that rests on its end stop and is pushed into it stays there: the
        stop's reaction is an effort on that joint, the one that keeps its velocity at zero, and
        the model (given it) predicts what the other joints do meanwhile (a cart held by its stop
        swings its pole as a held cart does). Solved from the model itself (the step is affine in
        the effort: one extra prediction per resting joint); a reaction that would have to pull
        is no stop's, that joint leaves it. Returns the prediction and the resting joints."""
        nq = self.process.nq
        q0, q = before[:nq], mean[:nq]
        tol = self.config.limit_tolerance
        # Known to be slow (a step's travel within the tolerance, two sigmas included): an impact's
        # aftermath, velocities unknown, is not a rest (it may bounce).
        speed = np.abs(before[nq : 2 * nq]) + 2.0 * np.sqrt(np.maximum(np.diag(cov)[nq : 2 * nq], 0.0))
        slow = speed * self.process.dt <= tol
        resting = self._commanded_joint & slow & (((q0 <= self._lower + tol) & (q < q0)) | ((q0 >= self._upper - tol) & (q > q0)))
        if not resting.any():
            return mean, new_cov, resting
        self.events["limit_rest"] += 1
        # The reaction that stops them within one model step (probing a longer prediction would
        # cost a prediction per step per joint); held for the whole duration.
        probe = min(duration, self.process.dt)
        free = mean if probe == duration else self._propagate(before, cov, u, probe)[0]
        for _ in range(2):  # the second pass without joints whose reaction would pull
            joints = np.flatnonzero(resting)
            cmd = self._command_of_joint[joints]
            sensitivity = np.empty((len(joints), len(joints)))
            for k, c in enumerate(cmd):
                pushed = u.copy()
                pushed[c] += REACTION_PROBE
                sensitivity[:, k] = (self._propagate(before, cov, pushed, probe)[0][nq + joints] - free[nq + joints]) / REACTION_PROBE
            try:
                reaction = np.linalg.solve(sensitivity, -free[nq + joints])
            except np.linalg.LinAlgError:
                return mean, new_cov, np.zeros(nq, dtype=bool)
            at_lower = q0[joints] <= self._lower[joints] + tol
            pulls = np.where(at_lower, reaction < 0, reaction > 0)
            if not pulls.any():
                break
            resting[joints[pulls]] = False
            if not resting.any():
                return mean, new_cov, resting
        else:
            return mean, new_cov, np.zeros(nq, dtype=bool)
        held = u.copy()
        np.add.at(held, cmd, reaction)
        mean, new_cov = self._propagate(before, cov, held, duration)
        mean = mean.copy()
        mean[joints] = q0[joints]  # at the stop; the velocities are zero as solved
        mean[nq + joints] = 0.0
        return mean, new_cov, resting

    def _at_limits(self, before: np.ndarray, mean: np.ndarray, cov: np.ndarray, duration: float,
                   resting: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A prediction over ``duration`` that carried a joint on past its travel limit: an end
        stop the model does not know (see the class docstring). The positions may have moved by
        the prior's velocities over the step too: the readings taken during the impact must pass
        the gate. ``resting`` joints were already on their stop (``_against_the_stops``)."""
        nq = self.process.nq
        q, q0 = mean[:nq], before[:nq]
        hit = ((q < self._lower) & (q < q0)) | ((q > self._upper) & (q > q0))
        if resting is not None:
            hit &= ~resting
        if not hit.any():
            return mean, cov
        self.events["limit_contact"] += 1
        mean, cov, nx = mean.copy(), cov.copy(), self._nx
        mean[:nq][hit] = np.clip(q[hit], self._lower[hit], self._upper[hit])
        mean[nq:nx][hit] = 0.0
        cov[nq:nx, :] = 0.0
        cov[:, nq:nx] = 0.0
        cov[nq:nx, nq:nx] = np.diag(self._initial_velocity_var)
        cov[:nq, :nq] += np.diag(self._initial_velocity_var) * duration**2
        return mean, cov

    # -- fusion --------------------------------------------------------------------------------
    def _fuse(self, at: float, z: np.ndarray) -> bool:
        """Fuse ``z`` at time ``at``: ahead of the estimate, at it, or in its recent past."""
        self._fusing_at = at
        if at > self._time + TIME_EPS:  # ahead: the held command stays applied until then
            self.predict(self._command, at - self._time)
        if at >= self._time - TIME_EPS:
            corrected = self._correct(self._mean, self._cov, z)
            if corrected is not None:
                self._mean, self._cov = corrected
            return corrected is not None
        # In the past: restart from the last snapshot at or before the stamp.
        index = self._snapshot_before(at)
        if index is None:
            return self._reject("too_old")
        start = self._history[index]
        mean, cov = self._safe_propagate(start.mean, start.cov, start.command, at - start.time)
        corrected = self._correct(mean, cov, z)
        if corrected is None:
            return False
        # Re-predict to the present with the commands applied since; older snapshots can never be
        # used again (later readings must be newer than this one).
        replay = list(self._history)[index + 1 :]
        mean, cov = corrected
        self._history = deque([_Snapshot(at, mean, cov, start.command)])
        t, u = at, start.command
        for snap in replay:
            mean, cov = self._safe_propagate(mean, cov, u, snap.time - t)
            self._history.append(_Snapshot(snap.time, mean, cov, snap.command))
            t, u = snap.time, snap.command
        self._mean, self._cov = self._safe_propagate(mean, cov, u, self._time - t)
        return True

    def _correct(self, mean: np.ndarray, cov: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Kalman update with the chi-square gate; None (counted) if the reading is an outlier."""
        m, angles = self._measured_count, self._angles  # measured: the first m state entries
        difference = z - mean[:m]
        innovation = difference.copy()
        innovation[angles] = _wrap(difference[angles])  # angle-safe: 2 pi apart is 0 apart
        try:
            s_inv = np.linalg.inv(cov[:m, :m] + self._measurement_cov)
        except np.linalg.LinAlgError:
            s_inv = None
        nis = math.nan if s_inv is None else float(innovation @ s_inv @ innovation)
        if not math.isfinite(nis) or nis < 0.0:
            # A covariance the prediction broke (not positive definite): a filter that trusts
            # nothing it holds starts over from the reading, rather than crash or never fuse again.
            return self._restart_from(z, "broken_covariance")
        if not nis <= self._gate or self._distrust:
            self._gated_in_a_row += 1
            self._gated.append((self._fusing_at, z.copy()))
            limit = self.config.reinit_after_rejections
            if limit and self._gated_in_a_row >= limit:
                if self._one_trajectory(self._gated):
                    # Persistently far from every reading, which agree: the estimate, not the sensor, is wrong.
                    return self._restart_from(z, "reinitialized")
                if not self._distrust:
                    # Readings jumping about (spikes): the sensor is faulty. Keep the estimate, and fuse
                    # nothing (the gate widens as the estimate ages, and would take a spike) until the
                    # readings agree with each other again: then they re-initialise it.
                    self.events["reinit_refused"] += 1
                    self._distrust = True
            self._reject("distrusted" if nis <= self._gate else "gate")
            return None
        self._gated_in_a_row = 0
        self._gated.clear()
        gain = cov[:, :m] @ s_inv
        mean = mean + gain @ innovation
        # Report angles on the reading's turn, so the estimate follows the encoder's convention.
        mean[angles] += difference[angles] - innovation[angles]
        residual = self._eye.copy()
        residual[:, :m] -= gain
        cov = residual @ cov @ residual.T + gain @ self._measurement_cov @ gain.T  # Joseph: stays PSD
        self._record_nis(nis)
        return mean, 0.5 * (cov + cov.T)

    def _restart_from(self, z: np.ndarray, event: str) -> tuple[np.ndarray, np.ndarray]:
        """A new estimate from reading ``z`` (counted as ``event``), the gating history forgotten."""
        self.events[event] += 1
        self._gated_in_a_row = 0
        self._gated.clear()
        self._distrust = False
        self.last_nis = math.nan
        return self._initial_estimate(z)

    def _one_trajectory(self, readings: deque[tuple[float, np.ndarray]]) -> bool:
        """Whether consecutive readings' positions could come from one motion: no faster than three
        times the velocity prior of a re-initialisation, give or take the reading noise."""
        nq = self.process.nq
        speed = 3.0 * np.sqrt(self._initial_velocity_var)
        noise = 6.0 * np.sqrt(np.diag(self._measurement_cov)[:nq])
        items = list(readings)
        for (t0, z0), (t1, z1) in zip(items, items[1:]):
            step = z1[:nq] - z0[:nq]
            step[self._angles] = _wrap(step[self._angles])
            if not np.all(np.abs(step) <= speed * max(t1 - t0, 0.0) + noise):
                return False
        return True

    def _snapshot_before(self, t: float) -> int | None:
        """Index of the last snapshot at or before ``t``; None if the history starts after it."""
        return next((i for i in range(len(self._history) - 1, -1, -1) if self._history[i].time <= t + TIME_EPS), None)

    def _switch_doubt(self, mean: np.ndarray, cov: np.ndarray, u_old: np.ndarray, u_new: np.ndarray,
                      timing_std: float) -> np.ndarray:
        """``cov`` with the doubt of a command switch whose time is known to ``timing_std`` only.

        Switching ``delta`` later changes the velocities by ``-delta (a_new - a_old)`` (the
        positions only by ``delta^2``): at an arm's 100 N m a few milliseconds are many encoder
        sigmas, and a filter that does not know it gates the readings that tell it."""
        if timing_std <= 0.0 or np.array_equal(u_old, u_new):
            return cov
        spread = np.zeros(self._n)
        spread[self.process.nq : self._nx] = timing_std * self._switch_acceleration(mean, u_old, u_new)
        if not np.isfinite(spread).all():
            return cov
        return cov + np.outer(spread, spread)

    def _switch_acceleration(self, mean: np.ndarray, u_old: np.ndarray, u_new: np.ndarray) -> np.ndarray:
        """The process model's ``switch_acceleration`` at the filter's state: the robot's part of
        it, both commands with the estimated disturbance added."""
        d = mean[self._nx :]
        if d.size:
            u_old, u_new = u_old + d, u_new + d
        return self.process.switch_acceleration(mean[: self._nx], u_old, u_new)

    def _apply_late_command(self, u: np.ndarray, t: float, timing_std: float = 0.0) -> None:
        """``u`` applied from ``t``, in the estimate's past (it reached us late): re-predict from
        the snapshot before ``t`` with the commands as applied. Commands arrive in the order they
        were sent, so ``u`` holds from ``t`` to now; later snapshots only split the old command's
        time and are dropped."""
        u = self._checked_command(u)
        index = self._snapshot_before(t)
        if index is None:
            # Older than the history, which starts at the last reading fused (that reading was
            # predicted with the old command): from that reading on, the nearest we can.
            self.events["late_command_before_reading"] += 1
            index, t = 0, self._history[0].time if self._history else self._time
            if not self._history:
                self.predict(u, 0.0)
                self._commanded = True
                return
        start = self._history[index]
        mean, cov = self._safe_propagate(start.mean, start.cov, start.command, t - start.time)
        cov = self._switch_doubt(mean, cov, start.command, u, timing_std)
        self._commanded = True
        while len(self._history) > index + 1:
            self._history.pop()
        self._history.append(_Snapshot(t, mean, cov, u))
        self._mean, self._cov = self._safe_propagate(mean, cov, u, self._time - t)
        self._command = u

    def _catch_up_with_early_commands(self) -> None:
        early, self._early_commands = self._early_commands, deque()
        before = [u for t, u in early if t <= self._time]
        self._command = before[-1] if before else np.zeros(self.action_dim)  # at rest until commanded
        self._commanded = bool(before)
        for t, u in early:
            if t > self._time:
                self.apply_command(u, t)

    def _initial_estimate(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nq = self.process.nq
        mean = np.zeros(self._n)
        var = np.concatenate([np.diag(self._measurement_cov)[:nq], self._initial_velocity_var,
                              self._disturbance_var[: self.process.nd]])
        mean[: self._measured_count] = z
        var[: self._measured_count] = np.diag(self._measurement_cov)
        return mean, np.diag(var)

    # -- bookkeeping ---------------------------------------------------------------------------
    def _checked_command(self, u: np.ndarray) -> np.ndarray:
        try:
            u = np.asarray(u, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            u = np.full(0, math.nan)
        if u.shape != (self.action_dim,) or not np.all(np.isfinite(u)):
            self.events["bad_command"] += 1  # the robot's driver rejects it too: the old one stays
            return self._command
        return u

    def _accept(self, stamp: float) -> bool:
        self._last_stamp = stamp
        self.accepted += 1
        return True

    def _reject(self, reason: str) -> bool:
        self.rejected[reason] += 1
        return False

    def _record_nis(self, nis: float) -> None:
        self.last_nis = nis
        self._nis[self._nis_count % len(self._nis)] = nis
        self._nis_count += 1

    def _forget_old_snapshots(self) -> None:
        horizon = self._time - self.config.history_duration
        while len(self._history) > 1 and self._history[1].time <= horizon:
            self._history.popleft()


def _per_command(values: Sequence[float], nu: int, name: str) -> np.ndarray:
    """A per-command-entry setting: one value for every entry, or ``nu`` of them."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 1:
        return np.full(nu, values[0])
    if values.size != nu:
        raise ValueError(f"estimator config '{name}' needs {nu} values (one per command entry) or one for all")
    return values


def _wrap(a: np.ndarray) -> np.ndarray:
    return np.remainder(a + math.pi, 2 * math.pi) - math.pi
