"""A model the URDF does not quite describe: the robot carries what its URDF does not know (the
cart-pole's pole 30 % heavier; the iiwa with 2 kg at the flange), and the controller plans on

- ``analytic``: the URDF model alone (what a stack without learning does);
- ``learned``: a learned ensemble from scratch (PETS; the URDF thrown away);
- ``residual``: the URDF model plus a learned ensemble of its residual (``model:=residual``);
- ``analytic_offset``: the URDF model with offset-free MPC, an effort added to every command and
  estimated from the one-step errors (``model_offset.kind: effort``), no learning,

through the nodes (learn.launch.py, lockstep), per episode the task's success and its error at the
end (the pole's angle from upright; the hand's distance to that episode's goal, a new seeded goal
each episode). ``analytic (no payload)`` is the same controller on the robot its URDF describes: how
much the payload costs the URDF model. ``--randomize`` adds ``residual + DR``: the payload drawn anew
every episode around the nominal one (domain randomization of the payload).

  PYTHONPATH=.:bench python bench/transfer.py [--robots cartpole,iiwa] [--seeds 3] [--episodes 6]
                                              [--models analytic,learned,residual] [--randomize] [--reuse]

Not part of the tests (an hour or more). Prints a table per robot, then one JSON line:
``{"transfer": {"<robot>": {"<model>": {"episodes_to_success": [per seed, null if never],
"final_error": [per seed], ...}}}}``.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from common import emit_json, machine, print_table
from learning_curve import finished_run, overrides_for
from ros_run import EpisodeProgress, run_graph

from mbrl_control.progress import note, progress_bar


@dataclass(frozen=True)
class Case:
    """A robot with something its URDF does not know."""

    what: str
    task: str
    launch: dict[str, str]  # learn.launch arguments that put the payload on the robot
    randomized: dict  # --randomize: parameter overrides that draw the payload anew each episode
    episode_length: float
    error_unit: str
    extra: dict = field(default_factory=dict)  # parameter overrides for every run of this robot
    # --estimate-disturbance: the estimator's settings instead, an unknown effort estimated with the state
    disturbance: dict = field(default_factory=dict)


CASES = {
    "cartpole": Case("the pole 30 % heavier (mass and inertia)", "swing-up from hanging, then balance",
                     {"payload_scale": "1.3"},
                     {"sim": {"randomize": {"enabled": True, "mass_scale": [1.1, 1.5], "length_scale": [1.0, 1.0],
                                            "joint_damping": [0.0, 0.0], "motor_gain": [1.0, 1.0]}},
                      "__launch__": {"payload_scale": "1.0"}},
                     10.0, "rad"),
    # The estimator is told its URDF model may be wrong (process noise 30 rad/s^2/sqrt(Hz), not the
    # nominal 2): at 2 it trusts the model, its velocities absorb a payload's error only through the
    # Kalman gain, and a residual learned from them is not the robot's (README, "A model that is
    # almost right"). Every row runs with the same estimator.
    "iiwa": Case("2 kg at the flange", "reach a new seeded goal within 2 cm in 5 s", {"payload": "2.0"},
                 {"sim": {"randomize": {"enabled": True, "payload_mass": [1.0, 3.0], "mass_scale": [1.0, 1.0],
                                        "length_scale": [1.0, 1.0], "joint_damping": [0.0, 0.0],
                                        "motor_gain": [1.0, 1.0]}},
                  "__launch__": {"payload": "0.0"}},
                 5.0, "m", {"estimator": {"estimator": {"accel_noise_density": [30.0]}}},
                 # The nominal process noise, and the payload's pull estimated as an effort per joint
                 # (a random walk of 100 N^2 m^2/s, 10 N m prior; joint 7's inertia is a hundredth of
                 # the others', and a flange load on its axis turns it little: 0.1 and 0.3 N m, or its
                 # velocity doubt alone passes the stale limit). bench/estimation.py --payload 2
                 # --disturbance-density measures it (README, "A model that is almost right").
                 {"estimator": {"estimator": {"effort_disturbance_density": [100.0] * 6 + [0.1],
                                              "initial_disturbance_std": [10.0] * 6 + [0.3]}}}),
}
MODELS = ("analytic", "learned", "residual", "analytic_offset")
# Offset-free MPC on the URDF model, no learning: an effort added to every command, estimated from
# the one-step errors (mpc_controller.model_offset, core/estimation/model_offset.py).
EFFORT_OFFSET = {"model_offset": {"kind": "effort", "time_constant": 0.2}}


def run_one(robot: str, model: str, seed: int, args, out: Path) -> dict:
    case = CASES[robot]
    overrides = overrides_for("baseline", seed)  # every seed of the run, the goals' included
    for node, values in (case.disturbance if args.estimate_disturbance else case.extra).items():
        overrides.setdefault(node, {"ros__parameters": {}})["ros__parameters"].update(values)
    launch = {"robot": robot, "episodes": str(args.episodes), "episode_length": f"{case.episode_length:g}",
              "mode": "lockstep", "wait_for_model": "true"}
    if model == "analytic_nominal":
        launch |= {"model": "analytic"}
    elif model == "analytic_offset":
        launch |= {"model": "analytic"} | case.launch
        overrides.setdefault("mpc_controller", {"ros__parameters": {}})["ros__parameters"].update(EFFORT_OFFSET)
    elif model == "residual_dr":
        launch |= {"model": "residual"} | case.launch | case.randomized["__launch__"] | {"randomize": "true"}
        for node, values in case.randomized.items():
            if node != "__launch__":
                overrides.setdefault(node, {"ros__parameters": {}})["ros__parameters"].setdefault(
                    "randomize", {}).update(values["randomize"])
    else:
        launch |= {"model": model} | case.launch
    work = out / f"{robot}-{model}{'-disturbance' if args.estimate_disturbance else ''}-seed{seed}"
    summary = finished_run(work, overrides, args.episodes, case.episode_length) if args.reuse else None
    if summary is None:
        with progress_bar(total=args.episodes, desc=f"{robot} {model} seed {seed}", unit="episode", leave=False) as bar:
            summary = run_graph(launch, overrides, timeout=7200, graph="learn", keep_dir=work,
                                output=EpisodeProgress(bar))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--robots", default="cartpole,iiwa")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--randomize", action="store_true", help="also residual with the payload randomized per episode")
    parser.add_argument("--no-nominal", action="store_true", help="skip analytic on the robot without the payload")
    parser.add_argument("--estimate-disturbance", action="store_true",
                        help="every row's estimator estimates an unknown effort with the state (Case.disturbance) "
                             "instead of a larger process noise")
    parser.add_argument("--out", type=Path, default=Path("../runs/bench-transfer"))
    parser.add_argument("--reuse", action="store_true", help="read complete runs already in --out instead of rerunning")
    args = parser.parse_args()
    robots = args.robots.split(",")
    models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(robots) - set(CASES)) + sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"unknown robots or models {unknown}; robots {sorted(CASES)}, models {MODELS}")
    rows_of = (["analytic_nominal"] if not args.no_nominal else []) + models + (["residual_dr"] if args.randomize else [])
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    results: dict[str, dict] = {}
    for robot in robots:
        case = CASES[robot]
        results[robot] = {}
        table = []
        for model in rows_of:
            runs = []
            for seed in seeds:
                summary = run_one(robot, model, seed, args, args.out)
                runs.append(summary)
                note(f"{robot} {model} seed {seed}: episodes to success {summary.get('episodes_to_success')}")
            curves = [r.get("curve", []) for r in runs]
            success = [[bool(e["success"]) for e in c] for c in curves]
            errors = [[e.get("final_error") for e in c] for c in curves]
            reached = [r.get("episodes_to_success") for r in runs]
            results[robot][model] = {
                "episodes_to_success": reached,
                "final_error": [e[-1] if e else None for e in errors],
                "success_per_episode": success,
                "final_error_per_episode": errors,
                "successes": sum(map(sum, success)),
                "episodes": sum(map(len, success)),
                "wall_s": [c[-1]["wall_s"] if c else None for c in curves],
            }
            finals = [e[-1] for e in errors if e and e[-1] is not None]
            for seed, ok, err in zip(seeds, success, errors):
                table.append([model, seed, "".join("+" if s else "." for s in ok),
                              " ".join(f"{e:.3f}" if e is not None else "-" for e in err)])
            table.append([model, "all", f"{results[robot][model]['successes']}/{results[robot][model]['episodes']}",
                          f"median final {statistics.median(finals):.4f}" if finals else "-"])
        print(f"\n{robot}: {case.what}; task: {case.task}; {args.episodes} episodes of {case.episode_length:g} s, "
              f"lockstep; per episode success (+) and the error at its end [{case.error_unit}]")
        print_table(["model", "seed", "success by episode", "final error by episode"], table)
    emit_json({"benchmark": "transfer", "machine": machine(), "episodes": args.episodes, "seeds": list(seeds),
               "estimate_disturbance": args.estimate_disturbance,
               "cases": {r: {"what": CASES[r].what, "task": CASES[r].task} for r in robots}, "transfer": results})


if __name__ == "__main__":
    main()
