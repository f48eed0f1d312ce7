"""The MPC controller node: replans every control tick with the chosen planner and publishes the
first action as an effort command.

Topics: subscribes ``joint_states`` (sensor_msgs/JointState; remap it to an estimator's output)
and, when the task has a goal, ``/goal_pose`` (geometry_msgs/PoseStamped, as rviz's goal tool
sends it; its position is the goal of the task's reach point, clamped into the reachable region
with the reason logged), publishes ``effort_controller/commands`` (std_msgs/Float64MultiArray,
``command_joints`` order), ``~/plan`` (visualization_msgs/MarkerArray, throttled: the planned path
of the robot's keypoints and the goal) and ``/diagnostics``.

The robot is data (its URDF and config/<robot>.yaml): the model, the task and what a safe command
is come from ``mbrl_control.core.builders``; nothing here knows a robot by name.

Timing: in ``realtime`` mode a timer ticks at ``control_rate`` and the planner gets a deadline of
``deadline_fraction`` of the period, so a tick never holds the executor longer than one period. In
``lockstep`` mode the sim is the clock and only advances on our command, so a tick runs when the
state for the next tick time arrives (a sim-time timer could fire before that state is delivered and
plan from the previous one); no deadline applies there, which keeps lockstep runs deterministic,
and a tick slower than the period is still counted as missed.

Every control tick gets a sequence number ``seq`` (0, 1, ...; a paused tick, which only sends the
zero command, gets none), carried in its ``~/timing`` record and, when it planned, in its sample
on ``~/transitions`` (mbrl_control.core.learning.sample_layout): a judge tells from them exactly
which samples were sent and pairs the timing record and sample of one tick.

``~/timing`` (std_msgs/Float64MultiArray, fields named in its layout): ``tick_ms`` (the tick's
compute time), ``plan_cost``, ``plan_iterations``, ``state_age_ms``, ``seq``, ``lateness_ms``
(realtime: how long after the timer's intended release the tick started; lockstep: NaN, there is
no release time) and ``sample_sent`` (1 when the tick published a sample). Missed and late ticks
are counted as mbrl_control.core.timing describes (releases the timer skipped, ticks that ended
after the next release; late: started more than 10 % of the period after the release).

Tuning while it runs (``ros2 param set /mpc_controller task.<term>.weight 5.0``): the parameters
marked dynamic in ``PARAMS`` (the cost weights ``task.<term>.weight`` and ``task.terminal``,
``terminal_weight``, the active planner's budget ``RUNTIME_BUDGET``, the safety limits
``state_timeout``, ``safety.*`` but the stale action, ``deadline_fraction``, ``marker_rate``) are
checked when set (a bad value is refused with the reason, the old one kept) and applied at the
start of the next tick, never inside one; weights are copied into buffers the compiled graphs
read, and a budget that would recompile a graph is refused. Every other parameter is read-only
and its descriptor says why (``ros2 param describe``); ``parameter_changes`` in /diagnostics
counts what was applied.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from geometry_msgs.msg import PoseStamped
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray, Int32, MultiArrayDimension
from std_srvs.srv import SetBool, Trigger
from visualization_msgs.msg import MarkerArray

from mbrl_control.core.builders import (
    MODELS,
    PLANNERS,
    REWARDS,
    TERMINALS,
    ModelConfig,
    build_mpc,
    model_from_params,
    planner_config_class,
)
from mbrl_control.core.dynamics.effort_offset import EffortOffsetDynamics
from mbrl_control.core.dynamics.ensemble import EnsembleConfig, PropagationConfig
from mbrl_control.core.estimation.lookahead import StateLookahead
from mbrl_control.core.estimation.model_offset import EffortOffset, ModelOffset
from mbrl_control.core.learning.sample_layout import SampleLayout
from mbrl_control.core.mbpo.config import MBPOConfig
from mbrl_control.core.planners.random import RandomConfig, RandomPlanner
from mbrl_control.core.planners.velocity_commands import SAMPLING_ACTIONS, ComputedTorque, VelocityCommandConfig
from mbrl_control.core.safety import DEGRADED, RUNNING, STOPPED, JointLimits, SafetyConfig, SafetyLayer
from mbrl_control.core.tasks.critic_terminal import ValueTerminalConfig
from mbrl_control.core.timing import TickStats
from mbrl_control.core.util import dataclass_from, section
from mbrl_control.nodes.aligned_timer import create_aligned_timer
from mbrl_control.nodes.diagnostics import ERROR, OK, WARN, DiagnosticsPublisher
from mbrl_control.nodes.joint_io import JointStateReader, command_message
from mbrl_control.nodes.markers import goal_marker, plan_markers
from mbrl_control.nodes.model_receiver import MODEL_QOS, ModelReceiver
from mbrl_control.nodes.params import (
    ROBOT_PARAMS,
    ParameterError,
    ParamSpec,
    RuntimeParameters,
    declare_parameters,
    declare_task_parameters,
    specs_from,
    urdf_param,
)
from mbrl_control.nodes.policy_receiver import PolicyReceiver
from mbrl_control.nodes.runtime import main_for

TIMING_FIELDS = "tick_ms,plan_cost,plan_iterations,state_age_ms,seq,lateness_ms,sample_sent"

# Each planner's settings a running controller changes between ticks (its ``set_budget``); the
# rest of its section sizes buffers and compiled graphs at start.
RUNTIME_BUDGET = {
    "cem": ("population", "elites", "iterations"),
    "icem": ("population", "elites", "iterations"),
    "mppi": ("samples", "iterations"),
    "ilqr": ("iterations",),
}
PLANNER_FIXED = ("the planner allocates its buffers, warm start and compiled graphs from it at start (the horizon "
                 "sizes them all): restart the controller to change it")
SAFETY_PARAMS = ("state_timeout", "safety.hold_timeout", "safety.rate_limit", "safety.effort_scale")

PARAMS = [
    *ROBOT_PARAMS,
    ParamSpec("mode", "realtime", "realtime: timer ticks; lockstep: ticks on sim states", choices=("realtime", "lockstep")),
    ParamSpec("planner", "cem", "planning algorithm", choices=PLANNERS),
    ParamSpec("model", "analytic", "plan on the analytic model; on the learned ensemble the learner publishes "
              "(learned: the dynamics from scratch); or on the analytic model plus the learner's ensemble of its "
              "residual (residual: the URDF model corrected online; exactly the analytic model until a model arrives)",
              choices=MODELS),
    ParamSpec("compile", True, "fuse the rollout with torch.compile (falls back to eager without a compiler)"),
    ParamSpec("torch_threads", 1, "torch intra-op threads for planning", 1, 64),
    ParamSpec("device", "cpu", "where the planner and the learned model compute: cpu, cuda, cuda:N, or auto (cuda "
              "when torch sees a GPU); commands and models on the wire are the same either way"),
    ParamSpec("rollout_threads", 1, "CPU threads a sampling planner rolls out on: the learned ensemble's fused "
              "rollout takes them itself, other models cut the population into this many shares evaluated at once "
              "(keep torch_threads 1 then)", 1, 16),
    ParamSpec("latency_compensation", True, "realtime: plan from the estimate carried forward (analytic model, the "
              "commands sent meanwhile) to when this tick's command will act, not from where the robot was at the "
              "estimate's stamp (lockstep: none needed, the sim applies each command at its state's time; "
              "model:=learned: none, a robot learned from scratch is not predicted by its URDF model)"),
    ParamSpec("latency_compensation_dt", 0.0025, "step of the analytic model that carries the estimate forward [s]: "
              "a few ms (one control period's step, interpolated, mispredicted the arm's wrist enough to make it "
              "oscillate)", 0.0001, 0.1),
    ParamSpec("latency_compensation_max", 0.05, "the longest span an estimate is carried forward [s]: every "
              "latency_compensation_dt of it is a model step inside the tick (an estimator hiccup left the arm's "
              "estimates 130 ms old and its ticks 30 ms long); an older one is carried this far", 0.0, 1.0),
    ParamSpec("model_offset.time_constant", 0.0, "offset-free MPC: the model's one-step error averaged over this "
              "time constant and fed back into its predictions, as model_offset.kind says (core/estimation/"
              "model_offset.py: a steady model error otherwise shows as drift or sag) [s]; 0: off",
              0.0, 10.0),
    ParamSpec("model_offset.kind", "state_change", "offset-free MPC's disturbance: 'state_change', on a learned "
              "ensemble's predicted change (model:=learned or residual); 'effort', an effort added to every command "
              "the URDF model is given (model:=analytic or residual: a payload, friction; core/estimation/model_offset.py)",
              choices=("state_change", "effort")),
    ParamSpec("deadline_fraction", 0.8, "realtime: planning budget as a fraction of the period", 0.05, 1.0,
              dynamic=True),
    ParamSpec("fault.planner_delay", 0.0, "fault injection: seconds added inside each planning call in the fault window (a slow planner)", 0.0, 10.0),
    ParamSpec("fault.start", 0.0, "fault injection: the window starts this long after the first planning call [s of node clock]", 0.0, 1e7),
    ParamSpec("fault.duration", 0.0, "fault injection: window length [s]; 0: no fault", 0.0, 1e7),
    ParamSpec("lockstep_readers", [""], "lockstep: hold the run (the sim waits) until these nodes (a recorder, a learner) "
              "read ~/transitions, so they miss no tick ('': none)"),
    ParamSpec("lockstep_watchdog", 0.5, "lockstep: tick anyway (safe command if stale) after this wall time without a state since the last tick ended [s]", 0.01, 60.0),
    ParamSpec("lockstep_stale_watchdog", 0.05, "lockstep: once a tick found the state stale, the watchdog's wait until the "
              "next (a stale estimator publishes nothing and the sim waits for a command: at lockstep_watchdog a "
              "stale second of sim time took 25 s) [s]", 0.005, 60.0),
    *specs_from(SafetyConfig, "safety", dynamic=("state_timeout", "hold_timeout", "rate_limit"),
                names={"state_timeout": "state_timeout"}),
    # Not a SafetyConfig field: the node scales the robot's effort limits by it into effort_limit.
    ParamSpec("safety.effort_scale", 1.0, "every command is capped at this fraction of the robot's effort limits (URDF "
              "or effort_limits; lower it at runtime to weaken the robot: planners keep their bounds, the safety layer "
              "clamps)", 0.0, 1.0, dynamic=True),
    ParamSpec("marker_rate", 10.0, "rate of ~/plan markers [Hz]; 0 disables them", 0.0, 100.0, dynamic=True),
    ParamSpec("diagnostics_rate", 1.0, "diagnostics publish rate [Hz]", 0.1, 100.0),
    ParamSpec("frame_id", "world", "fixed frame of the markers"),
    *specs_from(ModelConfig, "model"),
    ParamSpec("terminal", "task", "terminal cost of sampling planners and iLQR: the task's, the LQR cost-to-go about the "
              "equilibrium (on a learned model: re-solved for each model it receives), the DP value, or MBPO's critic",
              choices=TERMINALS),
    ParamSpec("terminal_weight", 1.0, "multiplier of an lqr, dp or value terminal cost", 0.0, 1e6, dynamic=True),
    ParamSpec("reward", "task", "what the planner maximises: the task's cost, or the reward head of the model learned "
              "from scratch (learned: model:=learned with ensemble.learn_reward; the horizon's end priced by it too, "
              "task.terminal times its reward there)", choices=REWARDS),
    *[spec for name in PLANNERS for spec in specs_from(planner_config_class(name), name, exclude=("periodic",),
                                                       dynamic=RUNTIME_BUDGET.get(name, ()),
                                                       fixed_because=PLANNER_FIXED)],
    *specs_from(EnsembleConfig, "ensemble", exclude=("angle_dims",)),  # angles come from the URDF
    *specs_from(PropagationConfig, "propagation"),
    *specs_from(ValueTerminalConfig, "value"),
    ParamSpec("mbpo.hidden", list(MBPOConfig().hidden), "hidden units of the learner's MBPO policies (model:=learned planner:=policy "
              "allocates them before the first arrives)", 1, 1024),
    *specs_from(RandomConfig, "explore"),
    ParamSpec("sampling_actions", "effort", "what cem, icem and mppi sample: efforts, or joint velocity commands that "
              "the URDF's inverse dynamics turns into efforts inside the model (an arm; analytic model)",
              choices=SAMPLING_ACTIONS),
    *specs_from(VelocityCommandConfig, "velocity_command"),
]


class ControllerNode(Node):
    def __init__(self) -> None:
        super().__init__("mpc_controller")
        self.tuning = RuntimeParameters(self, self._check_parameters, self._apply_parameters)
        p = declare_task_parameters(self, declare_parameters(self, PARAMS, self.tuning), self.tuning)
        self.p = p
        torch.set_num_threads(p["torch_threads"])
        self.period = 1.0 / p["control_rate"]
        self.lockstep = p["mode"] == "lockstep"
        urdf_param(p)  # a missing URDF is named as such
        try:
            mpc = build_mpc(p)
        except ValueError as exc:
            raise ParameterError(f"planner parameters: {exc}") from exc
        self.robot, self.spec = mpc.robot, mpc.robot.spec
        self.model, self.task, self.planner, self.fallback = mpc.model, mpc.task, mpc.planner, mpc.fallback
        self.planning_task = mpc.planning_task  # the task, or it with the terminal cost terminal_weight scales
        self.policy_pending = mpc.policy_pending  # explore until the learner's first policy
        self.action_high = self.task.action_high.numpy().astype(np.float64)
        self.command_index = list(self.spec.command_index)
        self.learned = p["model"] == "learned"
        # Learning from scratch: explore with random actions until the first model (and, for
        # planner:=policy, the first MBPO policy) arrives. model:=residual plans on the analytic
        # model (a zero residual) until then.
        self.learned_terminal = mpc.learned_terminal  # terminal:=lqr on a learned model: solved for each model
        self.receiver = (ModelReceiver(self, mpc.learned, "/learner/model",
                                       on_swap=self._refit_terminal if self.learned_terminal is not None else None)
                         if mpc.learned is not None else None)
        self.model_offset = None
        if p["model_offset.time_constant"] > 0:
            if mpc.effort_offset is not None:
                self.model_offset = EffortOffset(self.model, mpc.effort_offset, p["model_offset.time_constant"],
                                                 self.task.action_high, compile=p["compile"])
            elif mpc.learned is None:
                raise ParameterError("model_offset.time_constant: a state-change offset corrects a learned model "
                                     f"(model:=learned or residual), not model:={p['model']}; "
                                     "model_offset.kind 'effort' corrects the URDF model")
            else:
                self.model_offset = ModelOffset(self.model, mpc.learned, p["model_offset.time_constant"])
        self.offset_model_version = None  # the model the offset was estimated on
        # MBPO's policy (planner:=policy, or iCEM's warm start) is updated the way models are.
        uses_policy = p["planner"] == "policy" or (p["planner"] == "icem" and p["policy.path"])
        self.policy_receiver = PolicyReceiver(self, self.planner) if uses_policy else None
        try:
            explore = dataclass_from(RandomConfig, section(p, "explore"))
            torque = (ComputedTorque(self.robot.kinematics, self.command_index, self.task.action_low,
                                     self.task.action_high) if explore.excitation == "acceleration" else None)
            self.explorer = RandomPlanner(self.task.action_low, self.task.action_high, self.task.state_dim, explore,
                                          computed_torque=None if torque is None else torque.efforts)
        except ValueError as exc:
            raise ParameterError(f"explore: {exc}") from exc

        # Realtime: the estimate is tens of ms old when the command acts; plan from where it will be.
        self.lookahead = None
        if p["latency_compensation"] and not self.lockstep and not self.learned:
            model = model_from_params(self.spec, p, dt=min(p["latency_compensation_dt"], self.period))
            if isinstance(self.model_offset, EffortOffset):  # it predicts the robot: with the same offset
                model = EffortOffsetDynamics(model)
                self.model_offset.carry_into(model)
            self.lookahead = StateLookahead(model, p["latency_compensation_max"], compile=p["compile"])
        self.plan_lead = 0.5 * self.period  # [s] from a tick's start to its command: the ticks' running mean
        self.held_position: np.ndarray | None = None  # the joints' positions last seen (gravity hold)
        self.safety = SafetyLayer(self._safety_config(), hold_effort=self._gravity_hold_effort)
        self.reader = JointStateReader(list(self.spec.state_joints))
        self.state: np.ndarray | None = None
        self.state_stamp: Time | None = None
        self.stats = TickStats(self.period)
        self.deadline_stops = 0
        self.waiting_ticks = 0  # safe commands before the first state of the run or episode
        self.subscribers_ready = False  # lockstep: every lockstep_readers node reads ~/transitions
        self.fallbacks = {"lqr": 0, "previous_plan": 0, "planner_error": 0}
        self.first_tick_ns: int | None = None  # first planning call: the fault.* window counts from here
        self.delayed_plans = 0  # plans slowed by fault.planner_delay
        self.last_plan = None
        self.ticks_since_plan = 0
        self.last_tick_end = 0.0  # the lockstep watchdog counts from here
        self.stale_ticking = False  # the last tick found a state, but stale (lockstep_stale_watchdog)
        self.seq = 0  # the next control tick's sequence number
        self.period_ns = round(self.period * 1e9)
        self.last_release_ns: int | None = None  # realtime: the timer's intended release of the last tick
        self.skipped_releases = 0  # releases the timer skipped since the last recorded tick
        self.next_tick_ns: int | None = None
        self.last_marker_wall = -math.inf
        self.episode = -1  # until an episode manager numbers them: a first /episode starts a new one
        self.paused = False

        self.warmup_s = self._warm_up()
        self.command_pub = self.create_publisher(
            Float64MultiArray, "effort_controller/commands", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        )
        self.marker_pub = self.create_publisher(MarkerArray, "~/plan", 1)
        # Per-tick figures for plots, recordings and judges (TIMING_FIELDS); deep enough that a
        # judge on a busy machine gets every record.
        self.timing_pub = self.create_publisher(Float64MultiArray, "~/timing", QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self.timing_msg = Float64MultiArray()
        width = len(TIMING_FIELDS.split(","))
        self.timing_msg.layout.dim = [MultiArrayDimension(label=TIMING_FIELDS, size=width, stride=width)]
        # Per tick, what a learner needs: the state planned from, the command sent, its reward.
        self.sample_layout = SampleLayout(self.task.state_dim, self.task.action_dim)
        self.sample_pub = self.create_publisher(Float64MultiArray, "~/transitions", QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self.sample_msg = Float64MultiArray()
        size = self.sample_layout.size
        self.sample_msg.layout.dim = [MultiArrayDimension(label=self.sample_layout.label, size=size, stride=size)]
        self.create_subscription(Int32, "/episode", self._on_episode, MODEL_QOS)
        self.create_service(SetBool, "~/pause", self._on_pause)
        self.diagnostics = DiagnosticsPublisher(self)
        self.state_sub = self.create_subscription(JointState, "joint_states", self._on_state, qos_profile_sensor_data)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(Bool, "estop", lambda m: self.safety.estop.update(m.data), reliable)
        self.goals = {"received": 0, "clamped": 0, "rejected": 0}
        if self.task.has_goal:  # rviz's 2D Goal Pose tool and `ros2 topic pub /goal_pose` publish here
            self.create_subscription(PoseStamped, "goal_pose", self._on_goal, reliable)
        self.create_service(Trigger, "~/reset_estop", self._on_reset_estop)
        if self.lockstep:
            # Ticks follow the states; if they stop coming (sensor dropout), tick anyway so the sim,
            # which waits for our command, advances under the safe command.
            watch = min(p["lockstep_watchdog"], p["lockstep_stale_watchdog"]) / 2
            self.create_timer(watch, self._lockstep_watchdog, clock=Clock(clock_type=ClockType.STEADY_TIME))
        else:
            # At a fixed phase of the period on the ROS clock: the estimator publishes just before it.
            self.timer = create_aligned_timer(self, self.period, self._on_timer, offset=p["control_phase"] * self.period)
        self.create_timer(1.0 / p["diagnostics_rate"], self._publish_diagnostics)
        self.last_tick_end = time.perf_counter()
        self.get_logger().info(
            f"{p['planner']} MPC at {p['control_rate']:.0f} Hz ({p['mode']}), horizon "
            f"{self.planner.horizon}, warm-up {self.warmup_s:.1f} s"
        )

    def _safety_config(self) -> SafetyConfig:
        p = self.p
        return SafetyConfig(
            effort_limit=self.action_high * p["safety.effort_scale"],
            rate_limit=p["safety.rate_limit"],
            state_timeout=p["state_timeout"],
            stale_action=p["safety.stale_action"],
            hold_timeout=p["safety.hold_timeout"],
            # Lockstep: the sim waits for every command, so the hold never gives way.
            gravity_hold_timeout=0.0 if self.lockstep else p["safety.gravity_hold_timeout"],
            limits=JointLimits.of_commanded_joints(self.spec),
        )

    def _warm_up(self) -> float:
        """Plan once before the first tick so compilation never lands inside a control period."""
        start = time.perf_counter()
        self.planner.plan(torch.zeros(self.task.state_dim))
        self.planner.reset()
        if self.lookahead is not None:
            self.lookahead.warm_up(np.asarray(self.spec.x_eq, dtype=np.float64), np.zeros(self.task.action_dim))
        return time.perf_counter() - start

    # -- inputs ------------------------------------------------------------------------------
    def _on_state(self, msg: JointState) -> None:
        x = self.reader.read(msg)
        if x is None:
            self.get_logger().warning(f"rejected state: {dict(self.reader.rejected)}", throttle_duration_sec=1.0)
            return
        stamp = Time.from_msg(msg.header.stamp)
        if self.state_stamp is not None and stamp < self.state_stamp:
            self.reader.rejected["out of order"] += 1
            return
        self.state, self.state_stamp = x, stamp
        self.held_position = x[: self.spec.nq]
        if self.lockstep:
            # The sim advances only on our command: tick on the state of the next tick time.
            if self.next_tick_ns is None or stamp.nanoseconds >= self.next_tick_ns - self.period * 0.5e9:
                self.next_tick_ns = stamp.nanoseconds + int(self.period * 1e9)
                self._tick()

    def _on_timer(self) -> None:
        # The timer has already moved its next call past now: the intended release of this tick
        # is one period before it (releases it skipped in between are missed ticks).
        now_ns = self.timer.clock.now().nanoseconds
        until_ns = self.timer.time_until_next_call()
        release_ns = now_ns + until_ns - self.period_ns if until_ns is not None else now_ns
        if self.last_release_ns is not None:
            self.skipped_releases += max(0, round((release_ns - self.last_release_ns) / self.period_ns) - 1)
        self.last_release_ns = release_ns
        self._tick((now_ns - release_ns) * 1e-9)

    def _lockstep_watchdog(self) -> None:
        # Only while something publishes our states: the robot must not fall for the seconds a
        # slow estimator takes to start (the sim holds it until a command comes).
        # From the end of the last tick: a tick slower than the watchdog must not be followed at once
        # by one on the state it already planned from.
        # While the state is stale no estimate will come: the next safe command goes sooner.
        wait = self.p["lockstep_stale_watchdog"] if self.stale_ticking else self.p["lockstep_watchdog"]
        if (time.perf_counter() - self.last_tick_end > wait
                and self.count_publishers(self.state_sub.topic_name) > 0):
            self._tick(watchdog=True)

    # -- the control tick --------------------------------------------------------------------
    def _tick(self, lateness: float | None = None, watchdog: bool = False) -> None:
        """One control tick; ``lateness``: how long after the timer's intended release it started
        (realtime), None in lockstep; ``watchdog``: started by the lockstep watchdog, not a state."""
        start = time.perf_counter()
        self.tuning.apply_pending()  # parameters set since the last tick: before planning, never during it
        if self.lockstep and not self._subscribers_ready():
            self.last_tick_end = time.perf_counter()  # the sim waits; the watchdog asks again
            return
        if self.paused:  # an episode boundary: in lockstep the sim waits; in realtime, safe command
            if not self.lockstep:
                self._send(np.zeros(self.task.action_dim))
            self.last_tick_end = time.perf_counter()
            return
        if watchdog:
            # This tick answers the sim's current period: an estimate of it arriving late must not
            # start a second tick (a second command would step the sim again).
            now_ns = self.get_clock().now().nanoseconds
            if now_ns > 0:
                self.next_tick_ns = now_ns + self.period_ns
        cost, iterations, action = math.nan, 0, None
        age = self._state_age()
        self.stale_ticking = self.state_stamp is not None and not age <= self.p["state_timeout"]
        if age <= self.p["state_timeout"] and not self.safety.estop.latched:
            deadline = None if self.lockstep else start + self.p["deadline_fraction"] * self.period
            self._observe_model_offset()
            plan = self._plan(deadline)
            if plan is not None:
                self.deadline_stops += int(plan.deadline_missed)
                cost, iterations = plan.cost, plan.iterations
                action = self._trusted(plan.actions[0]).double().numpy()
            action = self._fall_back_if_needed(plan, action)
            # The state's age as the command leaves, not as planning began: a tick that overran
            # can carry its state past state_timeout, and then it was not planned from a fresh
            # state (the safe command goes, and no sample).
            age = self._state_age()
            if not age <= self.p["state_timeout"]:
                action = None
        # Before the first state (start-up, a new episode) the robot is not lost but not yet seen:
        # the same safe command, counted apart from a state that went stale.
        waiting = self.state_stamp is None and not self.safety.estop.latched
        self.waiting_ticks += int(waiting)
        commanded = None if self.state is None else (self.state[self.command_index],
                                                      self.state[[self.spec.nq + i for i in self.command_index]])
        command = self.safety.command(time.monotonic(), action, age, self.period, *(commanded or (None, None)))
        # An arm (gravity_hold) never seen has no holding effort, and zero would drop it: send
        # nothing, and its brakes (or driver) keep holding it until the first state. Nor does a
        # hold that went on too long (None): the robot's own safe stop takes over.
        if command is not None and not (waiting and self.p["safety.stale_action"] == "gravity_hold"):
            self.task.set_last_command(command)  # command_rate terms price the next plan against it
            self._send(command)
        seq, self.seq = self.seq, self.seq + 1
        if action is not None and command is not None:  # a transition only for a command that went out
            self._publish_sample(command, seq)
            if self.model_offset is not None:
                self.model_offset.command_sent(torch.from_numpy(self.state), torch.from_numpy(command),
                                               self.state_stamp.nanoseconds * 1e-9)

        duration = time.perf_counter() - start
        if action is not None:  # a planned tick: how long until its command went
            self.plan_lead += 0.1 * (duration - self.plan_lead)
        self.stats.record(duration, lateness, self.skipped_releases)
        self.skipped_releases = 0
        self.timing_msg.data = [duration * 1e3, cost, float(iterations), self._state_age() * 1e3, float(seq),
                                math.nan if lateness is None else lateness * 1e3, float(action is not None)]
        self.timing_pub.publish(self.timing_msg)
        self._maybe_publish_markers()
        self.last_tick_end = time.perf_counter()

    def _plan(self, deadline: float | None):
        waiting = (self.learned and self.receiver.version is None) or (
            self.policy_pending and self.policy_receiver.updates == 0)
        planner = self.explorer if waiting else self.planner
        try:
            self._inject_planner_delay()
            return planner.plan(torch.from_numpy(self._state_to_plan_from()).float(), deadline)
        except Exception as exc:  # a solver that blows up must not take the control loop with it
            self.fallbacks["planner_error"] += 1
            self.get_logger().error(f"planner failed: {type(exc).__name__}: {exc}", throttle_duration_sec=1.0)
            return None

    def _trusted(self, action: torch.Tensor) -> torch.Tensor:
        """A learned model's plan acts only within the actions the model was fitted for
        (``ensemble.action_margin``): the model predicted the clamped action, so that is what goes."""
        trusted = None if not self.learned or self.receiver.version is None else self.receiver.model.trusted_actions()
        return action if trusted is None else torch.clamp(action, trusted[0].cpu(), trusted[1].cpu())

    def _refit_terminal(self) -> None:
        """The LQR cost-to-go of the model just swapped in (a model that cannot be stabilised at the
        equilibrium keeps the last one: counted, and said)."""
        if not self.learned_terminal.refit(self.model):
            self.get_logger().warning(f"model v{self.receiver.version}: no stabilising LQR solution at the "
                                      "equilibrium; the terminal cost stays the last model's")

    def _observe_model_offset(self) -> None:
        """Offset-free MPC: this tick's state against what the model predicted for it (a new
        model starts from no offset: the old model's error is not its own). The URDF model, and a
        residual model (the zero residual until one arrives), plan from the first tick, so their
        offsets run from then too."""
        version = self.receiver.version if self.receiver is not None else None
        if self.model_offset is None or (self.learned and version is None):
            return
        if version != self.offset_model_version:
            self.offset_model_version = version
            self.model_offset.reset()
        self.model_offset.observe(torch.from_numpy(self.state), self.state_stamp.nanoseconds * 1e-9)

    def _state_to_plan_from(self) -> np.ndarray:
        """The estimate, or (latency_compensation) where it will be when this tick's command acts."""
        if self.lookahead is None:
            return self.state
        now = self.get_clock().now().nanoseconds * 1e-9
        return self.lookahead.predict(self.state, self.state_stamp.nanoseconds * 1e-9, now + self.plan_lead)

    def _send(self, command: np.ndarray) -> None:
        self.command_pub.publish(command_message(command))
        if self.lookahead is not None:
            self.lookahead.command_sent(command, self.get_clock().now().nanoseconds * 1e-9)

    def _inject_planner_delay(self) -> None:
        """Fault injection (fault.*): an artificially slow planner inside the fault window."""
        now = self.get_clock().now().nanoseconds
        self.first_tick_ns = now if self.first_tick_ns is None else self.first_tick_ns
        since = (now - self.first_tick_ns) * 1e-9
        p = self.p
        if p["fault.planner_delay"] > 0 and p["fault.start"] <= since < p["fault.start"] + p["fault.duration"]:
            self.delayed_plans += 1
            time.sleep(p["fault.planner_delay"])

    def _fall_back_if_needed(self, plan, action: np.ndarray | None) -> np.ndarray | None:
        """A usable plan is kept (its action goes to the safety layer). A plan that missed its
        deadline yields to LQR near the equilibrium; a failed plan, to that LQR or else to the
        previous plan shifted by the ticks since it was made; with neither, the safety layer's
        safe command goes out."""
        failed = plan is None or action is None or not np.all(np.isfinite(action))
        if not failed:
            self.last_plan, self.ticks_since_plan = plan, 0
        if self.fallback is not None and (failed or plan.deadline_missed):
            lqr = self.fallback.fallback_action(self.state)
            if lqr is not None:
                self.fallbacks["lqr"] += 1
                return lqr
        if not failed:
            return action
        self.ticks_since_plan += 1
        previous = self.last_plan
        if previous is not None and self.ticks_since_plan < len(previous.actions):
            kept = previous.actions[self.ticks_since_plan].double().numpy()
            if np.all(np.isfinite(kept)):  # only its first action was checked: the rest may have diverged
                self.fallbacks["previous_plan"] += 1
                return kept
        return None

    def _subscribers_ready(self) -> bool:
        """Lockstep: whether the run may start, every node of ``lockstep_readers`` reading
        ~/transitions (checked until it holds once; a reader leaving later does not stop the robot)."""
        if self.subscribers_ready:
            return True
        wanted = {n for n in self.p["lockstep_readers"] if n}
        reading = {info.node_name for info in self.get_subscriptions_info_by_topic(self.sample_pub.topic_name)}
        self.subscribers_ready = wanted <= reading
        if not self.subscribers_ready:
            self.get_logger().info(f"waiting for {sorted(wanted - reading)} to read {self.sample_pub.topic_name}",
                                   throttle_duration_sec=5.0)
        return self.subscribers_ready

    def _state_age(self) -> float:
        if self.state_stamp is None:
            return math.inf
        return (self.get_clock().now() - self.state_stamp).nanoseconds * 1e-9

    def _publish_sample(self, command: np.ndarray, seq: int) -> None:
        x = torch.from_numpy(self.state).float().view(1, -1)
        u = torch.from_numpy(command).float().view(1, -1)
        reward = -float(self.task.step_cost(x, u))  # the transition's own: what a learned reward can predict
        self.sample_msg.data = self.sample_layout.pack(stamp=self.state_stamp.nanoseconds * 1e-9, episode=self.episode,
                                                       seq=seq, state=self.state, action=command, reward=reward)
        self.sample_pub.publish(self.sample_msg)

    def _on_episode(self, msg: Int32) -> None:
        if msg.data != self.episode:
            self.episode = msg.data
            # The robot was reset: the state held, the warm start and the last plan are the old episode's.
            self.state, self.state_stamp = None, None
            self.next_tick_ns = None  # lockstep: tick on the new episode's first state, whatever its stamp
            self.planner.reset()
            self.explorer.reset()
            self.last_plan = None
            if self.model_offset is not None:
                self.get_logger().info("model offset at the episode's end: [" + ", ".join(
                    f"{v:.3f}" for v in self.model_offset.offset.tolist()) + f"] ({self.model_offset.updates} updates)")
                self.model_offset.reset()

    def _on_pause(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        self.paused = bool(request.data)
        response.success, response.message = True, "paused" if self.paused else "running"
        if not self.paused:
            self.last_tick_end = time.perf_counter()  # the lockstep watchdog starts over
        return response

    def _on_reset_estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self.safety.estop.reset()
        self.get_logger().info(f"reset_estop: {response.message}")
        return response

    def _on_goal(self, msg: PoseStamped) -> None:
        """A goal for the task's reach point (the orientation is not part of the task); in the
        markers' fixed frame, or refused. One outside the reachable region is clamped into it."""
        self.goals["received"] += 1
        frame = msg.header.frame_id.lstrip("/")
        position = np.array([msg.pose.position.x, msg.pose.position.y, msg.pose.position.z])
        if frame not in ("", self.p["frame_id"]) or not np.all(np.isfinite(position)):
            self.goals["rejected"] += 1
            why = f"frame '{frame}' is not '{self.p['frame_id']}'" if frame not in ("", self.p["frame_id"]) else "not finite"
            self.get_logger().warning(f"goal {position.tolist()} refused: {why}")
            return
        reason = self.task.set_goal(position)
        self.goals["clamped"] += int(bool(reason))
        goal = np.round(self.task.goal_position(), 3).tolist()
        self.get_logger().info(f"new goal {goal}" + (f" (clamped: {reason})" if reason else ""))
        self.planner.reset()  # the warm start went to the old goal

    def _gravity_hold_effort(self) -> np.ndarray:
        """The effort that holds the commanded joints where they were last seen, against gravity
        (from the URDF's model); NaN before any state."""
        if self.held_position is None:
            return np.full(self.task.action_dim, np.nan)
        q = torch.as_tensor(self.held_position, dtype=torch.float32).unsqueeze(0)
        with torch.no_grad():
            return self.robot.kinematics.gravity_torques(q)[0, self.command_index].double().numpy()

    # -- tuning while it runs (RuntimeParameters) --------------------------------------------
    def _check_parameters(self, changes: dict[str, Any], values: dict[str, Any]) -> str | None:
        """Why ``changes`` (with ``values``: every dynamic parameter as it would be) cannot be
        applied at the next tick, or None. Ranges are checked already."""
        planner = self.p["planner"]
        sections = {name.split(".", 1)[0] for name in changes} & set(RUNTIME_BUDGET)
        if sections - {planner}:
            return (f"this controller plans with {planner}: {', '.join(sorted(sections - {planner}))}.* are read at "
                    f"start only (its budget is {planner}.*)")
        if planner in sections:
            budget = {field: values[f"{planner}.{field}"] for field in RUNTIME_BUDGET[planner]}
            problem = self.planner.budget_problem(compiled=self.p["compile"], **budget)
            if problem:
                return f"planner {planner}: {problem}"
        if "terminal_weight" in changes and self.p["terminal"] == "task":
            return "terminal_weight scales an lqr, dp or value terminal cost; with terminal:=task tune task.terminal"
        return None

    def _apply_parameters(self, changes: dict[str, Any]) -> None:
        """Apply checked changes, at the start of a tick: weights are copied into the buffers the
        (compiled) planners read, a budget resizes the planner's per-tick views."""
        self.p |= changes
        for name, value in changes.items():
            if name == "task.terminal":
                self.task.set_weight("terminal", value)
            elif name.startswith("task.") and name.endswith(".weight"):
                self.task.set_weight(name[len("task."):-len(".weight")], value)
        if "terminal_weight" in changes:
            self.planning_task.set_terminal_weight(changes["terminal_weight"])
        planner = self.p["planner"]
        budget = {f: changes[f"{planner}.{f}"] for f in RUNTIME_BUDGET.get(planner, ()) if f"{planner}.{f}" in changes}
        if budget:
            self.planner.set_budget(**budget)
        if any(name in changes for name in SAFETY_PARAMS):
            self.safety.config = self._safety_config()

    # -- monitoring --------------------------------------------------------------------------
    def _maybe_publish_markers(self) -> None:
        rate = self.p["marker_rate"]
        now = time.monotonic()
        if rate <= 0 or self.last_plan is None or now - self.last_marker_wall < 1.0 / rate:
            return
        if self.marker_pub.get_subscription_count() == 0:
            return
        self.last_marker_wall = now
        stamp = self.get_clock().now().to_msg()
        keypoints = self.task.keypoints(self.last_plan.states.double().numpy())
        markers = plan_markers(keypoints, stamp, self.p["frame_id"])
        markers.markers.append(goal_marker(self.task.goal_position(), stamp, self.p["frame_id"]))
        self.marker_pub.publish(markers)

    def _publish_diagnostics(self) -> None:
        mode = self.safety.mode
        level = {RUNNING: OK, DEGRADED: WARN, STOPPED: ERROR}[mode]
        message = mode if not self.safety.reason else f"{mode}: {self.safety.reason}"
        if self.paused:
            message += " (paused)"
        elif self.learned and self.receiver.version is None:
            message += " (exploring: no learned model yet)"
        if self.state is None:
            message += " (no joint state received yet)"
        age = self._state_age() * 1e3
        counts = self.safety.counts
        values = {
            "mode": mode,
            "planner": self.p["planner"],
            "model": self.p["model"],
            "episode": self.episode,
            "paused": self.paused,
            "control_hz": self.p["control_rate"],
            **self.stats.summary(),
            "stale_ticks": counts["stale_state"] - self.waiting_ticks,
            "waiting_ticks": self.waiting_ticks,
            "unsafe_plans": counts["unsafe_plan"],
            "clamped_commands": counts["clamped"],
            "joint_limited_commands": counts["joint_limited"],
            "rate_limited_commands": counts["rate_limited"],
            "estop_latched": self.safety.estop.latched,
            "estop_ticks": counts["estop"],
            "deadline_stops": self.deadline_stops,
            "fault_delayed_plans": self.delayed_plans,
            **{f"fallback_{k}": v for k, v in self.fallbacks.items()},
            "rejected_states": self.reader.rejected_total,
            "state_age_ms": f"{age:.1f}",
            **({f"goals_{k}": v for k, v in self.goals.items()} | {"goal": " ".join(f"{v:.3f}" for v in self.task.goal_position())}
               if self.task.has_goal else {}),
            "warmup_s": f"{self.warmup_s:.2f}",
            "parameter_changes": self.tuning.applied,
        }
        for receiver in (self.receiver, self.policy_receiver):
            if receiver is not None:
                values |= receiver.diagnostics()
        if self.learned_terminal is not None:
            values["terminal_lqr_fits"] = self.learned_terminal.fits
            values["terminal_lqr_failures"] = self.learned_terminal.failures
        if self.model_offset is not None:
            values["model_offset"] = " ".join(f"{v:.4f}" for v in self.model_offset.offset.tolist())
            values["model_offset_updates"] = self.model_offset.updates
            values["model_offset_skipped"] = self.model_offset.skipped
        if self.last_plan is not None:
            values["plan_cost"] = f"{self.last_plan.cost:.4f}"
            values["plan_iterations"] = self.last_plan.iterations
        self.diagnostics.publish(level, message, values)


main = main_for(ControllerNode)

if __name__ == "__main__":
    main()
