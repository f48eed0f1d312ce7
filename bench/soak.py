"""Soak: sim + estimator + learner + controller at 100 Hz, in realtime, for a given time, learning
alongside (learn.launch.py's graph: the controller explores, then plans on the models the learner
trains at every episode; the episode manager resets the robot every ``--episode`` seconds), with
every topic recorded. Reports:

- missed-tick fraction and tick p50/p99 (the controller's own count; p99 over every tick's
  duration from ``/mpc_controller/timing``),
- RSS of every node (psutil when installed, else /proc/<pid>/status VmRSS) sampled every 2 s and its
  growth per hour: the slope of a linear fit after the warm-up (the learner's replay buffer lives in
  memory too, about 60 bytes per transition: 22 MB/h at 100 Hz is data, not a leak),
- integrity: the MCAP recording decodes to its end, holds what the recorder says it wrote and
  every sample the controller sent during the run; the replay buffer reloads from disk with every
  transition the controller sent.

  python bench/soak.py [--minutes 2] [--episode 30] [--keep DIR]

The planner budget is sized for 100 Hz on two cores (CEM 100 x 15 x 2 on the ensemble, eager):
the configuration's 500 x 30 x 5 does not fit a 10 ms period here. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from common import emit_json, machine, print_table
from faults import Probe, recording_loss, transitions_sent
from ros_run import claimed_domain

from mbrl_control.core.learning import ReplayBuffer
from mbrl_control.graph import learn_graph
from mbrl_control.launcher import Launch, default_environment

RATE = 100.0
CEM = {"population": 100, "elites": 10, "horizon": 15, "iterations": 2}
SAMPLE_S = 2.0
WARMUP_S = 30.0  # RSS before this much control time is start-up (compilation, first allocations)

try:
    import psutil
except ImportError:  # not a dependency: /proc does as well on Linux
    psutil = None


def rss_mb(pid: int) -> float:
    if psutil is not None:
        try:
            return psutil.Process(pid).memory_info().rss / 2**20
        except psutil.Error:
            return math.nan
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def growth_per_hour(times: list[float], values: list[float]) -> float:
    t, v = np.array(times), np.array(values)
    keep = np.isfinite(v)
    if keep.sum() < 3:
        return math.nan
    return float(np.polyfit(t[keep], v[keep], 1)[0] * 3600.0)


def recorded_stamps(path: Path, topic: str) -> set[float]:
    """Stamps (first field) of the Float64MultiArray messages of ``topic`` in an MCAP recording."""
    from mcap_ros2.reader import read_ros2_messages

    try:
        return {round(m.ros_msg.data[0], 4) for m in read_ros2_messages(str(path), topics=[topic])}
    except Exception:  # unreadable: recording_loss says why
        return set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--episode", type=float, default=30.0,
                        help="episode length [s]: a reset and a training round each")
    parser.add_argument("--keep", type=Path, default=None, help="keep logs, recording and buffer here")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="mbrl_soak_"))
    work.mkdir(parents=True, exist_ok=True)
    overrides = work / "overrides.yaml"
    overrides.write_text(yaml.safe_dump({
        "/**": {"ros__parameters": {"control_rate": RATE}},
        "mpc_controller": {"ros__parameters": {"cem": CEM, "diagnostics_rate": 1.0}},
    }))
    load_before = os.getloadavg()
    with claimed_domain() as domain:
        env = default_environment() | {"ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
        probe = Probe(domain, lockstep=False)
        w = probe.watch
        specs = learn_graph({"mode": "realtime", "episodes": "100000", "episode_length": str(args.episode),
                             "output_dir": str(work), "record": "true", "overrides": str(overrides)})
        launch = Launch(specs, log_dir=work / "logs", env=env, output=open(os.devnull, "w"))
        os.nice(5)  # after the nodes started (they inherit it): measuring yields to what it measures, as monitors do
        rss: dict[str, list[tuple[float, float]]] = {name: [] for name in launch.procs}
        loads = []
        try:
            probe.wait(lambda: w.samples and w.value("mpc_controller", "ticks") is not None, 300, "the first tick")
            start, start_ns = time.monotonic(), time.time_ns()
            ticks_at_start = w.number("mpc_controller", "ticks")
            missed_at_start = w.number("mpc_controller", "missed_ticks")
            print(f"controlling at {RATE:.0f} Hz for {args.minutes:.1f} min ...", flush=True)
            while time.monotonic() - start < args.minutes * 60:
                t = time.monotonic() - start
                for name, proc in launch.procs.items():
                    rss[name].append((t, rss_mb(proc.pid)))
                loads.append(os.getloadavg()[0])
                time.sleep(SAMPLE_S)
            time.sleep(1.5)  # the last diagnostics
            alive = {name: proc.poll() is None for name, proc in launch.procs.items()}
            ticks = w.number("mpc_controller", "ticks") - ticks_at_start
            missed = w.number("mpc_controller", "missed_ticks") - missed_at_start
            learner = dict(w.diagnostics.get("learner", {}))
        finally:
            stop_ns = time.time_ns()  # what was sent before the stop must all be in the buffer
            codes = launch.stop()
            probe.close()
    durations = np.array([d[0] for _, d in list(w.timing)])
    p50, p99 = (float(np.percentile(durations, q)) for q in (50, 99)) if len(durations) else (math.nan, math.nan)

    lost, how = recording_loss(work / "run.mcap", work / "logs" / "recorder.log")
    # The recorder's own count cannot see messages it never got: compare with what was sent.
    window = [round(d[0], 4) for t, d in w.samples if start_ns <= t < stop_ns]
    recorded = recorded_stamps(work / "run.mcap", "/mpc_controller/transitions")
    not_recorded = len(set(window) - recorded)
    sent = transitions_sent(w.samples, stop_ns, period=1.0 / RATE)
    buffer = ReplayBuffer(4, 1, work / "learner" / "replay")
    snap = buffer.snapshot()
    report = dict(buffer.report)
    buffer.close()
    on_disk = {(int(e), round(float(s), 4)) for e, s in zip(snap.episode, snap.stamp)}
    missing = len(sent - on_disk)

    growth = {}
    rows = []
    for name, series in rss.items():
        after = [(t, v) for t, v in series if t >= WARMUP_S]
        slope = growth_per_hour([t for t, _ in after], [v for _, v in after])
        first, last = (series[0][1], series[-1][1]) if series else (math.nan, math.nan)
        growth[name] = {"rss_mb_start": round(first, 1), "rss_mb_end": round(last, 1),
                        "growth_mb_per_h": round(slope, 1), "exit_code": codes.get(name)}
        rows.append([name, f"{first:.0f}", f"{last:.0f}", f"{slope:+.1f}", alive.get(name), codes.get(name)])
    print_table(["node", "RSS start MB", "RSS end MB", "growth MB/h (fit after warm-up)", "alive at end", "exit"], rows)
    missed_fraction = missed / ticks if ticks and ticks > 0 else math.nan
    print()
    print_table(["figure", "value"], [
        ["control ticks", f"{ticks:.0f}"],
        ["missed ticks", f"{missed:.0f} ({missed_fraction:.2%})"],
        ["tick p50 / p99 [ms]", f"{p50:.2f} / {p99:.2f}"],
        ["recording", f"{how}; controller samples sent in the run: {len(window)}, not recorded: {not_recorded}"],
        ["replay buffer", f"{len(on_disk)} transitions reload, {missing} of {len(sent)} sent missing; {report}"],
        ["learner", f"model v{learner.get('model_version')}, {learner.get('rounds')} rounds"],
        ["load average (1 min) before / during", f"{load_before[0]:.2f} / {np.mean(loads):.2f}"],
    ])
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    emit_json({
        "bench": "soak",
        "machine": machine(),
        "minutes": args.minutes,
        "control_hz": RATE,
        "cem": CEM,
        "loadavg_1min_before": round(load_before[0], 2),
        "loadavg_1min_mean": round(float(np.mean(loads)), 2) if loads else None,
        "ticks": int(ticks) if math.isfinite(ticks) else None,
        "missed_ticks": int(missed) if math.isfinite(missed) else None,
        "missed_fraction": round(missed_fraction, 5) if math.isfinite(missed_fraction) else None,
        "tick_ms_p50": round(p50, 3),
        "tick_ms_p99": round(p99, 3),
        "rss": growth,
        "all_alive": all(alive.values()),
        "recording_lost": lost,
        "recording": how,
        "recording_samples_sent": len(window),
        "recording_samples_missing": not_recorded,
        "buffer_transitions": len(on_disk),
        "buffer_missing": missing,
        "learner_model_version": learner.get("model_version"),
        "learner_rounds": learner.get("rounds"),
    })


if __name__ == "__main__":
    main()
