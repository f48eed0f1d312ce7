"""A fleet learning together (fleet.launch.py, lockstep): cart-pole swing-up from scratch with 1, 2
and 4 robots feeding one learner; per fleet size, each robot's own episodes until its first
success, how many robots succeed, the robot time until every robot has succeeded (all robots'
episodes summed, up to the fleet episode where the last one first did) and the wall time.

  python bench/fleet.py [--sizes 1,2,4] [--seeds 3] [--episodes 8] [--episode-length 10] [--reuse]
  python bench/fleet.py --sizes "" --faults      # the fault rows alone

``--faults``: a 3-robot fleet in which robot_1's stack (sim, estimator, controller) and then the
learner are SIGKILLed mid-episode and restarted. Per fault: did the other robots keep ticking
safely (their controllers' own tick counts move on, with no stale, unsafe or fallback tick), was
anything recorded lost (the learner's replay buffer read back from disk against what it had
acknowledged before the kill), and the recovery: the restarted robot's controller has the newest
model in its first status (transient-local) and takes part again; the restarted learner reloads its
buffer and checkpoint and trains again.

Each robot is its own robot (fleet.launch's randomize:=robot: its own pole mass, damping and motor
gain within a manufacturing spread, drawn once from its own seed; ``--randomize episode``: the
robot config's domain randomization, +-20 % of the pole's mass and length among others, anew every
episode; ``none``: identical robots), the sizes share seeds (robot i of every size is the same robot), and a run ends once every robot has succeeded (``stop_after_success``) or after
``--episodes``. Success is the episode manager's, on each sim's ground truth: the task's own
criterion, not the learner's loss. Every robot and the learner share this machine's cores, so wall
time grows with the fleet; robot time is what a fleet of real robots would spend.

The learner trains at every fleet episode and, by default (``--train-on episode_and_count``), also
every ``--train-every`` transitions while the robots run, as it would beside realtime robots: the
models a robot gets within an episode then depend on how fast this machine trains against how fast
the lockstep sims run, so runs are not reproducible to the tick. ``--train-on episode`` trains
between episodes only (the paused sims wait): deterministic, and slower to learn.

Not part of the tests (tens of minutes). Prints a table, writes fleet_<size>.png per size, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

import yaml
from common import emit_json, machine, print_table
from ros_run import EpisodeProgress, run_graph

from mbrl_control.progress import note, progress_bar


def overrides_for(seed: int, train_on: str = "episode", train_every: int = 500,
                  controller: dict | None = None, learner: dict | None = None) -> dict:
    """The run's seeds (the fleet adds each robot's index to the sim's), and early stop at success;
    with ``train_on`` other than the default, when the learner trains; ``controller``, ``learner``:
    more of the controllers' and the learner's parameters (flat names)."""
    seeded = {
        "sim": {"seed": seed * 100, "sensor": {"seed": seed}, "randomize": {"seed": seed * 100}},
        "mpc_controller": {"explore": {"seed": seed}, "propagation": {"seed": seed}, "cem": {"seed": seed}},
        "learner": {"trainer": {"seed": seed}},
        "episode_manager": {"stop_after_success": True},
    }
    if train_on != "episode":  # (runs with the learner's default keep their overrides: --reuse finds them)
        seeded["learner"] |= {"train_on": train_on, "train_every": train_every}
    for node, values in (("mpc_controller", controller), ("learner", learner)):
        for name, value in (values or {}).items():  # nested, as a parameter file writes them
            *path, leaf = name.split(".")
            section = seeded[node]
            for key in path:
                section = section.setdefault(key, {})
            section[leaf] = value
    return {node: {"ros__parameters": values} for node, values in seeded.items()}


def parameter_value(item: str) -> tuple[str, object]:
    """``NAME=VALUE`` with VALUE read as YAML (numbers, booleans, lists)."""
    name, sep, value = item.partition("=")
    if not sep or not name:
        raise SystemExit(f"--controller and --learner want NAME=VALUE, got '{item}'")
    return name, yaml.safe_load(value)


def finished_run(work: Path, overrides: dict, launch_args: dict) -> dict | None:
    """An earlier complete run in ``work`` with the same settings, else None (``--reuse``)."""
    try:
        same = yaml.safe_load((work / "overrides.yaml").read_text()) == overrides
        args = json.loads((work / "launch_args.json").read_text())
        summary = json.loads((work / "learning_curve.json").read_text())
    except (OSError, ValueError):
        return None
    return summary | {"reused": True} if same and args == launch_args else None


def fleet_run(size: int, seed: int, args) -> dict:
    work = args.out / f"fleet{size}-{args.randomize}-seed{seed}"
    overrides = overrides_for(seed, args.train_on, args.train_every, args.controller, args.learner)
    launch_args = {"robots": str(size), "episodes": str(args.episodes), "episode_length": str(args.episode_length),
                   "mode": "lockstep", "wait_for_model": "true", "randomize": args.randomize}
    if args.estimator != "ekf":  # (the default's runs keep their names and launch arguments)
        work = work.with_name(work.name + f"-{args.estimator}")
        launch_args["estimator"] = args.estimator
    if args.train_on != "episode":
        work = work.with_name(work.name + f"-{args.train_on}{args.train_every}")
    for extra in (args.controller, args.learner):
        if extra:
            work = work.with_name(work.name + "-" + "-".join(f"{k}={v}" for k, v in sorted(extra.items())))
    summary = finished_run(work, overrides, launch_args) if args.reuse else None
    if summary is None:
        if work.exists():
            shutil.rmtree(work)  # a fresh learner: no buffer or checkpoint of an earlier run
        work.mkdir(parents=True)
        (work / "launch_args.json").write_text(json.dumps(launch_args))
        with progress_bar(total=args.episodes * size, desc=f"{size} robots, seed {seed}", unit="robot episode",
                          leave=False) as bar:
            summary = run_graph(launch_args, overrides, timeout=args.timeout, graph="fleet", keep_dir=work,
                                output=EpisodeProgress(bar))
    return summary


class FleetWatch:
    """/diagnostics of a fleet run, by status name (robot_0/mpc_controller, learner), seen from a probe."""

    def __init__(self, domain: int) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from ros_run import SpinningNode

        self.status: dict[str, dict[str, str]] = {}
        self.first: dict[str, dict[str, str]] = {}  # each node's first status after a forget()
        self.spinning = SpinningNode(domain, "fleet_probe")
        self.spinning.node.create_subscription(DiagnosticArray, "/diagnostics", self._on, 100)

    def _on(self, msg) -> None:
        for s in msg.status:
            values = {kv.key: kv.value for kv in s.values}
            self.status[s.name] = values
            self.first.setdefault(s.name, values)

    def number(self, node: str, key: str) -> float:
        try:
            return float(self.status.get(node, {}).get(key, "nan"))
        except ValueError:
            return float("nan")

    def forget(self, node: str) -> None:
        self.status.pop(node, None)
        self.first.pop(node, None)

    def wait(self, condition, timeout: float) -> bool:
        import time

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if condition():
                return True
            time.sleep(0.1)
        return condition()


UNSAFE_KEYS = ("stale_ticks", "unsafe_plans", "fallback_planner_error", "estop_ticks")


def fault_run(args) -> list[dict]:
    """A 3-robot fleet; robot_1's stack, then the learner, SIGKILLed mid-episode and restarted."""
    import math
    import os

    from ros_run import claimed_domain

    from mbrl_control.core.learning import ReplayBuffer
    from mbrl_control.graph import fleet_graph
    from mbrl_control.launcher import Launch, default_environment

    work = args.out / "faults"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / "overrides.yaml").write_text(yaml.safe_dump(overrides_for(0) | {
        "episode_manager": {"ros__parameters": {"robot_timeout": 5.0}}}))
    launch_args = {"robots": "3", "episodes": "7", "episode_length": "5", "output_dir": str(work),
                   "overrides": str(work / "overrides.yaml")}
    controllers = [f"robot_{i}/mpc_controller" for i in range(3)]
    stack = ("robot_1/sim", "robot_1/estimator", "robot_1/mpc_controller")
    rows = []
    with claimed_domain() as domain:
        env = default_environment() | {"ROS_DOMAIN_ID": str(domain), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
        watch = FleetWatch(domain)
        launch = Launch(fleet_graph(launch_args), log_dir=work / "logs", env=env, output=open(os.devnull, "w"))
        try:
            watch.wait(lambda: all(watch.number(c, "model_version") >= 1 for c in controllers), 900)

            def others_tick(names: list[str], more: int = 150) -> tuple[bool, dict]:
                """The named controllers tick on, with no unsafe tick of any kind meanwhile."""
                before = {c: {k: watch.number(c, k) for k in ("ticks", *UNSAFE_KEYS)} for c in names}
                went_on = watch.wait(lambda: all(watch.number(c, "ticks") >= before[c]["ticks"] + more for c in names), 300)
                unsafe = {c: {k: watch.number(c, k) - before[c][k] for k in UNSAFE_KEYS
                              if watch.number(c, k) - before[c][k] > 0} for c in names}
                return went_on, {c: u for c, u in unsafe.items() if u}

            # 1. robot_1's stack killed mid-episode.
            killed_in = watch.number(controllers[0], "episode")
            for name in stack:
                launch.kill(name)
            survived, unsafe = others_tick([controllers[0], controllers[2]])
            newest = watch.number("learner", "model_version")
            watch.forget(controllers[1])
            for name in stack:
                launch.restart(name)
            back = watch.wait(lambda: controllers[1] in watch.first, 300)
            first_version = float(watch.first.get(controllers[1], {}).get("model_version", "nan"))
            rows.append({"fault": "robot_1 stack SIGKILL", "survived": survived and not unsafe, "unsafe": unsafe,
                         "newest_model_at_restart": first_version >= newest, "model_at_restart": first_version,
                         "learner_model_then": newest, "killed_in_episode": killed_in, "restarted": back})

            # 2. the learner killed mid-episode.
            acknowledged = watch.number("learner", "synced_seq")
            rounds_before = watch.number("learner", "rounds")
            version_before = watch.number("learner", "model_version")
            launch.kill("learner")
            survived, unsafe = others_tick(controllers)
            buffer = ReplayBuffer(4, 1, work / "learner" / "replay")
            on_disk = buffer.snapshot()
            buffer.close()
            watch.forget("learner")
            launch.restart("learner")
            reloaded = watch.wait(lambda: watch.number("learner", "reloaded_transitions") >= len(on_disk), 300)
            trained = watch.wait(lambda: watch.number("learner", "rounds") >= 1, 900)
            rows.append({"fault": "learner SIGKILL", "survived": survived and not unsafe, "unsafe": unsafe,
                         "acknowledged_before_kill": acknowledged, "on_disk_after_kill": len(on_disk),
                         "data_lost": max(0.0, acknowledged - len(on_disk)) if not math.isnan(acknowledged) else None,
                         "reloaded": watch.number("learner", "reloaded_transitions"),
                         "resumed_model_version": watch.number("learner", "model_version"),
                         "model_version_before": version_before, "rounds_before": rounds_before,
                         "recovered": reloaded and trained})
            code = launch.wait(1800)
            summary = json.loads((work / "learning_curve.json").read_text()) if (work / "learning_curve.json").is_file() else {}
            robot_1 = [r["episode"] for r in summary.get("robots", {}).get("robot_1", {}).get("curve", [])]
            rows[0]["rejoined"] = any(e > killed_in for e in robot_1)  # it ran an episode after the one it was killed in
            rows[0]["robot_1_episodes"] = robot_1
            rows.append({"fault": "(the run)", "exit_code": code, "fleet": summary.get("fleet")})
        finally:
            launch.stop()
            watch.spinning.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,2,4")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=8, help="most episodes per run (it ends once every robot succeeded)")
    parser.add_argument("--episode-length", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=3600.0, help="longest run [s, wall]")
    parser.add_argument("--out", type=Path, default=Path("../runs/bench-fleet"))
    parser.add_argument("--reuse", action="store_true", help="read complete runs already in --out instead of rerunning")
    parser.add_argument("--randomize", choices=("robot", "episode", "none"), default="robot",
                        help="fleet.launch's randomize: each robot drawn once (a fleet of different robots), anew "
                             "every episode, or identical robots")
    parser.add_argument("--estimator", choices=("ekf", "ukf", "none"), default="ekf",
                        help="each robot's estimator (none: its controller reads the sim's exact states)")
    parser.add_argument("--train-on", choices=("episode", "episode_and_count"), default="episode_and_count",
                        help="the learner's train_on: also every --train-every transitions while the robots run "
                             "(models improve within an episode, as realtime robots get them; how many arrive per "
                             "episode then depends on this machine's speed), or a round per fleet episode only "
                             "(the paused sims wait for it; deterministic)")
    parser.add_argument("--train-every", type=int, default=500, help="transitions between rounds within an episode")
    parser.add_argument("--controller", action="append", default=[], metavar="NAME=VALUE",
                        help="a controller parameter for every robot (repeatable), e.g. cem.settled_std=0.0")
    parser.add_argument("--learner", action="append", default=[], metavar="NAME=VALUE",
                        help="a learner parameter (repeatable), e.g. trainer.min_improvement=0.001")
    parser.add_argument("--faults", action="store_true", help="also the fault rows: a robot's stack and the learner killed")
    args = parser.parse_args()
    args.controller = dict(parameter_value(item) for item in args.controller)
    args.learner = dict(parameter_value(item) for item in args.learner)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    results, rows = {}, []
    runs_bar = progress_bar(total=len(sizes) * args.seeds, desc="runs", unit="run")
    for size in sizes:
        per_seed = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            summary = fleet_run(size, seed, args)
            fleet = summary.get("fleet", {})
            per_seed.append(summary)
            runs_bar.update(1)
            note(f"{size} robots, seed {seed}: episodes per robot to success {fleet.get('episodes_per_robot_to_success')}, "
                 f"robot time {fleet.get('robot_time_s')} s, wall {fleet.get('wall_s')} s, exit {summary.get('exit_code')}")
            if summary.get("robots"):
                from mbrl_control.report import plot_learning_curve

                plot_learning_curve([r for r in summary["robots"].values() if r["curve"]],
                                    args.out / f"fleet_{size}_{args.randomize}_seed{seed}.png", list(summary["robots"]))
        fleets = [s.get("fleet", {}) for s in per_seed]
        own = [n for f in fleets for n in f.get("episodes_per_robot_to_success", [])]
        reached = [n for n in own if n is not None]
        times = [f["robot_time_s"] for f in fleets if f.get("robot_time_s") is not None]
        walls = [f["wall_s"] for f in fleets if f.get("wall_s") is not None]
        results[str(size)] = {
            "episodes_per_robot_to_success_median": statistics.median(reached) if reached else None,
            "episodes_per_robot_to_success": [f.get("episodes_per_robot_to_success") for f in fleets],
            "robots_succeeded": len(reached),
            "robots": len(own) if own else size * len(per_seed),
            "robot_time_s": statistics.median(times) if len(times) == len(fleets) else None,
            "robot_time_s_per_seed": [f.get("robot_time_s") for f in fleets],
            "wall_s": statistics.median(walls) if walls else None,
            "wall_s_per_seed": [f.get("wall_s") for f in fleets],
            "exit_codes": [s.get("exit_code") for s in per_seed],
        }
        r = results[str(size)]
        rows.append([size, len(per_seed), f"{r['robots_succeeded']}/{r['robots']}", r["episodes_per_robot_to_success_median"],
                     max(reached) if reached else None, r["robot_time_s"], r["wall_s"]])
    runs_bar.close()
    faults = fault_run(args) if args.faults else []
    if rows:
        print(f"fleet learning: cart-pole swing-up from scratch, lockstep, one learner, randomize:={args.randomize} "
              f"({args.episode_length:g} s episodes, at most {args.episodes})")
        print_table(["robots", "seeds", "robots succeeded", "own episodes to success (median)", "(worst)",
                     "robot time to all succeed [s] (median)", "wall [s] (median)"], rows)
    if faults:
        print("\nfaults during a 3-robot fleet run (lockstep)")
        print_table(["fault", "others kept ticking safely", "data lost", "recovered", "detail"], [
            [f["fault"], f.get("survived"), f.get("data_lost", 0 if "survived" in f else None),
             f.get("recovered", f.get("newest_model_at_restart") and f.get("rejoined")),
             ", ".join(f"{k}={v}" for k, v in f.items() if k not in ("fault", "survived", "recovered", "curve"))]
            for f in faults])
    four = results.get("4")
    emit_json({
        "benchmark": "fleet", "machine": machine(), "episode_length_s": args.episode_length, "max_episodes": args.episodes,
        "randomize": args.randomize, "estimator": args.estimator, "train_on": args.train_on,
        **({"controller": args.controller} if args.controller else {}),
        **({"learner": args.learner} if args.learner else {}),
        **({"train_every": args.train_every} if args.train_on != "episode" else {}),
        "fleet": results,
        **({"faults": faults} if faults else {}),
        **({"target": {"what": "with 4 robots each robot succeeds after <= 2 of its own episodes",
                       "met": four["robots_succeeded"] == four["robots"]
                       and all(n is not None and n <= 2 for f in four["episodes_per_robot_to_success"] for n in f)}}
           if four else {}),
    })


if __name__ == "__main__":
    main()
