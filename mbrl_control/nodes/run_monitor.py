"""The run monitor: watches a run for ``duration`` seconds of robot time from the controller's
first planned tick (its first sample on ``/<controller>/transitions``: the safe commands it sends
while it waits for a first state, an estimator still warming up, are not the run), then reports what happened (task success and the fraction of time within the
task's tolerance, judged on the true state, ``ground_truth``; for a task with goals, every goal on
``/goal_pose`` judged at the end of its time: ``goals``, ``goals_reached``, ``ee_error_median_m``;
how much the command changes per tick over the last 5 s, ``command_delta_rms``, per commanded
joint; the estimator's velocity RMSE against the truth, when ``estimate`` is an
estimator's output; the controller's tick statistics from /diagnostics: ticks, missed ticks, tick
compute time p50/p99 and, in realtime, lateness from the timer's release p99 and late ticks, as
mbrl_control.core.timing defines them, from its first report stamped at or after the window's end,
waited for up to ``report_timeout``) and exits, which ends the launch.

It is how ``make demo`` and the integration tests judge a run through ROS alone. The summary goes
out on ``~/summary`` (std_msgs/String holding JSON, transient-local) and, when ``summary_path`` is
set, to a file for the launcher that started the run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String

from mbrl_control.nodes.diagnostics import values_of
from mbrl_control.nodes.joint_io import JointStateReader
from mbrl_control.nodes.params import ROBOT_PARAMS, ParamSpec, declare_task_node_parameters
from mbrl_control.nodes.runtime import NodeDone, main_for

PARAMS = [
    *ROBOT_PARAMS,
    ParamSpec("duration", 20.0, "robot time to watch from the first command [s]; 0 watches forever", 0.0, 1e7),
    ParamSpec("controller_name", "mpc_controller", "diagnostics status name of the controller"),
    ParamSpec("summary_path", "", "also write the summary JSON here (empty: topic only)"),
    ParamSpec("mode", "realtime", "run mode, reported in the summary", choices=("realtime", "lockstep")),
    ParamSpec("planner", "cem", "planner name, reported in the summary"),
    ParamSpec("estimator", "none", "estimator kind, reported; 'none': no velocity RMSE"),
    ParamSpec("goal_success_fraction", 0.9, "a run with goals succeeds when at least this share of them is reached", 0.0, 1.0),
    ParamSpec("command_window", 5.0, "command_delta_rms over this much robot time at the end of the run [s]", 0.1, 3600.0),
    ParamSpec("report_timeout", 3.0, "after the watched time, wait at most this long (wall clock) for the controller's "
              "diagnostics that cover it [s]", 0.0, 60.0),
]


class RunMonitor(Node):
    def __init__(self) -> None:
        super().__init__("run_monitor")
        p, self.task = declare_task_node_parameters(self, PARAMS)
        self.p = p
        joints = list(self.task.spec.state_joints)
        # Positions decide success; a robot's joint_states may carry no velocities.
        self.reader = JointStateReader(joints, need_velocity=False)
        self.estimate_reader = JointStateReader(joints)
        self.goals: list[tuple[float, np.ndarray]] = []  # (robot time it arrived, the goal as the task took it)
        self.command_times: list[float] = []
        self.commands: list[np.ndarray] = []
        self.start: Time | None = None
        self.times: list[float] = []
        self.states: list[np.ndarray] = []
        self.truth_velocity_known: list[bool] = []
        self.estimate_times: list[float] = []
        self.estimates: list[np.ndarray] = []
        self.controller: dict[str, str] = {}
        self.controller_stamp: Time | None = None  # robot time of the controller's last diagnostics
        self.end: Time | None = None  # robot time the watched window closed
        self.summary_pub = self.create_publisher(
            String,
            "~/summary",
            QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL),
        )
        self.create_subscription(JointState, "ground_truth", self._on_state, qos_profile_sensor_data)
        if p["estimator"] != "none":
            self.create_subscription(JointState, "estimate", self._on_estimate, qos_profile_sensor_data)
        self.create_subscription(Float64MultiArray, "effort_controller/commands", self._on_command, 10)
        self.create_subscription(Float64MultiArray, f"/{p['controller_name']}/transitions", self._on_sample,
                                 QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        if self.task.has_goal:
            reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
            self.create_subscription(PoseStamped, "goal_pose", self._on_goal, reliable)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)

    def _on_sample(self, msg: Float64MultiArray) -> None:
        if self.start is None:
            self.start = self.get_clock().now()
            self.get_logger().info(f"controller planning; watching {self.p['duration']:.1f} s of robot time")

    def _on_command(self, msg: Float64MultiArray) -> None:
        if self.start is None or self.end is not None:
            return
        self.command_times.append((self.get_clock().now() - self.start).nanoseconds * 1e-9)
        self.commands.append(np.asarray(msg.data, dtype=float))

    def _on_goal(self, msg: PoseStamped) -> None:
        """Goals are judged as the controller takes them (clamped into the reachable region)."""
        position = np.array([msg.pose.position.x, msg.pose.position.y, msg.pose.position.z])
        if not np.all(np.isfinite(position)) or self.end is not None:
            return
        now = (self.get_clock().now() - self.start).nanoseconds * 1e-9 if self.start is not None else 0.0
        self.goals.append((now, self.task.clamp_goal(position)[0]))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == self.p["controller_name"]:
                self.controller = values_of(status)
                self.controller_stamp = Time.from_msg(msg.header.stamp)
        if self.end is not None and self._controller_reported():
            self.finish()

    def _controller_reported(self) -> bool:
        """Whether the controller's tick statistics cover the whole window: it reports at its
        diagnostics rate, so the last report may predate the window's end by up to a period."""
        return self.controller_stamp is not None and self.controller_stamp >= self.end

    def _close_window(self, stamp: Time) -> None:
        self.end = stamp
        if self._controller_reported():
            self.finish()
        # A controller that died reports nothing more: the summary then carries its last report.
        self.create_timer(max(self.p["report_timeout"], 1e-3), self.finish,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))

    def _elapsed(self, msg: JointState) -> float | None:
        if self.start is None or self.end is not None:
            return None
        t = (Time.from_msg(msg.header.stamp) - self.start).nanoseconds * 1e-9
        return t if t >= 0 else None

    def _on_estimate(self, msg: JointState) -> None:
        t = self._elapsed(msg)
        x = self.estimate_reader.read(msg) if t is not None else None
        if x is not None:
            self.estimate_times.append(t)
            self.estimates.append(x)

    def _on_state(self, msg: JointState) -> None:
        t = self._elapsed(msg)
        x = self.reader.read(msg) if t is not None else None
        if x is None:
            return
        self.times.append(t)
        self.states.append(x)
        self.truth_velocity_known.append(len(msg.velocity) == len(msg.name))
        if self.p["duration"] > 0 and t >= self.p["duration"]:
            self._close_window(Time.from_msg(msg.header.stamp))

    def velocity_rmse(self) -> list[float] | None:
        """Per joint, the estimate's velocity error against the truth at the estimate's stamps."""
        if not self.estimates or not all(self.truth_velocity_known):
            return None
        times, truth = np.array(self.times), np.array(self.states)
        est_t, est = np.array(self.estimate_times), np.array(self.estimates)
        inside = (est_t >= times[0]) & (est_t <= times[-1])
        if not inside.any():
            return None
        nq = truth.shape[1] // 2
        errors = [est[inside, nq + j] - np.interp(est_t[inside], times, truth[:, nq + j]) for j in range(nq)]
        return [round(float(np.sqrt(np.mean(e * e))), 5) for e in errors]

    def command_delta_rms(self) -> list[float] | None:
        """Per commanded joint, the RMS change of the command from one tick to the next over the
        last ``command_window`` seconds: what a motor is asked to follow."""
        times = np.array(self.command_times)
        if len(times) < 3:
            return None
        window = times >= times[-1] - self.p["command_window"]
        commands = np.array([c for c, w in zip(self.commands, window) if w and len(c) == len(self.commands[-1])])
        if len(commands) < 2:
            return None
        return [round(float(v), 4) for v in np.sqrt(np.mean(np.diff(commands, axis=0) ** 2, axis=0))]

    def goal_results(self, states: np.ndarray, times: np.ndarray) -> dict:
        """Each goal judged at the last true state before the next goal (or the run's end): the
        reach point's distance to it, and whether that is within the task's tolerance."""
        errors, within = [], np.zeros(len(states), bool)
        for i, (t0, goal) in enumerate(self.goals):
            t1 = self.goals[i + 1][0] if i + 1 < len(self.goals) else np.inf
            inside = np.flatnonzero((times >= t0) & (times < t1))
            if len(inside):
                errors.append(float(self.task.error(states[inside[-1:]], goal)[0]))
                within[inside] = self.task.within_tolerance(states[inside], goal)
        reached = int(np.sum(np.array(errors) < self.task.success_config.tolerance)) if errors else 0
        return {
            "in_tolerance_fraction": round(float(within.mean()), 4) if len(within) else 0.0,
            "goals": len(errors),
            "goals_reached": reached,
            "ee_error_median_m": round(float(np.median(errors)), 4) if errors else None,
            "goal_errors_m": [round(e, 4) for e in errors],
            "success": bool(errors) and bool(reached >= np.ceil(self.p["goal_success_fraction"] * len(errors) - 1e-9)),
        }

    def summary(self) -> dict:
        states, times = np.array(self.states), np.array(self.times)
        within = self.task.within_tolerance(states) if len(states) else np.zeros(0, bool)
        c = self.controller

        def num(key: str, kind=float):
            return kind(c[key]) if key in c else None

        summary = {
            "task": self.task.config.name,
            "planner": c.get("planner", self.p["planner"]),
            "robot": self.task.spec.name,
            "mode": self.p["mode"],
            "control_hz": num("control_hz"),
            "duration_s": round(float(times[-1]), 3) if len(times) else 0.0,
            "ticks": num("ticks", int),
            "missed_ticks": num("missed_ticks", int),
            "tick_ms_p50": num("tick_ms_p50"),
            "tick_ms_p99": num("tick_ms_p99"),
            # From the timer's intended release (realtime only; None in lockstep, which has none).
            "lateness_ms_p99": num("lateness_ms_p99"),
            "late_ticks": num("late_ticks", int),
            "in_tolerance_fraction": round(float(within.mean()), 4) if len(within) else 0.0,
            "success": self.task.success(states, times) if len(states) else False,
            "command_delta_rms": self.command_delta_rms(),
            "estimator": self.p["estimator"],
            "velocity_rmse": self.velocity_rmse(),
            "final_state": [round(float(v), 4) for v in states[-1]] if len(states) else None,
            "stale_ticks": num("stale_ticks", int),
            "waiting_ticks": num("waiting_ticks", int),
            "rejected_states": num("rejected_states", int),
        }
        if self.task.has_goal:
            summary |= self.goal_results(states, times)
        return summary

    def finish(self) -> None:
        summary = self.summary()
        text = json.dumps(summary)
        self.summary_pub.publish(String(data=text))
        # Reliable delivery needs the publisher alive until subscribers (a recorder) acknowledge.
        self.summary_pub.wait_for_all_acked(Duration(seconds=1.0))
        if self.p["summary_path"]:
            path = Path(self.p["summary_path"])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text + "\n")
        self.get_logger().info(f"run finished: {text}")
        raise NodeDone


main = main_for(RunMonitor)

if __name__ == "__main__":
    main()
