"""The fault table (issue 7) through real nodes: for each fault, did the control path survive, how
many control ticks until the robot got a safe command, did the stack recover once the fault
cleared, and was any recorded data lost.

Every run is the real stack on its own ROS domain: sim, EKF estimator, CEM controller (compiled,
the configuration's planner budget), recorder; the learn graph (learner, episode manager,
controller on the learned model) for the learning rows. Sensor faults run in lockstep (exactly
reproducible), faults that need wall-clock time (command loss and the sim's command watchdog, a
planner overrunning its deadline, a sim restart) in realtime. A probe node in this process (see
mbrl_control_testing/fault_probe.py) sees every command, the controller's per-tick timing, /clock, the
true state with the effort the robot applied, and /diagnostics.

Columns:
  survived           the controller and the sim (and the nodes not under test) kept running and
                     commands kept flowing
  safe_within_ticks  control ticks from the reference (``from``: the injection; for command loss,
                     when the robot's command watchdog can first see it) to the first safe command
                     by the controller's own report: finite, within the effort limit, and planned
                     from a state its state_age_ms says was fresh, or the safety layer's zero;
                     after it, every command stays safe (else the row fails). '-': no control tick
                     is involved
  safe_within_ticks_truth  the same judged from the sim's ground truth alone (mbrl_control/
                     fault_probe.py), from the injection: a command is safe when it was planned from
                     a state within TOLERANCE of the true state at its stamp (positions 0.05 m /
                     0.05 rad, velocities 0.5 m/s / 0.5 rad/s, stamp at most 0.12 s before the
                     command: the state timeout plus one period), or is the safe command (no sample
                     that tick, zero effort). Every command after the first safe one stays safe, else
                     the row fails (``unsafe_ticks_truth`` counts all in the window; ``first_unsafe``
                     shows one). Ticks the judge cannot see (no ground truth: the sim killed) count
                     as not yet safe; there the row allows the stale chain's design latency
                     (``unjudged_bound``: stale_after + state_timeout) if no tick it saw was unsafe.
                     The recording rows are judged where the probe's truth reaches (it joins the sim
                     after DDS discovery and ends at the stop). In JSON only:
                     ``worst_planned_state_error``, the worst |state - truth at its stamp| per
                     component a command was planned from, from the injection until the stack
                     planned from a true state again after the clear
                     (``of_tolerance``: its largest component as a fraction of the tolerance), and
                     ``worst_error_at_command``, the same states against the truth when their
                     commands went out (a state planned from again while it ages shows here)
  went_safe          ticks from the reference until the stack's own reaction took over (the zero
                     command, LQR, the robot's zero effort): the detection latency by design
  recovered          back to normal once the fault cleared: planning from fresh states with the
                     pole upright / model swaps resume / the buffer reloads. '-': it does not clear
  data_lost          recorded messages or replay-buffer transitions lost by the recorder's own count
                     (the run's recording is decoded to its end and compared with what the recorder
                     says it wrote; it cannot see what never reached the recorder)
  lost_by_sequence   what the controller sent, by its tick sequence numbers, that the recording (its
                     samples and timing records) or the replay buffer (the transitions the sent
                     samples pair into) lacks. Windows not counted are listed in ``excused`` with
                     their length: what was sent before the recorder subscribed to the topic, after
                     the stop began, and, for the learner SIGKILL, what was in flight (sent after
                     the last transition the learner stored)
  visible            where /diagnostics (or the exit message) shows it

  python bench/faults.py [--only ROW[,ROW...]] [--keep DIR] [--robot ROBOT]

--robot iiwa (any config/<robot>.yaml) runs the rows that need no learner or extra recorders on
that robot, its safe command judged as the robot defines it (an arm: its gravity hold).

Takes about 6 minutes (5.5 on a loaded 2-core machine). Prints the table, then one JSON line:
{"bench": "faults", "rows": [...], "all_pass": ...}.
"""

from __future__ import annotations

import argparse
import array
import dataclasses
import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from common import emit_json, machine, print_table
from mcap.reader import make_reader
from rclpy.serialization import deserialize_message
from ros_run import SpinningNode, claimed_domain
from std_msgs.msg import UInt8MultiArray

from mbrl_control.config import node_settings
from mbrl_control.core.builders import build_ensemble
from mbrl_control.core.dynamics.ensemble import EnsembleDynamics
from mbrl_control.core.learning import ModelInfo, ReplayBuffer, encode, save_checkpoint
from mbrl_control.core.robot import robot_spec
from mbrl_control.graph import learn_graph, mpc_graph, robot_config
from mbrl_control.launcher import Launch, default_environment, node_command
from mbrl_control.nodes.model_receiver import MODEL_QOS
from mbrl_control.nodes.topic_tap import message_class
from mbrl_control.progress import note, progress_bar
from mbrl_control_testing.fault_probe import (
    FALLBACK,
    PLANNED,
    ControlProbe,
    TruthVerdict,
    expected_transitions,
    recorded_seqs,
    robot_under_test,
    sequence_loss,
)

# The robot under test (--robot; the cart-pole by default): its control period, timeouts, effort
# limits, what its safe command is and what settled means (mbrl_control_testing.fault_probe).
ROBOT = robot_under_test("cartpole")
PROBE_CLOSE_S = 10.0  # rclpy's teardown has hung after a long run: give up on it after this
HUNG_PROBES: list[str] = []  # runs whose probe teardown was left behind: leave with os._exit at the end
# Where the sim starts: the pole upright (swing-ups would blur the rows); others from their files.
START_POSTURE = {"cartpole": {"initial_position": [0.0, 0.0], "initial_noise": 0.02}}
# A reach task keeps its configured goal (no goal publisher): settled means the hand is there.
ONE_GOAL = {"goal_publisher": {"enabled": False}}
# Rows that need the learn graph's ensemble or the cart-pole's figures: the cart-pole's alone.
CARTPOLE_ONLY = ("learning", "recording", "bad_parameters", "bad_config")
LOCKSTEP_WINDOW = (1.0, 0.5, 5.5)  # fault start, duration, end of the run [s of robot time]: 4 s to recover
REALTIME_WINDOW = (5.0, 0.5, 9.0)  # late enough for DDS discovery of the sim under load
RECOVERED_FRACTION = 0.9  # of the ticks after the fault planned from fresh states (realtime: a loaded
# machine has the odd state late by more than the timeout, which the safety layer answers with zero)
SENSOR_FAULTS = {  # kind: the estimator's diagnostics key that counts it
    "dropout": "stale_ticks",
    "nan_reading": "rejected_nonfinite",
    "inf_reading": "rejected_nonfinite",
    "wrong_length": "rejected_wrong_length",
    "spike": "rejected_gate",
}


def log(text: str) -> None:
    note(f"[faults] {text}")  # on stderr, above the progress bar


# -- running a graph with a probe --------------------------------------------------------------
class Probe:
    """A node of this process on the run's domain, spinning in a thread, with a ControlProbe
    (``log_dir``: its timing records and samples also go to disk as they arrive)."""

    def __init__(self, domain: int, lockstep: bool, log_dir: Path | None = None) -> None:
        self.spinning = SpinningNode(domain, "fault_probe")
        self.node = self.spinning.node
        self.watch = ROBOT.probe(self.node, lockstep, log_dir)

    def wait(self, condition, timeout: float, what: str) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if condition():
                return True
            time.sleep(0.05)
        log(f"timed out waiting for {what}")
        return False

    def close(self, timeout: float = PROBE_CLOSE_S) -> bool:
        """Tear the probe down within ``timeout``; False when rclpy's teardown hung (it is left
        behind in a daemon thread: what the probe saw is kept, and the caller should leave the
        process with os._exit once its figures are out)."""
        self.watch.close_logs()
        closed = self.spinning.close(timeout)
        if self.spinning.teardown_error is not None:
            log(f"probe teardown: {type(self.spinning.teardown_error).__name__}: {self.spinning.teardown_error}")
        if not closed:
            log(f"the probe's rclpy teardown did not finish within {timeout:.0f} s: left behind")
        return closed


class Run:
    """One scenario: launches on a claimed domain, a probe, the work directory, cleanup."""

    def __init__(self, name: str, work: Path, lockstep: bool) -> None:
        self.name, self.work, self.lockstep = name, work / name, lockstep
        self.work.mkdir(parents=True, exist_ok=True)
        self._domain = claimed_domain()
        self.domain = self._domain.__enter__()
        self.env = default_environment() | {"ROS_DOMAIN_ID": str(self.domain),
                                            "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
        self.probe = Probe(self.domain, lockstep)
        self.watch = self.probe.watch
        self.launches: list[Launch] = []
        self.extra: dict[str, subprocess.Popen] = {}
        self.stop_ns = 0  # when the stop began [wall ns]

    def overrides(self, values: dict) -> str:
        path = self.work / "overrides.yaml"
        path.write_text(yaml.safe_dump({node: {"ros__parameters": p} for node, p in values.items()}))
        return str(path)

    def launch(self, specs) -> Launch:
        launch = Launch(list(specs), log_dir=self.work / "logs", env=self.env, output=open(os.devnull, "w"))
        self.launches.append(launch)
        return launch

    def dump(self) -> None:
        """What the probe saw, for a look afterwards (--keep): ticks.csv and truth.csv."""
        with open(self.work / "ticks.csv", "w") as f:
            f.write("robot_time,wall_s,seq,command,tick_ms,lateness_ms,iterations,state_age_ms,kind,"
                    "sample_stamp,state,truth_kind,state_error,truth_age_ms\n")
            for t in self.watch.ticks():
                s, e = t.sample, t.state_error
                f.write(f"{t.robot_time:.4f},{t.wall_ns * 1e-9:.4f},{t.seq},{' '.join(f'{v:.4g}' for v in t.command)},"
                        f"{t.tick_ms:.2f},{t.lateness_ms:.2f},{t.iterations:.0f},{t.state_age_ms:.1f},{t.kind},"
                        f"{'' if s is None else f'{s.stamp:.4f}'},{'' if s is None else ' '.join(f'{v:.4f}' for v in s.state)},"
                        f"{t.truth_kind},{'' if e is None else ' '.join(f'{v:.4f}' for v in e)},{t.truth_age * 1e3:.1f}\n")
        (self.work / "diagnostics.json").write_text(json.dumps(self.watch.diagnostics, indent=1))
        with open(self.work / "truth.csv", "w") as f:
            f.write("stamp,positions,velocities,efforts\n")
            for stamp, position, velocity, effort in list(self.watch.truth):
                joined = [" ".join(f"{v:.4f}" for v in a) for a in (position, velocity, effort)]
                f.write(f"{stamp:.4f},{joined[0]},{joined[1]},{joined[2]}\n")

    def alive(self, *names: str) -> dict[str, bool]:
        procs = {n: p for launch in self.launches for n, p in launch.procs.items()} | self.extra
        return {n: procs[n].poll() is None for n in names if n in procs}

    def close(self) -> None:
        self.end = self.watch.robot_time()  # what came after this is the shutdown, not the run
        self.stop_ns = time.time_ns()
        for launch in reversed(self.launches):
            launch.stop()
        self.dump()
        for proc in self.extra.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if not self.probe.close():
            HUNG_PROBES.append(self.name)
        self._domain.__exit__(None, None, None)


def split(specs, *names):
    """(specs without ``names``, the specs named)."""
    return [s for s in specs if s.name not in names], [s for s in specs if s.name in names]


def recording_loss(path: Path, log_path: Path) -> tuple[int | None, str]:
    """Messages the recorder said it wrote that do not decode from its file (None: unknown), and how."""
    said = None
    if log_path.is_file():
        found = re.findall(r"recorded (\d+) messages to", log_path.read_text())
        said = int(found[-1]) if found else None
    try:
        with open(path, "rb") as f:
            reader = make_reader(f)
            summary = reader.get_summary()
            if summary is None:
                return said, "no summary section (file not closed)"
            types = {c.topic: summary.schemas[c.schema_id].name for c in summary.channels.values()}
            decoded = 0
            for _, channel, message in reader.iter_messages():
                deserialize_message(message.data, message_class(types[channel.topic]))
                decoded += 1
    except Exception as exc:  # a truncated or garbled file
        return said, f"unreadable: {type(exc).__name__}: {exc}"
    if said is None:
        return None, f"{decoded} messages decode; the recorder's own count is missing"
    return max(0, said - decoded), f"{decoded}/{said} messages decode, summary {summary.statistics.message_count}"


def recording_sequence_loss(w: ControlProbe, path: Path, stop_ns: int, start_ns: int | None = None,
                            after: str = "sent after the stop began", until_last_held: bool = False,
                            before: str = "sent before the recorder subscribed to them") -> dict:
    """What the controller sent (its samples, and its timing records: one per tick), by its
    sequence numbers, that the recording lacks; counted from ``start_ns`` (None: from the first
    item the recording holds, the ones before excused as sent before the recorder subscribed)
    until ``stop_ns`` (``until_last_held``: until the last item it holds, for a recording that
    stopped itself)."""
    samples, timing = recorded_seqs(path)
    sent_timing, sent_samples = w.sent_timing(), w.sent_samples()
    known = set(sent_timing) | timing | set(samples)

    def until(sent: dict[int, int], held) -> int:
        return max((sent[s] for s in held if s in sent), default=-1) + 1 if until_last_held else stop_ns

    counts = {
        "samples": sequence_loss(sent_samples, samples, start_ns, until(sent_samples, samples),
                                 f"samples {before}", f"samples {after}", known),
        "timing_records": sequence_loss(sent_timing, timing, start_ns, until(sent_timing, timing),
                                        f"timing records {before}", f"timing records {after}", known),
    }
    return {"lost": sum(c.lost for c in counts.values()),
            "excused": [e | {"where": "recording"} for c in counts.values() for e in c.excused],
            "counts": {f"recording_{k}": c.as_dict() for k, c in counts.items()}}


def buffer_sequence_loss(w: ControlProbe, on_disk: set[tuple[int, float]], stop_ns: int, start_ns: int | None = None,
                         in_flight: str = "", period: float | None = None,
                         before: str = "transitions sent before the learner subscribed") -> dict:
    """The transitions the samples the controller sent before ``stop_ns`` pair into (as the
    learner pairs them) that the replay buffer lacks, by (episode, stamp), counted by the seq of
    the sample starting each; from ``start_ns`` (None: from the first transition stored, the ones
    before excused). ``in_flight``: the learner was killed; the transitions sent after the last
    one it stored are excused under that name (they died in its queue), with their length."""
    samples = w.received_samples()
    walls = {s.seq: wall for wall, s in samples}
    expected = expected_transitions([s for wall, s in samples if wall < stop_ns], period or ROBOT.period)
    sent = {seq: walls[seq] for seq in expected.values()}
    held = {seq for key, seq in expected.items() if key in on_disk}
    count_until, after = stop_ns, "sent after the stop began"
    if in_flight:
        count_until, after = max((sent[seq] for seq in held), default=-1) + 1, in_flight
    loss = sequence_loss(sent, held, start_ns, count_until, before, after, set(w.sent_timing()))
    for e in loss.excused:
        if in_flight and e["what"] == in_flight:  # how long before the kill they were sent
            e["ms_before_kill"] = round((stop_ns - min(w for w in sent.values() if w >= count_until)) * 1e-6, 1)
    return {"lost": loss.lost, "excused": [e | {"where": "replay buffer"} for e in loss.excused],
            "counts": {"buffer_transitions": loss.as_dict()}}


def combined_loss(*losses: dict | None) -> dict | None:
    """Several holders' losses as one: lost summed, excused windows and counts side by side."""
    losses = [x for x in losses if x is not None]
    if not losses:
        return None
    return {"lost": sum(x["lost"] for x in losses), "excused": [e for x in losses for e in x["excused"]],
            "counts": {k: v for x in losses for k, v in x["counts"].items()}}


def recovered_after(w: ControlProbe, since: float, until: float, need: float = RECOVERED_FRACTION) -> tuple[bool, str]:
    """Back to normal: most ticks after ``since`` planned from fresh states, the task done at the
    end (the pole upright; the hand at its goal)."""
    fraction, n = w.planned_fraction(since, until)
    settled = ROBOT.settled_at_end(w, 1.0, until)
    return n > 0 and fraction >= need and settled, f"{fraction:.0%} of {n} ticks planned, settled at end: {settled}"


def row(fault: str, mode: str, survived: bool, safe: int | None, safe_from: str, went_safe: int | None,
        recovered: bool | None, data_lost: int | None, visible: str, truth: TruthVerdict | None = None,
        loss: dict | None = None, unjudged: str = "", **details) -> dict:
    """One row of the table. ``truth``: the ground-truth judge over the row's ticks (None: no
    control tick involved); ``loss``: what the holders lack by sequence number (None: no stream
    involved); ``unjudged``: why ticks the judge cannot see are expected (else they fail the row)."""
    # Ticks the judge cannot see (``unjudged``, with a reason) count as not yet safe; where they are
    # expected, the first safe command may come as late as the stack's design latency
    # (``unjudged_bound`` ticks), provided nothing the judge did see was unsafe.
    # Where the truth saw none of the window (an arm's hold while its sim is down: a hold is judged
    # at the posture the arm truly has), the controller's own report must show the safe command
    # within that latency, and the row says the truth could not judge it (``truth_blind``).
    bound = details.get("unjudged_bound") if unjudged else None
    blind = (truth is not None and bound is not None and truth.ticks > 0 and truth.unjudged_ticks == truth.ticks
             and went_safe is not None and went_safe <= bound)
    truth_ok = truth is None or blind or (
        truth.safe_within_ticks is not None
        and (truth.safe_within_ticks <= 1 or (bound is not None and truth.unsafe_ticks == 0
                                              and truth.safe_within_ticks <= bound))
        and truth.unsafe_after_safe == 0 and (truth.unjudged_ticks == 0 or bool(unjudged)))
    ok = (survived and (safe is None or safe <= 1) and recovered is not False and data_lost == 0
          and details.get("unsafe_ticks", 0) == 0 and details.get("ok", True) and truth_ok
          and (loss is None or loss["lost"] == 0))
    judged = {} if truth is None else {
        "unsafe_ticks_truth": truth.unsafe_ticks, "unjudged_ticks": truth.unjudged_ticks, "truth_blind": blind,
        **({"unjudged_because": unjudged} if unjudged and truth.unjudged_ticks else {}),
        "worst_planned_state_error": truth.worst_planned_state_error,
        "worst_error_at_command": truth.worst_error_at_command, "first_unsafe": truth.first_unsafe}
    return {"fault": fault, "mode": mode, "survived": survived, "safe_within_ticks": safe, "from": safe_from,
            "safe_within_ticks_truth": None if truth is None else truth.safe_within_ticks,
            "went_safe_ticks": went_safe, "recovered": recovered, "data_lost": data_lost,
            "lost_by_sequence": None if loss is None else loss["lost"],
            "excused": [] if loss is None else loss["excused"], "visible": visible, "pass": bool(ok),
            **judged, **({"sequence_counts": loss["counts"]} if loss else {}), **details}


def recorder_spec(name: str, path: Path, extra: dict | None = None):
    spec = next(s for s in mpc_graph({"robot": ROBOT.name, "record": "true", "record_path": str(path)}) if s.name == "recorder")
    return dataclasses.replace(spec, name=name, parameters=[*spec.parameters, extra or {}])


# -- rows --------------------------------------------------------------------------------------
def sensor_fault(work: Path, kind: str) -> dict:
    start, duration, end = LOCKSTEP_WINDOW
    clear = start + duration
    run = Run(kind, work, lockstep=True)
    try:
        overrides = run.overrides(ONE_GOAL | {
            "sim": START_POSTURE.get(ROBOT.name, {}) | {"diagnostics_rate": 20.0, "fault": {"kind": kind, "start": start, "duration": duration}},
            "estimator": {"diagnostics_rate": 10.0},
            "mpc_controller": {"lockstep_watchdog": 0.15},
        })
        mcap = run.work / "run.mcap"
        launch = run.launch(mpc_graph({"robot": ROBOT.name, "mode": "lockstep", "overrides": overrides, "record": "true",
                                       "record_path": str(mcap)}))
        w = run.watch
        run.probe.wait(lambda: w.robot_time() >= end, 240, f"{kind}: robot time {end} s")
        time.sleep(0.5)
        alive = run.alive(*launch.procs)
    finally:
        run.close()
    v = w.judge(start, clear, end)
    recovered, back = recovered_after(w, clear + 0.5, min(end, run.end), need=1.0)  # lockstep: every tick
    lost, how = recording_loss(mcap, run.work / "logs" / "recorder.log")
    key = SENSOR_FAULTS[kind]
    injected = w.number("sim", "fault_readings")
    reaction = w.number("estimator", key)
    if kind == "spike":  # gated; once they have jumped about for a while, not trusted until they agree again
        key += f"={reaction:.0f}, rejected_distrusted={w.number('estimator', 'rejected_distrusted'):.0f}, " \
               f"event_reinit_refused"
        reaction = w.number("estimator", "event_reinit_refused")
    visible = (f"sim: fault_readings={injected:.0f}, 'fault injected: {kind}'; estimator: {key}={reaction:.0f}; "
               f"controller: stale_ticks={w.number('mpc_controller', 'stale_ticks'):.0f}")
    survived = all(alive.values()) and v.ticks_after >= (end - start) / ROBOT.period - 5
    return row(kind, "lockstep", survived, v.safe_within_ticks, "injection", v.first_fallback_tick, recovered,
               lost, visible, v.truth, recording_sequence_loss(w, mcap, run.stop_ns),
               unsafe_ticks=v.unsafe_ticks, fallback_ticks=v.fallback_ticks,
               max_gap_ms=round(v.max_gap_ms, 1), after_clear=back, recording=how, alive=alive,
               ok=injected > 0 and reaction > 0 and w.ever("sim", lambda m, _: m.startswith("fault injected")))


def realtime_stack(run: Run, sim_extra: dict, controller_extra: dict | None = None, record: bool = True):
    """The realtime stack with the sim started last, once the controller and estimator are warm
    (so fault windows in sim time fall where the controller runs). Returns (stack, sim) launches."""
    overrides = run.overrides(ONE_GOAL | {"sim": START_POSTURE.get(ROBOT.name, {}) | {"diagnostics_rate": 10.0} | sim_extra,
                               "estimator": {"diagnostics_rate": 10.0},
                               "mpc_controller": {"diagnostics_rate": 5.0} | (controller_extra or {})})
    args = {"robot": ROBOT.name, "mode": "realtime", "overrides": overrides}
    if record:
        args |= {"record": "true", "record_path": str(run.work / "run.mcap")}
    rest, sim = split(mpc_graph(args), "sim")
    stack = run.launch(rest)
    w = run.watch
    # The controller's diagnostics start once it is warm (an arm's sends no command before a state).
    run.probe.wait(lambda: w.value("mpc_controller", "mode") is not None and w.value("estimator", "kind") is not None
                   and (not record or w.value("recorder", "messages") is not None), 240, "the stack to warm up")
    return stack, run.launch(sim)


def command_loss(work: Path) -> dict:
    start, duration, end = REALTIME_WINDOW
    run = Run("command_loss", work, lockstep=False)
    try:
        stack, sim = realtime_stack(run, {"fault": {"kind": "command_loss", "start": start, "duration": duration}})
        w = run.watch
        run.probe.wait(lambda: w.value("sim", "fault_ended_at") not in (None, ""), 120, "the fault to clear")
        t0, t1 = float(w.value("sim", "fault_started_at") or "nan"), float(w.value("sim", "fault_ended_at") or "nan")
        run.probe.wait(lambda: w.robot_time() >= t1 + (end - start - duration), 60, "the run's end")
        time.sleep(0.3)
        alive = run.alive(*stack.procs, *sim.procs)
    finally:
        run.close()
    # The robot: its watchdog sees the loss once the last command is command_timeout old. Its safe
    # state from then: zero effort; with brakes (an arm, which zero effort would drop), braked
    # still (the truth's velocities exactly zero; its efforts are then the brakes' holding torque).
    detectable = t0 + ROBOT.command_timeout
    truth = [(stamp, v, e) for stamp, _, v, e in w.truth_between(t0, t1)]

    def robot_safe(v: np.ndarray, e: np.ndarray) -> bool:
        return bool(np.all(v == 0.0)) if ROBOT.brakes else bool(e[0] == 0.0)

    zero_at = next((t for t, v, e in truth if t >= detectable - ROBOT.period and robot_safe(v, e)), None)
    safe = None if zero_at is None else max(0, math.floor((zero_at - detectable) / ROBOT.period + 1e-9))
    nonzero_after = sum(1 for t, v, e in truth if zero_at is not None and t >= zero_at and not robot_safe(v, e))
    v = w.judge(t0, t1, run.end)
    pushed_again = any(e != 0.0 for _, e in w.applied_effort(t1, math.inf))
    recovered, back = recovered_after(w, t1 + 0.5, run.end)
    recovered = recovered and pushed_again
    lost, how = recording_loss(run.work / "run.mcap", run.work / "logs" / "recorder.log")
    went_safe = None if zero_at is None else round((zero_at - t0) / ROBOT.period)
    visible = (f"sim: fault_commands_lost={w.number('sim', 'fault_commands_lost'):.0f}, "
               f"command_timeouts={w.number('sim', 'command_timeouts'):.0f}, 'fault injected: command_loss'")
    return row("command_loss", "realtime", all(alive.values()) and v.ticks_after > 0, safe,
               "robot watchdog timeout", went_safe, recovered, lost, visible, v.truth,
               recording_sequence_loss(w, run.work / "run.mcap", run.stop_ns),
               unsafe_ticks=v.unsafe_ticks + nonzero_after, robot_unsafe_after_safe=nonzero_after,
               robot_safe_state="braked still" if ROBOT.brakes else "zero effort",
               controller_unsafe_ticks=v.unsafe_ticks, after_clear=back, recording=how, alive=alive)


def deadline_overrun(work: Path, name: str, delay: float, end: float) -> dict:
    """A planner slowed by ``delay`` inside every planning call for 1 s (fault.planner_delay)."""
    start, duration = 3.0, 1.0
    run = Run(name, work, lockstep=False)
    try:
        stack, sim = realtime_stack(run, {}, {"fault": {"planner_delay": delay, "start": start, "duration": duration}})
        w = run.watch
        run.probe.wait(lambda: w.samples, 60, "the first planned tick")
        first = min(wall for wall, _ in w.received_samples()) * 1e-9  # the first planning call: the window counts from there
        run.probe.wait(lambda: w.robot_time() >= first + end, 60, "the run's end")
        time.sleep(0.5)
        alive = run.alive(*stack.procs, *sim.procs)
    finally:
        run.close()
    t0, t1 = first + start, first + start + duration
    v = w.judge(t0, t1, run.end)
    during = [t for t in w.ticks() if t0 <= t.robot_time < t1]
    full = ROBOT.planner_iterations
    cut = [t for t in during if t.iterations < full]  # the planner stopped at its deadline
    gaps = [(b.wall_ns - a.wall_ns) * 1e-9 / ROBOT.period for a, b in zip(during, during[1:])]
    late = [t for t in w.ticks() if t1 + 1.0 <= t.robot_time < run.end]
    cut_after = sum(t.iterations < full for t in late) / max(1, len(late))  # the loaded machine's own misses
    recovered, back = recovered_after(w, t1 + 1.0, run.end)
    recovered = recovered and cut_after < 0.2
    lost, how = recording_loss(run.work / "run.mcap", run.work / "logs" / "recorder.log")
    first_cut = next((i for i, t in enumerate(during) if t.iterations < full), None)
    c = lambda key: f"{w.number('mpc_controller', key):.0f}"  # noqa: E731
    visible = (f"controller: fault_delayed_plans={c('fault_delayed_plans')}, deadline_stops={c('deadline_stops')}, "
               f"fallback_lqr={c('fallback_lqr')}, missed_ticks={c('missed_ticks')}")
    return row(name, "realtime", all(alive.values()) and len(during) > 0, v.safe_within_ticks,
               "injection", first_cut, recovered, lost, visible, v.truth,
               recording_sequence_loss(w, run.work / "run.mcap", run.stop_ns), unsafe_ticks=v.unsafe_ticks,
               planner_delay_ms=delay * 1e3, ticks_in_window=len(during), deadline_cut_ticks=len(cut),
               max_command_gap_ticks=round(max(gaps), 2) if gaps else None, cut_after_clear=round(cut_after, 3),
               after_clear=back, recording=how, alive=alive,
               ok=len(cut) > 0.8 * len(during) and w.number("mpc_controller", "deadline_stops") > 0)


def sim_restart(work: Path) -> dict:
    run = Run("sim_restart", work, lockstep=False)
    try:
        stack, sim = realtime_stack(run, {})
        w = run.watch
        run.probe.wait(lambda: sum(t.kind == PLANNED for t in w.ticks()) > 150, 90, "3 s of control")
        killed = time.time()
        code = sim.kill("sim")  # SIGKILL
        time.sleep(2.0)
        sim.restart("sim")
        run.probe.wait(lambda: w.truth and w.truth[-1][0] > killed + 2.0, 90, "the restarted sim")
        restarted = min(t[0] for t in list(w.truth) if t[0] > killed + 2.0)  # its first state (robot time)
        run.probe.wait(lambda: w.truth[-1][0] > restarted + 12.0, 90, "12 s of the restarted sim")
        time.sleep(0.3)
        alive = run.alive(*stack.procs, *sim.procs)
    finally:
        run.close()
    v = w.judge(killed, restarted)
    after = [t for t in w.ticks() if killed <= t.robot_time < run.end]
    zero = v.first_fallback_tick  # the controller's zero command, once the state went stale
    resumed, outage = math.inf, []
    if zero is not None:  # fresh states from the restarted sim: planning again
        resumed = next((t.robot_time for t in after[zero:] if t.kind == PLANNED), math.inf)
        outage = [t for t in after if after[zero].robot_time <= t.robot_time < resumed]
    recovered, back = recovered_after(w, resumed + 8.0, run.end)  # the pole fell meanwhile: a swing-up
    lost, how = recording_loss(run.work / "run.mcap", run.work / "logs" / "recorder.log")
    visible = (f"controller: stale_ticks={w.number('mpc_controller', 'stale_ticks'):.0f}, 'degraded: state stale'; "
               f"estimator: stale_ticks={w.number('estimator', 'stale_ticks'):.0f}")
    return row("sim_restart", "realtime", all(alive.values()) and code == -signal.SIGKILL and v.ticks_after > 0,
               v.safe_within_ticks, "kill", zero, recovered, lost, visible, v.truth,
               recording_sequence_loss(w, run.work / "run.mcap", run.stop_ns),
               unjudged="no ground truth while the sim is down (states predicted past its last reading)",
               unjudged_bound=round((ROBOT.stale_after + ROBOT.state_timeout) / ROBOT.period), unsafe_ticks=v.unsafe_ticks,
               control_lost_s=round(resumed - killed, 2),
               zero_ticks_until_fresh_states=len(outage), after_restart=back, recording=how, alive=alive,
               ok=bool(outage) and all(t.kind == FALLBACK for t in outage))


def _ensemble() -> EnsembleDynamics:
    params = node_settings(robot_config("cartpole"), "learner")
    model = build_ensemble(params, robot_spec(params))
    model.fit_normalizer(torch.randn(64, 4), torch.randn(64, 1), torch.randn(64, 4))
    return model


def _model_message(model: EnsembleDynamics, version: int) -> UInt8MultiArray:
    return UInt8MultiArray(data=array.array("B", encode(model, ModelInfo(model.config, version, 100, 0.5, 0.1))))


def learning_rows(work: Path) -> list[dict]:
    """One learn-graph run (lockstep) for three rows: the learner resumes past a corrupted
    checkpoint; malformed and wrong-shaped model messages; the learner SIGKILLed mid-episode."""
    run = Run("learning", work, lockstep=True)
    rows = []
    model = _ensemble()
    checkpoints = run.work / "learner" / "checkpoints"
    for version in (1, 2):
        save_checkpoint(checkpoints, model, ModelInfo(model.config, version, 100, 0.5, 0.1))
    blob = checkpoints / "ensemble_v00000002.safetensors"
    data = bytearray(blob.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)  # a bad sector in the newest checkpoint
    blob.write_bytes(bytes(data))
    w = run.watch
    try:
        # On untrained models the controller drives the cart into its end stops, where the estimator
        # goes stale (it cannot predict an impact): the lockstep watchdog ticks those periods, at
        # 0.15 s of wall time each rather than 0.5 s, as in the sensor rows.
        overrides = run.overrides({"mpc_controller": {"lockstep_watchdog": 0.15}})
        launch = run.launch(learn_graph({"episodes": "2", "episode_length": "12", "output_dir": str(run.work),
                                         "record": "true", "overrides": overrides}))
        # 1. corrupted checkpoint: the learner resumes from v1, the controller swaps it in.
        ok = run.probe.wait(lambda: w.value("mpc_controller", "model_version") == "1" and len(w.ticks()) > 50, 240,
                            "the controller on model v1")
        alive = run.alive(*launch.procs)
        v = w.judge(-math.inf, None)
        set_aside = (checkpoints / "ensemble_v00000002.safetensors.corrupt").is_file() and \
            (checkpoints / "ensemble_v00000002.json.corrupt").is_file()
        visible = (f"learner: damaged_checkpoints={w.value('learner', 'damaged_checkpoints')}, "
                   f"resumed_from={w.value('learner', 'resumed_from')} (WARN)")
        rows.append(row("corrupted_checkpoint", "lockstep", all(alive.values()) and ok, v.safe_within_ticks,
                        "learner start", None, ok and w.value("learner", "resumed_from") == "ensemble_v00000001",
                        0 if set_aside and (checkpoints / "ensemble_v00000001.safetensors").is_file() else 1, visible,
                        v.truth, unsafe_ticks=v.unsafe_ticks, damaged_set_aside=set_aside, alive=alive))

        # 2. malformed / wrong-shaped / non-finite model messages, then a good one.
        pub = run.probe.node.create_publisher(UInt8MultiArray, "/learner/model", MODEL_QOS)
        other = EnsembleDynamics(dataclasses.replace(model.config, members=3))
        poisoned = _ensemble()
        with torch.no_grad():
            poisoned.weights[0][0, 0, 0] = float("nan")
        truncated = _model_message(model, 50)
        truncated.data = truncated.data[: len(truncated.data) // 2]
        bad = [UInt8MultiArray(data=array.array("B", b"not a model at all")), truncated,
               _model_message(other, 51), _model_message(poisoned, 52)]
        t0, ticks0 = w.robot_time(), len(w.ticks())
        rejected0 = w.number("mpc_controller", "rejected_models")
        for msg in bad:
            pub.publish(msg)
            time.sleep(0.3)
        run.probe.wait(lambda: w.number("mpc_controller", "rejected_models") >= rejected0 + len(bad), 30,
                       "the bad models rejected")
        kept = w.value("mpc_controller", "model_version") == "1"
        reason = w.value("mpc_controller", "last_model_reject_reason")
        pub.publish(_model_message(model, 100))
        swapped = run.probe.wait(lambda: w.value("mpc_controller", "model_version") == "100", 30, "model v100")
        run.probe.wait(lambda: len(w.ticks()) > ticks0 + 50, 60, "50 more ticks")
        v = w.judge(t0, None)
        alive = run.alive(*launch.procs)
        rejected = w.number("mpc_controller", "rejected_models") - rejected0
        rows.append(row("malformed_model_message", "lockstep", all(alive.values()) and v.ticks_after > 50,
                        v.safe_within_ticks, "injection", None, swapped, 0,
                        f"controller: rejected_models=+{rejected:.0f}, last reason '{(reason or '')[:60]}'", v.truth,
                        unsafe_ticks=v.unsafe_ticks, kept_model_v1=kept, messages=len(bad),
                        ok=kept and rejected == len(bad)))

        # 3. learner SIGKILL mid-episode: control goes on, the buffer holds every transition sent
        # but those still in flight (sent after the last one it stored: they die in its queue).
        run.probe.wait(lambda: w.number("learner", "next_seq") > 100, 120, "100 transitions recorded")
        t0, ticks0 = w.robot_time(), len(w.ticks())
        killed_ns = time.time_ns()
        code = launch.kill("learner")
        run.probe.wait(lambda: len(w.ticks()) > ticks0 + 50, 60, "control after the kill")
        control_went_on = len(w.ticks()) > ticks0 + 50
        buffer = ReplayBuffer(4, 1, run.work / "learner" / "replay")
        snap = buffer.snapshot()
        buffer.close()
        on_disk = {(int(e), round(float(s), 4)) for e, s in zip(snap.episode, snap.stamp)}
        buffer_loss = buffer_sequence_loss(w, on_disk, killed_ns,
                                           in_flight="in flight at the SIGKILL: sent after the last transition the "
                                                     "learner stored")
        launch.restart("learner")
        reloaded = run.probe.wait(lambda: w.number("learner", "reloaded_transitions") >= len(on_disk), 120,
                                  "the learner reloaded")
        seq = w.number("learner", "next_seq")
        run.probe.wait(lambda: w.number("learner", "next_seq") > seq + 20, 120, "new transitions after the restart")
        v = w.judge(t0, None)
        alive = run.alive(*launch.procs)
        survived = all(alive.values()) and control_went_on and code == -signal.SIGKILL
        sent = buffer_loss["counts"]["buffer_transitions"]
        rows.append(row("learner_sigkill", "lockstep", survived, v.safe_within_ticks, "kill", None,
                        reloaded and w.number("learner", "next_seq") > seq + 20, 0,
                        f"learner status stops (kill); after restart reloaded_transitions="
                        f"{w.number('learner', 'reloaded_transitions'):.0f}", v.truth, buffer_loss,
                        unsafe_ticks=v.unsafe_ticks,
                        transitions_sent_before_kill=sent["sent"] + sum(e["items"] for e in sent["excused"]),
                        transitions_on_disk=len(on_disk), alive=alive))
    finally:
        run.close()
    # The recording of the whole run: by the recorder's count and by the controller's sequence numbers.
    lost, how = recording_loss(run.work / "run.mcap", run.work / "logs" / "recorder.log")
    by_sequence = recording_sequence_loss(w, run.work / "run.mcap", run.stop_ns)
    for r in rows:
        r["recording"] = how
        r["data_lost"] = None if r["data_lost"] is None or lost is None else r["data_lost"] + lost
        loss = combined_loss(by_sequence, {"lost": r["lost_by_sequence"], "excused": r["excused"],
                                           "counts": r.get("sequence_counts", {})} if r["lost_by_sequence"] is not None else None)
        r["lost_by_sequence"], r["excused"], r["sequence_counts"] = loss["lost"], loss["excused"], loss["counts"]
        r["pass"] = r["pass"] and lost == 0 and by_sequence["lost"] == 0
    return rows


def recording_rows(work: Path) -> list[dict]:
    """Realtime stack with three extra recorders: one limited to 400 kB (RLIMIT_FSIZE: the disk
    fills), one stopped with SIGINT and one with SIGTERM mid-run."""
    limit = 400_000
    run = Run("recording", work, lockstep=False)
    try:
        stack, sim = realtime_stack(run, {}, record=False)
        w = run.watch

        def limit_file_size():
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        spec = recorder_spec("recorder_full", run.work / "full.mcap", {"chunk_size": 16384, "diagnostics_rate": 5.0})
        with open(run.work / "logs" / "recorder_full.log", "w") as out:
            run.extra["recorder_full"] = subprocess.Popen(
                node_command(spec, run.work), env=run.env, stdout=out, stderr=subprocess.STDOUT,
                preexec_fn=limit_file_size)
        signalled = run.launch([recorder_spec("recorder_sigint", run.work / "sigint.mcap"),
                                recorder_spec("recorder_sigterm", run.work / "sigterm.mcap")])
        run.probe.wait(lambda: all(w.value(n, "messages") is not None for n in ("recorder_sigint", "recorder_sigterm")),
                       60, "the recorders")
        time.sleep(4.0)
        signalled_ns, codes = {}, {}
        for name, sig in (("recorder_sigint", signal.SIGINT), ("recorder_sigterm", signal.SIGTERM)):
            signalled_ns[name] = time.time_ns()
            codes[name] = signalled.kill(name, sig)
        full_stop = run.probe.wait(lambda: "stopped" in w.messages.get("recorder_full", (0, ""))[1], 60,
                                   "the disk to fill")
        time.sleep(1.5)
        level, message = w.messages.get("recorder_full", (0, ""))
        recorded = w.number("recorder_full", "messages")
        dropped = w.number("recorder_full", "dropped")
        full_alive = run.extra["recorder_full"].poll() is None
        ticks_end = w.ticks()[-1].robot_time if w.ticks() else math.nan
        alive = run.alive(*stack.procs, *sim.procs)
        run.extra["recorder_full"].send_signal(signal.SIGINT)
        full_code = run.extra["recorder_full"].wait(15)
    finally:
        run.close()
    # Judged where the probe's ground truth reaches: it joins the sim some ticks after the stack
    # (DDS discovery), and the last states outrun it at the stop; those ticks no one can judge.
    # From its first sample on, a tick's state (at most the judge's max age old) has a truth.
    stamps = w.ground_truth().stamps
    first, last = (stamps[0] + ROBOT.state_timeout + ROBOT.period, stamps[-1]) if len(stamps) else (-math.inf, math.inf)
    v = w.judge(first, None, min(ticks_end + 1, last))
    size = (run.work / "full.mcap").stat().st_size
    # Everything the recorder wrote until the disk filled must decode (later messages are 'dropped').
    lost, how = recording_loss(run.work / "full.mcap", run.work / "logs" / "recorder_full.log")
    full_loss = recording_sequence_loss(w, run.work / "full.mcap", run.stop_ns, until_last_held=True,
                                        after="sent after the file filled (the recorder's 'dropped')")
    rows = [row("disk_full_recording", "realtime", all(alive.values()) and full_alive and full_code == 0,
                v.safe_within_ticks, "start", None, None, lost,
                f"recorder: ERROR '{message[:70]}', dropped={dropped:.0f}", v.truth, full_loss,
                unsafe_ticks=v.unsafe_ticks, file_bytes=size, limit_bytes=limit,
                recorded_at_stop=int(recorded) if math.isfinite(recorded) else None,
                recording=how, ok=full_stop and level == 2 and size <= limit and dropped > 0)]
    for name, sig in (("recorder_sigint", "SIGINT"), ("recorder_sigterm", "SIGTERM")):
        lost, how = recording_loss(run.work / f"{name[9:]}.mcap", run.work / "logs" / f"{name}.log")
        loss = recording_sequence_loss(w, run.work / f"{name[9:]}.mcap", signalled_ns[name],
                                       after=f"sent after the {sig}")
        rows.append(row(f"{sig}_during_recording", "realtime", all(alive.values()) and codes[name] == 0,
                        v.safe_within_ticks, "start", None, None, lost,
                        f"exit {codes[name]}; log 'recorded N messages'", v.truth, loss,
                        unsafe_ticks=v.unsafe_ticks, recording=how))
    return rows


def bad_parameters(work: Path) -> dict:
    cases = [  # node, overrides, words its message must hold
        ("sim", {"physics_rate": 5.0}, ["'physics_rate'", "[10.0, 10000.0]"]),
        ("sim", {"fault": {"kind": "meltdown"}}, ["'fault.kind'", "dropout", "command_loss"]),
        ("sim", {"fault": {"duration": -0.5}}, ["'fault.duration'", "[0.0, 10000000.0]"]),
        ("mpc_controller", {"control_rate": 5000.0}, ["'control_rate'", "[1.0, 1000.0]"]),
        ("mpc_controller", {"fault": {"planner_delay": 20.0}}, ["'fault.planner_delay'", "[0.0, 10.0]"]),
        ("mpc_controller", {"control_rate": 50}, ["'control_rate'", "float"]),
        ("estimator", {"estimator": {"stale_after": 0.0}}, ["'estimator.stale_after'", "[0.001, 10.0]"]),
        ("recorder", {"chunk_size": 10}, ["'chunk_size'", "[1024, 67108864]"]),
        ("learner", {"replay": {"chunk_size": 0}}, ["'replay.chunk_size'", "[1, 100000]"]),
    ]
    scratch = work / "bad_parameters"
    scratch.mkdir(parents=True, exist_ok=True)
    specs = {s.name: s for s in [*mpc_graph({"record": "true"}), *learn_graph({"output_dir": str(scratch)})]}
    results = []
    with claimed_domain() as domain:
        env = default_environment() | {"ROS_DOMAIN_ID": str(domain)}
        procs = []
        for i, (node, values, words) in enumerate(cases):
            spec = dataclasses.replace(specs[node], parameters=[*specs[node].parameters, values])
            d = scratch / str(i)
            d.mkdir(exist_ok=True)
            procs.append((node, words, subprocess.Popen(node_command(spec, d), env=env, stdout=subprocess.PIPE,
                                                        stderr=subprocess.PIPE, text=True)))
        for node, words, proc in procs:
            try:
                _, err = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            fatal = next((line for line in err.splitlines() if "[FATAL]" in line), "")
            results.append({"node": node, "exit": proc.returncode, "message": fatal[:160],
                            "ok": proc.returncode == 2 and all(w in fatal for w in words) and "Traceback" not in err})
    ok = all(r["ok"] for r in results)
    return row("bad_parameter_values", "start", ok, None, "-", None, None, 0,
               f"stderr '[FATAL] cannot start: parameter ... must be in [low, high]' ({len(results)} cases)",
               cases=results, ok=ok)


def bad_config(work: Path) -> dict:
    scratch = work / "bad_config"
    scratch.mkdir(parents=True, exist_ok=True)
    garbled = scratch / "garbled.yaml"
    garbled.write_text("/**:\n  ros__parameters:\n    control_rate: [50.0\nsim: : :\n")
    cases = [("missing robot config", [f"robot:={scratch / 'missing.yaml'}"], ["missing.yaml", "no parameter file"]),
             ("garbled robot config", [f"robot:={garbled}"], ["garbled.yaml", "not valid YAML"]),
             ("garbled overrides", [f"overrides:={garbled}"], ["garbled.yaml", "not valid YAML"])]
    results = []
    with claimed_domain() as domain:
        env = default_environment() | {"ROS_DOMAIN_ID": str(domain)}
        for name, args, words in cases:
            cmd = [sys.executable, "-m", "mbrl_control.cli", "launch", "mpc", "mode:=lockstep", *args]
            try:
                result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
                out, code = result.stderr, result.returncode
            except subprocess.TimeoutExpired:
                out, code = "timed out", None
            line = next((x for x in out.splitlines() if "error" in x or "[FATAL]" in x), "")
            results.append({"case": name, "exit": code, "message": line[:160],
                            "ok": code not in (0, None) and all(w in out for w in words) and "Traceback" not in out})
    ok = all(r["ok"] for r in results)
    return row("missing_or_garbled_config", "start", ok, None, "-", None, None, 0,
               "launcher / every node: exit 2, the file named", cases=results, ok=ok)


ROWS = {
    **{kind: (lambda work, k=kind: [sensor_fault(work, k)]) for kind in SENSOR_FAULTS},
    "command_loss": lambda work: [command_loss(work)],
    # the planner's whole budget (0.8 period) gone before its first iteration ends: cut at the deadline
    "deadline_overrun": lambda work: [deadline_overrun(work, "deadline_overrun", 0.8 * ROBOT.period, 7.0)],
    # slower than the whole period: ticks overrun (the pole may fall; recovered after a swing-up)
    "period_overrun": lambda work: [deadline_overrun(work, "period_overrun", 1.25 * ROBOT.period, 13.0)],
    "sim_restart": lambda work: [sim_restart(work)],
    "learning": learning_rows,
    "recording": recording_rows,
    "bad_parameters": lambda work: [bad_parameters(work)],
    "bad_config": lambda work: [bad_config(work)],
}


def fmt(value) -> str:
    return "-" if value is None else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help=f"comma-separated groups of rows: {', '.join(ROWS)}")
    parser.add_argument("--keep", type=Path, default=None, help="keep logs and recordings in this directory")
    parser.add_argument("--robot", default="cartpole", help="config/<robot>.yaml or a parameter file: the robot under "
                        f"test (rows {', '.join(CARTPOLE_ONLY)} are the cart-pole's)")
    args = parser.parse_args()
    global ROBOT
    ROBOT = robot_under_test(args.robot)
    torch.set_num_threads(1)
    rows_here = [g for g in ROWS if ROBOT.name == "cartpole" or g not in CARTPOLE_ONLY]
    groups = [g for g in args.only.split(",") if g] or rows_here
    unknown = set(groups) - set(rows_here)
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)} for {ROBOT.name}; known: {', '.join(rows_here)}")
    work = args.keep or Path(tempfile.mkdtemp(prefix="mbrl_faults_"))
    started = time.monotonic()
    rows = []
    bar = progress_bar(total=len(groups), desc="faults", unit="group")
    for group in groups:
        t = time.monotonic()
        bar.set_postfix_str(f"{group} ...")
        try:
            new = ROWS[group](work)
        except Exception as exc:  # a scenario that breaks is a failed row, not a lost table
            new = [row(group, "?", False, None, "-", None, False, None, f"bench error: {type(exc).__name__}: {exc}")]
        for r in new:
            r["wall_s"] = round(time.monotonic() - t, 1)
        rows += new
        log(f"{group}: {'pass' if all(r['pass'] for r in new) else 'FAIL'} in {time.monotonic() - t:.0f} s")
        failed = sum(not r["pass"] for r in rows)
        bar.set_postfix_str(f"{len(rows) - failed} rows pass, {failed} fail", refresh=False)
        bar.update(1)
    bar.close()
    headers = ["fault", "mode", "survived", "safe_within_ticks", "from", "safe_within_ticks_truth",
               "worst state error (of tol.)", "went_safe", "recovered", "data_lost", "lost_by_sequence", "excused",
               "pass", "visible in /diagnostics"]

    def worst(r):
        e = r.get("worst_planned_state_error")
        return "-" if not e else f"{e['of_tolerance']:.2f}"

    def excused(r):
        return "; ".join(f"{e['items']} {e['what']} ({e['ms']:.0f} ms)" for e in r["excused"]) or "-"

    print_table(headers, [[r["fault"], r["mode"], r["survived"], fmt(r["safe_within_ticks"]), r["from"],
                           fmt(r["safe_within_ticks_truth"]), worst(r), fmt(r["went_safe_ticks"]), fmt(r["recovered"]),
                           fmt(r["data_lost"]), fmt(r["lost_by_sequence"]), excused(r), r["pass"], r["visible"]]
                          for r in rows])
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    emit_json({
        "bench": "faults",
        "machine": machine(),
        "loadavg_1min": round(os.getloadavg()[0], 2),
        "wall_s": round(time.monotonic() - started, 1),
        "robot": ROBOT.name,
        "tolerance": ROBOT.tolerance.as_dict(),
        "rows": rows,
        "all_pass": all(r["pass"] for r in rows),
    })
    if HUNG_PROBES:  # an rclpy teardown left hanging in a thread must not hold the process after the figures
        os._exit(0)


if __name__ == "__main__":
    main()
