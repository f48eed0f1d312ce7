"""The episode manager: runs a from-scratch learning experiment in episodes and records the
learning curve.

Each episode: the controller is paused, the sim reset (``/sim/reset``: the configured initial
state, hanging by default), the new episode number published on ``/episode`` (std_msgs/Int32),
and, with ``wait_for_model``, the learner given time to finish training on everything so far
(``/learner/trained_episode``) before the controller resumes. In lockstep the paused sim waits,
so every episode after the first is planned on a model trained on all earlier ones; in realtime
(a real robot) learning runs alongside and models arrive when they are ready.

The controller explores with random actions until the first model arrives. Per episode the
manager records the return (the controller's per-tick rewards), success and the fraction of time within the task's tolerance
(the task's criteria on the ground-truth state), and the model version in use; at the end it
writes ``learning_curve.json`` and ``learning_curve.png`` and exits, which ends the launch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, Int32, String
from std_srvs.srv import SetBool, Trigger

from mbrl_control.nodes.diagnostics import values_of
from mbrl_control.nodes.joint_io import JointStateReader
from mbrl_control.nodes.model_receiver import MODEL_QOS
from mbrl_control.nodes.params import ROBOT_PARAMS, ParamSpec, declare_task_node_parameters
from mbrl_control.nodes.runtime import NodeDone, main_for

PARAMS = [
    *ROBOT_PARAMS,
    ParamSpec("episodes", 10, "episodes to run", 1, 100000),
    ParamSpec("episode_length", 10.0, "robot time per episode [s]", 0.5, 3600.0),
    ParamSpec("reset", "initial", "sim reset per episode: its configured initial state, or a random one",
              choices=("initial", "random")),
    ParamSpec("fail_error", 0.0, "end an episode early, as failed, once the task's error (its distance from the "
              "success tolerance's target: a joint's deviation from its posture, a point's distance to its goal) exceeds this "
              "[rad or m] (a balance task's termination, as in gym's); 0: episodes run their full length", 0.0, 100.0),
    ParamSpec("wait_for_model", True, "pause between episodes until the learner has trained on them"),
    ParamSpec("training_timeout", 600.0, "longest wait for a training round [s, wall]", 1.0, 86400.0),
    ParamSpec("output_dir", "", "learning_curve.json/.png go here; empty: runs/learn-<stamp>"),
    ParamSpec("sim_name", "sim", "the sim node (its ~/reset services)"),
    ParamSpec("controller_name", "mpc_controller", "the controller node (~/pause, ~/transitions, diagnostics)"),
    ParamSpec("learner_name", "learner", "the learner node (~/trained_episode)"),
]


class EpisodeManager(Node):
    def __init__(self) -> None:
        super().__init__("episode_manager")
        p, self.task = declare_task_node_parameters(self, PARAMS)
        self.p = p
        self.output_dir = Path(p["output_dir"] or f"runs/learn-{time.strftime('%Y%m%d-%H%M%S')}")
        self.reader = JointStateReader(list(self.task.spec.state_joints), need_velocity=False)
        sim, ctl, learner = p["sim_name"], p["controller_name"], p["learner_name"]
        self.reset_client = self.create_client(Trigger, f"/{sim}/reset" if p["reset"] == "initial" else f"/{sim}/reset_random")
        self.pause_client = self.create_client(SetBool, f"/{ctl}/pause")
        self.episode_pub = self.create_publisher(Int32, "/episode", MODEL_QOS)
        self.summary_pub = self.create_publisher(String, "~/summary", MODEL_QOS)
        self.create_subscription(JointState, "ground_truth", self._on_truth, qos_profile_sensor_data)
        self.create_subscription(Float64MultiArray, f"/{ctl}/transitions", self._on_sample,
                                 QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
        self.create_subscription(Int32, f"/{learner}/trained_episode", self._on_trained, MODEL_QOS)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)

        self.phase = "wait_ready"
        self.episode = -1
        self.trained_episode = -1
        self.controller: dict[str, str] = {}
        self.future = None
        self.phase_started = time.monotonic()
        self.now_truth: float | None = None  # latest ground-truth stamp [s]
        self.episode_start: float | None = None
        self.times: list[float] = []
        self.states: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.curve: list[dict] = []
        self.started_wall = time.monotonic()
        # Wall clock: in lockstep sim time stands still while the controller is paused.
        self.create_timer(0.05, self._step, clock=Clock(clock_type=ClockType.STEADY_TIME))

    # -- inputs ------------------------------------------------------------------------------
    def _on_truth(self, msg: JointState) -> None:
        x = self.reader.read(msg)
        if x is None:
            return
        self.now_truth = Time.from_msg(msg.header.stamp).nanoseconds * 1e-9
        if self.phase == "running":
            self.times.append(self.now_truth)
            self.states.append(x)
            if self.episode_start is None:
                self.episode_start = self.now_truth
            if 0 < self.p["fail_error"] < float(self.task.error(x)[0]):
                self._end_episode(failed=True)

    def _on_sample(self, msg: Float64MultiArray) -> None:
        if self.phase == "running" and len(msg.data) >= 3 and int(msg.data[1]) == self.episode:
            self.rewards.append(float(msg.data[-1]))

    def _on_trained(self, msg: Int32) -> None:
        self.trained_episode = msg.data

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == self.p["controller_name"]:
                self.controller = values_of(status)

    # -- the experiment ----------------------------------------------------------------------
    def _goto(self, phase: str) -> None:
        self.phase, self.phase_started = phase, time.monotonic()

    def _call(self, client, request) -> bool:
        """Issue one service call per phase; True once it has completed."""
        if self.future is None:
            if not client.service_is_ready():
                return False
            self.future = client.call_async(request)
            return False
        if not self.future.done():
            return False
        self.future = None
        return True

    def _step(self) -> None:
        phase = self.phase
        if phase == "wait_ready":
            if self.pause_client.service_is_ready() and self.reset_client.service_is_ready() and self.now_truth is not None:
                self._goto("pausing")
        elif phase == "pausing":
            if self._call(self.pause_client, SetBool.Request(data=True)):
                self._goto("resetting")
        elif phase == "resetting":
            if self._call(self.reset_client, Trigger.Request()):
                self.episode += 1
                self.episode_pub.publish(Int32(data=self.episode))
                self._goto("training" if self.p["wait_for_model"] and self.episode > 0 else "resuming")
        elif phase == "training":
            waited = time.monotonic() - self.phase_started
            if self.trained_episode >= self.episode - 1 or waited > self.p["training_timeout"]:
                if waited > self.p["training_timeout"]:
                    self.get_logger().warn(f"no training round for episode {self.episode - 1} within the timeout")
                self._goto("resuming")
        elif phase == "resuming":
            if self._call(self.pause_client, SetBool.Request(data=False)):
                self.times, self.states, self.rewards = [], [], []
                self.episode_start = None
                self._goto("running")
                self.get_logger().info(f"episode {self.episode} ({self.episode + 1} of {self.p['episodes']}) starts on "
                                       f"model {_version(self.controller.get('model_version', 'none'))}")
        elif phase == "running":
            if self.times and self.episode_start is None:
                self.episode_start = self.times[0]
            if self.episode_start is not None and self.now_truth - self.episode_start >= self.p["episode_length"]:
                self._end_episode()

    def _end_episode(self, failed: bool = False) -> None:
        times, states = np.array(self.times) - self.episode_start, np.array(self.states)
        within = self.task.within_tolerance(states)
        record = {
            "episode": self.episode,
            "return": round(float(np.sum(self.rewards)), 4),
            "success": not failed and bool(self.task.success(states, times)),
            "ended_early": failed,
            "in_tolerance_fraction": round(float(within.mean()), 4),
            "steps": len(self.rewards),
            "model_version": self.controller.get("model_version", "none"),
            "policy_updates": self.controller.get("policy_updates", "none"),  # MBPO (planner:=policy)
            "wall_s": round(time.monotonic() - self.started_wall, 1),
        }
        self.curve.append(record)
        self.get_logger().info(self._episode_line(record))
        if len(self.curve) >= self.p["episodes"]:
            self._finish()
        self._goto("pausing")

    def _episode_line(self, record: dict) -> str:
        """One readable line per episode (learning_curve.json holds every figure): its number (as on
        /episode, from 0) and count, return, success, the model it ran on (and MBPO's policies)."""
        policy = record["policy_updates"]
        return (f"episode {record['episode']} ({len(self.curve)} of {self.p['episodes']}): "
                f"return {record['return']:.1f}, {'success' if record['success'] else 'no success'}"
                f"{' (ended early)' if record['ended_early'] else ''}, "
                f"{record['in_tolerance_fraction']:.0%} within tolerance, model {_version(record['model_version'])}"
                f"{'' if policy == 'none' else f' ({policy} policy updates)'}, {record['steps']} steps, "
                f"{record['wall_s']:.0f} s")

    def summary(self) -> dict:
        successes = [r["episode"] for r in self.curve if r["success"]]
        first = successes[0] if successes else None
        steps = sum(r["steps"] for r in self.curve[: first + 1]) if first is not None else None
        return {
            "task": self.task.config.name,
            "episodes": len(self.curve),
            "episode_length_s": self.p["episode_length"],
            "episodes_to_success": first + 1 if first is not None else None,
            "env_steps_to_success": steps,
            "final_success": bool(self.curve[-1]["success"]) if self.curve else False,
            "curve": self.curve,
        }

    def _finish(self) -> None:
        from mbrl_control.report import plot_learning_curve

        summary = self.summary()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "learning_curve.json").write_text(json.dumps(summary, indent=1) + "\n")
        plot_learning_curve([summary], self.output_dir / "learning_curve.png")
        self.summary_pub.publish(String(data=json.dumps(summary)))
        self.summary_pub.wait_for_all_acked(Duration(seconds=1.0))
        self.get_logger().info(f"learning curve in {self.output_dir}: {json.dumps({k: v for k, v in summary.items() if k != 'curve'})}")
        raise NodeDone


def _version(value: str) -> str:
    """A model or policy version as the controller reports it ("3", "none") for a log line."""
    return f"v{value}" if value not in ("none", "") else "none yet"


main = main_for(EpisodeManager)

if __name__ == "__main__":
    main()
