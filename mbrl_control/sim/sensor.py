"""Joint encoders as a real robot has them: noisy, quantised, late, at their own rate, sometimes lost.

Pure numpy and seeded, no ROS: the sim node feeds :class:`JointSensor` the true joint state every
physics step (``observe``) and publishes what it hands back (``deliver``), each measurement
stamped with the time it was *sampled*, not the time it arrives. Ground truth is not part of a
measurement; the sim publishes it separately. Faults for reliability tests (NaN, inf, wrong
length, spikes, reordering, bursts of loss) are knobs that default to off.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from dataclasses import dataclass, field

import numpy as np

from mbrl_control.core.util import setting

FAULTS = ("nan", "inf", "wrong_length", "spike")


@dataclass(frozen=True)
class SensorConfig:
    """``sensor.*``. Per-joint tuples are in the joints' order; a single value stands for every
    joint. The defaults are generic encoders; a robot's parameter file sets its own (config/
    cartpole.yaml: the pole on a 1024-line quadrature encoder, the cart on a belt-driven motor
    encoder; config/iiwa.yaml: 20-bit absolute encoders). Faults default to off.
    """

    rate: float = setting(100.0, "encoder sample rate [Hz]", 1.0, 10000.0)
    position_noise_std: tuple[float, ...] = setting(
        (1e-3,), "position noise per joint, Gaussian, before quantisation [m, rad] (one value: every joint's)", 0.0, 10.0)
    resolution: tuple[float, ...] = setting((0.0,), "encoder step per joint; 0 = continuous", 0.0, 1.0)
    measure_velocity: bool = setting(False, "encoders also report velocities (most report positions only)")
    velocity_noise_std: tuple[float, ...] = setting(
        (0.01,), "velocity noise per joint, when measured [m/s, rad/s]", 0.0, 100.0)
    wrap_angles: tuple[bool, ...] = setting((False,), "report a joint's angle wrapped to [-pi, pi)")
    latency: float = setting(0.004, "minimum sample-to-delivery delay [s]", 0.0, 1.0)
    latency_jitter: float = setting(0.001, "mean of an exponential extra delay [s]", 0.0, 0.1)
    dropout_probability: float = setting(0.0, "fault: each sample lost independently", 0.0, 1.0)
    burst_probability: float = setting(0.0, "fault: per sample, start losing everything for burst_duration", 0.0, 1.0)
    burst_duration: float = setting(0.5, "length of a burst of loss [s]", 0.0, 60.0)
    # Faults, at most one per sample, each with its own probability.
    nan_probability: float = setting(0.0, "fault: a position reads NaN", 0.0, 1.0)
    inf_probability: float = setting(0.0, "fault: a position reads +-inf", 0.0, 1.0)
    wrong_length_probability: float = setting(0.0, "fault: a reading misses its last position", 0.0, 1.0)
    spike_probability: float = setting(0.0, "fault: a position jumps by +-spike_magnitude", 0.0, 1.0)
    spike_magnitude: tuple[float, ...] = setting((0.5,), "size of a spike per joint [m, rad]", 0.0, 100.0)
    reorder_probability: float = setting(0.0, "fault: a reading is held back and arrives right after the next one",
                                         0.0, 1.0)
    seed: int = setting(0, "random seed of the sensor", 0, 2**31 - 1)

    def measurement_std(self) -> np.ndarray:
        """Std of a position reading's error: the noise and the quantisation (uniform, step^2/12)."""
        return np.sqrt(np.square(self.position_noise_std) + np.square(self.resolution) / 12.0)


@dataclass(frozen=True)
class Measurement:
    stamp: float  # when the joints were sampled [s]
    delivery: float  # when the subscriber gets it [s]
    position: np.ndarray
    velocity: np.ndarray  # empty when the sensor measures no velocity
    fault: str = ""  # the injected fault, for tests; "" for a healthy sample


@dataclass(order=True)
class _Pending:
    delivery: float
    sequence: int
    measurement: Measurement = field(compare=False)


class JointSensor:
    """Samples the joints at ``config.rate`` and delivers the readings ``latency`` later.

    ``observe`` is called with the true state at every physics step; a sample is taken at the first
    step at or after each sample time, so its stamp is a physics time. Deliveries keep their order
    (a transport does) unless a sample is deliberately reordered.
    """

    def __init__(self, config: SensorConfig = SensorConfig(), joint_count: int = 2) -> None:
        per_joint = ("position_noise_std", "resolution", "velocity_noise_std", "wrap_angles", "spike_magnitude")
        for name in per_joint:
            if len(getattr(config, name)) not in (1, joint_count):
                raise ValueError(f"sensor config '{name}' needs {joint_count} values (or one for every joint)")
        probabilities = ("dropout", "burst", "nan", "inf", "wrong_length", "spike", "reorder")
        if any(not 0.0 <= getattr(config, f"{p}_probability") <= 1.0 for p in probabilities):
            raise ValueError("sensor probabilities must lie in [0, 1]")
        if config.rate <= 0 or config.latency < 0 or config.latency_jitter < 0 or config.burst_duration < 0:
            raise ValueError("need rate > 0 and non-negative latency, jitter and burst duration")
        self.config = config
        self.joint_count = joint_count
        self.period = 1.0 / config.rate
        def per_joint_array(name: str, dtype: type) -> np.ndarray:  # one value is every joint's
            return np.broadcast_to(np.asarray(getattr(config, name), dtype=dtype), (joint_count,)).copy()

        self._noise_std = per_joint_array("position_noise_std", np.float64)
        self._resolution = per_joint_array("resolution", np.float64)
        self._velocity_std = per_joint_array("velocity_noise_std", np.float64)
        self._wrap = per_joint_array("wrap_angles", bool)
        self._spike = per_joint_array("spike_magnitude", np.float64)
        self._fault_cdf = np.cumsum([getattr(config, f"{f}_probability") for f in FAULTS])
        self._blackouts: list[tuple[float, float]] = []
        self.reset()

    def reset(self, start_time: float = 0.0) -> None:
        """Forget pending readings and restart the sample clock (and the random stream)."""
        self.rng = np.random.default_rng(self.config.seed)
        self._next_sample = start_time
        self._last_delivery = -math.inf
        self._burst_until = -math.inf
        self._pending: list[_Pending] = []
        self._held: Measurement | None = None
        self._sequence = 0
        self.samples = 0
        self.lost = 0

    def blackout(self, start: float, duration: float) -> None:
        """Lose every sample taken in ``[start, start + duration)`` (a cable pulled, a bus hung)."""
        self._blackouts.append((start, start + duration))

    def observe(self, t: float, position: np.ndarray, velocity: np.ndarray) -> None:
        """The true joint state at time ``t``; takes a sample when one is due."""
        if t + 1e-9 < self._next_sample:
            return
        # Next sample on the grid after t (skips samples missed if observe was called too rarely).
        self._next_sample += self.period * max(1, math.floor((t - self._next_sample) / self.period + 1e-9) + 1)
        self.samples += 1
        if self._is_lost(t):
            self.lost += 1
            return
        self._schedule(self._read(t, np.asarray(position, np.float64), np.asarray(velocity, np.float64)))

    def deliver(self, now: float) -> list[Measurement]:
        """The readings that have arrived by ``now``, in arrival order."""
        out = []
        while self._pending and self._pending[0].delivery <= now + 1e-12:
            out.append(heapq.heappop(self._pending).measurement)
        return out

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _is_lost(self, t: float) -> bool:
        cfg = self.config
        if t < self._burst_until or any(a <= t < b for a, b in self._blackouts):
            return True
        if cfg.burst_probability and self.rng.random() < cfg.burst_probability:
            self._burst_until = t + cfg.burst_duration
            return True
        return bool(cfg.dropout_probability) and self.rng.random() < cfg.dropout_probability

    def _read(self, t: float, position: np.ndarray, velocity: np.ndarray) -> Measurement:
        cfg, rng = self.config, self.rng
        reading = position + self._noise_std * rng.standard_normal(self.joint_count)
        steps = np.where(self._resolution > 0, self._resolution, 1.0)
        reading = np.where(self._resolution > 0, np.round(reading / steps) * steps, reading)
        reading = np.where(self._wrap, np.remainder(reading + math.pi, 2.0 * math.pi) - math.pi, reading)
        rate = velocity + self._velocity_std * rng.standard_normal(self.joint_count) if cfg.measure_velocity else np.zeros(0)
        delay = cfg.latency + (rng.exponential(cfg.latency_jitter) if cfg.latency_jitter > 0 else 0.0)
        fault = ""
        if self._fault_cdf[-1] > 0:
            draw, joint = rng.random(), rng.integers(self.joint_count)
            kind = int(np.searchsorted(self._fault_cdf, draw, side="right"))
            fault = FAULTS[kind] if kind < len(FAULTS) else ""
            if fault == "nan":
                reading[joint] = math.nan
            elif fault == "inf":
                reading[joint] = math.inf * rng.choice((-1.0, 1.0))
            elif fault == "wrong_length":
                reading = reading[:-1]
            elif fault == "spike":
                reading[joint] += self._spike[joint] * rng.choice((-1.0, 1.0))
        delivery = max(t + delay, self._last_delivery)  # a transport keeps the order
        if cfg.reorder_probability and rng.random() < cfg.reorder_probability:
            fault = fault or "reordered"
        return Measurement(t, delivery, reading, rate, fault)

    def _schedule(self, m: Measurement) -> None:
        if m.fault == "reordered":
            if self._held is None:
                self._held = m  # released behind the next reading
                return
            m = dataclasses.replace(m, fault="")  # one held at a time: this one goes in order
        self._push(m)
        self._last_delivery = m.delivery
        if self._held is not None:
            held, self._held = self._held, None
            self._push(dataclasses.replace(held, delivery=m.delivery))

    def _push(self, m: Measurement) -> None:
        heapq.heappush(self._pending, _Pending(m.delivery, self._sequence, m))
        self._sequence += 1
