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

A fleet (``robots``: namespaces) runs in step: every robot's episode starts together, after one
training round on all robots' data, and each ends on its own sim clock (lockstep sims run at
different speeds). One manager for the fleet, not one per robot, because the learner trains once
per episode on everyone's transitions: a robot ahead of the others would start its next episode
on a model that has not seen theirs, and "episodes per robot" would mean different things per
robot. A robot that stops answering (killed, stopped, late to start) sits episodes out and
rejoins when it is back; the others go on. The curve holds each robot's episodes and the fleet's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, Int32, String
from std_srvs.srv import SetBool, Trigger

from mbrl_control.core.learning.sample_layout import SampleReader
from mbrl_control.core.tasks.goals import random_goals
from mbrl_control.nodes.diagnostics import values_of
from mbrl_control.nodes.joint_io import JointStateReader
from mbrl_control.nodes.model_receiver import MODEL_QOS
from mbrl_control.nodes.params import ROBOT_PARAMS, ParameterError, ParamSpec, declare_task_node_parameters
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
    ParamSpec("robots", [""], "namespaces of the robots whose episodes this manager runs, in step ('': the root "
              "namespace, one robot; a fleet: robot_0, robot_1, ...)"),
    ParamSpec("robot_timeout", 30.0, "a robot that answers no service call, or sends no ground truth while running, "
              "for this long sits the episode out (stopped, crashed, not yet started); it rejoins at the next episode "
              "once it is back [s, wall]", 1.0, 3600.0),
    ParamSpec("stop_after_success", False, "end the experiment early once every robot has had a successful episode "
              "(a benchmark's time to success)"),
    ParamSpec("goals", "random", "a task with a goal (a reach): a new seeded reachable goal every episode, sent to every "
              "robot's goal_pose before it starts (random), or the task's own goal throughout (task)",
              choices=("random", "task")),
    ParamSpec("goal_seed", 0, "seed of the episodes' goals", 0, 2**31 - 1),
    ParamSpec("goal_frame", "world", "frame_id of the goals sent (the URDF's root at the world origin)"),
    ParamSpec("start_timeout", 600.0, "the first episode waits this long for every robot to be up, then starts with "
              "those that are (the rest join later) [s, wall]", 1.0, 86400.0),
]


class RobotSlot:
    """One robot of the experiment: its services, its ground truth and rewards this episode, its curve."""

    def __init__(self, node: Node, namespace: str, p: dict, task) -> None:
        self.namespace = namespace.strip("/")
        prefix = f"/{self.namespace}" if self.namespace else ""
        sim, ctl = p["sim_name"], p["controller_name"]
        self.label = self.namespace or "robot"
        self.controller_status = f"{self.namespace}/{ctl}" if self.namespace else ctl  # its /diagnostics name
        reset = "reset" if p["reset"] == "initial" else "reset_random"
        self.reset_client = node.create_client(Trigger, f"{prefix}/{sim}/{reset}")
        self.pause_client = node.create_client(SetBool, f"{prefix}/{ctl}/pause")
        # the controller's goal topic (relative there: goal_pose in its namespace)
        self.goal_pub = node.create_publisher(PoseStamped, f"{prefix}/goal_pose",
                                              QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.reader = JointStateReader(list(task.spec.state_joints), need_velocity=False)
        self.curve: list[dict] = []
        self.controller: dict[str, str] = {}
        self.goal_episode = -1  # the episode whose goal it was last sent
        self.now_truth: float | None = None  # latest ground-truth stamp [s]
        self.truth_wall = -float("inf")  # when it arrived [monotonic s]
        self.active = False  # takes part in the episode now running
        self.ended = False  # its episode has ended
        self.held = False  # paused once its episode ended, while the others run on
        self.called = False  # this phase's service call to it is done
        self.future = None
        self.future_started = 0.0
        self.clear()

    def clear(self) -> None:
        self.times: list[float] = []
        self.states: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.episode_start: float | None = None
        self.ended = self.held = False

    def ready(self, timeout: float) -> bool:
        """Its services are there and its ground truth is fresh."""
        return (self.pause_client.service_is_ready() and self.reset_client.service_is_ready()
                and time.monotonic() - self.truth_wall < timeout)

    def call(self, client, request, timeout: float) -> bool | None:
        """One service call at a time: True once done, False while waiting, None if it timed out."""
        if self.future is None:
            if not client.service_is_ready():
                if time.monotonic() - self.future_started > timeout:
                    return None
                return False
            self.future, self.future_started = client.call_async(request), time.monotonic()
            return False
        if self.future.done():
            self.future = None
            self.future_started = time.monotonic()
            return True
        if time.monotonic() - self.future_started > timeout:
            self.future = None
            return None
        return False


class EpisodeManager(Node):
    def __init__(self) -> None:
        super().__init__("episode_manager")
        p, self.task = declare_task_node_parameters(self, PARAMS)
        self.p = p
        self.output_dir = Path(p["output_dir"] or f"runs/learn-{time.strftime('%Y%m%d-%H%M%S')}")
        namespaces = [n.strip("/") for n in p["robots"]]
        if not namespaces or len(set(namespaces)) != len(namespaces):
            raise ParameterError(f"parameter 'robots': each robot's namespace once; got {p['robots']}")
        self.robots = [RobotSlot(self, ns, p, self.task) for ns in namespaces]
        self.samples = SampleReader(self.task.state_dim, self.task.action_dim)
        self.rejected_samples = 0
        # A reach task: each episode's goal, drawn up front from the seed (the same for every robot of a fleet).
        self.goals = (random_goals(self.task, p["episodes"], p["goal_seed"])
                      if self.task.has_goal and p["goals"] == "random" else None)
        self.fleet = len(self.robots) > 1 or bool(namespaces[0])
        self.episode_pub = self.create_publisher(Int32, "/episode", MODEL_QOS)
        self.summary_pub = self.create_publisher(String, "~/summary", MODEL_QOS)
        samples = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        for r in self.robots:
            prefix = f"/{r.namespace}" if r.namespace else ""
            # One robot: its ground truth by remapping (as the run monitor's); a fleet: each sim's own.
            truth = f"{prefix}/{p['sim_name']}/ground_truth" if self.fleet else "ground_truth"
            self.create_subscription(JointState, truth, lambda m, r=r: self._on_truth(r, m), qos_profile_sensor_data)
            self.create_subscription(Float64MultiArray, f"{prefix}/{p['controller_name']}/transitions",
                                     lambda m, r=r: self._on_sample(r, m), samples)
        self.create_subscription(Int32, f"/{p['learner_name']}/trained_episode", self._on_trained, MODEL_QOS)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)

        self.phase = "wait_ready"
        self.episode = -1
        self.trained_episode = -1
        self.phase_started = time.monotonic()
        self.curve: list[dict] = []  # the fleet's, one record per episode
        self.started_wall = time.monotonic()
        # Wall clock: in lockstep sim time stands still while the controller is paused.
        self.create_timer(0.05, self._step, clock=Clock(clock_type=ClockType.STEADY_TIME))

    # -- inputs ------------------------------------------------------------------------------
    def _on_truth(self, r: RobotSlot, msg: JointState) -> None:
        x = r.reader.read(msg)
        if x is None:
            return
        r.now_truth = Time.from_msg(msg.header.stamp).nanoseconds * 1e-9
        r.truth_wall = time.monotonic()
        if self.phase == "running" and r.active and not r.ended:
            r.times.append(r.now_truth)
            r.states.append(x)
            if r.episode_start is None:
                r.episode_start = r.now_truth
            if 0 < self.p["fail_error"] < float(self.task.error(x)[0]):
                self._end_episode(r, failed=True)

    def _on_sample(self, r: RobotSlot, msg: Float64MultiArray) -> None:
        s = self.samples.read(msg.layout.dim[0].label if msg.layout.dim else "", msg.data)
        if s is None:  # malformed or another robot's: the learner counts it too; no reward of this robot's
            self.rejected_samples += 1
            self.get_logger().warning(f"{self.rejected_samples} malformed or foreign samples on {r.label}'s transitions "
                                   "ignored", throttle_duration_sec=10.0)
            return
        if self.phase == "running" and r.active and not r.ended and s.episode == self.episode:
            r.rewards.append(s.reward)

    def _on_trained(self, msg: Int32) -> None:
        self.trained_episode = msg.data

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            for r in self.robots:
                if status.name == r.controller_status:
                    r.controller = values_of(status)

    # -- the experiment ----------------------------------------------------------------------
    def _goto(self, phase: str) -> None:
        self.phase, self.phase_started = phase, time.monotonic()
        for r in self.robots:
            r.future, r.future_started, r.called = None, time.monotonic(), False

    def _all_called(self, client_of, request) -> bool:
        """Each active robot's call done (or timed out: that robot sits the episode out); True when none is pending."""
        pending = False
        for r in self.robots:
            if not r.active or r.called:
                continue
            done = r.call(client_of(r), request, self.p["robot_timeout"])
            if done is None:
                self._drop(r, "does not answer")
            elif done:
                r.called = True
            else:
                pending = True
        return not pending and any(r.active for r in self.robots)

    def _drop(self, r: RobotSlot, why: str) -> None:
        r.active = False
        self.get_logger().warning(f"{r.label} {why} for {self.p['robot_timeout']:.0f} s: it sits out "
                               f"episode {max(self.episode, 0)}; the others go on")

    def _step(self) -> None:
        phase = self.phase
        timeout = self.p["robot_timeout"]
        if phase == "wait_ready":
            ready = [r for r in self.robots if r.ready(timeout)]
            waited = time.monotonic() - self.phase_started
            patience = self.p["start_timeout"] if self.episode < 0 else timeout
            if len(ready) == len(self.robots) or (ready and waited > patience):
                self._take_part()
                self._goto("pausing")
        elif phase == "pausing":
            if self._all_called(lambda r: r.pause_client, SetBool.Request(data=True)):
                self._goto("resetting")
            elif not any(r.active for r in self.robots):
                self._goto("wait_ready")
        elif phase == "resetting":
            if self._all_called(lambda r: r.reset_client, Trigger.Request()):
                self.episode += 1
                self.episode_pub.publish(Int32(data=self.episode))
                self._goto("training" if self.p["wait_for_model"] and self.episode > 0 else "resuming")
            elif not any(r.active for r in self.robots):
                self._goto("wait_ready")
        elif phase == "training":
            waited = time.monotonic() - self.phase_started
            if self.trained_episode >= self.episode - 1 or waited > self.p["training_timeout"]:
                if waited > self.p["training_timeout"]:
                    self.get_logger().warning(f"no training round for episode {self.episode - 1} within the timeout")
                self._goto("resuming")
        elif phase == "resuming":
            if self.goals is not None and not self._goal_sent():
                return
            if self._all_called(lambda r: r.pause_client, SetBool.Request(data=False)):
                for r in self.robots:
                    r.clear()
                    r.truth_wall = time.monotonic()  # the watch on its ground truth starts now
                self._goto("running")
                versions = {_version(r.controller.get("model_version", "none")) for r in self.robots if r.active}
                self.get_logger().info(f"episode {self.episode} ({self.episode + 1} of {self.p['episodes']}) starts "
                                       f"on model {', '.join(sorted(versions))}"
                                       + (f" with {sum(r.active for r in self.robots)} of {len(self.robots)} robots"
                                          if self.fleet else ""))
            elif not any(r.active for r in self.robots):
                self._goto("wait_ready")
        elif phase == "running":
            for r in self.robots:
                if not r.active or r.ended:
                    continue
                if time.monotonic() - r.truth_wall > timeout:
                    self._drop(r, "sends no ground truth")
                elif r.episode_start is not None and r.now_truth - r.episode_start >= self.p["episode_length"]:
                    self._end_episode(r)
            running = [r for r in self.robots if r.active and not r.ended]
            for r in self.robots:  # hold the ones that are done, so they run no further than their episode
                if r.active and r.ended and not r.held:
                    r.pause_client.call_async(SetBool.Request(data=True))  # pausing calls it again, and waits
                    r.held = True
            if not running:
                self._end_fleet_episode()

    def _goal_sent(self) -> bool:
        """This episode's goal to every active robot, once its controller listens (a goal sent to
        no subscriber is lost); True once sent to all. The judge's task takes it too."""
        if all(r.goal_episode == self.episode for r in self.robots if r.active):
            return True
        goal = self.goals[min(self.episode, len(self.goals) - 1)]
        reason = self.task.set_goal(goal)
        if reason:
            self.get_logger().warning(f"episode {self.episode}'s goal {np.round(goal, 3).tolist()}: {reason}")
        msg = PoseStamped()
        msg.header.frame_id = self.p["goal_frame"]
        msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in goal)
        msg.pose.orientation.w = 1.0
        for r in self.robots:
            if r.active and r.goal_episode != self.episode and r.goal_pub.get_subscription_count() > 0:
                r.goal_pub.publish(msg)
                r.goal_episode = self.episode
        return all(r.goal_episode == self.episode for r in self.robots if r.active)

    def _take_part(self) -> None:
        """Who runs the next episode: every robot that is there (a robot back from a crash rejoins)."""
        for r in self.robots:
            was = r.active
            r.active = r.ready(self.p["robot_timeout"])
            if r.active and not was and self.episode >= 0:
                self.get_logger().info(f"{r.label} is back: it takes part from episode {self.episode + 1}")

    def _end_episode(self, r: RobotSlot, failed: bool = False) -> None:
        times, states = np.array(r.times) - r.episode_start, np.array(r.states)
        within = self.task.within_tolerance(states)
        record = {
            "episode": self.episode,
            "return": round(float(np.sum(r.rewards)), 4),
            "success": not failed and bool(self.task.success(states, times)),
            "ended_early": failed,
            "in_tolerance_fraction": round(float(within.mean()), 4),
            # the task's error at the end: a posture's largest joint deviation, a reach point's distance to its goal
            "final_error": round(float(self.task.error(states[-1:])[0]), 4) if len(states) else None,
            **({"goal": [round(float(v), 4) for v in self.task.goal_position()]} if self.task.has_goal else {}),
            "steps": len(r.rewards),
            "robot_time_s": round(float(times[-1]) if len(times) else 0.0, 3),
            "model_version": r.controller.get("model_version", "none"),
            "policy_updates": r.controller.get("policy_updates", "none"),  # MBPO (planner:=policy)
            "wall_s": round(time.monotonic() - self.started_wall, 1),
        }
        r.curve.append(record)
        r.ended = True
        self.get_logger().info((f"{r.label}: " if self.fleet else "") + self._episode_line(r, record))

    def _end_fleet_episode(self) -> None:
        done = [r.curve[-1] for r in self.robots if r.curve and r.curve[-1]["episode"] == self.episode]
        if self.fleet and done:
            self.curve.append({
                "episode": self.episode,
                "robots": len(done),
                "successes": sum(rec["success"] for rec in done),
                "success": all(rec["success"] for rec in done),
                "return": round(float(np.mean([rec["return"] for rec in done])), 4),
                "in_tolerance_fraction": round(float(np.mean([rec["in_tolerance_fraction"] for rec in done])), 4),
                "wall_s": round(time.monotonic() - self.started_wall, 1),
            })
        everyone = all(any(rec["success"] for rec in r.curve) for r in self.robots)
        if self.episode + 1 >= self.p["episodes"] or (self.p["stop_after_success"] and everyone):
            self._finish()
        self._take_part()
        self._goto("pausing" if any(r.active for r in self.robots) else "wait_ready")

    def _episode_line(self, r: RobotSlot, record: dict) -> str:
        """One readable line per episode (learning_curve.json holds every figure): its number (as on
        /episode, from 0) and count, return, success, the model it ran on (and MBPO's policies)."""
        policy = record["policy_updates"]
        return (f"episode {record['episode']} ({record['episode'] + 1} of {self.p['episodes']}): "
                f"return {record['return']:.1f}, {'success' if record['success'] else 'no success'}"
                f"{' (ended early)' if record['ended_early'] else ''}, "
                f"{record['in_tolerance_fraction']:.0%} within tolerance, model {_version(record['model_version'])}"
                f"{'' if policy == 'none' else f' ({policy} policy updates)'}, {record['steps']} steps, "
                f"{record['wall_s']:.0f} s")

    def robot_summary(self, r: RobotSlot) -> dict:
        """One robot's experiment: episodes to its first success counted in its own episodes."""
        successes = [i for i, rec in enumerate(r.curve) if rec["success"]]
        first = successes[0] if successes else None
        steps = sum(rec["steps"] for rec in r.curve[: first + 1]) if first is not None else None
        return {
            "task": self.task.config.name,
            "episodes": len(r.curve),
            "episode_length_s": self.p["episode_length"],
            "episodes_to_success": first + 1 if first is not None else None,
            "env_steps_to_success": steps,
            "final_success": bool(r.curve[-1]["success"]) if r.curve else False,
            "curve": r.curve,
        }

    def summary(self) -> dict:
        if not self.fleet:
            return self.robot_summary(self.robots[0])
        robots = {r.label: self.robot_summary(r) for r in self.robots}
        to_success = [s["episodes_to_success"] for s in robots.values()]
        # Robot time until every robot had succeeded once: each robot's episodes up to the fleet episode where the last one did.
        firsts = [next((rec["episode"] for rec in r.curve if rec["success"]), None) for r in self.robots]
        everyone = max(firsts) if firsts and None not in firsts else None
        robot_time = (sum(rec["robot_time_s"] for r in self.robots for rec in r.curve if rec["episode"] <= everyone)
                      if everyone is not None else None)
        reached = [n for n in to_success if n is not None]
        return {
            "task": self.task.config.name,
            "episodes": self.episode + 1,
            "episode_length_s": self.p["episode_length"],
            "robots": robots,
            "fleet": {
                "robots": len(self.robots),
                "robots_succeeded": len(reached),
                "episodes_per_robot_to_success": to_success,
                "episodes_per_robot_to_success_median": float(np.median(reached)) if reached else None,
                "all_succeeded_by_episode": everyone + 1 if everyone is not None else None,
                "robot_time_s": round(robot_time, 2) if robot_time is not None else None,
                "wall_s": round(time.monotonic() - self.started_wall, 1),
            },
            "curve": self.curve,
        }

    def _finish(self) -> None:
        from mbrl_control.report import plot_learning_curve

        summary = self.summary()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "learning_curve.json").write_text(json.dumps(summary, indent=1) + "\n")
        if self.fleet:
            runs = [s for s in summary["robots"].values() if s["curve"]] + [summary]
            labels = [name for name, s in summary["robots"].items() if s["curve"]] + ["fleet (mean; circled: all succeed)"]
            plot_learning_curve(runs, self.output_dir / "learning_curve.png", labels)
        else:
            plot_learning_curve([summary], self.output_dir / "learning_curve.png")
        self.summary_pub.publish(String(data=json.dumps(summary)))
        self.summary_pub.wait_for_all_acked(Duration(seconds=1.0))
        brief = summary["fleet"] if self.fleet else {k: v for k, v in summary.items() if k != "curve"}
        self.get_logger().info(f"learning curve in {self.output_dir}: {json.dumps(brief)}")
        raise NodeDone


def _version(value: str) -> str:
    """A model or policy version as the controller reports it ("3", "none") for a log line."""
    return f"v{value}" if value not in ("none", "") else "none yet"


main = main_for(EpisodeManager)

if __name__ == "__main__":
    main()
