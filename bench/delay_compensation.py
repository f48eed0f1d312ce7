"""What the estimator's delay compensation buys through the full ROS loop (lockstep): swing-up and
balance with 30 ms of encoder latency, compensation on and off, over a few seeds.

  python bench/delay_compensation.py [--seeds 3] [--latency 0.03] [--duration 10]

Prints a table, then one JSON line."""

from __future__ import annotations

import argparse

import numpy as np
from common import emit_json, machine, print_table
from ros_run import run_graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.03)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    rows, results = [], {}
    for compensation in (True, False):
        runs = []
        for seed in range(args.seeds):
            overrides = {
                "sim": {"ros__parameters": {"seed": seed, "sensor": {"latency": args.latency, "seed": seed}}},
                "estimator": {"ros__parameters": {"estimator": {"delay_compensation": compensation}}},
            }
            runs.append(run_graph({"mode": "lockstep", "duration": str(args.duration)}, overrides))
        ok = [bool(r.get("success")) for r in runs]
        rmse = np.array([r["velocity_rmse"] for r in runs if r.get("velocity_rmse")])
        upright = [r.get("in_tolerance_fraction", 0.0) for r in runs]
        name = "on" if compensation else "off"
        rows.append([name, f"{sum(ok)}/{len(ok)}", float(np.mean(upright)),
                     float(rmse[:, 0].mean()) if len(rmse) else float("nan"),
                     float(rmse[:, 1].mean()) if len(rmse) else float("nan")])
        results[name] = {"successes": sum(ok), "runs": len(ok), "upright_fraction_mean": round(float(np.mean(upright)), 4),
                         "velocity_rmse_mean": rmse.mean(0).round(5).tolist() if len(rmse) else None}
    print(f"Cart-pole swing-up through ROS (lockstep, EKF), {args.latency * 1e3:.0f} ms encoder latency")
    print_table(["delay compensation", "success", "upright fraction", "cart vel RMSE", "pole vel RMSE"], rows)
    emit_json({"benchmark": "delay_compensation", "machine": machine(), "latency_s": args.latency,
               "duration_s": args.duration, "results": results})


if __name__ == "__main__":
    main()
