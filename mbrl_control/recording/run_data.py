"""A recorded run (MCAP) as arrays: states, commands, planner timing, summary. No ROS needed:
messages are decoded with the schemas stored in the file."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from mcap.reader import NonSeekingReader, make_reader
from mcap_ros2.decoder import DecoderFactory

if TYPE_CHECKING:
    from mbrl_control.core.learning import Sample


@dataclass
class RunData:
    joints: list[str] = field(default_factory=list)
    state_time: np.ndarray = field(default_factory=lambda: np.zeros(0))  # robot time [s], from stamps
    position: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    velocity: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    command_time: np.ndarray = field(default_factory=lambda: np.zeros(0))
    command: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    timing_time: np.ndarray = field(default_factory=lambda: np.zeros(0))
    timing: dict[str, np.ndarray] = field(default_factory=dict)
    goal_time: np.ndarray = field(default_factory=lambda: np.zeros(0))  # robot time each /goal_pose arrived
    goals: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    summary: dict = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def _iter_decoded(path: Path, topics: list[str] | None = None):
    with open(path, "rb") as f:
        try:
            reader = make_reader(f, decoder_factories=[DecoderFactory()])
            yield from reader.iter_decoded_messages(topics=topics, log_time_order=True)
            return
        except Exception:  # no summary section (the writer was killed): stream through it
            f.seek(0)
        reader = NonSeekingReader(f, decoder_factories=[DecoderFactory()])
        yield from reader.iter_decoded_messages(topics=topics)


def recorded_messages(path: str | Path, topics: list[str]):
    """``(topic, log time [ns], decoded message)`` of ``topics`` in a recording, to its last
    whole message when it was cut short."""
    try:
        for _, channel, message, msg in _iter_decoded(Path(path), topics):
            yield channel.topic, message.log_time, msg
    except Exception:  # a torn tail after a crash: keep everything read before it
        return


def load_run(path: str | Path, state_topic: str | None = None, command_topic: str = "/effort_controller/commands",
             timing_topic: str = "/mpc_controller/timing", summary_topic: str = "/run_monitor/summary",
             goal_topic: str = "/goal_pose") -> RunData:
    """A recorded run; ``state_topic`` defaults to the sim's ground truth when it was recorded (the
    encoders' /joint_states carry noisy positions only), else /joint_states."""
    run = RunData()
    if state_topic is None:
        with open(path, "rb") as f:
            try:
                topics = {c.topic for c in make_reader(f).get_summary().channels.values()}
            except Exception:  # no summary (cut short): stream, and take joint_states
                topics = set()
        state_topic = "/sim/ground_truth" if "/sim/ground_truth" in topics else "/joint_states"
    st_log, st_stamp, pos, vel = [], [], [], []
    cmd_log, cmd = [], []
    tm_log, tm = [], []
    goal_log, goals = [], []
    fields: list[str] = []
    try:
        for schema, channel, message, msg in _iter_decoded(Path(path)):
            topic = channel.topic
            run.counts[topic] = run.counts.get(topic, 0) + 1
            if topic == state_topic:
                if not run.joints:
                    run.joints = list(msg.name)
                if list(msg.name) != run.joints or len(msg.position) != len(run.joints):
                    continue
                st_log.append(message.log_time)
                st_stamp.append(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9)
                pos.append(list(msg.position))
                vel.append(list(msg.velocity) if len(msg.velocity) == len(run.joints) else [math.nan] * len(run.joints))
            elif topic == command_topic:
                cmd_log.append(message.log_time)
                cmd.append(list(msg.data))
            elif topic == timing_topic:
                if not fields and msg.layout.dim:
                    fields = msg.layout.dim[0].label.split(",")
                tm_log.append(message.log_time)
                tm.append(list(msg.data))
            elif topic == summary_topic:
                run.summary = json.loads(msg.data)
            elif topic == goal_topic:
                goal_log.append(message.log_time)
                goals.append([msg.pose.position.x, msg.pose.position.y, msg.pose.position.z])
    except Exception:  # a torn tail after a crash: keep everything read before it
        pass
    if st_log:
        st_log_a = np.array(st_log, dtype=np.float64)
        stamps = np.array(st_stamp)
        run.state_time = stamps - stamps[0]
        run.position, run.velocity = np.array(pos), np.array(vel)

        def robot_time(log_times: list[int]) -> np.ndarray:
            # Log times are wall clock; map them onto robot time through the states' stamps.
            return np.interp(np.array(log_times, dtype=np.float64), st_log_a, run.state_time)

        run.command_time = robot_time(cmd_log)
        run.timing_time = robot_time(tm_log)
        run.goal_time = robot_time(goal_log)
        run.goals = np.array(goals).reshape(-1, 3)
    if cmd:
        width = max(len(c) for c in cmd)
        run.command = np.array([c + [math.nan] * (width - len(c)) for c in cmd])
    if tm:
        arr = np.array(tm)
        names = fields or [f"field{i}" for i in range(arr.shape[1])]
        run.timing = {name: arr[:, i] for i, name in enumerate(names)}
    return run


def recorded_samples(path: str | Path, topic: str = "/mpc_controller/transitions") -> list[Sample]:
    """The controller's per-tick samples a recording holds, in recorded order, each read through
    the layout its message names (recordings made before the tick sequence number read as
    ``seq = -1``). Malformed or non-finite rows are left out. A file cut short is read to its
    last whole message."""
    from mbrl_control.core.learning import SampleLayout

    layouts: dict[str, SampleLayout | None] = {}
    out = []
    for _, _, msg in recorded_messages(path, [topic]):
        label = msg.layout.dim[0].label if msg.layout.dim else ""
        if label not in layouts:
            try:
                layouts[label] = SampleLayout.from_label(label)
            except ValueError:
                layouts[label] = None
        layout, row = layouts[label], np.asarray(msg.data, dtype=np.float64)
        if layout is not None and layout.valid(row):
            out.append(layout.unpack(row))
    return out


def transitions_from_recording(path: str | Path, topic: str = "/mpc_controller/transitions", dt: float | None = None):
    """The transitions a recorded run contains: the controller's per-tick samples (state planned
    from, command sent, reward; their layout names the fields) paired one control period apart,
    exactly as the learner pairs them live. ``dt`` defaults to the median spacing of the samples."""
    from mbrl_control.core.learning import TransitionAssembler, Transitions

    samples = recorded_samples(path, topic)
    if len(samples) < 2:
        raise ValueError(f"{path}: no per-tick samples on {topic} (was the controller recorded?)")
    nx, nu = len(samples[0].state), len(samples[0].action)
    samples = [s for s in samples if (len(s.state), len(s.action)) == (nx, nu)]
    period = dt if dt is not None else float(np.median(np.diff([s.stamp for s in samples])))
    assembler = TransitionAssembler(period)
    columns: dict[str, list] = {k: [] for k in ("state", "action", "next_state", "reward", "stamp", "episode")}
    for s in samples:
        pair = assembler.push(s.stamp, s.state, s.action, s.episode, s.reward)
        if pair is not None:
            for key, value in zip(("state", "action", "next_state", "reward", "stamp", "episode"), pair):
                columns[key].append(value)
    n = len(columns["state"])
    if n == 0:
        return Transitions.empty(nx, nu)
    return Transitions(
        seq=np.arange(n, dtype=np.int64),
        state=np.array(columns["state"], np.float32),
        action=np.array(columns["action"], np.float32),
        next_state=np.array(columns["next_state"], np.float32),
        reward=np.array(columns["reward"], np.float32),
        done=np.zeros(n, bool),
        stamp=np.array(columns["stamp"], np.float64),
        episode=np.array(columns["episode"], np.int64),
    )
