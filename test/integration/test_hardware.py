"""Swapping the sim for hardware: the same controller executable closes the loop through mock
hardware, and the lifecycle driver template enforces limits, timeouts and the e-stop."""

import dataclasses
import time

import numpy as np
import pytest
import yaml
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rosutil import logs, start
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import Trigger

from mbrl_control.core.builders import load_robot
from mbrl_control.core.safety import JointLimits, limit_effort
from mbrl_control.graph import mpc_graph


def test_mock_hardware_closes_the_loop_with_the_unchanged_controller(domain, probe, tmp_path):
    # No lag: every effort state is exactly a command the mock received. States at 250 Hz, five a
    # command: on a loaded machine (CI, 2026-12-06) the mock's 100 Hz timer and the probe dropped
    # enough of two a command that only 19 of 54 came back.
    mirror = tmp_path / "mirror.yaml"
    mirror.write_text(yaml.safe_dump({"mock_hardware": {"ros__parameters": {"effort_time_constant": 0.0,
                                                                            "publish_rate": 250.0}}}))
    specs = mpc_graph({"use_sim": "false", "hardware": "mock", "overrides": str(mirror)})
    sim_controller = next(s for s in mpc_graph({}) if s.name == "mpc_controller")
    controller = next(s for s in mpc_graph({"use_sim": "false", "hardware": "mock"}) if s.name == "mpc_controller")
    assert controller == sim_controller  # same executable, parameters and topics as with the sim
    assert [s.name for s in specs] == ["mock_hardware", "estimator", "mpc_controller"]
    running = start(specs, domain, tmp_path / "logs")
    try:
        states, commands, since = [], [], []
        # Best effort as published, but deep: a probe busy for a moment keeps what arrived.
        deep = QoSProfile(depth=1000, reliability=qos_profile_sensor_data.reliability)
        probe.node.create_subscription(JointState, "/joint_states", states.append, deep)
        probe.node.create_subscription(Float64MultiArray, "/effort_controller/commands", commands.append, 100)
        # Zero (safe) commands until the estimator has its first estimate; then the controller pushes.
        assert probe.spin_until(lambda: any(abs(c.data[0]) > 1.0 for c in commands), 120), logs(tmp_path)
        first, since = len(commands), len(states) + 10  # (states just after may mirror earlier commands)
        assert probe.spin_until(lambda: len(commands) >= first + 100, 60), logs(tmp_path)  # 2 s at 50 Hz
        # Judge the states received so far; then keep taking commands: a state can reach the probe
        # before the command it mirrors does (they come from two publishers).
        until, sent_until = len(states), len(commands)
        probe.spin_for(0.5)
    finally:
        running.stop()
    # The mock mirrors the controller's commands into its effort states: every effort is one of
    # the commands (bit for bit), in the order they were sent, and most commands come back.
    # Efforts whose value the controller sent more than once (0, the +-20 N limits) are not matched.
    sent = [c.data[0] for c in commands]
    index = {v: i for i, v in enumerate(sent)}
    unique = {v for v in sent if sent.count(v) == 1}
    judged = states[since:until]
    efforts = [s.effort[0] for s in judged if s.effort[0] in unique]
    assert len(efforts) >= 50, (len(efforts), len(states))
    # (0.0 also once the mock's watchdog saw no fresh command, after a stall)
    foreign = {s.effort[0] for s in judged} - set(index) - {0.0}
    assert not foreign, sorted(foreign)[:5]
    order = [index[e] for e in efforts]
    assert order == sorted(order), "the mock's efforts came back out of the commands' order"
    matchable = {i for i in range(first, sent_until - 10) if sent[i] in unique}
    mirrored = len(set(order) & matchable)
    print(f"mock mirrored {mirrored} of {len(matchable)} matchable commands")
    assert mirrored >= 0.5 * len(matchable), (mirrored, len(matchable))


def test_mock_hardware_effort_lags_the_command_and_decays_without_one(domain, probe, tmp_path):
    """The deployed mock's effort: a first-order lag (0.02 s) towards the command, and towards zero
    once the command is older than the command timeout (0.1 s)."""
    spec = next(s for s in mpc_graph({"use_sim": "false", "hardware": "mock"}) if s.name == "mock_hardware")
    # A 1 s command timeout (deployed: 0.1 s), so that a test process stalled by a loaded machine
    # between two of its commands does not start the decay in the middle of the rise.
    spec = dataclasses.replace(spec, parameters=[*spec.parameters, {"command_timeout": 1.0}])
    running = start([spec], domain, tmp_path / "logs")
    try:
        d = Driver(probe)
        assert probe.spin_until(lambda: d.states, 60), logs(tmp_path)
        before = len(d.states)
        d.push(5.0, 0.5)  # 25 time constants
        rise = [s.effort[0] for s in d.states[before:]]
        assert rise[-1] == pytest.approx(5.0, abs=1e-3), rise
        assert all(0.0 <= a <= b <= 5.0 for a, b in zip(rise, rise[1:])), rise  # monotone, no overshoot
        assert any(0.05 < e < 4.95 for e in rise), rise  # a lag, not a jump
        held = len(d.states)
        assert probe.spin_until(lambda: abs(d.states[-1].effort[0]) < 1e-3, 10), d.states[-1].effort
        assert time.monotonic() - d.last_push >= 1.0  # not before the command timed out
        after = [s.effort[0] for s in d.states[held:]]  # still rising until the command times out
        decay = after[after.index(max(after)):]
        assert all(b <= a for a, b in zip(decay, decay[1:])) and any(1e-3 < e < 4.9 for e in decay), decay
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

    def prime_lifecycle(self):
        """A client's first response can be lost: the service may answer before it has discovered
        the client's response reader ("failed to send response (timeout)" in the driver's log;
        seen once in CI). Prime the lifecycle clients with requests that change nothing (get the
        state; a transition the state refuses; a reset with nothing latched), repeated until one is
        answered."""
        self._prime(self.get, GetState.Request())
        self._prime(self.change, ChangeState.Request(transition=Transition(id=Transition.TRANSITION_DEACTIVATE)))
        self._prime(self.reset, Trigger.Request())

    def _prime(self, client, request, tries=5):
        assert client.wait_for_service(timeout_sec=10.0)
        for _ in range(tries):
            future = client.call_async(request)
            if self.probe.spin_until(future.done, 2.0):
                return
        raise AssertionError(f"{client.srv_name}: no response to {tries} requests")

    def call(self, client, request, timeout=10.0):
        assert client.wait_for_service(timeout_sec=timeout)
        future = client.call_async(request)
        assert self.probe.spin_until(future.done, timeout)
        return future.result()

    def state(self):
        return self.call(self.get, GetState.Request()).current_state.label

    def transition(self, tid):
        return self.call(self.change, ChangeState.Request(transition=Transition(id=tid))).success

    def push(self, value, seconds, until=None):
        """Command ``value`` at ~50 Hz for ``seconds``, or with ``until`` until it holds (at most
        ``seconds``); returns whether it did."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.commands.publish(Float64MultiArray(data=[float(v) for v in np.atleast_1d(value)]))
            self.last_push = time.monotonic()
            self.probe.spin_for(0.02)
            if until is not None and self.states and until():
                return True
        return until is None or bool(self.states and until())

    def zero_since(self, first):
        """Every state published from the ``first``-th on has zero effort (and there are some)."""
        return len(self.states) > first and all(s.effort[0] == 0.0 for s in self.states[first:])


def test_driver_template_lifecycle_limits_timeout_and_estop(domain, probe, tmp_path):
    spec = next(s for s in mpc_graph({"use_sim": "false", "hardware": "loopback"}) if s.name == "driver")
    spec.parameters[-1]["autostart"] = False  # drive the lifecycle by hand, through its services
    running = start([spec], domain, tmp_path / "logs")
    try:
        d = Driver(probe)
        d.prime_lifecycle()
        assert d.state() == "unconfigured", logs(tmp_path)
        assert d.transition(Transition.TRANSITION_CONFIGURE) and d.state() == "inactive"
        d.push(5.0, 0.3)
        assert not d.states, "an inactive driver published states"
        assert d.transition(Transition.TRANSITION_ACTIVATE) and d.state() == "active"
        # (Each check waits for its condition with a generous deadline: on a loaded machine the
        # driver's states reach the probe late; the conditions themselves are exact.)
        effort = lambda: d.states[-1].effort[0]  # noqa: E731
        first = len(d.states)
        assert d.push(-50.0, 10.0, until=lambda: effort() == -20.0), effort()  # beyond the 20 N limit: clamped
        assert min(s.effort[0] for s in d.states[first:]) == -20.0  # (and the cart moves to x < 0)
        # Command timeout: silence zeroes the effort.
        assert probe.spin_until(lambda: effort() == 0.0, 10.0), effort()
        # E-stop latches zero until reset, and reset needs the e-stop released: once the e-stop
        # arrived (within 0.5 s), every state while 5 N is commanded has zero effort.
        d.estop.publish(Bool(data=True))
        d.push(5.0, 0.5)
        first = len(d.states)
        d.push(5.0, 0.5)
        assert d.zero_since(first), [s.effort[0] for s in d.states[first:]]
        d.estop.publish(Bool(data=False))
        d.push(5.0, 0.5)
        first = len(d.states)
        d.push(5.0, 0.5)
        assert d.zero_since(first), "the e-stop un-latched by itself"
        assert d.call(d.reset, Trigger.Request()).success
        assert d.push(5.0, 10.0, until=lambda: effort() == 5.0), effort()
        # Position limit: the loopback cart runs into +2.4 m; pushing further is refused.
        assert d.push(20.0, 30.0, until=lambda: d.states[-1].position[0] >= 2.4), d.states[-1].position
        first = len(d.states)
        d.push(20.0, 0.5)
        assert d.zero_since(first) and min(s.position[0] for s in d.states[first:]) >= 2.4
        assert d.push(-5.0, 10.0, until=lambda: effort() == -5.0), effort()  # pulling back inside is allowed
        # Deactivate zeroes the effort and ignores commands.
        assert d.transition(Transition.TRANSITION_DEACTIVATE) and d.state() == "inactive"
        assert d.transition(Transition.TRANSITION_CLEANUP) and d.state() == "unconfigured"
    finally:
        running.stop()


def test_driver_template_on_a_7_joint_arm_enforces_every_joints_own_limits(domain, probe, tmp_path):
    """robot:=iiwa through the driver template (loopback device: unit masses): pushed at 1.5 times
    its URDF effort limits, each of the 7 joints gets exactly what its own limits allow in the
    state it is in (clamped to its effort limit; refused past its velocity or position limit),
    until every joint is past its position limit and refused; pulling back is allowed."""
    arm = load_robot("iiwa").spec
    limits = JointLimits(np.asarray(arm.effort_limit, float), np.asarray(arm.position_lower, float),
                         np.asarray(arm.position_upper, float), np.asarray(arm.velocity_limit, float))
    sign = np.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0])
    push = 1.5 * sign * limits.effort
    spec = next(s for s in mpc_graph({"robot": "iiwa", "use_sim": "false", "hardware": "loopback"}) if s.name == "driver")
    running = start([spec], domain, tmp_path / "logs")
    try:
        d = Driver(probe)
        assert probe.spin_until(lambda: d.states, 60), logs(tmp_path)  # autostarted: active, publishing
        assert list(d.states[-1].name) == list(arm.state_joints)
        first = len(d.states)
        past = lambda: np.all(np.where(sign > 0, np.asarray(d.states[-1].position) >= limits.position_upper,  # noqa: E731
                                       np.asarray(d.states[-1].position) <= limits.position_lower))
        assert d.push(push, 30.0, until=past), (d.states[-1].position, limits.position_upper)
        d.push(push, 0.5)
        pushed = [s for s in d.states[first:] if np.any(np.asarray(s.effort) != 0.0)]
        for s in pushed:  # (an all-zero state: the driver's command watchdog, on a starved probe)
            expected = limit_effort(push, np.asarray(s.position), np.asarray(s.velocity), limits)
            np.testing.assert_array_equal(s.effort, expected)
        efforts = np.array([s.effort for s in pushed])
        assert np.all(np.any(efforts == sign * limits.effort, axis=0)), "a joint never got its full, clamped effort"
        assert np.all(np.asarray(d.states[-1].effort) == 0.0), d.states[-1]  # all past their limits: refused
        back = -0.1 * sign * limits.effort  # pulling every joint back inside is allowed
        assert d.push(back, 10.0, until=lambda: np.array_equal(d.states[-1].effort, back)), d.states[-1].effort
    finally:
        running.stop()
