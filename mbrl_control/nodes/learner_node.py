"""The learner node: learns the robot's dynamics from the live stream of control ticks and
publishes better models to the controllers, without ever being in the control loop.

Inputs: the controllers' per-tick samples (``sources``: std_msgs/Float64MultiArray with the
state planned from, the command sent, its reward, in the fields its layout label names:
mbrl_control.core.learning.sample_layout, older layouts included; several robots may feed one learner) and
``/episode`` (std_msgs/Int32). Consecutive samples one control period apart become transitions
(pairing at the source, where state and command belong together, avoids matching stamps of two
topics); they go into a crash-safe replay buffer on disk.

At every new episode (or every ``train_every`` transitions, or both) a background thread trains a copy of
the current ensemble on everything recorded. The result is accepted only if its error on
held-out transitions beats the current model's on the same transitions; then it is published on
``~/model`` (std_msgs/UInt8MultiArray holding safetensors bytes, reliable and transient-local, so
late-joining controllers get it) and checkpointed (safetensors + JSON). ``~/trained_episode``
(std_msgs/Int32) says which episodes the last finished round included, accepted or not.

With ``mbpo.enabled`` (learn.launch planner:=policy) every round goes on to MBPO: SAC trained in
rollouts of the model now in use, branched from every real state so far, going on from the last
round's SAC (``mbpo.warm_start``); the policy is published on ``~/policy`` (safetensors bytes, like
models) and saved under ``<data_dir>/policies`` with SAC's state, and only then is the round
announced on ``~/trained_episode``.

After a crash the learner reloads the buffer and the newest intact checkpoint (with MBPO, the
policy and SAC's state too) and carries on; a damaged newer checkpoint (size or SHA-256 not
matching its JSON, unreadable, another architecture) is set aside as ``*.corrupt``, named in the
log and in /diagnostics (``damaged_checkpoints``, ``resumed_from``), and the previous good one is
used.
"""

from __future__ import annotations

import array
import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING

import safetensors
import safetensors.torch
import torch
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float64MultiArray, Int32, UInt8MultiArray

from mbrl_control.core.builders import ModelConfig, build_ensemble, checked_device, model_from_params, task_from_params
from mbrl_control.core.dynamics.ensemble import EnsembleConfig
from mbrl_control.core.learning import (
    BackgroundTrainer,
    ModelInfo,
    ReplayBuffer,
    SampleReader,
    TrainerConfig,
    TransitionAssembler,
    encode,
    latest_checkpoint,
    load_into,
    residual_transitions,
    save_checkpoint,
)
from mbrl_control.core.learning.background import BackgroundJob
from mbrl_control.core.learning.rounds import TRAIN_ON, RoundSchedule
from mbrl_control.core.learning.storage import write_atomic
from mbrl_control.core.mbpo import load_policy, policy_to_bytes, save_policy, save_value
from mbrl_control.core.mbpo.config import MBPOConfig
from mbrl_control.core.util import dataclass_from, section
from mbrl_control.nodes.diagnostics import OK, WARN, DiagnosticsPublisher
from mbrl_control.nodes.model_receiver import MODEL_QOS
from mbrl_control.nodes.params import (
    ROBOT_PARAMS,
    ParameterError,
    ParamSpec,
    declare_parameters,
    declare_task_parameters,
    robot_spec_param,
    specs_from,
)
from mbrl_control.nodes.runtime import main_for

if TYPE_CHECKING:
    from mbrl_control.core.mbpo.trainer import MBPOResult

STOP_JOIN_SECONDS = 10.0  # a cancelled job ends within a minibatch or 250 SAC steps

PARAMS = [
    *ROBOT_PARAMS,  # control_rate: the controllers' tick rate, so transitions span one period
    ParamSpec("sources", ["/mpc_controller/transitions"], "controllers' sample topics to learn from, one per robot: "
              "a robot's id in the replay buffer is its topic's index here"),
    ParamSpec("model", "learned", "what the ensemble learns: learned (the dynamics from scratch) or residual (what "
              "the analytic model of model.* gets wrong: the controllers' model:=residual)",
              choices=("learned", "residual")),
    *specs_from(ModelConfig, "model"),
    ParamSpec("residual_min_gain", 0.5, "model:=residual: a residual is published only if one learned without the "
              "newest episode explains at least this share of that episode's residual (else the zero residual: the "
              "analytic model alone)", 0.0, 1.0),
    ParamSpec("data_dir", "", "replay buffer and checkpoints live here; empty: runs/learner (relative to the cwd)"),
    ParamSpec("replay.chunk_size", 1000, "transitions per sealed chunk file", 1, 100000),
    ParamSpec("replay.max_transitions", 200000, "buffer cap: oldest chunks go first (never the first episode's)", 1, 10000000),
    ParamSpec("replay.keep_first_episode", True, "the size cap never evicts the first episode"),
    ParamSpec("sync_period", 0.5, "fsync the buffer this often: a power cut loses at most this [s]", 0.01, 60.0),
    ParamSpec("train_on", "episode", "start a round at every new episode, every train_every transitions, or both "
              "(episode_and_count: models improve within an episode too, the way a realtime robot gets them)",
              choices=TRAIN_ON),  # mbrl_control.core.learning.rounds
    ParamSpec("train_every", 500, "transitions between rounds with train_on:=count or episode_and_count", 1, 1000000),
    ParamSpec("min_transitions", 200, "no training before this many transitions", 1, 10000000),
    ParamSpec("keep_checkpoints", 5, "checkpoints kept on disk", 1, 1000),
    ParamSpec("torch_threads", 1, "torch threads for training", 1, 64),
    ParamSpec("device", "cpu", "where the ensemble trains: cpu, cuda, cuda:N, or auto (cuda when torch sees a GPU); "
              "the buffer, checkpoints and model messages are the same either way"),
    ParamSpec("diagnostics_rate", 1.0, "diagnostics publish rate [Hz]", 0.1, 100.0),
    ParamSpec("sample_queue", 60000, "samples queued per source while the learner is busy (60000: 10 min at 100 Hz)",
              10, 10000000),
    ParamSpec("drain_on_stop", 2.0, "at SIGINT/SIGTERM, keep storing samples still queued for up to this long [s]", 0.0, 60.0),
    *specs_from(EnsembleConfig, "ensemble", exclude=("angle_dims",)),
    *specs_from(TrainerConfig, "trainer"),
    ParamSpec("mbpo.enabled", False, "after every model round, train an MBPO policy (SAC in rollouts of the model) "
              "on it and publish it on ~/policy (planner:=policy)"),
    *specs_from(MBPOConfig, "mbpo", exclude=("angle_dims",)),  # angles come from the URDF, as the ensemble's
]


class LearnerNode(Node):
    def __init__(self) -> None:
        super().__init__("learner")
        p = declare_parameters(self, PARAMS)
        if p["mbpo.enabled"]:
            p = declare_task_parameters(self, p)  # the reward MBPO maximises
        self.p = p
        self.drain_on_stop = p["drain_on_stop"]  # nodes.runtime.spin_then_drain
        torch.set_num_threads(p["torch_threads"])
        spec = robot_spec_param(p)
        try:
            self.model = build_ensemble(p, spec)
            trainer_config = dataclass_from(TrainerConfig, section(p, "trainer"))
        except ValueError as exc:
            raise ParameterError(f"ensemble.* / trainer.* parameters: {exc}") from exc
        try:
            train_device = checked_device(p["device"])
        except ValueError as exc:
            raise ParameterError(f"parameter 'device': {exc}") from exc
        self.nx, self.nu = self.model.state_dim, self.model.action_dim
        self.dt = 1.0 / p["control_rate"]
        data_dir = Path(p["data_dir"] or "runs/learner")
        self.checkpoints = data_dir / "checkpoints"
        self.buffer = ReplayBuffer(self.nx, self.nu, data_dir / "replay", p["replay.chunk_size"],
                                   p["replay.max_transitions"], p["replay.keep_first_episode"])
        self.reloaded = len(self.buffer)
        # model:=residual: each round's data has its next states rewritten to the analytic model's
        # residual (on the training thread: the rigid-body model over the whole buffer takes a while).
        prepare = None
        if p["model"] == "residual":
            if p["mbpo.enabled"]:
                raise ParameterError("parameter 'mbpo.enabled': MBPO trains in rollouts of a model learned from "
                                     "scratch; it needs model:=learned")
            analytic = model_from_params(spec, p)
            prepare = lambda data: residual_transitions(analytic, data, spec.angle_dims)  # noqa: E731
        # The model in use (published, checkpointed) stays on the CPU; each round trains a copy on train_device.
        self.trainer = BackgroundTrainer(trainer_config, device=train_device, prepare=prepare,
                                         residual=p["model"] == "residual", residual_min_gain=p["residual_min_gain"])
        self.mbpo: MBPOConfig | None = None
        if p["mbpo.enabled"]:
            try:
                self.mbpo = dataclass_from(MBPOConfig, {k: v for k, v in section(p, "mbpo").items() if k != "enabled"} | {
                    "angle_dims": self.model.config.angle_dims})
            except ValueError as exc:
                raise ParameterError(f"mbpo.* parameters: {exc}") from exc
            try:
                self.task = task_from_params(p)  # the reward MBPO maximises
            except ValueError as exc:
                raise ParameterError(str(exc)) from exc
        self.policy_job: BackgroundJob[MBPOResult] = BackgroundJob("mbpo-trainer")
        self.policy_version = 0
        self.sac_state: dict[str, torch.Tensor] | None = None
        self.policy_counts = {"policy_rounds": 0, "policy_errors": 0}
        self.last_policy: dict[str, object] = {}
        self.version = 0
        self.info: ModelInfo | None = None
        self.counts = {"samples": 0, "rejected_samples": 0, "rounds": 0, "accepted": 0, "not_better": 0, "errors": 0,
                       "withheld": 0}  # withheld: residual rounds whose check failed
        self.last_check: dict[str, object] = {}
        self.last_round: dict[str, object] = {}
        self.round_through_episode = -1
        self.rounds = RoundSchedule(p["train_on"], p["train_every"], len(self.buffer))
        self.damaged_checkpoints: list[str] = []  # set aside at resume
        self.resumed_from = ""
        self.version_floor = 0  # a damaged checkpoint's version may have been published: never reuse it

        self.model_pub = self.create_publisher(UInt8MultiArray, "~/model", MODEL_QOS)
        self.trained_pub = self.create_publisher(Int32, "~/trained_episode", MODEL_QOS)
        self.policy_pub = self.create_publisher(UInt8MultiArray, "~/policy", MODEL_QOS)
        self.policies = data_dir / "policies"
        self._resume()
        # Deep: a learner starved by a long training round on a busy computer catches up later
        # instead of losing the oldest samples (KEEP_LAST); about 100 bytes each.
        reliable = QoSProfile(depth=p["sample_queue"], reliability=ReliabilityPolicy.RELIABLE)
        self.assemblers: dict[str, TransitionAssembler] = {}
        self.samples = SampleReader(self.nx, self.nu)  # this version's layout or an older controller's
        if len(set(p["sources"])) != len(p["sources"]) or not all(p["sources"]):
            raise ParameterError(f"parameter 'sources': each robot's topic once, none empty; got {p['sources']}")
        self.robot_ids = {topic: i for i, topic in enumerate(p["sources"])}
        self.per_robot = {topic: {"samples": 0, "rejected": 0} for topic in p["sources"]}
        for topic in p["sources"]:
            self.assemblers[topic] = TransitionAssembler(self.dt)
            self.create_subscription(Float64MultiArray, topic, lambda m, t=topic: self._on_sample(t, m), reliable)
        self.create_subscription(Int32, "/episode", self._on_episode, MODEL_QOS)
        # Wall-clock timers: in lockstep sim time stands still while the experiment waits for us.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(p["sync_period"], self.buffer.sync, clock=steady)
        self.create_timer(0.2, self._poll_jobs, clock=steady)
        self.diagnostics = DiagnosticsPublisher(self)
        self.create_timer(1.0 / p["diagnostics_rate"], self._publish_diagnostics, clock=steady)
        self.get_logger().info(
            f"learning a {self.model.config.members}-member ensemble from {p['sources']}; buffer in "
            f"{data_dir} ({self.reloaded} transitions reloaded), model v{self.version}"
        )

    def _resume(self) -> None:
        """After a restart: the newest intact checkpoint becomes the current model, published again."""
        skipped: list[tuple[Path, str]] = []
        found = latest_checkpoint(self.checkpoints, self.model, skipped) if self.checkpoints.is_dir() else None
        for json_path, reason in skipped:  # set aside, so nothing ever picks them up (or prunes a good one for them)
            for path in (json_path, json_path.with_suffix(".safetensors")):
                if path.exists():
                    path.rename(path.with_name(path.name + ".corrupt"))
            self.damaged_checkpoints.append(json_path.stem)
            digits = json_path.stem.rpartition("_v")[2]
            self.version_floor = max(self.version_floor, int(digits) if digits.isdigit() else 0)
            self.get_logger().error(f"damaged checkpoint {json_path.stem} set aside (*.corrupt): {reason}")
        if found is None:
            if skipped:
                self.get_logger().error("no intact checkpoint left: starting from an untrained model")
            return
        blob, info = found
        load_into(self.model, blob)
        self.version, self.info = info.version, info
        self.resumed_from = f"ensemble_v{info.version:08d}"
        if skipped:
            self.get_logger().warning(f"resumed from the previous good checkpoint {self.resumed_from}")
        self.model_pub.publish(UInt8MultiArray(data=array.array("B", blob)))
        policy_file = self.policies / "policy.safetensors"
        if self.mbpo is not None and policy_file.is_file():
            try:
                policy = load_policy(policy_file)
            except ValueError as exc:
                self.get_logger().error(f"policy checkpoint {policy_file} not used: {exc}")
            else:
                self.policy_version = policy.version
                self.policy_pub.publish(UInt8MultiArray(data=array.array("B", policy_to_bytes(policy))))
        sac_file = self.policies / "sac.safetensors"
        if self.mbpo is not None and self.mbpo.warm_start and sac_file.is_file():
            try:
                self.sac_state = safetensors.torch.load(sac_file.read_bytes())
            except (OSError, safetensors.SafetensorError) as exc:
                self.get_logger().error(f"SAC state {sac_file} not used (the next round starts afresh): {exc}")
            else:
                self.get_logger().info(f"SAC state reloaded from {sac_file}: the next MBPO round goes on from it")

    # -- data --------------------------------------------------------------------------------
    def _on_sample(self, topic: str, msg: Float64MultiArray) -> None:
        s = self.samples.read(msg.layout.dim[0].label if msg.layout.dim else "", msg.data)
        if s is None:  # malformed, or another robot's
            self.counts["rejected_samples"] += 1
            self.per_robot[topic]["rejected"] += 1
            return
        self.counts["samples"] += 1
        self.per_robot[topic]["samples"] += 1
        pair = self.assemblers[topic].push(s.stamp, s.state, s.action, s.episode, s.reward)
        if pair is not None:
            s, a, s2, r, st, ep = pair
            self.buffer.append(s, a, s2, r, False, st, ep, robot=self.robot_ids[topic])
        through = self.rounds.on_transitions(len(self.buffer))
        if through is not None:
            self._start_round(through)

    def _on_episode(self, msg: Int32) -> None:
        through = self.rounds.on_episode(msg.data)
        if through is not None:
            self._start_round(through)

    # -- training ----------------------------------------------------------------------------
    def _start_round(self, through_episode: int) -> None:
        self.buffer.sync()
        if len(self.buffer) < self.p["min_transitions"]:
            self.trained_pub.publish(Int32(data=through_episode))  # nothing to learn yet: say so
            return
        if self.trainer.busy or self.policy_job.busy:
            self.rounds.defer(through_episode)  # run it as soon as this one is done
            return
        self.trainer.start(self.model, self.buffer.snapshot())
        self.round_through_episode = through_episode
        self.rounds.started(len(self.buffer))

    def _poll_jobs(self) -> None:
        self._poll_training()
        self._poll_policy()

    def _poll_training(self) -> None:
        outcome = self.trainer.poll()
        if outcome is None:
            return
        self.counts["rounds"] += 1
        check = outcome.info.get("check")
        if "check" in outcome.info:
            self.last_check = {"residual_check": "passed" if check and check.passed else "failed" if check else "too little data",
                               "residual_check_score": check.model_score if check else math.nan,
                               "residual_dims": list(check.dims) if check and check.passed else []}
        if outcome.error is not None:
            self.counts["errors"] += 1
            self.get_logger().error(f"training failed: {outcome.error}")
        elif outcome.state is None:  # a residual that does not generalize yet: the analytic model alone
            self.counts["withheld"] += 1
            why = check.describe() if check else "too little data to test it"
            if self.model.is_zero_residual():
                self.get_logger().info(f"the residual stays zero (the analytic model alone): {why}")
            else:
                self.model.zero_residual_()
                self._publish(outcome.data_size, math.nan, math.nan, f"zero residual (the analytic model alone): {why}")
        else:
            r = outcome.result
            self.last_round = {
                "holdout_mse": r.holdout.mse, "holdout_nll": r.holdout.nll, "coverage_2sigma": r.holdout.coverage_2sigma,
                "previous_mse": r.previous.mse if r.previous else math.nan, "epochs": r.epochs,
                "seconds": r.seconds, "data_size": outcome.data_size, "stopped_by": r.stopped_by,
            }
            if r.improved:
                self._accept(outcome)
            else:
                self.counts["not_better"] += 1
                self.get_logger().info(f"round kept v{self.version}: held-out MSE {r.holdout.mse:.4f} is not better "
                                       f"than {r.previous.mse:.4f}")
        if self.mbpo is not None and self.version > 0:
            self._start_policy_round()  # the round ends when its policy is out
        else:
            self._end_round()

    def _end_round(self) -> None:
        self.trained_pub.publish(Int32(data=self.round_through_episode))
        pending = self.rounds.take_pending()
        if pending is not None:
            self._start_round(pending)

    # -- MBPO --------------------------------------------------------------------------------
    def _start_policy_round(self) -> None:
        """SAC on rollouts of the model now in use, branched from every real state so far."""
        model, data = self.model.clone(trainable=False), self.buffer.snapshot()
        config = dataclasses.replace(self.mbpo, seed=self.mbpo.seed + self.policy_version)
        warm_start = self.sac_state if config.warm_start else None
        from mbrl_control.core.mbpo.trainer import train_mbpo  # SAC (stable-baselines3) only where MBPO is on

        self.policy_job.start(lambda cancel: train_mbpo(model, self.task, data, config, warm_start, cancel=cancel))

    def _poll_policy(self) -> None:
        outcome = self.policy_job.poll()
        if outcome is None:
            return
        self.policy_counts["policy_rounds"] += 1
        if outcome.error is not None:
            self.policy_counts["policy_errors"] += 1
            self.get_logger().error(f"MBPO round failed: {outcome.error}")
        else:
            self._publish_policy(outcome.value)
            self.sac_state = outcome.value.sac_state  # the next round goes on from here, after a restart too
            write_atomic(self.policies / "sac.safetensors", safetensors.torch.save(self.sac_state))
        self._end_round()

    def _publish_policy(self, r: MBPOResult) -> None:
        self.policy_version += 1
        r.policy.version = r.value.version = self.policy_version
        r.policy.extra = {"model_version": self.version, "sac_steps": r.sac_steps, "real_transitions": r.real_transitions}
        self.policy_pub.publish(UInt8MultiArray(data=array.array("B", policy_to_bytes(r.policy))))
        save_policy(self.policies / "policy.safetensors", r.policy)  # the newest; what a restart republishes
        save_value(self.policies / "value.safetensors", r.value)
        model_return = r.returns[r.best_epoch - 1] if r.returns else math.nan
        self.last_policy = {"policy_seconds": r.seconds, "policy_model_return": model_return,
                            "policy_real_transitions": r.real_transitions}
        self.get_logger().info(
            f"published policy v{self.policy_version} (model v{self.version}): {r.sac_steps} SAC steps on "
            f"{r.model_transitions} model and {r.real_transitions} real transitions in {r.seconds:.1f} s, "
            f"model return {model_return:.1f}{', continuing SAC' if r.warm_started else ''}"
        )

    def _accept(self, outcome) -> None:
        r = outcome.result
        self.model.load_state_(self.model.check_state(outcome.state))
        self.counts["accepted"] += 1
        self._publish(outcome.data_size, r.holdout.nll, r.holdout.mse,
                      f"held-out MSE {r.holdout.mse:.4f} (was {r.previous.mse if r.previous else math.nan:.4f}), "
                      f"{r.epochs} epochs in {r.seconds:.1f} s"
                      + (f"; the residual's check: {check.describe()}" if (check := outcome.info.get("check")) else ""))

    def _publish(self, data_size: int, holdout_nll: float, holdout_mse: float, what: str) -> None:
        """The model now in ``self.model`` as the next version: on the topic and checkpointed."""
        self.version = max(self.version, self.version_floor) + 1
        self.info = ModelInfo(self.model.config, self.version, data_size, holdout_nll, holdout_mse)
        blob = encode(self.model, self.info)
        self.model_pub.publish(UInt8MultiArray(data=array.array("B", blob)))
        save_checkpoint(self.checkpoints, self.model, self.info, keep=self.p["keep_checkpoints"])
        self.get_logger().info(f"published model v{self.version}: {data_size} transitions, {what}")

    # -- monitoring --------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        busy = self.trainer.busy or self.policy_job.busy
        values = {
            "transitions": len(self.buffer),
            "synced_seq": self.buffer.synced_seq,
            "next_seq": self.buffer.next_seq,
            "reloaded_transitions": self.reloaded,
            "resumed_from": self.resumed_from or "none",
            "damaged_checkpoints": " ".join(self.damaged_checkpoints) or "none",
            "dropped_gaps": sum(a.dropped_gaps for a in self.assemblers.values()),
            "model_version": self.version,
            "training": busy,
            "robots": len(self.per_robot),
            "episode": self.rounds.episode,
            **self.counts,
            **_last(self.last_round),
            **self.last_check,
        }
        if len(self.per_robot) > 1:  # a fleet: what each robot's stream gave
            for i, counts in enumerate(self.per_robot.values()):
                values |= {f"robot_{i}_samples": counts["samples"], f"robot_{i}_rejected_samples": counts["rejected"]}
        if self.mbpo is not None:
            values |= {"policy_version": self.policy_version, **self.policy_counts, **_last(self.last_policy)}
        level = OK if (self.version > 0 or not self.counts["errors"]) and not self.damaged_checkpoints else WARN
        message = "training" if busy else f"model v{self.version}"
        if self.damaged_checkpoints:
            message += (f" (damaged checkpoint {', '.join(self.damaged_checkpoints)} set aside; resumed from "
                        f"{self.resumed_from or 'scratch'})")
        self.diagnostics.publish(level, message, values)

    def drain_count(self) -> int:
        return self.counts["samples"] + self.counts["rejected_samples"]

    def on_stop(self) -> None:
        # Training stops within a minibatch (models) or CANCEL_CHECK_STEPS SAC steps (policies),
        # so draining the queued samples gets the CPU.
        self.trainer.cancel()
        self.policy_job.cancel()

    def close(self) -> None:
        # Join before the interpreter finalises: a worker thread still inside torch then aborts
        # the process (SIGABRT, "terminate called without an active exception").
        self.on_stop()
        for name, job in (("model training", self.trainer), ("policy training", self.policy_job)):
            if not job.join(STOP_JOIN_SECONDS):
                self.get_logger().error(f"{name} did not stop within {STOP_JOIN_SECONDS} s of the cancel")
        self.buffer.close()


def _last(values: dict[str, object]) -> dict[str, object]:
    """The last round's figures as diagnostics values."""
    return {f"last_{k}": (f"{v:.5g}" if isinstance(v, float) else v) for k, v in values.items()}


main = main_for(LearnerNode)

if __name__ == "__main__":
    main()
