"""The sim node: a PyBullet robot that speaks ros2_control's topics.

Publishes ``/joint_states`` (sensor_msgs/JointState, like joint_state_broadcaster) and takes
``/effort_controller/commands`` (std_msgs/Float64MultiArray, like an effort
forward_command_controller: one value per joint of the ``joints`` parameter, in that order), so a
hardware driver replaces it without any controller change.

Modes: ``realtime`` advances physics with the wall clock; ``lockstep`` advances one control period
per received command and publishes ``/clock``, so runs with ``use_sim_time`` are deterministic
whatever the planner's speed.
"""

from __future__ import annotations

import time

import numpy as np
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

from mbrl_control.nodes.diagnostics import OK, WARN, DiagnosticsPublisher
from mbrl_control.nodes.joint_io import read_command
from mbrl_control.nodes.params import ParameterError, ParamSpec, declare_parameters
from mbrl_control.nodes.runtime import main_for
from mbrl_control.paths import resolve_config_path
from mbrl_control.core.dynamics.urdf import read_urdf
from mbrl_control.core.safety import CommandWatchdog
from mbrl_control.sim.bullet_robot import BulletRobot

PARAMS = [
    ParamSpec("urdf", "urdf/cartpole.urdf", "robot URDF; relative paths are under the package's config/"),
    ParamSpec("gravity", 9.81, "gravity [m/s^2]", 0.0, 30.0),
    ParamSpec("mode", "realtime", "how physics advances", choices=("realtime", "lockstep")),
    ParamSpec("gui", False, "open the PyBullet GUI (needs a display)"),
    ParamSpec("physics_rate", 400.0, "physics steps per second [Hz]", 10.0, 10000.0),
    ParamSpec("control_rate", 50.0, "lockstep: one command advances 1/control_rate seconds [Hz]", 1.0, 1000.0),
    ParamSpec("publish_rate", 100.0, "realtime: joint state publish rate [Hz]", 1.0, 1000.0),
    ParamSpec("joints", ["slider_to_cart"], "actuated joints, in the order of the command array"),
    ParamSpec("command_timeout", 0.1, "realtime: a command older than this means zero effort [s]", 0.0, 10.0),
    ParamSpec("initial_position", [0.0, 3.141592653589793], "joint positions at start and reset (URDF order)"),
    ParamSpec("initial_velocity", [0.0, 0.0], "joint velocities at start and reset (URDF order)"),
    ParamSpec("initial_noise", 0.05, "std of Gaussian noise added to the initial state", 0.0, 10.0),
    ParamSpec("random_position_low", [-1.0, -3.141592653589793], "~/reset_random: lower position bounds"),
    ParamSpec("random_position_high", [1.0, 3.141592653589793], "~/reset_random: upper position bounds"),
    ParamSpec("seed", 0, "random seed of resets", 0, 2**31 - 1),
    ParamSpec("lockstep_republish", 0.5, "lockstep: re-publish state and clock after this idle wall time [s]", 0.01, 60.0),
    ParamSpec("diagnostics_rate", 1.0, "diagnostics publish rate [Hz]", 0.1, 100.0),
]


class SimNode(Node):
    def __init__(self) -> None:
        super().__init__("sim")
        p = declare_parameters(self, PARAMS)
        self.p = p
        self.physics_dt = 1.0 / p["physics_rate"]
        self.control_dt = 1.0 / p["control_rate"]
        self.steps_per_control = max(1, round(self.control_dt / self.physics_dt))
        urdf = resolve_config_path(p["urdf"])
        if not urdf.is_file():
            raise ParameterError(f"parameter 'urdf': no such file {urdf}")
        self.robot = BulletRobot(urdf, self.physics_dt, p["gravity"], gui=p["gui"])
        n = len(self.robot.joint_names)
        for name in ("initial_position", "initial_velocity", "random_position_low", "random_position_high"):
            if len(p[name]) != n:
                raise ParameterError(f"parameter '{name}' needs {n} values (joints {self.robot.joint_names})")
        try:
            self.actuated = self.robot.indices(p["joints"])
        except ValueError as exc:
            raise ParameterError(f"parameter 'joints': {exc}") from exc
        urdf_joints = read_urdf(urdf).joints
        self.effort_limit = np.array([urdf_joints[j].effort for j in self.robot.joint_names])
        self.rng = np.random.default_rng(p["seed"])

        self.lockstep = p["mode"] == "lockstep"
        self.sim_time_ns = 0
        self.command = np.zeros(len(self.actuated))
        self.watchdog = CommandWatchdog(p["command_timeout"])
        self.rejected_commands = 0
        self.commands_received = 0
        self.last_reject_reason = ""

        self.state_pub = self.create_publisher(JointState, "joint_states", 10)
        self.clock_pub = self.create_publisher(ClockMsg, "/clock", 10) if self.lockstep else None
        self.create_subscription(
            Float64MultiArray,
            "effort_controller/commands",
            self._on_command,
            QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE),
        )
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_service(Trigger, "~/reset_random", self._on_reset_random)
        self.diagnostics = DiagnosticsPublisher(self, hardware_id="pybullet")
        self.create_timer(1.0 / p["diagnostics_rate"], self._publish_diagnostics, clock=self._steady())
        self.reset_state(np.array(p["initial_position"]), np.array(p["initial_velocity"]), p["initial_noise"])
        if self.lockstep:
            self.last_publish_wall = time.monotonic()
            self.create_timer(p["lockstep_republish"], self._republish_if_idle, clock=self._steady())
        else:
            self.wall_start = time.monotonic()
            self.steps_done = 0
            self.create_timer(1.0 / p["publish_rate"], self._realtime_tick, clock=self._steady())
        self.get_logger().info(
            f"{p['mode']} sim of {urdf.name}: joints {self.robot.joint_names}, "
            f"physics {p['physics_rate']:.0f} Hz, commands on {p['joints']}"
        )

    @staticmethod
    def _steady() -> Clock:
        # The sim's own timers run on the steady clock: in lockstep the sim *is* the ROS clock.
        return Clock(clock_type=ClockType.STEADY_TIME)

    # -- state -------------------------------------------------------------------------------
    def reset_state(self, position: np.ndarray, velocity: np.ndarray, noise: float) -> None:
        position = position + noise * self.rng.standard_normal(position.shape)
        velocity = velocity + noise * self.rng.standard_normal(velocity.shape)
        self.robot.reset(position, velocity)
        self.command[:] = 0.0
        self.watchdog.last_time = None
        self._publish_state()

    def _stamp(self):
        if self.lockstep:
            return Time(nanoseconds=self.sim_time_ns).to_msg()
        return self.get_clock().now().to_msg()

    def _publish_state(self) -> None:
        s = self.robot.state()
        msg = JointState()
        msg.header.stamp = self._stamp()
        msg.name = list(self.robot.joint_names)
        msg.position = s.position.tolist()
        msg.velocity = s.velocity.tolist()
        msg.effort = s.effort.tolist()
        self.state_pub.publish(msg)
        if self.clock_pub is not None:
            self.clock_pub.publish(ClockMsg(clock=msg.header.stamp))
            self.last_publish_wall = time.monotonic()

    def _efforts(self, command: np.ndarray) -> np.ndarray:
        effort = np.zeros(len(self.robot.joint_names))
        effort[self.actuated] = command
        return np.clip(effort, -self.effort_limit, self.effort_limit)

    # -- commands ----------------------------------------------------------------------------
    def _on_command(self, msg: Float64MultiArray) -> None:
        self.commands_received += 1
        command = read_command(msg, len(self.actuated))
        if isinstance(command, str):
            self.rejected_commands += 1
            self.last_reject_reason = command
            self.get_logger().warn(f"rejected command: {command}", throttle_duration_sec=1.0)
            command = np.zeros(len(self.actuated))  # never applied; the robot gets zero effort
        self.command = command
        self.watchdog.feed(time.monotonic())
        if self.lockstep:
            self.robot.step(self._efforts(self.command), self.steps_per_control)
            self.sim_time_ns += int(round(self.steps_per_control * self.physics_dt * 1e9))
            self._publish_state()

    def _republish_if_idle(self) -> None:
        # A late subscriber, or a lost best-effort sample, must not stall the lockstep loop.
        if time.monotonic() - self.last_publish_wall >= self.p["lockstep_republish"]:
            self._publish_state()

    def _realtime_tick(self) -> None:
        target = int((time.monotonic() - self.wall_start) / self.physics_dt)
        steps = min(target - self.steps_done, int(0.1 / self.physics_dt))  # never spiral after a stall
        self.steps_done = target
        if steps <= 0:
            return
        fresh = self.watchdog.fresh(time.monotonic())
        self.robot.step(self._efforts(self.command if fresh else np.zeros_like(self.command)), steps)
        self.sim_time_ns += int(round(steps * self.physics_dt * 1e9))
        self._publish_state()

    # -- services ----------------------------------------------------------------------------
    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        p = self.p
        self.reset_state(np.array(p["initial_position"]), np.array(p["initial_velocity"]), p["initial_noise"])
        response.success, response.message = True, "reset to the configured initial state"
        return response

    def _on_reset_random(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        low, high = np.array(self.p["random_position_low"]), np.array(self.p["random_position_high"])
        self.reset_state(self.rng.uniform(low, high), np.zeros(len(low)), 0.0)
        response.success, response.message = True, "reset to a random state"
        return response

    def _publish_diagnostics(self) -> None:
        last = self.watchdog.last_time
        age = time.monotonic() - last if last is not None else np.inf
        level, message = OK, "running"
        if not self.lockstep and not self.watchdog.fresh(time.monotonic()):
            level, message = WARN, "no fresh command: zero effort"
        self.diagnostics.publish(
            level,
            message,
            {
                "mode": self.p["mode"],
                "sim_time": f"{self.sim_time_ns * 1e-9:.3f}",
                "commands_received": self.commands_received,
                "rejected_commands": self.rejected_commands,
                "last_reject_reason": self.last_reject_reason,
                "command_age_s": f"{age:.3f}" if np.isfinite(age) else "never",
                "command_timeouts": self.watchdog.timeouts,
            },
        )

    def close(self) -> None:
        self.robot.close()


main = main_for(SimNode)

if __name__ == "__main__":
    main()
