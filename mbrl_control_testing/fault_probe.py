"""Watching a running stack from outside, control tick by control tick, to judge a fault: which
command went out at each tick, planned from which state, at what robot time; what the robot's true
state was; what every node says in /diagnostics. bench/faults.py, bench/soak.py and the fault
tests use it.

A tick is the controller's command on ``/effort_controller/commands`` paired with its record on
``/mpc_controller/timing`` (published right after it, in the same tick): the last command sent
before the record, by their DDS source timestamps, which share the machine's clock. The timing
record and the tick's sample on ``/mpc_controller/transitions`` (sent when it planned) carry the
tick's sequence number ``seq``, which pairs them exactly. A tick's robot time is ``/clock`` as it
was when the command went out in lockstep, the command's send time in realtime (where the ROS
clock is the system clock).

Two judges:

- **Ground truth** (``truth_kind``, the one the fault table's ``*_truth`` columns use): each
  command is judged on its own against the sim's true state (``/sim/ground_truth``: positions and
  velocities, interpolated at the state's stamp), never on what the controller says about itself.
  A command is **safe** when it is finite and within the effort limit, and either

  - *planned from a true state* (``planned_from_truth``): the tick's sample holds the state it
    planned from, and that state was within :class:`StateTolerance` of the truth at its stamp
    (per component: positions and velocities), its stamp at most ``max_age`` before the command
    went out; or
  - *the safe command* (``safe_command``): no sample that tick (the controller did not plan) and
    the robot's safe command (:class:`ZeroEffort`: zero effort, the safety layer's command for a
    stale or missing state with ``stale_action: zero``; :class:`GravityHold`: for an arm, the
    effort that holds it against gravity where it truly is, ``stale_action: gravity_hold``).

  Anything else is ``unsafe``. A tick the judge cannot see through is ``unjudged``: the controller
  says it sent a sample that never reached the probe, or no ground truth brackets the state's stamp
  (the sim was down).
- **The controller's own report** (``kind``, kept for the reaction columns such as ``went_safe``):
  planned from a fresh state by its own ``state_age_ms``, the safety layer's fallback (zero effort;
  an arm's hold: a tick that says it did not plan), or unsafe.

Loss is counted against the controller's sequence numbers (:func:`sequence_loss`): every sample
(and timing record) the controller sent in a window must be in the recording, every transition the
sent samples pair into in the replay buffer; a window left out is stated with its length.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from mbrl_control.core.learning import Sample, SampleLayout, TransitionAssembler
from mbrl_control.graph import COMMAND_TOPIC, GROUND_TRUTH_TOPIC, STATE_TOPIC

TIMING_TOPIC = "/mpc_controller/timing"
SAMPLES_TOPIC = "/mpc_controller/transitions"

PLANNED, FALLBACK, UNSAFE = "planned", "fallback", "unsafe"  # the controller's report (and UNSAFE: both judges)
TRUE_PLAN, SAFE_COMMAND, UNJUDGED = "planned_from_truth", "safe_command", "unjudged"  # the ground-truth judge


# -- the ground-truth judge (pure: no ROS) --------------------------------------------------------
@dataclass(frozen=True)
class StateTolerance:
    """How far a state may be from the truth at its stamp and still count as true, per component,
    and how old it may be when its command goes out (``default_tolerance``: the one
    bench/faults.py and the fault tests use)."""

    position: tuple[float, ...]  # [m or rad] per joint
    velocity: tuple[float, ...]  # [m/s or rad/s] per joint
    max_age: float  # [s]: command time minus the state's stamp

    @property
    def vector(self) -> np.ndarray:
        return np.array([*self.position, *self.velocity], dtype=float)

    def as_dict(self) -> dict:
        return {k: [round(v, 6) for v in x] if isinstance(x, tuple) else round(x, 6) for k, x in asdict(self).items()}


def default_tolerance(joints: int, state_timeout: float, period: float) -> StateTolerance:
    """0.05 (m or rad, about 3 degrees) per position, 0.5 (m/s or rad/s) per velocity, and a state
    at most the controller's state timeout plus one period (the tick's compute budget) old when its
    command goes out. On the cart-pole, the EKF's errors on the sim's encoders stay well inside this
    in normal operation (velocity RMSE about 0.04 / 0.08, the largest seen about half the velocity
    tolerance, while dead-reckoning through a dropout too); a fused 1 rad spike would not."""
    return StateTolerance(position=(0.05,) * joints, velocity=(0.5,) * joints, max_age=state_timeout + period)


class GroundTruth:
    """The true state at any stamp the truth brackets: linear interpolation between the two
    samples around it when they are at most ``max_gap`` apart (None otherwise). Position errors
    of ``angle_joints`` are wrapped to [-pi, pi)."""

    def __init__(self, stamps: Iterable[float], positions: Iterable[np.ndarray], velocities: Iterable[np.ndarray],
                 angle_joints: Iterable[int] = (), max_gap: float = 0.05) -> None:
        stamps = np.asarray(list(stamps), dtype=float)
        order = np.argsort(stamps, kind="stable")
        states = [np.concatenate([p, v]) for p, v in zip(positions, velocities)]
        self.stamps = stamps[order]
        self.states = np.array(states, dtype=float)[order] if states else np.zeros((0, 0))
        self.nq = self.states.shape[1] // 2 if len(states) else 0
        self.angles = np.zeros(self.states.shape[1] if len(states) else 0, dtype=bool)
        for j in angle_joints:
            if j < self.nq:
                self.angles[j] = True
        self.max_gap = max_gap

    def state_at(self, stamp: float) -> np.ndarray | None:
        if len(self.stamps) == 0 or not self.stamps[0] <= stamp <= self.stamps[-1]:
            return None
        i = int(np.searchsorted(self.stamps, stamp, side="left"))
        if self.stamps[i] == stamp:
            return self.states[i]
        t0, t1 = self.stamps[i - 1], self.stamps[i]
        if t1 - t0 > self.max_gap:
            return None
        a, b = self.states[i - 1], self.states[i]
        delta = b - a
        delta[self.angles] = np.remainder(delta[self.angles] + math.pi, 2 * math.pi) - math.pi
        return a + (stamp - t0) / (t1 - t0) * delta

    def error(self, stamp: float, state: np.ndarray) -> np.ndarray | None:
        """|state - truth| per component at ``stamp`` (None where the truth does not reach)."""
        truth = self.state_at(stamp)
        if truth is None or len(state) != len(truth):
            return None
        diff = np.asarray(state, dtype=float) - truth
        diff[self.angles] = np.remainder(diff[self.angles] + math.pi, 2 * math.pi) - math.pi
        return np.abs(diff)


@dataclass
class Tick:
    wall_ns: int  # when the command was sent (source timestamp)
    robot_time: float  # ROS time of the tick [s]
    command: np.ndarray
    tick_ms: float
    iterations: float
    state_age_ms: float  # as the controller reports it
    seq: int = -1  # the controller's tick sequence number (-1: unknown)
    lateness_ms: float = math.nan  # after the timer's intended release (realtime)
    sample_sent: bool | None = None  # the controller's timing record says it sent a sample (None: unknown)
    sample: Sample | None = None  # the tick's sample, as the probe received it
    kind: str = ""  # the controller's report: PLANNED, FALLBACK or UNSAFE (set by ``ControlProbe.ticks``)
    truth_kind: str = ""  # the ground-truth judge: TRUE_PLAN, SAFE_COMMAND, UNSAFE or UNJUDGED
    state_error: np.ndarray | None = None  # |planned-from state - truth at its stamp| per component
    truth_age: float = math.nan  # command time - the planned-from state's stamp [s]
    error_at_command: np.ndarray | None = None  # |planned-from state - truth when the command went out|


class ZeroEffort:
    """The safe command of a robot that zero effort leaves safe (the cart-pole): exactly zero."""

    needs_truth = False  # zero is safe wherever the robot is

    def holds(self, command: np.ndarray, truth: np.ndarray | None) -> bool:
        return bool(np.all(command == 0.0))

    def looks_like(self, command: np.ndarray, sample_sent: bool | None) -> bool:
        """The controller's own report: its fallback, by the command alone."""
        return bool(np.all(command == 0.0))


class GravityHold:
    """An arm's safe command (``stale_action: gravity_hold``): the effort that holds it still where
    it truly is. ``gravity(q [nq]) -> [commanded joints]``: the gravity torques of the robot's URDF
    model. The controller holds the posture it last saw, which may be off the truth by up to the
    judge's position tolerance: a command counts when it is within what that tolerance moves the
    gravity torques (per joint, ``sum_j |dg_i/dq_j| position_tolerance_j`` at the truth) plus
    ``slack`` [N m]."""

    needs_truth = True  # the hold is judged at the posture the arm truly has

    def __init__(self, gravity: Callable[[np.ndarray], np.ndarray], position_tolerance: Iterable[float],
                 slack: float = 0.5) -> None:
        self.gravity, self.slack = gravity, slack
        self.position_tolerance = np.asarray(list(position_tolerance), dtype=float)

    def allowance(self, q: np.ndarray) -> np.ndarray:
        """Per commanded joint, how far a hold may be from the gravity torque at ``q``."""
        eps = 1e-4
        steps = eps * np.eye(len(q))
        jac = np.stack([(self.gravity(q + d) - self.gravity(q - d)) / (2 * eps) for d in steps], axis=-1)
        return np.abs(jac) @ self.position_tolerance + self.slack

    def holds(self, command: np.ndarray, truth: np.ndarray | None) -> bool:
        if truth is None:
            return False  # where the truth does not reach, no hold can be judged (judge_tick: unjudged)
        q = np.asarray(truth[: len(self.position_tolerance)], dtype=float)
        return bool(np.all(np.abs(command - self.gravity(q)) <= self.allowance(q)))

    def looks_like(self, command: np.ndarray, sample_sent: bool | None) -> bool:
        return sample_sent is False  # the controller says it did not plan: its hold went


SafeCommand = ZeroEffort | GravityHold


def judge_tick(tick: Tick, truth: GroundTruth, tolerance: StateTolerance, effort_limit: float,
               safe_command: SafeCommand | None = None) -> None:
    """Sets ``tick.truth_kind``, ``state_error`` and ``truth_age`` from the ground truth alone
    (``safe_command``: what the robot's safe command is; default zero effort)."""
    u = tick.command
    tick.state_error, tick.truth_age, tick.error_at_command = None, math.nan, None
    if u.size == 0 or not np.all(np.isfinite(u)) or np.any(np.abs(u) > effort_limit * (1 + 1e-9)):
        tick.truth_kind = UNSAFE
        return
    s = tick.sample
    if s is None:
        if tick.sample_sent:  # planned, but the probe never got the state it planned from
            tick.truth_kind = UNJUDGED
        else:
            safe = safe_command or ZeroEffort()
            state = truth.state_at(tick.robot_time)
            if state is None and safe.needs_truth:  # a hold where no truth reaches (the sim down) cannot be judged
                tick.truth_kind = UNJUDGED
            else:
                tick.truth_kind = SAFE_COMMAND if safe.holds(u, state) else UNSAFE
        return
    tick.truth_age = tick.robot_time - s.stamp
    tick.state_error = truth.error(s.stamp, s.state)
    tick.error_at_command = truth.error(tick.robot_time, s.state)
    if tick.state_error is None:
        tick.truth_kind = UNJUDGED
    elif np.all(tick.state_error <= tolerance.vector) and tick.truth_age <= tolerance.max_age:
        tick.truth_kind = TRUE_PLAN
    else:
        tick.truth_kind = UNSAFE


@dataclass
class TruthVerdict:
    """The ground-truth judge over the ticks from ``reference`` to ``end``."""

    ticks: int
    safe_within_ticks: int | None  # to the first safe command (None: none)
    unsafe_ticks: int  # anywhere in the window (before the first safe command or after it)
    unsafe_after_safe: int  # after the first safe command: any fails the promise
    unjudged_ticks: int
    worst_planned_state_error: dict | None  # over planned ticks from the reference until recovered
    worst_error_at_command: dict | None  # the same states against the truth when their commands went out
    recovered_at: float | None  # robot time of the first command planned from a true state after the clear
    first_unsafe: dict | None = None  # what the first unsafe tick was, for a look


def truth_verdict(ticks: list[Tick], tolerance: StateTolerance, clear: float | None) -> TruthVerdict:
    """Judges judged ``ticks`` (those of one window, in order). The worst planned-from state error
    is taken from the first tick until the stack recovered: the first command planned from a true
    state at or after ``clear`` (without a clear, or without recovery: to the window's end)."""
    kinds = [t.truth_kind for t in ticks]
    safe = next((i for i, k in enumerate(kinds) if k in (TRUE_PLAN, SAFE_COMMAND)), None)
    recovered = None
    if clear is not None:
        recovered = next((t.robot_time for t in ticks if t.robot_time >= clear and t.truth_kind == TRUE_PLAN), None)
    until = recovered if recovered is not None else math.inf
    planned = [t for t in ticks if t.robot_time <= until]
    first_unsafe = next((t for t in ticks if t.truth_kind == UNSAFE), None)
    return TruthVerdict(
        ticks=len(ticks),
        safe_within_ticks=safe,
        unsafe_ticks=kinds.count(UNSAFE),
        unsafe_after_safe=0 if safe is None else kinds[safe:].count(UNSAFE),
        unjudged_ticks=kinds.count(UNJUDGED),
        worst_planned_state_error=_worst([t.state_error for t in planned], tolerance),
        worst_error_at_command=_worst([t.error_at_command for t in planned], tolerance),
        recovered_at=recovered,
        first_unsafe=None if first_unsafe is None else {
            "robot_time": round(first_unsafe.robot_time, 4), "seq": first_unsafe.seq,
            "command": [round(float(v), 3) for v in first_unsafe.command],
            "state_error": None if first_unsafe.state_error is None else [round(float(v), 4) for v in first_unsafe.state_error],
            "age_s": None if math.isnan(first_unsafe.truth_age) else round(first_unsafe.truth_age, 4)},
    )


def _worst(errors: list[np.ndarray | None], tolerance: StateTolerance) -> dict | None:
    """Per component, the largest of ``errors``; and the largest as a fraction of the tolerance."""
    known = np.array([e for e in errors if e is not None])
    if not len(known):
        return None
    peak, nq = known.max(axis=0), len(tolerance.position)
    return {"position": [round(float(v), 4) for v in peak[:nq]], "velocity": [round(float(v), 4) for v in peak[nq:]],
            "of_tolerance": round(float((known / tolerance.vector).max()), 3), "planned_ticks": len(known)}


# -- loss, counted against the publisher's sequence numbers (pure) ----------------------------------
@dataclass
class SequenceLoss:
    """What a holder (a recording, a replay buffer) lacks of what the controller sent in a window."""

    sent: int  # items sent in the window
    lost: int  # of those, missing from the holder
    lost_seqs: list[int]  # the first few missing, by the controller's seq
    excused: list[dict]  # windows left out of the count, each with what it is and its length
    unseen_ticks: int = 0  # seqs in the window no source showed (the judge is blind there)

    def as_dict(self) -> dict:
        return asdict(self)


def excused_window(what: str, walls_ns: list[int]) -> dict:
    """An excused window: what it is, how many items, and how long it lasted (from the first to
    the last excused item's send time) [ms]."""
    span = (max(walls_ns) - min(walls_ns)) * 1e-6 if walls_ns else 0.0
    return {"what": what, "items": len(walls_ns), "ms": round(span, 1)}


def sequence_loss(sent: dict[int, int], held: Iterable[int], start_ns: int | None, stop_ns: int,
                  before: str, after: str, known: Iterable[int] = ()) -> SequenceLoss:
    """``sent``: seq -> send time [wall ns] of every item the controller sent; ``held``: the seqs a
    holder has. Counted: items sent from ``start_ns`` (None: from the first item the holder has; the
    ones before are excused as ``before``) until ``stop_ns`` (the ones after are excused as
    ``after``). ``known``: every tick seq any source showed, to count the ticks nobody saw."""
    held = set(held)
    first_held = min((s for s in held if s in sent), default=-1)  # a holder with nothing excuses nothing
    excused_before, excused_after, window = [], [], []
    for seq, wall in sorted(sent.items()):
        if wall >= stop_ns:
            excused_after.append(wall)
        elif wall < start_ns if start_ns is not None else seq < first_held:
            excused_before.append(wall)
        else:
            window.append(seq)
    missing = [s for s in window if s not in held]
    unseen = 0
    if window:
        seen = set(known) | set(sent)
        unseen = sum(1 for s in range(window[0], window[-1] + 1) if s not in seen)
    excused = [excused_window(w, v) for w, v in ((before, excused_before), (after, excused_after)) if v]
    return SequenceLoss(len(window), len(missing), missing[:10], excused, unseen)


def expected_transitions(samples: Iterable[Sample], dt: float) -> dict[tuple[int, float], int]:
    """The transitions the learner pairs the samples into, exactly as it pairs them (consecutive
    samples of one episode one period apart, TransitionAssembler): ``(episode, stamp rounded to
    0.1 ms)`` -> the seq of the sample that starts it."""
    assembler = TransitionAssembler(dt)
    out, previous = {}, None
    for s in sorted(samples, key=lambda s: s.seq):
        pair = assembler.push(s.stamp, s.state, s.action, s.episode, s.reward)
        if pair is not None:
            out[(int(pair[5]), round(float(pair[4]), 4))] = previous.seq
        previous = s
    return out


def recorded_seqs(path: str | Path) -> tuple[dict[int, Sample], set[int]]:
    """What a recording holds of the controller's streams: its samples by seq, and the seqs of its
    timing records (a file cut short is read to its last whole message)."""
    from mbrl_control.recording.run_data import recorded_messages, recorded_samples

    samples = {s.seq: s for s in recorded_samples(path, SAMPLES_TOPIC)}
    timing: set[int] = set()
    for _, _, msg in recorded_messages(path, [TIMING_TOPIC]):
        fields = msg.layout.dim[0].label.split(",") if msg.layout.dim else []
        if "seq" in fields and len(msg.data) == len(fields):
            timing.add(int(msg.data[fields.index("seq")]))
    return samples, timing


# -- the probe (a node spun by its owner) -------------------------------------------------------
class ControlProbe:
    """Subscribes ``node`` (spun by its owner) to what a fault judge needs; thread-safe reads.
    ``log_dir``: also append every timing record and sample to ``timing.csv`` and ``samples.csv``
    there as they arrive (what a long run keeps even if this process dies)."""

    def __init__(self, node: Node, lockstep: bool, effort_limit: float | np.ndarray, state_timeout: float,
                 tolerance: StateTolerance | None = None, angle_joints: Iterable[int] = (),
                 log_dir: Path | None = None, safe_command: SafeCommand | None = None) -> None:
        self.node, self.lockstep = node, lockstep
        self.effort_limit, self.state_timeout = np.asarray(effort_limit, dtype=float), state_timeout
        self.safe_command = safe_command or ZeroEffort()
        self.tolerance = tolerance
        self.angle_joints = tuple(angle_joints)
        self._lock = threading.Lock()
        self.commands: list[tuple[int, np.ndarray]] = []
        self.timing: list[tuple[int, list[float]]] = []
        self.timing_fields: list[str] = []
        self.clock: list[tuple[int, float]] = []
        self.truth: list[tuple[float, np.ndarray, np.ndarray, np.ndarray]] = []  # (stamp [s], positions, velocities, applied efforts)
        self.readings: list[tuple[int, float, list[float]]] = []  # (sent ns, stamp [s], positions)
        self.samples: list[tuple[int, Sample]] = []  # (sent ns, sample)
        self._layouts: dict[str, SampleLayout | None] = {}
        self.diagnostics: dict[str, dict[str, str]] = {}
        self.messages: dict[str, tuple[int, str]] = {}  # node -> (level, message)
        self.diagnostics_seen: dict[str, list[tuple[int, str, dict[str, str]]]] = {}  # every status, by node
        self._logs: dict[str, IO[str]] = {}
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            self._logs = {name: open(log_dir / f"{name}.csv", "a", buffering=1) for name in ("timing", "samples")}
        reliable = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(Float64MultiArray, COMMAND_TOPIC, self._on_command, reliable)
        node.create_subscription(Float64MultiArray, TIMING_TOPIC, self._on_timing, reliable)
        node.create_subscription(Float64MultiArray, SAMPLES_TOPIC, self._on_sample, reliable)
        node.create_subscription(ClockMsg, "/clock", self._on_clock, reliable)
        # Reliable and deep: a judge starved on a busy machine must not lose the truth it judges by.
        node.create_subscription(JointState, GROUND_TRUTH_TOPIC, self._on_truth, reliable)
        node.create_subscription(JointState, STATE_TOPIC, self._on_reading, qos_profile_sensor_data)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, reliable)

    # -- callbacks ---------------------------------------------------------------------------
    def _on_command(self, msg, info) -> None:
        with self._lock:
            self.commands.append((info["source_timestamp"], np.asarray(msg.data, dtype=float)))

    def _on_timing(self, msg, info) -> None:
        with self._lock:
            if not self.timing_fields and msg.layout.dim:
                self.timing_fields = msg.layout.dim[0].label.split(",")
                self._log("timing", "wall_ns," + msg.layout.dim[0].label)
            self.timing.append((info["source_timestamp"], list(msg.data)))
            self._log("timing", f"{info['source_timestamp']}," + ",".join(repr(v) for v in msg.data))

    def _on_sample(self, msg, info) -> None:
        label = msg.layout.dim[0].label if msg.layout.dim else ""
        with self._lock:
            if label not in self._layouts:
                try:
                    self._layouts[label] = SampleLayout.from_label(label)
                except ValueError:
                    self._layouts[label] = None
                self._log("samples", "wall_ns," + label)
            layout, row = self._layouts[label], np.asarray(msg.data, dtype=float)
            if layout is not None and row.shape == (layout.size,):
                self.samples.append((info["source_timestamp"], layout.unpack(row)))
            self._log("samples", f"{info['source_timestamp']}," + ",".join(repr(v) for v in msg.data))

    def _log(self, name: str, line: str) -> None:
        if name in self._logs:
            self._logs[name].write(line + "\n")

    def _on_clock(self, msg, info) -> None:
        with self._lock:
            self.clock.append((info["source_timestamp"], msg.clock.sec + msg.clock.nanosec * 1e-9))

    def _on_truth(self, msg) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        with self._lock:
            self.truth.append((stamp, np.asarray(msg.position, dtype=float), np.asarray(msg.velocity, dtype=float),
                               np.asarray(msg.effort, dtype=float)))

    def _on_reading(self, msg, info) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        with self._lock:
            self.readings.append((info["source_timestamp"], stamp, list(msg.position)))

    def _on_diagnostics(self, msg, info) -> None:
        with self._lock:
            for s in msg.status:
                values = {kv.key: kv.value for kv in s.values}
                self.diagnostics[s.name] = values
                level = s.level if isinstance(s.level, int) else int.from_bytes(s.level, "little")
                self.messages[s.name] = (level, s.message)
                self.diagnostics_seen.setdefault(s.name, []).append((info["source_timestamp"], s.message, values))

    def close_logs(self) -> None:
        with self._lock:
            for f in self._logs.values():
                f.close()
            self._logs = {}

    # -- queries -----------------------------------------------------------------------------
    def value(self, node: str, key: str, default: str | None = None) -> str | None:
        with self._lock:
            return self.diagnostics.get(node, {}).get(key, default)

    def number(self, node: str, key: str) -> float:
        """A diagnostics value as a number; nan when absent or not numeric."""
        try:
            return float(self.value(node, key, "nan"))
        except ValueError:
            return math.nan

    def ever(self, node: str, predicate) -> bool:
        """Whether any status ``node`` published satisfied ``predicate(message, values)``."""
        with self._lock:
            seen = list(self.diagnostics_seen.get(node, []))
        return any(predicate(message, values) for _, message, values in seen)

    def robot_time(self) -> float:
        """The latest robot time seen (lockstep: /clock; realtime: the newest ground truth stamp)."""
        with self._lock:
            if self.lockstep:
                return self.clock[-1][1] if self.clock else -math.inf
            return self.truth[-1][0] if self.truth else -math.inf

    def classify(self, tick: Tick) -> str:
        """The controller's own report of a tick (its ``state_age_ms``)."""
        u = tick.command
        if u.size == 0 or not np.all(np.isfinite(u)) or np.any(np.abs(u) > self.effort_limit * (1 + 1e-9)):
            return UNSAFE
        # Planned from a validated state within the timeout (state age is taken when the tick
        # ends, so the tick's own duration is allowed on top).
        if tick.state_age_ms <= self.state_timeout * 1e3 + max(tick.tick_ms, 0.0) + 1e-6:
            return PLANNED
        return FALLBACK if self.safe_command.looks_like(u, tick.sample_sent) else UNSAFE

    def ground_truth(self) -> GroundTruth:
        with self._lock:
            truth = list(self.truth)
        keep = [t for t in truth if len(t[1]) and len(t[2]) == len(t[1])]
        return GroundTruth([t[0] for t in keep], [t[1] for t in keep], [t[2] for t in keep], self.angle_joints)

    def _field(self, data: list[float], name: str, default: float = math.nan) -> float:
        fields = self.timing_fields
        return data[fields.index(name)] if name in fields and len(data) == len(fields) else default

    def ticks(self) -> list[Tick]:
        """Every control tick seen so far, in order, classified by the controller's report and,
        with a ``tolerance``, judged from the ground truth."""
        with self._lock:
            commands, timing, clock = list(self.commands), list(self.timing), list(self.clock)
            samples = {s.seq: s for _, s in self.samples}
        commands.sort(key=lambda c: c[0])
        timing.sort(key=lambda t: t[0])
        clock_wall = np.array([c[0] for c in clock], dtype=np.int64)
        command_wall = np.array([c[0] for c in commands], dtype=np.int64)
        out, paired = [], set()
        for t_wall, data in timing:
            # The tick's command is the last one sent before its timing record (a command without
            # a record, sent while paused, is followed by the next tick's command first).
            i = int(np.searchsorted(command_wall, t_wall, side="right")) - 1
            if i < 0 or i in paired:
                continue
            paired.add(i)
            wall, u = commands[i]
            if self.lockstep:
                k = int(np.searchsorted(clock_wall, wall, side="right")) - 1
                if k < 0:
                    continue
                robot = clock[k][1]
            else:
                robot = wall * 1e-9
            seq = int(self._field(data, "seq", -1))
            sent = self._field(data, "sample_sent")
            tick = Tick(wall, robot, u, self._field(data, "tick_ms", data[0]), self._field(data, "plan_iterations", data[2]),
                        self._field(data, "state_age_ms", data[3]), seq=seq, lateness_ms=self._field(data, "lateness_ms"),
                        sample_sent=None if math.isnan(sent) else bool(sent), sample=samples.get(seq) if seq >= 0 else None)
            tick.kind = self.classify(tick)
            out.append(tick)
        if self.tolerance is not None:
            truth = self.ground_truth()
            for tick in out:
                judge_tick(tick, truth, self.tolerance, self.effort_limit, self.safe_command)
        return out

    def judge(self, reference: float, clear: float | None, end: float = math.inf) -> "Verdict":
        """The ticks from robot time ``reference`` (the injection, or when the fault became
        detectable) to ``end``; ``clear``: when the fault cleared (None: it does not)."""
        ticks = [t for t in self.ticks() if reference <= t.robot_time < end]
        kinds = [t.kind for t in ticks]
        safe = next((i for i, k in enumerate(kinds) if k != UNSAFE), None)
        fallback = next((i for i, k in enumerate(kinds) if k == FALLBACK), None)
        walls = [t.wall_ns for t in ticks]
        gaps = np.diff(walls) * 1e-6 if len(walls) > 1 else np.zeros(1)
        after_clear = [t for t in ticks if clear is not None and t.robot_time >= clear]
        return Verdict(
            ticks_after=len(ticks),
            safe_within_ticks=safe,
            unsafe_ticks=kinds.count(UNSAFE),
            first_fallback_tick=fallback,
            fallback_ticks=kinds.count(FALLBACK),
            planned_after_clear=sum(t.kind == PLANNED for t in after_clear),
            max_gap_ms=float(gaps.max()),
            truth=truth_verdict(ticks, self.tolerance, clear) if self.tolerance is not None else None,
        )

    def sent_samples(self) -> dict[int, int]:
        """seq -> send time [wall ns] of every sample the controller sent, by its timing records
        (``sample_sent``) and the samples themselves."""
        with self._lock:
            timing, samples = list(self.timing), list(self.samples)
        sent = {s.seq: wall for wall, s in samples if s.seq >= 0}
        for wall, data in timing:
            seq = int(self._field(data, "seq", -1))
            if seq >= 0 and self._field(data, "sample_sent", 0.0) == 1.0:
                sent.setdefault(seq, wall)
        return sent

    def received_samples(self) -> list[tuple[int, Sample]]:
        """(send time [wall ns], sample) of every sample the probe got."""
        with self._lock:
            return list(self.samples)

    def sent_timing(self) -> dict[int, int]:
        """seq -> send time [wall ns] of every timing record the probe got."""
        with self._lock:
            timing = list(self.timing)
        return {int(self._field(d, "seq", -1)): wall for wall, d in timing if self._field(d, "seq", -1) >= 0}

    def upright_at_end(self, seconds: float, end: float = math.inf, tolerance: float = 0.2, joint: int = 1) -> bool:
        """Whether the pole stayed within ``tolerance`` of upright over the last ``seconds`` of ground
        truth before robot time ``end``."""
        with self._lock:
            truth = [s for s in self.truth if s[0] < end]
        if not truth:
            return False
        last = truth[-1][0]
        angles = np.array([t[1][joint] for t in truth if t[0] >= last - seconds])
        wrapped = np.remainder(angles + math.pi, 2 * math.pi) - math.pi
        return bool(len(wrapped) and np.all(np.abs(wrapped) < tolerance))

    def planned_fraction(self, start: float, end: float) -> tuple[float, int]:
        """Fraction of the ticks in robot time [start, end) planned from fresh states, and their number."""
        ticks = [t for t in self.ticks() if start <= t.robot_time < end]
        return (sum(t.kind == PLANNED for t in ticks) / len(ticks) if ticks else 0.0), len(ticks)

    def truth_between(self, start: float, end: float) -> list[tuple[float, np.ndarray, np.ndarray, np.ndarray]]:
        """(stamp, positions, velocities, applied efforts) of the ground truth in [start, end)."""
        with self._lock:
            return [t for t in self.truth if start <= t[0] < end]

    def applied_effort(self, start: float, end: float, joint: int = 0) -> list[tuple[float, float]]:
        """(stamp, effort the robot applied) from ground truth in [start, end)."""
        return [(t[0], float(t[3][joint])) for t in self.truth_between(start, end) if len(t[3]) > joint]


@dataclass
class Verdict:
    """How the control path took a fault, from its ticks."""

    ticks_after: int  # control ticks from the reference time to the end of the observation
    safe_within_ticks: int | None  # ticks from the reference to the first safe command (None: no tick)
    unsafe_ticks: int  # unsafe commands after the reference
    first_fallback_tick: int | None  # ticks from the reference to the first safety fallback (zero)
    fallback_ticks: int
    planned_after_clear: int  # commands planned from fresh states after the fault cleared
    max_gap_ms: float  # longest silence between commands after the reference [wall ms]
    truth: TruthVerdict | None = None  # the ground-truth judge (with a tolerance)
    details: dict = field(default_factory=dict)


# -- the robot under test ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RobotUnderTest:
    """What a fault judge needs to know of the robot of a parameter file (``robot_under_test``)."""

    name: str
    period: float  # the control period [s]
    state_timeout: float  # the controller's
    stale_after: float  # the estimator's
    command_timeout: float  # the sim's (the robot's command watchdog)
    brakes: bool  # the sim brakes, where zero effort would drop the robot
    effort_limit: np.ndarray  # [nu]
    angle_joints: tuple[int, ...]  # positions in radians: wrapped when judged
    tolerance: StateTolerance
    safe_command: SafeCommand
    robot: object  # mbrl_control.core.builders.Robot: its task says what settled means
    planner_iterations: int  # a full plan's iterations (fewer: cut at its deadline)

    def probe(self, node: Node, lockstep: bool, log_dir: Path | None = None) -> "ControlProbe":
        return ControlProbe(node, lockstep, self.effort_limit, self.state_timeout, self.tolerance, self.angle_joints,
                            log_dir, self.safe_command)

    def settled_at_end(self, watch: "ControlProbe", seconds: float = 1.0, end: float = math.inf) -> bool:
        """The task done over the last ``seconds`` of ground truth before ``end``, by the task's own
        tolerance: the judged joints at the posture (a hold task: the pole upright), or the hand at
        its goal (a reach task; the configuration's goal)."""
        truth = watch.truth_between(-math.inf, end)
        if not truth:
            return False
        last = truth[-1][0]
        states = np.array([np.concatenate([t[1], t[2]]) for t in truth if t[0] >= last - seconds])
        return bool(np.all(self.robot.task.within_tolerance(states)))


def robot_under_test(config: str | Path = "cartpole") -> RobotUnderTest:
    """The robot of config/<config>.yaml (or a parameter file) as the nodes will read it."""
    import torch

    from mbrl_control.config import node_settings
    from mbrl_control.core.builders import build_robot
    from mbrl_control.graph import robot_config

    path = robot_config(str(config))
    controller, estimator, sim = (node_settings(path, n) for n in ("mpc_controller", "estimator", "sim"))
    robot = build_robot(controller)
    spec = robot.spec
    period = 1.0 / controller["control_rate"]
    tolerance = default_tolerance(spec.nq, controller["state_timeout"], period)
    if controller["safety.stale_action"] == "gravity_hold":
        def gravity(q: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                g = robot.kinematics.gravity_torques(torch.as_tensor(q, dtype=torch.float32)[None])[0]
            return g[list(spec.command_index)].double().numpy()
        safe: SafeCommand = GravityHold(gravity, tolerance.position)
    else:
        safe = ZeroEffort()
    return RobotUnderTest(path.stem, period, controller["state_timeout"], estimator["estimator.stale_after"],
                          sim["command_timeout"], bool(sim["brakes"]), np.asarray(spec.effort_limit, dtype=float),
                          tuple(spec.rotational_dims), tolerance, safe, robot,
                          int(controller.get(f"{controller['planner']}.iterations", 1)))
