"""Soak: sim + estimator + learner + controller at 100 Hz, in realtime, for a given time, learning
alongside (learn.launch.py's graph: the controller explores, then plans on the models the learner
trains at every episode; the episode manager resets the robot every ``--episode`` seconds), with
every topic recorded. Reports:

- ticks as real-time people count them (mbrl_control/core/timing.py): lateness from the timer's
  intended release (p50/p99/max over every tick of the window, from the controller's
  ``/mpc_controller/timing`` records), late ticks (started more than 10 % of the period after the
  release), missed ticks (releases the timer skipped plus ticks that ended after the next release;
  the controller's count in /diagnostics) and the tick's compute time p50/p99,
- RSS of every node (psutil when installed, else /proc/<pid>/status VmRSS) sampled every 2 s and its
  growth per hour: the slope of a linear fit after the warm-up (the learner's replay buffer lives in
  memory too, about 60 bytes per transition: 22 MB/h at 100 Hz is data, not a leak),
- integrity, counted against the controller's tick sequence numbers (as bench/faults.py counts
  ``lost_by_sequence``): every sample and timing record the controller sent in the window is in the
  MCAP recording (which also decodes to its end and holds what the recorder says it wrote), and
  every transition the sent samples pair into reloads from the replay buffer,
- each node's scheduling as it reports it (SCHED_FIFO where granted; refused without CAP_SYS_NICE
  or an rtprio limit, and then the figures are those of the normal scheduler).

  python bench/soak.py [--minutes 2] [--episode 30] [--no-rt-scheduling] [--keep DIR]

``--no-rt-scheduling`` sets ``scheduling.priority`` 0 for every node (the control path on the normal
scheduler; the background nodes keep their niceness): the run without the real-time scheduling.
The probe's timing records and samples go to DIR/probe/*.csv as they arrive, and the probe is torn
down with a timeout, so a hang in rclpy's teardown loses no figure.

The planner budget is sized for 100 Hz on two cores (CEM 100 x 15 x 2 on the ensemble, eager):
the configuration's 500 x 30 x 5 does not fit a 10 ms period here. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from common import emit_json, machine, print_table
from faults import Probe, buffer_sequence_loss, recording_loss, recording_sequence_loss
from ros_run import claimed_domain

from mbrl_control.core.learning import ReplayBuffer
from mbrl_control.graph import learn_graph
from mbrl_control.launcher import Launch, default_environment
from mbrl_control.progress import progress_bar

RATE = 100.0
CEM = {"population": 100, "elites": 10, "horizon": 15, "iterations": 2}
SAMPLE_S = 2.0
WARMUP_S = 30.0  # RSS before this much control time is start-up (compilation, first allocations)
COUNTS = ("ticks", "missed_ticks", "skipped_releases", "overrun_ticks", "late_ticks")  # the controller's, in /diagnostics

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


def window_timing(timing: list[tuple[int, list[float]]], fields: list[str], start_ns: int, stop_ns: int,
                  period: float) -> dict:
    """Tick figures from the controller's timing records sent in [start_ns, stop_ns)."""
    rows = np.array([d for wall, d in timing if start_ns <= wall < stop_ns and len(d) == len(fields)])
    if not len(rows) or "lateness_ms" not in fields:
        return {}
    col = {name: rows[:, i] for i, name in enumerate(fields)}
    tick, late, seq = col["tick_ms"], col["lateness_ms"], col["seq"]
    period_ms = period * 1e3
    return {
        "records": len(rows),
        "ticks_by_seq": int(seq.max() - seq.min() + 1),
        "tick_ms_p50": round(float(np.percentile(tick, 50)), 3),
        "tick_ms_p99": round(float(np.percentile(tick, 99)), 3),
        "lateness_ms_p50": round(float(np.percentile(late, 50)), 3),
        "lateness_ms_p99": round(float(np.percentile(late, 99)), 3),
        "lateness_ms_max": round(float(late.max()), 3),
        "late_ticks": int(np.sum(late > 0.1 * period_ms)),
        "overrun_ticks": int(np.sum(late + tick > period_ms)),
    }


def progress_figures(w, at_start: dict[str, float], rss: dict[str, list[tuple[float, float]]]) -> dict[str, str]:
    """What the soak's progress bar shows: missed ticks so far, the learner's model and RSS."""
    missed = w.number("mpc_controller", "missed_ticks") - at_start["missed_ticks"]
    ticks = w.number("mpc_controller", "ticks") - at_start["ticks"]
    learner = rss.get("learner") or [(0.0, math.nan)]
    return {"missed": f"{missed:.0f}/{ticks:.0f}" if math.isfinite(missed) and math.isfinite(ticks) else "-",
            "model": f"v{w.value('learner', 'model_version')}", "learner_rss": f"{learner[-1][1]:.0f} MB"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--episode", type=float, default=30.0,
                        help="episode length [s]: a reset and a training round each")
    parser.add_argument("--no-rt-scheduling", action="store_true",
                        help="scheduling.priority 0 for every node: no SCHED_FIFO anywhere")
    parser.add_argument("--keep", type=Path, default=None, help="keep logs, recording, buffer and probe records here")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="mbrl_soak_"))
    work.mkdir(parents=True, exist_ok=True)
    period = 1.0 / RATE
    specs_args = {"mode": "realtime", "episodes": "100000", "episode_length": str(args.episode),
                  "output_dir": str(work), "record": "true"}
    overrides = {"/**": {"ros__parameters": {"control_rate": RATE}},
                 "mpc_controller": {"ros__parameters": {"cem": CEM, "diagnostics_rate": 1.0}}}
    if args.no_rt_scheduling:
        for spec in learn_graph(specs_args):
            section = overrides.setdefault(spec.name, {"ros__parameters": {}})["ros__parameters"]
            section["scheduling"] = {"priority": 0}
    overrides_path = work / "overrides.yaml"
    overrides_path.write_text(yaml.safe_dump(overrides))
    load_before = os.getloadavg()
    with claimed_domain() as domain:
        env = default_environment() | {"ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
        probe = Probe(domain, lockstep=False, log_dir=work / "probe")
        w = probe.watch
        specs = learn_graph(specs_args | {"overrides": str(overrides_path)})
        launch = Launch(specs, log_dir=work / "logs", env=env, output=open(os.devnull, "w"))
        os.nice(5)  # after the nodes started (they inherit it): measuring yields to what it measures, as monitors do
        rss: dict[str, list[tuple[float, float]]] = {name: [] for name in launch.procs}
        loads = []
        try:
            # Compiling the planner takes minutes on a loaded machine.
            probe.wait(lambda: w.samples and w.value("mpc_controller", "ticks") is not None, 900, "the first tick")
            start, start_ns = time.monotonic(), time.time_ns()
            at_start = {k: w.number("mpc_controller", k) for k in COUNTS}
            at_start = {k: v if math.isfinite(v) else 0.0 for k, v in at_start.items()}  # not ticking yet
            bar = progress_bar(total=round(args.minutes * 60), desc=f"soak at {RATE:.0f} Hz", unit="s",
                               bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} s [{elapsed}<{remaining}{postfix}]")
            while time.monotonic() - start < args.minutes * 60:
                t = time.monotonic() - start
                for name, proc in launch.procs.items():
                    rss[name].append((t, rss_mb(proc.pid)))
                loads.append(os.getloadavg()[0])
                bar.set_postfix(progress_figures(w, at_start, rss), refresh=False)
                bar.update(min(round(t), bar.total) - bar.n)
                time.sleep(SAMPLE_S)
            bar.close()
            time.sleep(1.5)  # the last diagnostics
            alive = {name: proc.poll() is None for name, proc in launch.procs.items()}
            counts = {k: w.number("mpc_controller", k) - at_start[k] for k in COUNTS}
            learner = dict(w.diagnostics.get("learner", {}))
            scheduling = {name: w.value(name, "scheduling") for name in launch.procs}
        finally:
            stop_ns = time.time_ns()  # what was sent before the stop must all be recorded and in the buffer
            codes = launch.stop()
            closed = probe.close()
    ticks, missed = counts["ticks"], counts["missed_ticks"]
    timing = window_timing(list(w.timing), w.timing_fields, start_ns, stop_ns, period)

    lost, how = recording_loss(work / "run.mcap", work / "logs" / "recorder.log")
    recorded = recording_sequence_loss(w, work / "run.mcap", stop_ns, start_ns=start_ns,
                                       before="sent before the window")
    buffer = ReplayBuffer(4, 1, work / "learner" / "replay")
    snap = buffer.snapshot()
    report = dict(buffer.report)
    buffer.close()
    on_disk = {(int(e), round(float(s), 4)) for e, s in zip(snap.episode, snap.stamp)}
    buffered = buffer_sequence_loss(w, on_disk, stop_ns, start_ns=start_ns, period=period,
                                    before="transitions sent before the window")
    rec_samples = recorded["counts"]["recording_samples"]
    rec_timing = recorded["counts"]["recording_timing_records"]
    buf = buffered["counts"]["buffer_transitions"]

    growth = {}
    rows = []
    for name, series in rss.items():
        after = [(t, v) for t, v in series if t >= WARMUP_S]
        slope = growth_per_hour([t for t, _ in after], [v for _, v in after])
        first, last = (series[0][1], series[-1][1]) if series else (math.nan, math.nan)
        growth[name] = {"rss_mb_start": round(first, 1), "rss_mb_end": round(last, 1),
                        "growth_mb_per_h": round(slope, 1), "exit_code": codes.get(name)}
        rows.append([name, scheduling.get(name), f"{first:.0f}", f"{last:.0f}", f"{slope:+.1f}", alive.get(name),
                     codes.get(name)])
    print_table(["node", "scheduling", "RSS start MB", "RSS end MB", "growth MB/h (fit after warm-up)",
                 "alive at end", "exit"], rows)
    missed_fraction = missed / ticks if ticks and ticks > 0 else math.nan
    late = counts["late_ticks"]
    print()
    print_table(["figure", "value"], [
        ["control ticks", f"{ticks:.0f} ({timing.get('records', 0)} timing records of {timing.get('ticks_by_seq', 0)} "
                          "ticks by seq in the window)"],
        ["missed ticks", f"{missed:.0f} ({missed_fraction:.2%}): {counts['skipped_releases']:.0f} releases skipped, "
                         f"{counts['overrun_ticks']:.0f} ended after the next release"],
        ["late ticks (> 10 % of the period)", f"{late:.0f} ({late / ticks if ticks else math.nan:.2%})"],
        ["lateness p50 / p99 / max [ms]", f"{timing.get('lateness_ms_p50')} / {timing.get('lateness_ms_p99')} / "
                                          f"{timing.get('lateness_ms_max')}"],
        ["tick compute p50 / p99 [ms]", f"{timing.get('tick_ms_p50')} / {timing.get('tick_ms_p99')}"],
        ["recording", f"{how}; by seq: samples {rec_samples['lost']} of {rec_samples['sent']} missing, timing records "
                      f"{rec_timing['lost']} of {rec_timing['sent']}"],
        ["replay buffer", f"{len(on_disk)} transitions reload, by seq {buf['lost']} of {buf['sent']} sent missing; "
                          f"{report}"],
        ["learner", f"model v{learner.get('model_version')}, {learner.get('rounds')} rounds"],
        ["load average (1 min) before / during", f"{load_before[0]:.2f} / {np.mean(loads):.2f}"],
    ])
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)

    def count(v: float) -> int | None:
        return int(v) if math.isfinite(v) else None

    emit_json({
        "bench": "soak",
        "machine": machine(),
        "minutes": args.minutes,
        "control_hz": RATE,
        "cem": CEM,
        "rt_scheduling_requested": not args.no_rt_scheduling,
        "scheduling": scheduling,
        "loadavg_1min_before": round(load_before[0], 2),
        "loadavg_1min_mean": round(float(np.mean(loads)), 2) if loads else None,
        "ticks": count(ticks),
        "missed_ticks": count(missed),
        "missed_fraction": round(missed_fraction, 5) if math.isfinite(missed_fraction) else None,
        "skipped_releases": count(counts["skipped_releases"]),
        "overrun_ticks": count(counts["overrun_ticks"]),
        "late_ticks": count(late),
        "late_fraction": round(late / ticks, 5) if ticks and math.isfinite(late) else None,
        "timing_window": timing,
        "lateness_ms_p99": timing.get("lateness_ms_p99"),
        "tick_ms_p50": timing.get("tick_ms_p50"),
        "tick_ms_p99": timing.get("tick_ms_p99"),
        "rss": growth,
        "all_alive": all(alive.values()),
        "recording_lost": lost,
        "recording": how,
        "recording_samples_sent": rec_samples["sent"],
        "recording_samples_missing": rec_samples["lost"],
        "recording_timing_records_sent": rec_timing["sent"],
        "recording_timing_records_missing": rec_timing["lost"],
        "buffer_transitions": len(on_disk),
        "buffer_transitions_sent": buf["sent"],
        "buffer_missing": buf["lost"],
        "lost_by_sequence": recorded["lost"] + buffered["lost"],
        "excused": recorded["excused"] + buffered["excused"],
        "unseen_ticks": rec_timing["unseen_ticks"],
        "sequence_counts": recorded["counts"] | buffered["counts"],
        "probe_closed_cleanly": closed,
        "learner_model_version": learner.get("model_version"),
        "learner_rounds": learner.get("rounds"),
    })
    if not closed:  # rclpy's teardown left hanging in a thread: the figures are out, leave
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
