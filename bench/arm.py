"""The arm benchmark: a robot with a reach task (config/iiwa.yaml by default, the 7-DoF KUKA iiwa)
reaching seeded goals, per planner, and what the seed's structured offline planning trades.

Core, no ROS (``--core``, the default): each planner closed loop on the PyBullet-equivalent plant
(the rigid-body model from the same URDF, semi-implicit Euler at the sim's 400 Hz in float64: it
reproduces PyBullet's own step to ~1e-14, test/core/test_rigid_body.py), the controller's
configuration (the robot config's ``mpc_controller`` section, compiled as the node runs it) and
its deadline (``deadline_fraction`` of the period). Goals come one after another, ``--period``
seconds each, from where the arm ended the last (as in the demo), drawn as the goal publisher
draws them (seeded, reachable). Per planner:

  goals_reached               the reach point within the task's tolerance (2 cm) at the end of its goal
  ee_error_median_m           median over the goals of that final distance
  tick_ms_p50 / p99           planning time per tick over every tick (the count is printed)
  joint_limit_violations      ticks with a joint past its URDF limit (the true state)
  torque_saturation_fraction  commands with an effort at its limit (per joint and tick)

``--push``: a mid-reach impulse (joint velocities kicked by ``--push-velocity`` rad/s on the
shoulder and elbow halfway through every goal): the reach error at the goal's end and the largest
distance to the goal after the push, per planner. ``ilqr_offline`` plans once per goal and then
only tracks (no replanning): what the push costs it, against iLQR-MPC and CEM, is the trade-off.

``--scaling``: the same arm with 1, 2, ... 7 of its joints moving (the rest held at zero; goals
drawn for that arm), per planner: tick time and goals reached as the action dimension grows (the
seed says sampling scales badly with it).

``--nodes``: the robot through the ROS graph (``mpc.launch.py robot:=...``, sim, estimator,
controller, goal publisher, run monitor), lockstep and realtime, ``--goals`` goals; the run
monitor's summary per mode (goals reached, error, ticks, missed ticks, lateness).

  python bench/arm.py [--robot iiwa] [--planners ilqr,ilqr_offline,cem,icem,mppi] [--goals 20]
                      [--push] [--scaling] [--nodes] [--threads 1]

Prints a table per part, then one JSON line: {"bench": "arm", "planners": {name: {...}}, ...}.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from common import emit_json, latency, machine, print_table

from mbrl_control.core.builders import build_model, build_mpc, load_robot, robot_parameters
from mbrl_control.core.tasks.goals import random_goals

PHYSICS_RATE = 400.0  # the sim's (config: sim.physics_rate)
PUSH_JOINTS = (1, 3)  # shoulder and elbow


def plant_of(robot, physics_rate: float = PHYSICS_RATE):
    """The PyBullet-equivalent plant: the URDF model, semi-implicit Euler at the physics rate, float64."""
    substeps = max(1, round(physics_rate * robot.spec.dt))
    return build_model(robot.spec, robot.spec.dt, integrator="euler", substeps=substeps).double()


def reach_goals(name: str, p: dict, goals: np.ndarray, ticks_per_goal: int, deadline_fraction: float,
                push: float = 0.0, compile: bool = True) -> dict:
    """One planner through every goal, closed loop; ``push`` kicks the velocities mid-goal."""
    mpc = build_mpc(p | {"compile": compile}, name)
    robot, planner, task = mpc.robot, mpc.planner, mpc.task
    spec, plant = robot.spec, plant_of(robot)
    x = torch.tensor(spec.x_eq, dtype=torch.float64)
    planner.plan(x.float())  # compile and warm up outside the timing
    planner.reset()
    budget = deadline_fraction * spec.dt
    ticks, errors, after_push, violations, saturated, commands = [], [], [], 0, 0, 0
    planner_errors: list[str] = []
    limit = spec.effort_limit
    for goal in goals:
        task.set_goal(goal)
        planner.reset()
        worst = 0.0
        for k in range(ticks_per_goal):
            if push and k == ticks_per_goal // 2:
                x = x.clone()
                for j in PUSH_JOINTS:
                    x[spec.nq + j] += push
            start = time.perf_counter()
            try:
                u = planner.plan(x.float(), start + budget).actions[0].double()
            except (FloatingPointError, RuntimeError, ValueError) as exc:
                # As the controller does: the tick gets the robot's safe command (an arm: hold
                # against gravity), the error is counted, the planner starts over next tick.
                planner_errors.append(f"goal {len(errors)}, tick {k}: {type(exc).__name__}: {str(exc)[:120]}")
                planner.reset()
                hold = mpc.model.hold_action(x.float().unsqueeze(0))
                u = hold[0].double() if hold is not None else torch.zeros(len(limit), dtype=torch.float64)
            ticks.append(time.perf_counter() - start)
            u = u.clamp(-torch.tensor(limit), torch.tensor(limit))
            saturated += int((u.abs() >= torch.tensor(limit) * (1 - 1e-6)).sum())
            commands += u.numel()
            task.set_last_command(u.float())
            x = plant.step(x.unsqueeze(0), u.unsqueeze(0))[0]
            q = x[: spec.nq].numpy()
            violations += int(np.any((q < spec.position_lower) | (q > spec.position_upper)))
            if push and k >= ticks_per_goal // 2:
                worst = max(worst, float(task.error(x.numpy()[None], goal)[0]))
        errors.append(float(task.error(x.numpy()[None], goal)[0]))
        after_push.append(worst)
    tick = latency(np.array(ticks))
    errors = np.array(errors)
    out = {
        "goals": len(goals),
        "goals_reached": int(np.sum(errors < task.success_config.tolerance)),
        "ee_error_median_m": round(float(np.median(errors)), 4),
        "tick_ms_p50": tick["p50"], "tick_ms_p99": tick["p99"], "tick_ms_max": tick["max"], "ticks": tick["n"],
        "ticks_over_budget": int(np.sum(np.array(ticks) > budget)),
        "joint_limit_violations": violations,
        "torque_saturation_fraction": round(saturated / max(commands, 1), 4),
        "horizon": planner.horizon,
        "errors_m": [round(float(e), 4) for e in errors],  # per goal, in order
        "planner_errors": len(planner_errors),
        "first_planner_errors": planner_errors[:3],
    }
    if push:
        out |= {"push_rad_s": push, "error_after_push_max_m": round(float(np.max(after_push)), 4),
                "error_after_push_median_m": round(float(np.median(after_push)), 4)}
    return out


def subset_parameters(p: dict, joints: int) -> dict:
    """The robot config with only its first ``joints`` state joints moving (the rest held at zero)."""
    state = list(p["state_joints"])[:joints]
    q = {k: v for k, v in p.items()}
    q["state_joints"] = state
    q["command_joints"] = [j for j in p["command_joints"] if j in state]
    q["equilibrium"] = list(p["equilibrium"])[:joints]
    if p.get("effort_limits"):
        q["effort_limits"] = [e for j, e in zip(p["command_joints"], p["effort_limits"]) if j in state]
    for key in list(q):  # per-joint term settings follow the joints
        if key.startswith("task.") and key.endswith(".scale") and q[key]:
            q[key] = list(q[key])[:joints]
    return q


def run_nodes(robot: str, goals: int, period: float, mode: str, work: str) -> dict:
    from ros_run import run_graph

    overrides = {"goal_publisher": {"ros__parameters": {"count": goals, "period": period, "seed": 0}}}
    summary = run_graph({"robot": robot, "mode": mode, "duration": str(goals * period)}, overrides,
                        timeout=goals * period * 30 + 1200, keep_dir=Path(work) / mode if work else None)
    keys = ("goals", "goals_reached", "ee_error_median_m", "ticks", "missed_ticks", "tick_ms_p50", "tick_ms_p99",
            "lateness_ms_p99", "late_ticks", "command_delta_rms", "success", "exit_code")
    return {k: summary.get(k) for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--robot", default="iiwa")
    parser.add_argument("--planners", default="ilqr,ilqr_offline,cem,icem,mppi")
    parser.add_argument("--goals", type=int, default=20)
    parser.add_argument("--period", type=float, default=3.0, help="robot time per goal [s]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--push", action="store_true", help="also the push experiment")
    parser.add_argument("--push-velocity", type=float, default=1.0, help="[rad/s] added to the shoulder and elbow")
    parser.add_argument("--scaling", action="store_true", help="also 1..7 moving joints")
    parser.add_argument("--scaling-goals", type=int, default=5)
    parser.add_argument("--scaling-planners", default="ilqr,cem,mppi")
    parser.add_argument("--nodes", action="store_true", help="also through the ROS nodes, lockstep and realtime")
    parser.add_argument("--no-core", dest="core", action="store_false", help="skip the core closed loop")
    parser.add_argument("--eager", action="store_true", help="no torch.compile")
    parser.add_argument("--keep", default="", help="keep the node runs' logs here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    p = robot_parameters(args.robot, "mpc_controller")
    robot = load_robot(args.robot)
    ticks_per_goal = round(args.period / robot.spec.dt)
    deadline = float(p.get("deadline_fraction", 0.8))
    goals = random_goals(robot.task, args.goals, args.seed)
    planners = [n for n in args.planners.split(",") if n]
    results: dict = {"bench": "arm", "robot": args.robot, "machine": machine(), "control_hz": 1.0 / robot.spec.dt,
                     "goals": args.goals, "period_s": args.period, "tolerance_m": robot.task.success_config.tolerance,
                     "loadavg_1min": round(os.getloadavg()[0], 2)}
    if args.core:
        rows, figures = [], {}
        for name in planners:
            t0 = time.monotonic()
            figures[name] = r = reach_goals(name, p, goals, ticks_per_goal, deadline, compile=not args.eager)
            print(f"[arm] {name}: {r['goals_reached']}/{r['goals']} in {time.monotonic() - t0:.0f} s", flush=True)
            rows.append([name, f"{r['goals_reached']}/{r['goals']}", r["ee_error_median_m"], r["tick_ms_p50"],
                         r["tick_ms_p99"], r["ticks"], r["ticks_over_budget"], r["joint_limit_violations"],
                         r["torque_saturation_fraction"]])
        print_table(["planner", "goals reached", "error median m", "tick p50 ms", "tick p99 ms", "ticks",
                     "over budget", "limit violations", "saturated"], rows)
        results["planners"] = figures
    if args.push:
        rows, figures = [], {}
        for name in planners:
            figures[name] = r = reach_goals(name, p, goals, ticks_per_goal, deadline, push=args.push_velocity,
                                            compile=not args.eager)
            rows.append([name, f"{r['goals_reached']}/{r['goals']}", r["ee_error_median_m"],
                         r["error_after_push_median_m"], r["error_after_push_max_m"], r["tick_ms_p50"]])
        print()
        print_table(["planner (pushed mid-goal)", "goals reached", "final error median m", "worst after push median m",
                     "worst after push max m", "tick p50 ms"], rows)
        results["push"] = figures
    if args.scaling:
        rows, figures = [], {}
        for joints in range(1, robot.spec.nq + 1):
            q = subset_parameters(p, joints)
            sub = load_robot(args.robot, overrides={k: q[k] for k in ("state_joints", "command_joints", "equilibrium")}
                             | ({"effort_limits": q["effort_limits"]} if "effort_limits" in q else {}))
            sub_goals = random_goals(sub.task, args.scaling_goals, args.seed)
            for name in args.scaling_planners.split(","):
                r = reach_goals(name, q, sub_goals, ticks_per_goal, deadline, compile=not args.eager)
                figures.setdefault(name, {})[joints] = r
                rows.append([joints, name, f"{r['goals_reached']}/{r['goals']}", r["ee_error_median_m"],
                             r["tick_ms_p50"], r["tick_ms_p99"]])
                print(f"[arm] scaling {joints} joints, {name}: {r['goals_reached']}/{r['goals']}", flush=True)
        print()
        print_table(["actions", "planner", "goals reached", "error median m", "tick p50 ms", "tick p99 ms"], rows)
        results["scaling"] = figures
    if args.nodes:
        rows, figures = [], {}
        for mode in ("lockstep", "realtime"):
            figures[mode] = r = run_nodes(args.robot, args.goals, args.period, mode, args.keep)
            rows.append([mode, f"{r['goals_reached']}/{r['goals']}", r["ee_error_median_m"], r["ticks"],
                         r["missed_ticks"], r["tick_ms_p99"], r["lateness_ms_p99"]])
        print()
        print_table(["through the nodes", "goals reached", "error median m", "ticks", "missed", "tick p99 ms",
                     "lateness p99 ms"], rows)
        results["nodes"] = figures
    emit_json(results)


if __name__ == "__main__":
    main()
