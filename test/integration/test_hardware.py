"""Swapping the sim for hardware: the same controller executable closes the loop through mock
hardware, and the lifecycle driver template enforces limits, timeouts and the e-stop."""

import time

from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.qos import qos_profile_sensor_data
from rosutil import logs, start
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import Trigger

from mbrl_control.graph import mpc_graph


def test_mock_hardware_closes_the_loop_with_the_unchanged_controller(domain, probe, tmp_path):
    specs = mpc_graph({"use_sim": "false", "hardware": "mock"})
    sim_controller = next(s for s in mpc_graph({}) if s.name == "mpc_controller")
    controller = next(s for s in specs if s.name == "mpc_controller")
    assert controller == sim_controller  # same executable, parameters and topics as with the sim
    assert [s.name for s in specs] == ["mock_hardware", "estimator", "mpc_controller"]
    running = start(specs, domain, tmp_path / "logs")
    try:
        states, commands = [], []
        probe.node.create_subscription(JointState, "/joint_states", states.append, qos_profile_sensor_data)
        probe.node.create_subscription(Float64MultiArray, "/effort_controller/commands", commands.append, 10)
        # Zero (safe) commands until the estimator has its first estimate; then the controller pushes.
        assert probe.spin_until(lambda: any(abs(c.data[0]) > 1.0 for c in commands), 120), logs(tmp_path)
        # The mock mirrors the commanded effort into the effort state (through its lag).
        probe.spin_for(0.5)
        last_command = commands[-1].data[0]
        assert states and abs(states[-1].effort[0]) > 0.0
        assert abs(states[-1].effort[0] - last_command) <= 20.0  # bounded, same sign most of the time
        same_sign = sum((s.effort[0] > 0) == (c.data[0] > 0) for s, c in zip(states[-20:], commands[-20:]))
        assert same_sign >= 10
    finally:
        running.stop()


class Driver:
    def __init__(self, probe):
        self.probe = probe
        self.states = []
        probe.node.create_subscription(JointState, "/joint_states", self.states.append, qos_profile_sensor_data)
        self.commands = probe.node.create_publisher(Float64MultiArray, "/effort_controller/commands", 10)
        self.estop = probe.node.create_publisher(Bool, "/estop", 10)
        self.change = probe.node.create_client(ChangeState, "/driver/change_state")
        self.get = probe.node.create_client(GetState, "/driver/get_state")
        self.reset = probe.node.create_client(Trigger, "/driver/reset_estop")

    def call(self, client, request, timeout=10.0):
        assert client.wait_for_service(timeout_sec=timeout)
        future = client.call_async(request)
        assert self.probe.spin_until(future.done, timeout)
        return future.result()

    def state(self):
        return self.call(self.get, GetState.Request()).current_state.label

    def transition(self, tid):
        return self.call(self.change, ChangeState.Request(transition=Transition(id=tid))).success

    def push(self, value, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.commands.publish(Float64MultiArray(data=[value]))
            self.probe.spin_for(0.02)

    def effort(self):
        self.probe.spin_for(0.05)
        return self.states[-1].effort[0]


def test_driver_template_lifecycle_limits_timeout_and_estop(domain, probe, tmp_path):
    spec = next(s for s in mpc_graph({"use_sim": "false", "hardware": "loopback"}) if s.name == "driver")
    spec.parameters[-1]["autostart"] = False  # drive the lifecycle by hand, through its services
    running = start([spec], domain, tmp_path / "logs")
    try:
        d = Driver(probe)
        assert d.state() == "unconfigured", logs(tmp_path)
        assert d.transition(Transition.TRANSITION_CONFIGURE) and d.state() == "inactive"
        d.push(5.0, 0.3)
        assert not d.states, "an inactive driver published states"
        assert d.transition(Transition.TRANSITION_ACTIVATE) and d.state() == "active"
        d.push(-50.0, 0.1)  # beyond the 20 N effort limit: clamped (and the cart moves to x < 0)
        assert d.effort() == -20.0
        # Command timeout: silence zeroes the effort.
        probe.spin_for(0.3)
        assert d.effort() == 0.0
        # E-stop latches zero until reset, and reset needs the e-stop released.
        d.estop.publish(Bool(data=True))
        d.push(5.0, 0.3)
        assert d.effort() == 0.0
        d.estop.publish(Bool(data=False))
        d.push(5.0, 0.3)
        assert d.effort() == 0.0, "the e-stop un-latched by itself"
        assert d.call(d.reset, Trigger.Request()).success
        d.push(5.0, 0.3)
        assert d.effort() == 5.0
        # Position limit: the loopback cart runs into +2.4 m; pushing further is refused.
        d.push(20.0, 4.0)
        assert d.states[-1].position[0] >= 2.4 and d.effort() == 0.0
        d.push(-5.0, 0.2)
        assert d.effort() == -5.0  # pulling back inside is allowed
        # Deactivate zeroes the effort and ignores commands.
        assert d.transition(Transition.TRANSITION_DEACTIVATE) and d.state() == "inactive"
        assert d.transition(Transition.TRANSITION_CLEANUP) and d.state() == "unconfigured"
    finally:
        running.stop()
