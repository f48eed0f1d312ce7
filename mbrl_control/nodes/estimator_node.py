"""The state estimator node: noisy, late, partial joint readings in; a full state with covariance
out, at the control rate.

Subscribes ``joint_states`` (the encoders: positions, stamped with their sample time) and
``effort_controller/commands`` (the commands actually sent, for prediction). Publishes ``~/state``
(sensor_msgs/JointState: positions and velocities), ``~/covariance`` (std_msgs/Float64MultiArray,
a row-major nx x nx matrix with its MultiArrayLayout), ``~/uncertainty`` (visualization_msgs/
MarkerArray: 2-sigma ellipsoids of the cart and the pole tip, throttled) and ``/diagnostics``.

The filter's process model is the controller's own dynamics model (same parameters). While the
estimate is stale (no reading fused for ``estimator.stale_after``, or its uncertainty too large)
nothing is published on ``~/state``, so the controller's state watchdog sends the safe command.
In realtime the estimate is published once per control period, ``publish_lead`` before the
controller's ticks, both at a fixed phase of the period on the ROS clock (``control_phase``;
mbrl_control.nodes.aligned_timer); in lockstep once per control period of sim time, as /clock
advances.
The joints' travel limits come from the URDF: a prediction past an end stop (which the model does
not know) makes the estimate stale until readings pin the velocities down again
(mbrl_control.core.estimation.kalman; ``event_limit_contact`` in /diagnostics).

Tuning while it runs: the noise model (``estimator.accel_noise_density``,
``estimator.position_noise_std``, ``estimator.velocity_noise_std``: one value per joint or one for
all) and ``marker_rate`` are settable (``ros2 param set /estimator estimator.accel_noise_density
"[0.5]"``); a change is checked when set and applied before the next estimate is published, the
estimate kept. Every other parameter is read-only and says why (``ros2 param describe``).
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import numpy as np
import torch
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.subscription import MessageInfo
from rclpy.time import Time
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, Int32, MultiArrayDimension
from visualization_msgs.msg import MarkerArray

from mbrl_control.core.builders import (
    ModelConfig,
    build_kinematics,
    estimator_from_params,
    link_position_of,
    model_from_params,
)
from mbrl_control.core.estimation import ESTIMATORS, EstimatorConfig
from mbrl_control.core.estimation.reported_effort import ReportedEffort
from mbrl_control.core.tasks.residual import keypoints
from mbrl_control.core.timing import TickStats
from mbrl_control.nodes.aligned_timer import create_aligned_timer
from mbrl_control.nodes.diagnostics import OK, WARN, DiagnosticsPublisher
from mbrl_control.nodes.joint_io import read_command
from mbrl_control.nodes.markers import uncertainty_markers
from mbrl_control.nodes.model_receiver import MODEL_QOS
from mbrl_control.nodes.params import (
    ROBOT_PARAMS,
    ParameterError,
    ParamSpec,
    RuntimeParameters,
    declare_parameters,
    robot_spec_param,
    specs_from,
)
from mbrl_control.nodes.runtime import main_for

PARAMS = [
    *ROBOT_PARAMS,
    *specs_from(ModelConfig, "model"),
    ParamSpec("model.dt", 0.0, "the estimator's model step [s]; 0: the control period, the controller's model's. Shorter "
                               "predicts a fast, stiff robot between its readings more accurately (at the sensor "
                               "period, one step per reading)", 0.0, 0.1),
    ParamSpec("mode", "realtime", "realtime: timer; lockstep: once per control period of /clock", choices=("realtime", "lockstep")),
    ParamSpec("torch_threads", 1, "torch intra-op threads", 1, 64),
    ParamSpec("reading_queue", 5, "realtime: readings kept for the filter while it is busy (the newest; older ones are "
                                  "dropped, uncounted, by the middleware; 5: the sensor-data QoS depth). 1: a filter "
                                  "that fell behind skips to the newest reading instead of working through old ones, "
                                  "each dearer the later it is fused (lockstep: always the sensor-data depth)", 1, 100),
    ParamSpec("publish_lead", 0.006, "realtime: the estimate is published this long before the controller's ticks "
                                     "(both at a fixed phase of the control period on the ROS clock: control_phase): "
                                     "a tick plans from an estimate this fresh, whatever order the nodes started in [s]",
              0.0, 0.1),
    ParamSpec("marker_rate", 10.0, "rate of ~/uncertainty markers [Hz]; 0 disables them", 0.0, 100.0, dynamic=True),
    ParamSpec("diagnostics_rate", 1.0, "diagnostics publish rate [Hz]", 0.1, 100.0),
    ParamSpec("frame_id", "world", "fixed frame of the markers"),
    ParamSpec("estimator.kind", "ekf", "filter", choices=tuple(ESTIMATORS)),
    ParamSpec("prediction_effort", "command", "realtime: the effort the prediction applies. command: each command on "
              "effort_controller/commands, from when it was sent; reported: the effort joint_states reports the joints "
              "were under at each reading (ros2_control's effort state), from the middle of the interval it can have "
              "taken over in (since the previous reading, or since the command it equals was sent) with that "
              "interval's doubt, and the commands sent since the last reading ahead of it; a robot that takes its "
              "commands late or loses them still gets it right (lockstep: always the command, which the sim "
              "applies exactly then)",
              choices=("command", "reported")),
    *specs_from(EstimatorConfig, "estimator", dynamic=("position_noise_std", "velocity_noise_std", "accel_noise_density")),
]


class EstimatorNode(Node):
    def __init__(self) -> None:
        super().__init__("estimator")
        self.tuning = RuntimeParameters(self, self._check_parameters, self._apply_parameters)
        p = declare_parameters(self, PARAMS, self.tuning)
        self.p = p
        torch.set_num_threads(p["torch_threads"])
        self.period = 1.0 / p["control_rate"]
        self.lockstep = p["mode"] == "lockstep"
        spec = robot_spec_param(p)
        try:
            model = model_from_params(spec, p, dt=p["model.dt"] or None)  # the controller's, or finer
        except ValueError as exc:
            raise ParameterError(str(exc)) from exc
        link_position = link_position_of(build_kinematics(spec, model))
        self.keypoints = functools.partial(keypoints, spec, link_position)  # of the uncertainty markers
        self.joints = list(spec.state_joints)
        try:
            self.filter = estimator_from_params(spec, p, model)
        except ValueError as exc:
            raise ParameterError(f"estimator.* parameters: {exc}") from exc
        start = time.perf_counter()
        self.filter.warm_up()
        self.warmup_s = time.perf_counter() - start
        self.measure_velocity = p["estimator.measure_velocity"]
        self.reported_effort = p["prediction_effort"] == "reported" and not self.lockstep
        self.command_joints = list(p["command_joints"])
        self.reported = ReportedEffort()
        self.counts = {"readings": 0, "unknown_joint_names": 0, "bad_commands": 0, "published": 0, "stale_ticks": 0,
                       "readings_without_effort": 0, "republished": 0}
        self.stats = TickStats(self.period)
        self.last_marker_wall = -math.inf
        self.next_publish_ns: int | None = None
        # Lockstep: the command answering the last estimate, and a /clock that overtook it.
        self.published_at: float | None = None  # sim time of the last estimate while its command is due
        self.overtaking_clock_ns: int | None = None
        self.last_estimate: JointState | None = None  # lockstep: re-sent while its command is due

        self.state_pub = self.create_publisher(JointState, "~/state", qos_profile_sensor_data)
        self.cov_pub = self.create_publisher(Float64MultiArray, "~/covariance", 10)
        self.marker_pub = self.create_publisher(MarkerArray, "~/uncertainty", 1)
        nx = model.state_dim
        self.cov_msg = Float64MultiArray()
        self.cov_msg.layout.dim = [
            MultiArrayDimension(label="rows", size=nx, stride=nx * nx),
            MultiArrayDimension(label="cols", size=nx, stride=nx),
        ]
        self.diagnostics = DiagnosticsPublisher(self)
        readings = qos_profile_sensor_data
        if not self.lockstep:
            # Behind its readings (a busy host) every reading costs more (the publish predicts from the
            # last one fused to now; a stale filter re-predicts its history): a filter working through a
            # backlog may never catch up (the iiwa, realtime on two cores, 2026-12-06: stale within a
            # second where its recorded readings replayed offline were tracked). A short queue sheds it.
            readings = QoSProfile(depth=p["reading_queue"], reliability=readings.reliability,
                                  durability=readings.durability, history=readings.history)
        self.create_subscription(JointState, "joint_states", self._on_reading, readings)
        self.create_subscription(
            Float64MultiArray, "effort_controller/commands", self._on_command,
            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE),
        )
        # A new episode follows a reset of the robot: start over from the next reading.
        self.create_subscription(Int32, "/episode", self._on_episode, MODEL_QOS)
        if self.lockstep:
            self.create_subscription(ClockMsg, "/clock", self._on_clock, 10)
        else:
            create_aligned_timer(self, self.period, self._publish, offset=p["control_phase"] * self.period - p["publish_lead"])
        self.create_timer(1.0 / p["diagnostics_rate"], self._publish_diagnostics)
        self.get_logger().info(
            f"{p['estimator.kind'].upper()} on the {p['model.integrator']} model, {p['control_rate']:.0f} Hz "
            f"({p['mode']}), delay compensation {'on' if p['estimator.delay_compensation'] else 'off'}, "
            f"warm-up {self.warmup_s:.1f} s"
        )

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # -- inputs ------------------------------------------------------------------------------
    def _on_reading(self, msg: JointState) -> None:
        self.counts["readings"] += 1
        try:
            idx = [list(msg.name).index(j) for j in self.joints]
        except ValueError:
            self.counts["unknown_joint_names"] += 1
            return
        position = np.asarray(msg.position, dtype=np.float64)
        if len(position) != len(msg.name):
            z = position  # the filter counts the wrong length
        else:
            z = position[idx]
            if self.measure_velocity:
                velocity = np.asarray(msg.velocity, dtype=np.float64)
                z = np.concatenate([z, velocity[idx]]) if len(velocity) == len(msg.name) else velocity
        stamp = Time.from_msg(msg.header.stamp).nanoseconds * 1e-9
        if self.reported_effort:
            self._apply_reported_effort(msg, stamp)
        self.filter.update(z, stamp)

    def _apply_reported_effort(self, msg: JointState, stamp: float) -> None:
        effort = np.asarray(msg.effort, dtype=np.float64)
        if len(effort) != len(msg.name) or not np.isfinite(effort).all():
            self.counts["readings_without_effort"] += 1
            return
        names = list(msg.name)
        self.reported.apply(self.filter, effort[[names.index(j) for j in self.command_joints]], stamp)

    def _on_command(self, msg: Float64MultiArray, info: MessageInfo) -> None:
        command = read_command(msg, len(self.p["command_joints"]))
        if isinstance(command, str):
            self.counts["bad_commands"] += 1
            command = np.zeros(len(self.p["command_joints"]))  # what the robot applies instead
        if not self.lockstep:
            # The robot applies it from about when it was sent, not from when this (busy) node
            # gets to it: milliseconds late at an arm's 100 N m are more than its encoders' noise.
            # (Another host's clock may run ahead: never later than now.)
            now = self._now()
            sent = info["source_timestamp"] * 1e-9
            sent = min(sent, now) if sent > 0 else now
            if self.reported_effort:  # the readings say what the robot applied; this, when
                self.reported.command_sent(command, sent)
                return
            self.filter.apply_command(command, sent)
            return
        # The sim applied it from the time of the estimate it answers, even if the next /clock
        # (from another publisher) reached us first: predicting past that with the old command
        # would put every estimate a command behind.
        at = self.published_at if self.published_at is not None else self._now()
        self.filter.apply_command(command, at)
        self.published_at = None
        if self.overtaking_clock_ns is not None:
            t, self.overtaking_clock_ns = self.overtaking_clock_ns, None
            self._publish_lockstep(t)

    def _on_clock(self, msg: ClockMsg) -> None:
        t = Time.from_msg(msg.clock).nanoseconds
        if self.next_publish_ns is not None and t < self.next_publish_ns - self.period * 0.5e9:
            # Not due: the sim re-sends /clock while it waits for a command. If the estimate that
            # command answers is still unanswered, it may have been lost (best effort, or a
            # controller that subscribed while compiling): send it again, or the loop stalls for
            # good. A controller that has it already does not tick on it twice (same stamp).
            if self.published_at is not None and self.last_estimate is not None:
                self.state_pub.publish(self.last_estimate)
                self.counts["republished"] += 1
            return
        if self.published_at is not None:
            self.overtaking_clock_ns = t  # published once the command for the last one is in
        else:
            self._publish_lockstep(t)

    def _publish_lockstep(self, t_ns: int) -> None:
        # Only a published estimate moves the schedule on: without one (no reading yet) the sim's
        # re-sent /clock tries again.
        self.last_estimate = self._publish(t_ns * 1e-9)
        if self.last_estimate is not None:
            self.published_at = t_ns * 1e-9
            self.next_publish_ns = t_ns + int(self.period * 1e9)

    def _on_episode(self, msg: Int32) -> None:
        self.filter.reset_estimate()
        self.reported.reset()
        self.published_at, self.overtaking_clock_ns = None, None  # no command answers the old episode
        # Lockstep: the new episode's first estimate goes out at the sim's next (re-sent) /clock,
        # not a period later. The sim stands still until a command, and a controller that dropped
        # the estimate it had with the old episode (an arm's holds no effort without one) sends
        # none: waiting for the next period's /clock would stall the loop for good.
        self.next_publish_ns, self.last_estimate = None, None

    # -- outputs -----------------------------------------------------------------------------
    def _publish(self, now: float | None = None) -> JointState | None:
        """The estimate at ``now`` (default: the clock's), published; None where there is none to give."""
        start = time.perf_counter()
        self.tuning.apply_pending()  # parameters set since the last estimate, before this one
        now = self._now() if now is None else now
        f = self.filter
        if not f.initialized or f.status(now).stale:
            # Nothing to hand out: the filter keeps up with the clock, so a reading after a gap is
            # not taken for one from the future.
            f.predict_to(now)
            self.counts["stale_ticks"] += 1
            return None
        # Predicted to now but not kept: the filter stays at its last reading, so the next one
        # (stamped before now: it is milliseconds old when it arrives) fuses in order instead of
        # re-predicting a committed estimate from its history, at every reading.
        # With reported efforts the filter knows only what the readings said was applied: the
        # commands sent since the last reading act on the robot too (30 ms of them on a busy host).
        mean, cov = f.predicted(now, self.reported.sent_after(f.time) if self.reported_effort else ())
        nq = len(self.joints)
        msg = JointState()
        msg.header.stamp = Time(nanoseconds=int(round(now * 1e9))).to_msg()
        msg.name = self.joints
        msg.position = mean[:nq].tolist()
        msg.velocity = mean[nq:].tolist()
        self.state_pub.publish(msg)
        self.cov_msg.data = cov.ravel().tolist()
        self.cov_pub.publish(self.cov_msg)
        self.counts["published"] += 1
        self.stats.record(time.perf_counter() - start)
        self._maybe_publish_markers(mean, cov, msg.header.stamp)
        return msg

    # -- tuning while it runs (RuntimeParameters) --------------------------------------------
    def _noise_settings(self, values: dict[str, Any]) -> dict[str, Any]:
        names = [name for name in self.filter.NOISE_SETTINGS if f"estimator.{name}" in values]
        return {name: values[f"estimator.{name}"] for name in names}

    def _check_parameters(self, changes: dict[str, Any], values: dict[str, Any]) -> str | None:
        return self.filter.noise_problem(**self._noise_settings(changes))

    def _apply_parameters(self, changes: dict[str, Any]) -> None:
        self.p |= changes
        noise = self._noise_settings(changes)
        if noise:
            self.filter.set_noise(**noise)

    def _maybe_publish_markers(self, mean: np.ndarray, cov: np.ndarray, stamp) -> None:
        rate, now = self.p["marker_rate"], time.monotonic()
        if rate <= 0 or now - self.last_marker_wall < 1.0 / rate or self.marker_pub.get_subscription_count() == 0:
            return
        self.last_marker_wall = now
        self.marker_pub.publish(uncertainty_markers(self.keypoints, mean, cov, stamp, self.p["frame_id"]))

    def _publish_diagnostics(self) -> None:
        status = self.filter.status(self._now())
        level = OK if status.initialized and not status.stale else WARN
        message = "tracking" if level == OK else ("waiting for readings" if not status.initialized else "stale")
        values = {
            "kind": self.p["estimator.kind"],
            "initialized": status.initialized,
            "stale": status.stale,
            "measurement_age_ms": f"{status.measurement_age * 1e3:.1f}",
            "std": " ".join(f"{v:.4g}" for v in status.std),
            "accepted": status.accepted,
            "rejected": sum(status.rejected.values()) + self.counts["unknown_joint_names"],
            **{f"rejected_{k}": v for k, v in status.rejected.items()},
            **{f"event_{k}": v for k, v in status.events.items()},
            "nis_mean": f"{status.nis_mean:.3f}",
            "nis_dof": status.nis_dof,
            # The effort the robot gets that the model does not know (estimator.effort_disturbance_density).
            **({"effort_disturbance": " ".join(f"{v:.4g}" for v in status.disturbance)}
               if status.disturbance is not None else {}),
            **self.counts,
            "publish_us_p99": f"{self.stats.percentile_ms(99) * 1e3:.0f}",
            "warmup_s": f"{self.warmup_s:.2f}",
            "parameter_changes": self.tuning.applied,
        }
        self.diagnostics.publish(level, message, values)


main = main_for(EstimatorNode)

if __name__ == "__main__":
    main()
