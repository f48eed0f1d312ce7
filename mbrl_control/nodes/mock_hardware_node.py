"""Mock hardware, like ros2_control's mock_components/GenericSystem: it mirrors the effort
commands it receives into the effort states it publishes (through an optional first-order lag),
and holds positions and velocities at their configured values. The whole hardware path
(controller -> command topic -> "robot" -> /joint_states -> controller) then runs without a sim.
"""

from __future__ import annotations

import math
import time

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from mbrl_control.core.safety import CommandWatchdog
from mbrl_control.nodes.diagnostics import OK, WARN, DiagnosticsPublisher
from mbrl_control.nodes.joint_io import read_command
from mbrl_control.nodes.params import ParameterError, ParamSpec, declare_parameters
from mbrl_control.nodes.runtime import main_for

PARAMS = [
    ParamSpec("state_joints", [], "joints published in /joint_states (the robot config's)", element=str),
    ParamSpec("command_joints", [], "commanded joints, in the order of the command array (the robot config's)", element=str),
    ParamSpec("initial_position", [], "held joint positions (state_joints order; empty: zeros)", element=float),
    ParamSpec("initial_velocity", [], "held joint velocities (state_joints order; empty: zeros)", element=float),
    ParamSpec("publish_rate", 100.0, "joint state publish rate [Hz]", 1.0, 1000.0),
    ParamSpec("effort_time_constant", 0.02, "first-order lag of effort state behind command [s]; 0 mirrors", 0.0, 10.0),
    ParamSpec("command_timeout", 0.1, "a command older than this decays to zero effort [s]", 0.0, 10.0),
    ParamSpec("diagnostics_rate", 1.0, "diagnostics publish rate [Hz]", 0.1, 100.0),
]


class MockHardwareNode(Node):
    def __init__(self) -> None:
        super().__init__("mock_hardware")
        p = declare_parameters(self, PARAMS)
        self.p = p
        n = len(p["state_joints"])
        if not n:
            raise ParameterError("parameter 'state_joints' is empty (the robot config sets it)")
        for name in ("initial_position", "initial_velocity"):
            if p[name] and len(p[name]) != n:
                raise ParameterError(f"parameter '{name}' needs {n} values (one per state joint) or none")
            p[name] = p[name] or [0.0] * n
        missing = [j for j in p["command_joints"] if j not in p["state_joints"]]
        if missing:
            raise ParameterError(f"parameter 'command_joints': {missing} are not in 'state_joints'")
        self.commanded = [p["state_joints"].index(j) for j in p["command_joints"]]
        self.effort = np.zeros(n)
        self.command = np.zeros(len(self.commanded))
        self.watchdog = CommandWatchdog(p["command_timeout"])
        self.rejected = 0
        self.received = 0
        self.last_update = time.monotonic()
        self.state_pub = self.create_publisher(JointState, "joint_states", 10)
        self.create_subscription(Float64MultiArray, "effort_controller/commands", self._on_command, 10)
        self.diagnostics = DiagnosticsPublisher(self, hardware_id="mock")
        self.create_timer(1.0 / p["publish_rate"], self._publish)
        self.create_timer(1.0 / p["diagnostics_rate"], self._publish_diagnostics)

    def _on_command(self, msg: Float64MultiArray) -> None:
        self.received += 1
        command = read_command(msg, len(self.commanded))
        if isinstance(command, str):
            self.rejected += 1
            return
        self.command = command
        self.watchdog.feed(time.monotonic())

    def _publish(self) -> None:
        now = time.monotonic()
        dt, self.last_update = now - self.last_update, now
        target = np.zeros_like(self.effort)
        if self.watchdog.fresh(now):
            target[self.commanded] = self.command
        tau = self.p["effort_time_constant"]
        blend = 1.0 if tau <= 0 else 1.0 - math.exp(-dt / tau)
        self.effort += blend * (target - self.effort)
        msg = JointState()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.name = list(self.p["state_joints"])
        msg.position = [float(v) for v in self.p["initial_position"]]
        msg.velocity = [float(v) for v in self.p["initial_velocity"]]
        msg.effort = self.effort.tolist()
        self.state_pub.publish(msg)

    def _publish_diagnostics(self) -> None:
        fresh = self.watchdog.fresh(time.monotonic())
        self.diagnostics.publish(
            OK if fresh else WARN,
            "mirroring commands" if fresh else "no fresh command: effort decays to zero",
            {"commands_received": self.received, "rejected_commands": self.rejected,
             "command_timeouts": self.watchdog.timeouts},
        )


main = main_for(MockHardwareNode)

if __name__ == "__main__":
    main()
