"""A planner whose plans keep failing, in realtime on a robot held by ``gravity_hold``: the
controller falls back to the last good plan only where that plan is finite, then to the safety
layer's hold, and once the hold has lasted ``gravity_hold_timeout`` it sends nothing (the robot's
own safe stop) and keeps ticking. (A demo run of the arm died here on 2026-12-07: a failed plan
fell back to a diverged previous plan's NaN action, the hold ran out, and the tick published a
transition for the command it never sent.)"""

import math
import time

import rclpy
import torch
import yaml
from rclpy.time import Time
from sensor_msgs.msg import JointState

from mbrl_control.core.planners.base import Plan
from mbrl_control.paths import config_dir

HOLD_TIMEOUT = 0.05  # [s]


def test_failing_plans_fall_back_to_finite_actions_then_release_the_robot_and_the_controller_ticks_on(domain, tmp_path):
    from mbrl_control.nodes.controller_node import ControllerNode

    values = {"mode": "realtime", "compile": False, "cem": {"population": 50, "elites": 5, "iterations": 1, "horizon": 10},
              "safety": {"stale_action": "gravity_hold", "gravity_hold_timeout": HOLD_TIMEOUT}}
    path = tmp_path / "controller.yaml"
    path.write_text(yaml.safe_dump({"mpc_controller": {"ros__parameters": values}}))
    rclpy.init(args=["--ros-args", "--params-file", str(config_dir() / "cartpole.yaml"), "--params-file", str(path)])
    node = ControllerNode()
    try:
        commands, samples = [], []
        node.command_pub.publish = lambda msg: commands.append(list(msg.data))
        node.sample_pub.publish = lambda msg: samples.append(list(msg.data))
        horizon = 10
        # One good tick: a finite first action, the rest of the plan diverged (NaN), as a
        # blown-up iLQR nominal leaves it; then every plan fails.
        diverged = torch.full((horizon, 1), math.nan)
        diverged[0] = 3.0
        plans = iter([Plan(actions=diverged, states=torch.zeros(horizon + 1, 4), cost=1.0)])
        node.planner.plan = lambda x0, deadline=None: next(
            plans, Plan(actions=torch.full((horizon, 1), math.nan), states=torch.zeros(horizon + 1, 4), cost=math.nan))
        state = JointState(name=list(node.spec.state_joints), position=[0.0, math.pi - 0.1], velocity=[0.0, 0.0])

        def tick():
            state.header.stamp = Time(nanoseconds=node.get_clock().now().nanoseconds).to_msg()
            node._on_state(state)  # realtime: stored; the timer's tick is called by hand
            node._tick(0.0)

        tick()
        assert commands == [[3.0]] and len(samples) == 1
        tick()  # the plan failed, and the last good plan's next action is NaN: the safe command
        assert len(commands) == 2 and commands[-1] == [0.0]  # the cart-pole's hold: zero effort
        assert node.safety.counts["unsafe_plan"] == 1
        time.sleep(2 * HOLD_TIMEOUT)
        sent = len(commands)
        for _ in range(3):
            tick()  # the hold ran out: nothing is sent, nothing recorded as sent, and no exception
        assert len(commands) == sent and node.safety.counts["released_to_robot"] == 3
        assert len(samples) == 1  # a transition for the planned tick only
    finally:
        node.destroy_node()
        rclpy.shutdown()
