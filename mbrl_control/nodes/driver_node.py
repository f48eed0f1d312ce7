"""Driver template: a lifecycle node between the ROS 2 topics and your robot's device.

  configure  -> opens the device (``device`` parameter: 'package.module:DeviceClass')
  activate   -> publishes /joint_states and accepts effort commands
  deactivate -> writes zero effort and ignores commands
  cleanup / shutdown -> zero effort, device closed

Always, whatever the command says: efforts clamped to the joint limits from config, no effort
that pushes a joint further past a position or velocity limit, zero effort after a command
timeout, and an e-stop (std_msgs/Bool on ``/estop``) that latches zero effort until
``~/reset_estop`` (std_srvs/Trigger) is called with the e-stop released.

With ``autostart`` the node configures and activates itself, as ros2_control hardware components
do, so it runs under any launcher; otherwise drive it with ``ros2 lifecycle set``.
"""

from __future__ import annotations

import time

import numpy as np
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import Trigger

from mbrl_control.core.safety import CommandWatchdog, EStopLatch, JointLimits, limit_effort
from mbrl_control.hardware.device import Device, load_device_class
from mbrl_control.nodes.diagnostics import ERROR, OK, WARN, DiagnosticsPublisher
from mbrl_control.nodes.joint_io import read_command
from mbrl_control.nodes.params import ROBOT_PARAMS, ParameterError, ParamSpec, declare_parameters, robot_spec_param
from mbrl_control.nodes.runtime import main_for

PARAMS = [
    *ROBOT_PARAMS,  # the device's joints are the state joints, in the order of the published state
    ParamSpec("device", "mbrl_control.hardware.device:LoopbackDevice", "device class, 'package.module:Class'"),
    # The URDF's limits hold; these can only tighten them (empty: the URDF's).
    ParamSpec("limits.effort", [], "effort limit per command joint [N or N m], below the URDF's", 0.0, 1e6, element=float),
    ParamSpec("limits.position_lower", [], "lower position limit per state joint, above the URDF's", element=float),
    ParamSpec("limits.position_upper", [], "upper position limit per state joint, below the URDF's", element=float),
    ParamSpec("limits.velocity", [], "velocity limit per state joint, below the URDF's", 0.0, 1e12, element=float),
    ParamSpec("rate", 100.0, "read/write loop rate [Hz]", 1.0, 10000.0),
    ParamSpec("command_timeout", 0.1, "a command older than this means zero effort [s]", 0.001, 10.0),
    ParamSpec("autostart", False, "configure and activate on start"),
    ParamSpec("diagnostics_rate", 1.0, "diagnostics publish rate [Hz]", 0.1, 100.0),
]


class DriverNode(LifecycleNode):
    def __init__(self) -> None:
        super().__init__("driver")
        p = declare_parameters(self, PARAMS)
        self.p = p
        spec = robot_spec_param(p)
        self.joints = list(spec.state_joints)
        self.device_class = load_device_class(p["device"])
        self.actuated = list(spec.command_index)
        self.limits = self._limits(spec)
        self.device: Device | None = None
        self.active = False
        self.command = np.zeros(len(self.actuated))
        self.watchdog = CommandWatchdog(p["command_timeout"])
        self.estop = EStopLatch()
        self.counts = {"commands": 0, "rejected_commands": 0, "ignored_inactive": 0, "clamped": 0}
        self.state_pub = None
        self.loop_timer = None
        # The e-stop works in every lifecycle state.
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(Bool, "estop", lambda m: self.estop.update(m.data), reliable)
        self.create_service(Trigger, "~/reset_estop", self._on_reset_estop)
        self.create_subscription(Float64MultiArray, "effort_controller/commands", self._on_command, reliable)
        self.diagnostics = DiagnosticsPublisher(self, hardware_id=p["device"])
        self.create_timer(1.0 / p["diagnostics_rate"], self._publish_diagnostics)
        if p["autostart"]:
            self._autostart = self.create_timer(0.0, self._start)

    def _limits(self, spec) -> JointLimits:
        """Per device joint: the URDF's limits, tightened by ``limits.*`` (passive joints take no effort)."""
        effort = np.zeros(spec.nq)
        effort[self.actuated] = spec.effort_limit
        urdf = {"effort": effort, "position_lower": spec.position_lower, "position_upper": spec.position_upper,
                "velocity": spec.velocity_limit}
        sizes = {"effort": spec.action_dim, "position_lower": spec.nq, "position_upper": spec.nq, "velocity": spec.nq}
        tighter = {"position_lower": np.maximum}
        out = {}
        for key, base in urdf.items():
            given = self.p[f"limits.{key}"]
            if not given:
                out[key] = base.copy()
                continue
            if len(given) != sizes[key]:
                raise ParameterError(f"parameter 'limits.{key}' needs {sizes[key]} values, or none for the URDF's")
            values = np.array(given, dtype=float)
            if key == "effort":
                values, full = np.zeros(spec.nq), values
                values[self.actuated] = full
            out[key] = tighter.get(key, np.minimum)(base, values)
        return JointLimits(out["effort"], out["position_lower"], out["position_upper"], out["velocity"])

    def _start(self) -> None:
        self._autostart.cancel()
        self.destroy_timer(self._autostart)
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    # -- lifecycle ---------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.device = self.device_class(self.joints)
            self.device.open()
        except Exception as exc:  # a device that cannot open leaves the node unconfigured
            self.get_logger().error(f"cannot open device {self.p['device']}: {exc}")
            self.device = None
            return TransitionCallbackReturn.FAILURE
        self.state_pub = self.create_lifecycle_publisher(JointState, "joint_states", 10)
        self.loop_timer = self.create_timer(1.0 / self.p["rate"], self._loop)
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.command[:] = 0.0
        self.active = True
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = False
        self._write_zero()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = False
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        self._write_zero()
        if self.loop_timer is not None:
            self.destroy_timer(self.loop_timer)
            self.loop_timer = None
        if self.state_pub is not None:
            self.destroy_lifecycle_publisher(self.state_pub)
            self.state_pub = None
        if self.device is not None:
            self.device.close()
            self.device = None

    def _write_zero(self) -> None:
        if self.device is not None:
            self.device.safe_stop()

    # -- commands and the loop ---------------------------------------------------------------
    def _on_command(self, msg: Float64MultiArray) -> None:
        if not self.active:
            self.counts["ignored_inactive"] += 1
            return
        command = read_command(msg, len(self.actuated))
        if isinstance(command, str):
            self.counts["rejected_commands"] += 1
            return
        self.counts["commands"] += 1
        self.command = command
        self.watchdog.feed(time.monotonic())

    def _loop(self) -> None:
        reading = self.device.read()
        effort = np.zeros(len(self.joints))
        if self.active and not self.estop.latched and self.watchdog.fresh(time.monotonic()):
            effort[self.actuated] = self.command
            limited = limit_effort(effort, reading.position, reading.velocity, self.limits)
            self.counts["clamped"] += int(not np.array_equal(limited, effort))
            effort = limited
            self.device.write(effort)
        else:  # not driven: what the device says is safe (zero effort; an arm's brakes)
            effort = self.device.safe_stop()
        msg = JointState()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.name = list(self.joints)
        msg.position = reading.position.tolist()
        msg.velocity = reading.velocity.tolist()
        msg.effort = effort.tolist()
        self.state_pub.publish(msg)

    def _on_reset_estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self.estop.reset()
        return response

    def _publish_diagnostics(self) -> None:
        if self.estop.latched:
            level, message = ERROR, "e-stop latched: the device's safe stop"
        elif not self.active:
            level, message = WARN, "inactive: the device's safe stop"
        else:
            level, message = OK, "active"
        self.diagnostics.publish(level, message, {
            "active": self.active, "estop_latched": self.estop.latched, "estop_trips": self.estop.trips,
            "command_timeouts": self.watchdog.timeouts, **self.counts,
        })


main = main_for(DriverNode)

if __name__ == "__main__":
    main()
