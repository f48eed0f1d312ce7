"""record:=true writes every topic of a run to an MCAP file that readers decode back into ROS
messages; the rviz config shows only topics the nodes publish; a run report is drawn from it."""

import signal
import subprocess
import sys
import time

import matplotlib.image
import numpy as np
import yaml
from mcap.reader import make_reader
from rclpy.serialization import deserialize_message
from rosutil import kill_launch, launcher_children, logs, node_env, run_mpc

from mbrl_control.cli import train_offline
from mbrl_control.core.builders import load_robot
from mbrl_control.nodes.topic_tap import message_class
from mbrl_control.paths import config_dir
from mbrl_control.recording.run_data import load_run, transitions_from_recording
from mbrl_control.report import make_report

EXTERNAL_TOPICS = {"/robot_description"}  # robot_state_publisher's, started with rviz on a ROS 2 install


def _rviz_topics(node) -> set[str]:
    found = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("Topic", "Description Topic") and isinstance(value, dict) and "Value" in value:
                found.add(value["Value"])
            else:
                found |= _rviz_topics(value)
    elif isinstance(node, list):
        for item in node:
            found |= _rviz_topics(item)
    return found


def test_recording_holds_every_topic_decodes_and_feeds_rviz_and_the_report(domain, tmp_path):
    path = tmp_path / "run.mcap"
    code, summary = run_mpc({"mode": "lockstep", "duration": "4", "record": "true", "record_path": str(path)},
                            domain, tmp_path)
    assert code == 0 and summary, logs(tmp_path)
    with open(path, "rb") as f:
        reader = make_reader(f)
        s = reader.get_summary()
        assert s is not None, "no summary section: the recorder did not close the file"
        counts = {s.channels[c].topic: n for c, n in s.statistics.channel_message_counts.items()}
        types = {s.channels[c].topic: s.schemas[s.channels[c].schema_id].name for c in s.channels}
        logged, truth_stamps = {}, {}  # per topic: the recorder's receive times; the true states' stamps
        for _, channel, message in reader.iter_messages(log_time_order=True):
            msg = deserialize_message(message.data, message_class(types[channel.topic]))
            logged.setdefault(channel.topic, []).append(message.log_time)
            if channel.topic == "/joint_states":
                assert list(msg.name) == ["slider_to_cart", "cart_to_pole"]
            if channel.topic == "/sim/ground_truth":
                truth_stamps[message.log_time] = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
    expected = {"/joint_states", "/effort_controller/commands", "/clock", "/diagnostics", "/sim/ground_truth",
                "/mpc_controller/timing", "/mpc_controller/plan", "/mpc_controller/transitions", "/estimator/state",
                "/estimator/covariance", "/run_monitor/summary"}
    assert expected <= set(counts), counts
    assert types["/joint_states"] == "sensor_msgs/msg/JointState"
    # Lockstep: one true state per command, two encoder readings (100 Hz), one timing record and
    # one sample per tick, 50 ticks per second of robot time. A topic is recorded from when the
    # recorder discovers it (on a loaded machine up to ~0.5 s apart), so the counts are compared
    # over the span every one of them was recorded (measured: equal to the message; +-3 allowed
    # for a tick cut at either end).
    run = load_run(path)
    assert run.state_time[-1] >= 4.0
    per_tick = {"/effort_controller/commands": 1, "/sim/ground_truth": 1, "/joint_states": 2,
                "/mpc_controller/timing": 1, "/mpc_controller/transitions": 1}
    start, end = max(logged[t][0] for t in per_tick), min(logged[t][-1] for t in per_tick)
    within = {t: sum(start <= x <= end for x in logged[t]) for t in per_tick}
    stamps = [v for k, v in truth_stamps.items() if start <= k <= end]
    ticks = round((stamps[-1] - stamps[0]) * 50) + 1
    assert ticks >= 150, (ticks, within)
    for topic, n in per_tick.items():
        assert abs(within[topic] - n * ticks) <= 3 * n, (topic, within, ticks)

    rviz = yaml.safe_load((config_dir() / "mbrl_control.rviz").read_text())
    shown = _rviz_topics(rviz)
    assert shown and shown - EXTERNAL_TOPICS <= set(counts), shown - set(counts)

    assert len(run.state_time) == counts["/sim/ground_truth"]  # the report plots the true state
    # The monitor's verdict is in the recording, and it is the recorded truth's: the same summary
    # as the launcher's file; its final state one the sim published; 4 s of robot time cannot hold
    # the task's 5 s success window; CEM swings up within them (measured: upright fraction
    # 0.775-0.80, upright from ~1 s; bound 0.5), and the recorded truth agrees state by state.
    assert run.summary == summary, (run.summary, summary)
    assert summary["task"] == "cartpole_swingup" and summary["duration_s"] >= 4.0 and summary["success"] is False
    truth = np.column_stack([run.position, run.velocity])
    error = np.abs(truth - np.array(summary["final_state"])).max(axis=1)
    end = int(error.argmin())
    assert error[end] <= 1e-4, summary["final_state"]  # (the summary rounds to 4 decimals)
    task = load_robot("cartpole").task
    assert summary["in_tolerance_fraction"] > 0.5 and task.within_tolerance(truth[end - 4 : end + 1]).all(), truth[end - 4 : end + 1]
    # The monitor watched one true state per tick from the first command; the recording may lack
    # the first of them (before the recorder discovered the topic): those count either way.
    since = run.state_time[end] - summary["duration_s"] - 1e-6
    watched = (run.state_time >= since) & (run.state_time <= run.state_time[end])
    judged = round(summary["duration_s"] * 50) + 1
    upright, unseen = int(task.within_tolerance(truth[watched]).sum()), judged - int(watched.sum())
    print(f"upright: {summary['in_tolerance_fraction'] * judged:.1f} of {judged} (monitor), {upright} of the "
          f"{judged - unseen} recorded; {len(truth) - 1 - end} recorded after the monitor's last")
    assert upright - 2 <= summary["in_tolerance_fraction"] * judged <= upright + unseen + 2, (upright, unseen, summary)
    # The learner can retrain offline from it: the per-tick samples pair into transitions.
    transitions = transitions_from_recording(path)
    assert transitions.state.shape[1] == 4 and transitions.action.shape[1] == 1
    assert len(transitions) >= counts["/mpc_controller/transitions"] - 5
    assert train_offline(path, tmp_path / "offline") == 0
    assert list((tmp_path / "offline" / "checkpoints").glob("ensemble_v*.safetensors"))
    png = make_report(path, tmp_path / "report.png", period_ms=20.0)
    image = matplotlib.image.imread(png)
    assert image.shape[0] > 500 and image.shape[1] > 1000 and image.std() > 0.05


def test_sigint_during_recording_leaves_a_complete_file(domain, tmp_path):
    path = tmp_path / "run.mcap"
    cmd = [sys.executable, "-m", "mbrl_control.cli", "launch", "mpc", "record:=true", f"record_path:={path}"]
    proc = subprocess.Popen(cmd, env=node_env(domain), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children = []
    try:
        end = time.monotonic() + 120
        while time.monotonic() < end and (not path.exists() or path.stat().st_size < 200_000):
            time.sleep(0.5)  # the sim publishes from the start; wait for a few chunks
        assert proc.poll() is None
        children = launcher_children(proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        kill_launch(proc, children)
    assert proc.returncode == 130, err[-3000:]
    with open(path, "rb") as f:
        s = make_reader(f).get_summary()
    assert s is not None and s.statistics.message_count > 100
