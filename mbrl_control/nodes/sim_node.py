"""The sim node: a PyBullet robot that speaks ros2_control's topics.

Publishes ``/joint_states`` (sensor_msgs/JointState, like joint_state_broadcaster) and takes
``/effort_controller/commands`` (std_msgs/Float64MultiArray, like an effort
forward_command_controller: one value per joint of the ``joints`` parameter, in that order), so a
hardware driver replaces it without any controller change.

``/joint_states`` carries what encoders would report (``sensor.*``): noisy, quantised positions,
sampled at their own rate, stamped with their sample time and delivered late, sometimes lost. The
exact state goes to ``~/ground_truth`` for tests and plots only; no controller reads it.

Fault injection (``fault.*``, see mbrl_control/sim/faults.py): one scheduled fault that starts at
``fault.start`` seconds of sim time and clears ``fault.duration`` later: every reading in the window
is lost (dropout) or corrupted (nan_reading, inf_reading, wrong_length, spike), or every command is lost
(command_loss: realtime, the command watchdog applies zero effort; lockstep, the robot still steps,
under zero effort). What it did is in /diagnostics (``fault_*``). Ground truth is never faulted.

Modes: ``realtime`` advances physics with the wall clock; ``lockstep`` advances one control period
per received command and publishes ``/clock``, so runs with ``use_sim_time`` are deterministic
whatever the planner's speed.
"""

from __future__ import annotations

import math
import threading
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

from mbrl_control.core.safety import CommandWatchdog
from mbrl_control.core.urdf import read_urdf
from mbrl_control.core.util import dataclass_from
from mbrl_control.nodes.diagnostics import OK, WARN, DiagnosticsPublisher
from mbrl_control.nodes.joint_io import read_command
from mbrl_control.nodes.params import (
    ROBOT_PARAMS,
    ParameterError,
    ParamSpec,
    declare_parameters,
    section,
    specs_from,
    urdf_param,
)
from mbrl_control.nodes.runtime import main_for
from mbrl_control.sim.bullet_robot import BulletRobot
from mbrl_control.sim.effort_history import EffortHistory
from mbrl_control.sim.faults import FaultConfig, ScheduledFault
from mbrl_control.sim.randomization import (
    DomainRandomizer,
    PayloadConfig,
    PhysicalDraw,
    RandomizationConfig,
    apply_payload,
)
from mbrl_control.sim.sensor import JointSensor, SensorConfig

PARAMS = [
    *ROBOT_PARAMS,
    ParamSpec("mode", "realtime", "how physics advances", choices=("realtime", "lockstep")),
    ParamSpec("gui", False, "open the PyBullet GUI (needs a display)"),
    ParamSpec("physics_rate", 400.0, "physics steps per second [Hz]", 10.0, 10000.0),
    ParamSpec("ground_truth_rate", 100.0, "realtime: ~/ground_truth rate (and /joint_states without a sensor) [Hz]", 1.0, 1000.0),
    ParamSpec("command_timeout", 0.1, "realtime: a command older than this means zero effort (or the brakes: brakes) [s]", 0.0, 10.0),
    ParamSpec("initial_position", [], "joint positions at start and reset (URDF order; empty: zeros)", element=float),
    ParamSpec("initial_velocity", [], "joint velocities at start and reset (URDF order; empty: zeros)", element=float),
    ParamSpec("brakes", False, "hold the joints still from start and each reset until the first command, and from a "
              "command timeout (or a lost command, in lockstep) until the next command, as an arm's brakes do where "
              "zero effort would drop it (off: zero effort then)"),
    ParamSpec("initial_noise", 0.05, "std of Gaussian noise added to the initial positions", 0.0, 10.0),
    ParamSpec("initial_velocity_noise", 0.0, "std of Gaussian noise added to the initial velocities (a robot starts at rest)", 0.0, 10.0),
    ParamSpec("random_position_low", [], "~/reset_random: lower position bounds (URDF order; empty: the URDF's limits, "
              "+-pi for continuous joints)", element=float),
    ParamSpec("random_position_high", [], "~/reset_random: upper position bounds (empty: as random_position_low)", element=float),
    ParamSpec("seed", 0, "random seed of resets", 0, 2**31 - 1),
    ParamSpec("lockstep_republish", 0.5, "lockstep: re-publish state and clock after this idle wall time [s]", 0.01, 60.0),
    ParamSpec("diagnostics_rate", 1.0, "diagnostics publish rate [Hz]", 0.1, 100.0),
    ParamSpec("sensor.enabled", True, "encoder-like readings on joint_states; false: the exact state"),
    *specs_from(SensorConfig, "sensor"),
    *specs_from(PayloadConfig, "payload"),
    *specs_from(RandomizationConfig, "randomize"),
    *specs_from(FaultConfig, "fault"),
]


class SimNode(Node):
    def __init__(self) -> None:
        super().__init__("sim")
        p = declare_parameters(self, PARAMS)
        self.p = p
        self.physics_dt = 1.0 / p["physics_rate"]
        self.physics_dt_ns = int(round(self.physics_dt * 1e9))
        self.steps_per_control = max(1, round(1.0 / (p["control_rate"] * self.physics_dt)))
        urdf = urdf_param(p)
        self.robot = BulletRobot(urdf, self.physics_dt, p["gravity"], gui=p["gui"])
        if p["gravity_compensated"]:  # as the robot's own controller would: from the URDF it was given
            self.robot.compensate_gravity(urdf, p["gravity"])
        names = self.robot.joint_names
        urdf_joints = read_urdf(urdf).joints
        limits = [urdf_joints[j] for j in names]
        defaults = {  # what an empty list stands for
            "initial_position": np.zeros(len(names)),
            "initial_velocity": np.zeros(len(names)),
            "random_position_low": np.array([j.lower if math.isfinite(j.lower) else -math.pi for j in limits]),
            "random_position_high": np.array([j.upper if math.isfinite(j.upper) else math.pi for j in limits]),
        }
        self.initial = {}
        for name, default in defaults.items():
            if p[name] and len(p[name]) != len(names):
                raise ParameterError(f"parameter '{name}' needs {len(names)} values (joints {names}) or none")
            self.initial[name] = np.array(p[name], dtype=np.float64) if p[name] else default
        try:
            self.actuated = self.robot.indices(p["command_joints"])
        except ValueError as exc:
            raise ParameterError(f"parameter 'command_joints': {exc}") from exc
        self.effort_limit = np.array([urdf_joints[j].effort for j in names])
        self.sensor = None
        self.last_reading: JointState | None = None  # re-sent while lockstep idles, for late subscribers
        if p["sensor.enabled"]:
            try:
                self.sensor = JointSensor(dataclass_from(SensorConfig, section(p, "sensor")), len(names))
            except ValueError as exc:
                raise ParameterError(f"sensor.* parameters: {exc}") from exc
        self.rng = np.random.default_rng(p["seed"])
        try:
            payload = dataclass_from(PayloadConfig, section(p, "payload"))
            # The robot as built: its URDF plus what the URDF does not know (the controller's model never sees it).
            self.urdf_text = apply_payload(urdf.read_text(), payload.link, payload.mass, payload.offset, payload.mass_scale)
        except ValueError as exc:
            raise ParameterError(f"payload.* parameters: {exc}") from exc
        if payload.mass > 0.0 or payload.mass_scale != 1.0:
            self.robot.reload(self.urdf_text)
        try:
            self.randomizer = DomainRandomizer(dataclass_from(RandomizationConfig, section(p, "randomize")), payload)
        except ValueError as exc:
            raise ParameterError(f"randomize.* parameters: {exc}") from exc
        try:
            self.fault = ScheduledFault(dataclass_from(FaultConfig, section(p, "fault")), len(names))
        except ValueError as exc:
            raise ParameterError(f"fault.* parameters: {exc}") from exc
        self.physics = PhysicalDraw()

        self.lockstep = p["mode"] == "lockstep"
        self.sim_time_ns = 0  # physics time since start
        # Stamps: sim time itself in lockstep (it is /clock); in realtime the ROS clock at the start
        # plus sim time, taken together with the wall clock that paces the physics (below).
        self.stamp_offset_ns = 0
        self.wall_start = time.monotonic()
        if not self.lockstep:
            self.stamp_offset_ns = self.get_clock().now().nanoseconds
        self.command = np.zeros(len(self.actuated))
        self.applied = np.zeros(len(names))
        # Readings report the effort of their sample's step, though published a latency later.
        self.efforts = EffortHistory(horizon_ns=int(1e9))
        self.efforts.reset(0, self.applied)
        self.watchdog = CommandWatchdog(p["command_timeout"])
        self.counts = {"commands_received": 0, "rejected_commands": 0, "readings_published": 0}
        # The physics loop (realtime) and the executor's callbacks (commands, resets) take turns on the robot.
        self.physics_lock = threading.RLock()
        self.physics_thread: threading.Thread | None = None
        self.last_reject_reason = ""

        self.state_pub = self.create_publisher(JointState, "joint_states", 10)
        self.truth_pub = self.create_publisher(JointState, "~/ground_truth", 10)
        self.clock_pub = self.create_publisher(ClockMsg, "/clock", 10) if self.lockstep else None
        self.create_subscription(
            Float64MultiArray, "effort_controller/commands", self._on_command,
            QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE),
        )
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_service(Trigger, "~/reset_random", self._on_reset_random)
        self.diagnostics = DiagnosticsPublisher(self, hardware_id="pybullet")
        self.create_timer(1.0 / p["diagnostics_rate"], self._publish_diagnostics, clock=self._steady())
        self._reset_initial()
        if self.lockstep:
            self.last_publish_wall = time.monotonic()
            self.create_timer(p["lockstep_republish"], self._republish_if_idle, clock=self._steady())
        else:
            self.steps_done = 0
            self.truth_every = max(1, round(p["physics_rate"] / p["ground_truth_rate"]))
            # One wake per physics step, so readings go out when they are due, in a loop of its own
            # as ros2_control's hardware loop is, not an executor timer: at 400 Hz rclpy's executor
            # cost more than the physics (the cart-pole at 100 Hz: the sim at 31 % of a core, on two
            # cores the controller plans on both). Commands and services stay on the executor.
            self.stopping = threading.Event()
            self.physics_thread = threading.Thread(target=self._physics_loop, name="physics", daemon=True)
            self.physics_thread.start()
        sensing = "encoder readings" if self.sensor else "exact states"
        unknown = (f"; carrying what the URDF does not say: {payload.mass:g} kg at {payload.link} "
                   f"{list(payload.offset)}, its mass x{payload.mass_scale:g}"
                   if payload.mass > 0.0 or payload.mass_scale != 1.0 else "")
        self.get_logger().info(
            f"{p['mode']} sim of {urdf.name}: joints {names}, physics {p['physics_rate']:.0f} Hz, "
            f"{sensing} on joint_states, commands on {p['command_joints']}{unknown}"
        )

    @staticmethod
    def _steady() -> Clock:
        # The sim's own timers run on the steady clock: in lockstep the sim *is* the ROS clock.
        return Clock(clock_type=ClockType.STEADY_TIME)

    # -- physics and sensing ------------------------------------------------------------------
    @property
    def sim_time(self) -> float:
        return self.sim_time_ns * 1e-9

    def _reset_initial(self) -> None:
        p = self.p
        self.reset_state(self.initial["initial_position"], self.initial["initial_velocity"], p["initial_noise"],
                         p["initial_velocity_noise"])

    def reset_state(self, position: np.ndarray, velocity: np.ndarray, noise: float, velocity_noise: float = 0.0) -> None:
        draw = self.randomizer.draw()
        if draw != self.physics:  # a new episode's robot (domain randomization)
            self.robot.reload(self.randomizer.urdf(self.urdf_text, draw))
            self.physics = draw
        # A robot starts at rest: noise on its positions; on velocities only if asked for.
        position = position + noise * self.rng.standard_normal(position.shape)
        velocity = velocity + velocity_noise * self.rng.standard_normal(velocity.shape)
        self.robot.reset(position, velocity)
        self.braked = self.p["brakes"]  # released by the next command
        self.command[:] = 0.0
        self.watchdog.last_time = None
        self.last_reading = None  # the old episode's
        if self.sensor is not None:
            self.sensor.reset(self.sim_time)
            self.sensor.observe(self.sim_time, position, velocity)
        self._publish(truth=True, initial=True)

    def _advance(self, steps: int, command: np.ndarray) -> None:
        effort = np.zeros(len(self.robot.joint_names))
        effort[self.actuated] = command
        self.applied = np.clip(effort, -self.effort_limit, self.effort_limit) * self.physics.motor_gain
        held = self.robot.state().position if self.braked else None
        # Braked, the joints carry the brakes' holding torque (JointState.effort: the effort applied
        # in the joint, what an arm's joint torque sensors read): an estimator predicting from the
        # reported effort then predicts the arm held, not falling under the motors' zero.
        self.efforts.record(self.sim_time_ns, self.applied if held is None else self.robot.holding_effort(held))
        for _ in range(steps):
            if held is not None:  # brakes on: time passes, the joints stay where they are
                self.robot.reset(held, np.zeros_like(held))
            else:
                self.robot.step(self.applied, 1)
            self.sim_time_ns += self.physics_dt_ns
            self.fault.update(self.sim_time, (self.stamp_offset_ns + self.sim_time_ns) * 1e-9)
            if self.sensor is not None:
                s = self.robot.state()
                self.sensor.observe(self.sim_time, s.position, s.velocity)

    def _stamp(self, t_ns: int):
        return Time(nanoseconds=self.stamp_offset_ns + t_ns).to_msg()

    def _joint_state(self, t_ns: int, position, velocity) -> JointState:
        msg = JointState()
        msg.header.stamp = self._stamp(t_ns)
        msg.name = list(self.robot.joint_names)
        msg.position = [float(v) for v in position]
        msg.velocity = [float(v) for v in velocity]
        msg.effort = self.efforts.during_step_ending(t_ns).tolist()
        return msg

    def _publish(self, truth: bool, initial: bool = False) -> None:
        """Readings due by now (or the exact state without a sensor), ground truth, then /clock.
        ``initial``: the reading of the robot at rest after a reset is there at once (it has
        been read before the run starts; in lockstep nothing would move to deliver it)."""
        s = self.robot.state()
        exact = self._joint_state(self.sim_time_ns, s.position, s.velocity)
        if self.sensor is None:
            position = self.fault.corrupt(self.sim_time, s.position)
            if position is not None:
                self.state_pub.publish(exact if position is s.position else
                                       self._joint_state(self.sim_time_ns, position, s.velocity))
        else:
            for m in self.sensor.deliver(math.inf if initial else self.sim_time):
                position = self.fault.corrupt(m.stamp, m.position)  # by sample time: the window's readings
                if position is None:
                    continue  # lost in the scheduled dropout
                self.last_reading = self._joint_state(int(round(m.stamp * 1e9)), position, m.velocity)
                self.state_pub.publish(self.last_reading)
                self.counts["readings_published"] += 1
        if truth:
            self.truth_pub.publish(exact)
        if self.clock_pub is not None:
            self.clock_pub.publish(ClockMsg(clock=self._stamp(self.sim_time_ns)))
            self.last_publish_wall = time.monotonic()

    # -- commands ----------------------------------------------------------------------------
    def _on_command(self, msg: Float64MultiArray) -> None:
        with self.physics_lock:
            self._take_command(msg)

    def _take_command(self, msg: Float64MultiArray) -> None:
        if self.fault.loses_command(self.sim_time):  # injected: the topic is lost
            if self.lockstep:  # the robot still steps (it is the clock), under its watchdog's zero effort or brakes
                self.command = np.zeros(len(self.actuated))
                self.braked = self.braked or self.p["brakes"]
                self._advance(self.steps_per_control, self.command)
                self._publish(truth=True)
            return
        self.counts["commands_received"] += 1
        if not self.lockstep:
            # The old command (and the brakes) held the robot until now: a physics step counts as
            # the command's that covers more of it (a command starts within half a step of its arrival).
            self._realtime_tick(nearest=True)
        command = read_command(msg, len(self.actuated))
        if isinstance(command, str):
            self.counts["rejected_commands"] += 1
            self.last_reject_reason = command
            self.get_logger().warning(f"rejected command: {command}", throttle_duration_sec=1.0)
            command = np.zeros(len(self.actuated))  # never applied; the robot gets zero effort
        else:
            self.braked = False  # a valid command releases the brakes
        self.command = command
        self.watchdog.feed(time.monotonic())
        if self.lockstep:
            self._advance(self.steps_per_control, self.command)
            self._publish(truth=True)

    def _republish_if_idle(self) -> None:
        # A late subscriber, or a lost best-effort sample, must not stall the lockstep loop.
        if time.monotonic() - self.last_publish_wall >= self.p["lockstep_republish"]:
            s = self.robot.state()
            exact = self._joint_state(self.sim_time_ns, s.position, s.velocity)
            if self.sensor is None:
                position = self.fault.corrupt(self.sim_time, s.position)
                if position is not None:
                    self.state_pub.publish(self._joint_state(self.sim_time_ns, position, s.velocity))
            else:  # the last reading again (an estimator counts and drops a duplicate it already has)
                self.truth_pub.publish(exact)
                if self.last_reading is not None:
                    self.state_pub.publish(self.last_reading)
            self.clock_pub.publish(ClockMsg(clock=self._stamp(self.sim_time_ns)))
            self.last_publish_wall = time.monotonic()

    def _physics_loop(self) -> None:
        """Realtime: wake at the end of every physics step and take the steps ended by then."""
        while not self.stopping.is_set():
            wait = self.wall_start + (self.steps_done + 1) * self.physics_dt - time.monotonic()
            if wait > 0:
                self.stopping.wait(wait)
            try:
                self._realtime_tick()
            except Exception as exc:  # the node shutting down under the loop (its publishers gone)
                if not self.stopping.is_set():
                    self.get_logger().error(f"physics loop stopped: {type(exc).__name__}: {exc}")
                return

    def _realtime_tick(self, nearest: bool = False) -> None:
        """Physics steps up to the wall clock: those ended by now (``nearest``: half ended)."""
        with self.physics_lock:
            self._advance_to_wall_clock(nearest)

    def _advance_to_wall_clock(self, nearest: bool) -> None:
        elapsed = (time.monotonic() - self.wall_start) / self.physics_dt
        target = round(elapsed) if nearest else int(elapsed)
        steps = target - self.steps_done
        if steps <= 0:
            return
        cap = int(0.1 / self.physics_dt)
        if steps > cap:  # after a stall, never spiral: skip the lost time, keep stamps on the wall clock
            self.stamp_offset_ns += (steps - cap) * self.physics_dt_ns
            steps = cap
        self.steps_done = target
        fresh = self.watchdog.fresh(time.monotonic())
        if not fresh and self.watchdog.last_time is not None and self.p["brakes"]:
            self.braked = True  # the commands stopped: brake, do not drop the arm (the next command releases them)
        before = self.sim_time_ns // (self.physics_dt_ns * self.truth_every)
        self._advance(steps, self.command if fresh else np.zeros_like(self.command))
        truth_due = self.sim_time_ns // (self.physics_dt_ns * self.truth_every) > before
        if self.sensor is not None or truth_due:
            self._publish(truth=truth_due)

    # -- services ----------------------------------------------------------------------------
    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self.physics_lock:
            self._reset_initial()
        response.success, response.message = True, "reset to the configured initial state"
        return response

    def _on_reset_random(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        low, high = self.initial["random_position_low"], self.initial["random_position_high"]
        with self.physics_lock:
            self.reset_state(self.rng.uniform(low, high), np.zeros(len(low)), 0.0)
        response.success, response.message = True, "reset to a random state"
        return response

    def _publish_diagnostics(self) -> None:
        last = self.watchdog.last_time
        age = time.monotonic() - last if last is not None else math.inf
        level, message = OK, "running"
        if not self.lockstep and not self.watchdog.fresh(time.monotonic()):
            level, message = WARN, "no fresh command: " + ("braked" if self.braked else "zero effort")
        if self.fault.active:
            level, message = WARN, f"fault injected: {self.fault.config.kind} ({message})"
        values = {
            "mode": self.p["mode"],
            "sim_time": f"{self.sim_time:.3f}",
            **self.counts,
            "last_reject_reason": self.last_reject_reason,
            "command_age_s": f"{age:.3f}" if math.isfinite(age) else "never",
            "command_timeouts": self.watchdog.timeouts,
            **self.fault.diagnostics(),
        }
        if self.sensor is not None:
            values |= {"sensor_samples": self.sensor.samples, "sensor_lost": self.sensor.lost}
        if self.randomizer.config.enabled:
            values |= {f"randomized_{k}": v for k, v in self.physics.as_dict().items()}
        self.diagnostics.publish(level, message, values)

    def _stop_physics(self) -> None:
        if self.physics_thread is not None:
            self.stopping.set()
            self.physics_thread.join()
            self.physics_thread = None

    def destroy_node(self) -> None:
        self._stop_physics()  # before its publishers go
        super().destroy_node()

    def close(self) -> None:
        self._stop_physics()
        self.robot.close()


main = main_for(SimNode)

if __name__ == "__main__":
    main()
