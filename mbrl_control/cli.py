"""``mbrl-control``: the pip-only front door.

  mbrl-control launch mpc|learn|fleet [name:=value ...]
                                               start a launch file's nodes (as ros2 launch would)
  mbrl-control demo [--robot R] [--duration S] [...]
                                               the headless demo (a robot config's task through the
                                               nodes), ending in one JSON line
  mbrl-control warmup [--robot R ...]          compile the planner kernels once (cached on disk)
  mbrl-control train --from runs/<stamp>/run.mcap [--out DIR]
                                               learn the dynamics offline from a recording
                                               (progress on stderr; stdout ends in one JSON line)
  mbrl-control params [--write docs/parameters.md]
                                               every node's parameters with their code defaults
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from mbrl_control.graph import GRAPHS, MPC_ARGUMENTS, robot_config
from mbrl_control.launcher import launch, parse_launch_args
from mbrl_control.paths import DEFAULT_ROBOT


def warmup(robot: str = DEFAULT_ROBOT, planner: str | None = None) -> float:
    """Build and run the controller's planner and the estimator's filter once in this process,
    exactly as their nodes do: the compilers' on-disk caches then make every later start of those
    nodes fast. Returns the seconds it took."""
    import torch

    from mbrl_control.config import node_settings
    from mbrl_control.core.builders import build_mpc, estimator_from_params
    from mbrl_control.core.robot import robot_spec

    path = robot_config(robot)
    p = node_settings(path, "mpc_controller")  # the file over the node's defaults
    torch.set_num_threads(p["torch_threads"])
    start = time.perf_counter()
    mpc = build_mpc(p, planner)
    mpc.planner.plan(torch.zeros(mpc.task.state_dim))
    e = node_settings(path, "estimator")
    estimator_from_params(robot_spec(e), e).warm_up()
    return time.perf_counter() - start


def warmup_each(robots: list[str], planner: str | None = None) -> int:
    """``warmup`` for several robots, each in a process of its own, all at once: compiling is
    mostly one thread, so on two cores two robots take about as long as the slower one. Returns
    the worst exit code."""
    import subprocess

    extra = ["--planner", planner] if planner else []
    runs = [subprocess.Popen([sys.executable, "-m", "mbrl_control.cli", "warmup", "--robot", robot, *extra])
            for robot in robots]
    return max(run.wait() for run in runs)


def train_offline(recording: Path | list[Path], out: Path, robot: str = DEFAULT_ROBOT, policy: bool = False,
                  mbpo: dict[str, str] | None = None) -> int:
    """Fit the learner's ensemble to the transitions of recordings (MCAP files, or learner output
    directories with their replay buffer: data the stack collected); checkpoint it in ``out``
    (what a learner node, pointed at ``out``, resumes from and publishes). With ``policy``, also
    train an MBPO policy and critic on rollouts of that ensemble branched from the recording's
    states (``mbpo``: MBPOConfig overrides), saved as ``out/policy.safetensors`` and
    ``out/value.safetensors`` for ``planner:=policy`` (``policy.path``) and ``terminal:=value``."""
    import torch

    from mbrl_control.config import node_settings
    from mbrl_control.core.builders import build_ensemble
    from mbrl_control.core.learning import ModelInfo, TrainerConfig, Transitions, save_checkpoint, train_ensemble
    from mbrl_control.core.robot import robot_spec
    from mbrl_control.core.util import dataclass_from, section
    from mbrl_control.progress import follow, progress_bar

    p = node_settings(robot_config(robot), "learner")
    torch.set_num_threads(p["torch_threads"])
    sources = recording if isinstance(recording, list) else [recording]
    dt = 1.0 / p["control_rate"]
    with progress_bar(sources, desc="reading", unit="file", disable=len(sources) < 2) as files:
        data = Transitions.concatenate([_stack_data(Path(s), dt, p) for s in files])
    recording = ", ".join(str(s) for s in sources)
    print(f"{len(data)} transitions from {recording} ({len(set(data.episode.tolist()))} episodes)", flush=True)
    model = build_ensemble(p, robot_spec(p))
    config = dataclass_from(TrainerConfig, section(p, "trainer"))
    with progress_bar(total=config.max_epochs, desc="ensemble", unit="epoch") as bar:
        result = train_ensemble(model, data, config, progress=follow(bar))
        bar.set_postfix_str(f"held-out MSE {result.holdout.mse:.4g}, stopped by {result.stopped_by}")
    info = ModelInfo(model.config, 1, len(data), result.holdout.nll, result.holdout.mse,
                     extra={"trained_from": str(recording)})
    checkpoint = save_checkpoint(out / "checkpoints", model, info)
    figures = {"recording": str(recording), "transitions": len(data), "holdout_mse": round(result.holdout.mse, 5),
               "holdout_nll": round(result.holdout.nll, 4), "coverage_2sigma": round(result.holdout.coverage_2sigma, 4),
               "epochs": result.epochs, "seconds": round(result.seconds, 1), "checkpoint": str(checkpoint)}
    if policy:
        figures |= _train_policy(model, data, p, out, mbpo or {})
    print(_table(list(figures.items())))
    print(json.dumps(figures))
    return 0


def _stack_data(source: Path, dt: float, p: dict):
    """Transitions of a recording, or of a learner directory's replay buffer."""
    from mbrl_control.core.learning import ReplayBuffer
    from mbrl_control.recording.run_data import transitions_from_recording

    if source.is_dir():
        replay = source / "replay" if (source / "replay").is_dir() else source
        buffer = ReplayBuffer(2 * len(p["state_joints"]), len(p["command_joints"]), replay)
        try:
            return buffer.snapshot()
        finally:
            buffer.close()
    return transitions_from_recording(source, dt=dt)


def _train_policy(model, data, p: dict, out: Path, overrides: dict[str, str]) -> dict[str, object]:
    """MBPO on the trained ensemble: the policy and critic files, and what training took."""
    import yaml

    from mbrl_control.core.builders import task_from_params
    from mbrl_control.core.mbpo import MBPOConfig, save_policy, save_value, train_mbpo
    from mbrl_control.core.util import dataclass_from
    from mbrl_control.progress import follow, progress_bar

    task = task_from_params(p)
    config = dataclass_from(MBPOConfig, {k: yaml.safe_load(v) for k, v in overrides.items()})
    with progress_bar(total=config.sac_steps, desc="MBPO policy (SAC)", unit="step") as bar:
        result = train_mbpo(model, task, data, config, progress=follow(bar))
    policy_path = save_policy(out / "policy.safetensors", result.policy)
    value_path = save_value(out / "value.safetensors", result.value)
    return {"mbpo_sac_steps": result.sac_steps, "mbpo_epochs": result.epochs, "mbpo_seconds": round(result.seconds, 1),
            "mbpo_model_return": round(result.returns[result.best_epoch - 1], 2) if result.returns else None,
            "policy": str(policy_path), "value": str(value_path)}


def _table(rows: list[tuple[str, object]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def demo(duration: float | None, mode: str, planner: str | None, extra: list[str], runs_dir: Path, record: bool = True,
         robot: str = DEFAULT_ROBOT) -> int:
    from mbrl_control.config import node_settings

    if duration is None:  # the robot config's run length (its run monitor's)
        duration = float(node_settings(robot_config(robot), "run_monitor")["duration"])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = runs_dir / stamp
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"run directory: {run_dir}", flush=True)
    print("warming up the planner and the estimator (the first run on a machine compiles kernels: a minute or "
          "two)...", flush=True)
    print(f"  ready in {warmup(robot, planner):.1f} s", flush=True)
    summary_path = run_dir / "summary.json"
    recording = run_dir / "run.mcap"
    args = {"robot": robot, "mode": mode, "duration": str(duration), "summary_path": str(summary_path),
            "record": str(record).lower(), "record_path": str(recording)} | ({"planner": planner} if planner else {})
    args |= parse_launch_args(extra)
    print(f"running mpc.launch.py {' '.join(f'{k}:={v}' for k, v in args.items())}", flush=True)
    code = launch("mpc", args, log_dir=run_dir / "logs", timeout=duration * 20 + 600)
    if not summary_path.is_file():
        print(f"the run ended (exit code {code}) without a summary; see {run_dir / 'logs'}", file=sys.stderr)
        print(json.dumps({"success": False, "error": "no summary", "exit_code": code, "run_dir": str(run_dir)}))
        return 1
    summary = json.loads(summary_path.read_text())
    summary["run_dir"] = str(run_dir)
    if record and recording.is_file():
        from mbrl_control.report import make_report

        summary["recording"] = str(recording)
        period_ms = 1e3 / summary["control_hz"] if summary.get("control_hz") else None
        summary["report"] = str(make_report(recording, run_dir / "report.png", dict(summary), period_ms=period_ms,
                                            title=f"mbrl_control demo: {summary['task']}, {summary['planner']}",
                                            robot=robot_config(robot)))
    print(f"\nmbrl_control demo: {summary.get('task')} through ROS 2 nodes")
    print(_table([(k, v) for k, v in summary.items()]))
    print(json.dumps(summary), flush=True)
    return 0 if summary.get("success") else 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mbrl-control", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_launch = sub.add_parser("launch", help="start the nodes of a launch file without ros2 launch")
    p_launch.add_argument("graph", choices=sorted(GRAPHS), help="launch file name without .launch.py")
    p_launch.add_argument("args", nargs="*", help="launch arguments name:=value (each launch file's docstring lists "
                          "them); mpc's: " + ", ".join(f"{a.name} (default {a.default!r})" for a in MPC_ARGUMENTS))
    p_launch.add_argument("--log-dir", type=Path, help="also write each node's output to DIR/<node>.log")
    p_demo = sub.add_parser("demo", help="headless demo of a robot's task; prints one JSON line last")
    p_demo.add_argument("--robot", default=DEFAULT_ROBOT, help="config/<robot>.yaml, or a parameter file")
    p_demo.add_argument("--duration", type=float, default=None, help="robot time to run [s] (default: the robot config's)")
    p_demo.add_argument("--mode", default="realtime", choices=("realtime", "lockstep"))
    p_demo.add_argument("--planner", default=None, help="default: the robot config's")
    p_demo.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p_demo.add_argument("--no-record", dest="record", action="store_false", help="no MCAP recording and report")
    p_demo.add_argument("args", nargs="*", help="extra launch arguments name:=value")
    p_train = sub.add_parser("train", help="learn the dynamics offline from a recorded run")
    p_train.add_argument("--from", dest="recording", type=Path, nargs="+", required=True,
                         help="MCAP files (record:=true) or learner directories (their replay buffer)")
    p_train.add_argument("--out", type=Path, default=None, help="checkpoint directory (default: beside the recording)")
    p_train.add_argument("--robot", default=DEFAULT_ROBOT)
    p_train.add_argument("--policy", action="store_true", help="also train an MBPO policy on the learned model")
    p_train.add_argument("--mbpo", nargs="*", default=[], metavar="KEY=VALUE",
                         help="MBPO settings, e.g. sac_steps=8000")
    p_warm = sub.add_parser("warmup", help="compile the planner once so nodes start fast")
    p_warm.add_argument("--robot", action="append", default=None,
                        help=f"robot configuration (default {DEFAULT_ROBOT}); repeated: each in its own process, "
                             "at the same time")
    p_warm.add_argument("--planner", default=None)
    p_params = sub.add_parser("params", help="every node's parameters: type, default, range, runtime, meaning (Markdown)")
    p_params.add_argument("--write", type=Path, metavar="FILE", help="write it to FILE (docs/parameters.md) instead of "
                                                                      "printing it")
    a = parser.parse_args(argv)
    try:
        if a.command == "launch":
            sys.exit(launch(a.graph, parse_launch_args(a.args), log_dir=a.log_dir))
        if a.command == "demo":
            sys.exit(demo(a.duration, a.mode, a.planner, a.args, a.runs_dir, a.record, a.robot))
        if a.command == "train":
            mbpo = dict(kv.split("=", 1) for kv in a.mbpo)
            out = a.out or a.recording[0].parent / "learner"
            sys.exit(train_offline(a.recording, out, a.robot, a.policy, mbpo))
        if a.command == "params":
            from mbrl_control.nodes.catalog import parameter_reference

            text = parameter_reference()
            if a.write:
                a.write.write_text(text)
            else:
                print(text, end="")
        if a.command == "warmup":
            robots = a.robot or [DEFAULT_ROBOT]
            if len(robots) > 1:
                sys.exit(warmup_each(robots, a.planner))
            print(f"{robots[0]}: planner and estimator compiled and run in {warmup(robots[0], a.planner):.1f} s")
    except ValueError as exc:
        parser.exit(2, f"mbrl-control: error: {exc}\n")


if __name__ == "__main__":
    main()
