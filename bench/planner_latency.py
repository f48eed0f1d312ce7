"""Planner tick latency on the cart-pole: CEM at several budgets (population, horizon, iterations).

Each budget runs closed-loop swing-ups (the states a real run visits), >= 200 ticks, one thread,
and reports tick p50/p99. Prints a table, then one JSON line with the figures.

  python bench/planner_latency.py [--ticks 300] [--eager]
"""

from __future__ import annotations

import argparse
import math

import torch

from common import emit_json, machine, percentiles_ms, print_table
from mbrl_control.core.builders import build_model, build_planner, build_task, robot_params
from mbrl_control.core.dynamics import CartPoleDynamics
from mbrl_control.core.episode import run_episode
from mbrl_control.paths import config_dir

DT = 0.02
BUDGETS = [  # (population, horizon, iterations)
    (100, 30, 5),
    (250, 30, 5),
    (500, 30, 5),  # the default, and the target: p99 <= 5 ms
    (1000, 30, 5),
    (500, 30, 10),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ticks", type=int, default=300)
    parser.add_argument("--eager", action="store_true", help="also time the default budget without torch.compile")
    args = parser.parse_args()
    torch.set_num_threads(1)
    params = robot_params("cartpole", config_dir() / "urdf" / "cartpole.urdf")
    model, task = build_model(params, DT), build_task(params)
    plant = CartPoleDynamics(params, DT, substeps=8, integrator="euler").double()
    x0 = torch.tensor([0.0, math.pi, 0.0, 0.0])
    runs = [(b, True) for b in BUDGETS] + ([(BUDGETS[2], False)] if args.eager else [])
    rows, figures = [], []
    for (pop, horizon, iters), compiled in runs:
        config = {"population": pop, "elites": max(2, pop // 10), "horizon": horizon, "iterations": iters}
        planner = build_planner("cem", model, task, config, compile=compiled)
        planner.plan(x0)  # compile and warm up outside the timing
        ticks = args.ticks if compiled else min(args.ticks, 200)
        episode = run_episode(planner, plant, x0, steps=ticks)
        p50, p99 = percentiles_ms(episode.tick_s)
        ok = task.success(episode.states, episode.times) if ticks * DT > task.success_window else None
        name = "cem" + ("" if compiled else " (eager)")
        rows.append([name, pop, horizon, iters, ticks, p50, p99, ok])
        figures.append({"planner": name, "population": pop, "horizon": horizon, "iterations": iters,
                        "ticks": ticks, "tick_ms_p50": round(p50, 3), "tick_ms_p99": round(p99, 3), "success": ok})
    print("CEM tick latency, cart-pole swing-up closed loop, 1 thread")
    print_table(["planner", "population", "horizon", "iterations", "ticks", "p50 ms", "p99 ms", "success"], rows)
    default = next(f for f in figures if (f["population"], f["horizon"], f["iterations"]) == BUDGETS[2])
    emit_json({"benchmark": "planner_latency", "machine": machine(), "results": figures,
               "target": {"cem_500x30x5_p99_ms": 5.0, "measured": default["tick_ms_p99"],
                          "met": default["tick_ms_p99"] <= 5.0}})


if __name__ == "__main__":
    main()
