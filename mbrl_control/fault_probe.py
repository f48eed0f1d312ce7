"""Watching a running stack from outside, control tick by control tick, to judge a fault: which
command went out at each tick, planned from how old a state, at what robot time; what effort the
robot applied; what every node says in /diagnostics. bench/faults.py and the fault tests use it.

A tick is the controller's command on ``/effort_controller/commands`` paired with its record on
``/mpc_controller/timing`` (published right after it, in the same tick): the last command sent
before the record, by their DDS source timestamps, which share the machine's clock. A tick's robot
time is ``/clock`` as it was when the command went out in lockstep, the command's send time in
realtime (where the ROS clock is the system clock). A command is **safe** when it is finite, within
the effort limit, and either planned from a state that passed validation and was fresh
(``state_age <= state_timeout``), or the safety layer's fallback (zero, with the state stale or
missing).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from mbrl_control.graph import COMMAND_TOPIC, GROUND_TRUTH_TOPIC, STATE_TOPIC

TIMING_TOPIC = "/mpc_controller/timing"
SAMPLES_TOPIC = "/mpc_controller/transitions"

PLANNED, FALLBACK, UNSAFE = "planned", "fallback", "unsafe"


@dataclass
class Tick:
    wall_ns: int  # when the command was sent (source timestamp)
    robot_time: float  # ROS time of the tick [s]
    command: np.ndarray
    tick_ms: float
    iterations: float
    state_age_ms: float
    kind: str = ""  # PLANNED, FALLBACK or UNSAFE (set by ``ControlProbe.ticks``)


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
    details: dict = field(default_factory=dict)


class ControlProbe:
    """Subscribes ``node`` (spun by its owner) to what a fault judge needs; thread-safe reads."""

    def __init__(self, node: Node, lockstep: bool, effort_limit: float, state_timeout: float) -> None:
        self.node, self.lockstep = node, lockstep
        self.effort_limit, self.state_timeout = effort_limit, state_timeout
        self._lock = threading.Lock()
        self.commands: list[tuple[int, np.ndarray]] = []
        self.timing: list[tuple[int, list[float]]] = []
        self.clock: list[tuple[int, float]] = []
        self.truth: list[tuple[float, np.ndarray, np.ndarray]] = []  # (stamp [s], positions, applied efforts)
        self.readings: list[tuple[int, float, list[float]]] = []  # (sent ns, stamp [s], positions)
        self.samples: list[tuple[int, list[float]]] = []
        self.diagnostics: dict[str, dict[str, str]] = {}
        self.messages: dict[str, tuple[int, str]] = {}  # node -> (level, message)
        self.diagnostics_seen: dict[str, list[tuple[int, str, dict[str, str]]]] = {}  # every status, by node
        reliable = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(Float64MultiArray, COMMAND_TOPIC, self._on_command, reliable)
        node.create_subscription(Float64MultiArray, TIMING_TOPIC, self._on_timing, reliable)
        node.create_subscription(Float64MultiArray, SAMPLES_TOPIC, self._on_sample, reliable)
        node.create_subscription(ClockMsg, "/clock", self._on_clock, reliable)
        node.create_subscription(JointState, GROUND_TRUTH_TOPIC, self._on_truth, qos_profile_sensor_data)
        node.create_subscription(JointState, STATE_TOPIC, self._on_reading, qos_profile_sensor_data)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, reliable)

    # -- callbacks ---------------------------------------------------------------------------
    def _on_command(self, msg, info) -> None:
        with self._lock:
            self.commands.append((info["source_timestamp"], np.asarray(msg.data, dtype=float)))

    def _on_timing(self, msg, info) -> None:
        with self._lock:
            self.timing.append((info["source_timestamp"], list(msg.data)))

    def _on_sample(self, msg, info) -> None:
        with self._lock:
            self.samples.append((info["source_timestamp"], list(msg.data)))

    def _on_clock(self, msg, info) -> None:
        with self._lock:
            self.clock.append((info["source_timestamp"], msg.clock.sec + msg.clock.nanosec * 1e-9))

    def _on_truth(self, msg) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        with self._lock:
            self.truth.append((stamp, np.asarray(msg.position, dtype=float), np.asarray(msg.effort, dtype=float)))

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
        u = tick.command
        if u.size == 0 or not np.all(np.isfinite(u)) or np.any(np.abs(u) > self.effort_limit * (1 + 1e-9)):
            return UNSAFE
        # Planned from a validated state within the timeout (state age is taken when the tick
        # ends, so the tick's own duration is allowed on top).
        if tick.state_age_ms <= self.state_timeout * 1e3 + max(tick.tick_ms, 0.0) + 1e-6:
            return PLANNED
        return FALLBACK if np.all(u == 0.0) else UNSAFE

    def ticks(self) -> list[Tick]:
        """Every control tick seen so far, in order, classified."""
        with self._lock:
            commands, timing, clock = list(self.commands), list(self.timing), list(self.clock)
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
            tick = Tick(wall, robot, u, data[0], data[2], data[3])
            tick.kind = self.classify(tick)
            out.append(tick)
        return out

    def judge(self, reference: float, clear: float | None, end: float = math.inf) -> Verdict:
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
        )

    def upright_at_end(self, seconds: float, end: float = math.inf, tolerance: float = 0.2, joint: int = 1) -> bool:
        """Whether the pole stayed within ``tolerance`` of upright over the last ``seconds`` of ground
        truth before robot time ``end``."""
        with self._lock:
            truth = [s for s in self.truth if s[0] < end]
        if not truth:
            return False
        last = truth[-1][0]
        angles = np.array([p[joint] for t, p, _ in truth if t >= last - seconds])
        wrapped = np.remainder(angles + math.pi, 2 * math.pi) - math.pi
        return bool(len(wrapped) and np.all(np.abs(wrapped) < tolerance))

    def planned_fraction(self, start: float, end: float) -> tuple[float, int]:
        """Fraction of the ticks in robot time [start, end) planned from fresh states, and their number."""
        ticks = [t for t in self.ticks() if start <= t.robot_time < end]
        return (sum(t.kind == PLANNED for t in ticks) / len(ticks) if ticks else 0.0), len(ticks)

    def applied_effort(self, start: float, end: float, joint: int = 0) -> list[tuple[float, float]]:
        """(stamp, effort the robot applied) from ground truth in [start, end)."""
        with self._lock:
            truth = list(self.truth)
        return [(t, float(e[joint])) for t, _, e in truth if start <= t < end and len(e) > joint]
