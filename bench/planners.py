"""Every planner on the same cart-pole tasks and seeds, and against peer implementations.

Tasks: swing-up from hanging (400 ticks) and balance from a perturbed upright state (300 ticks),
closed loop on the PyBullet-equivalent plant (Euler, 8 substeps, float64), one thread, each tick
with the controller node's deadline (0.8 of the 20 ms period by default). Per planner: tick
p50/p99 over all ticks, success rate over all episodes (``task.success``), mean closed-loop
running cost per step (also per task: LQR cannot swing up, its swing-up cost is the track
barrier's), samples per tick. ``cem@500x1`` is CEM at iCEM's default sample budget; the
``@100x1`` rows compare both at a twenty-fifth of CEM's default budget.

Peers, when importable (install them in a separate venv, e.g. ``.bench-peers/``: mbrl-lib pins
an old hydra-core that fails on Python 3.11, so hydra-core 1.3 goes in after it):
pytorch_mppi's MPPI (same samples, horizon, dynamics function) and mbrl-lib's CEMOptimizer
(same population, horizon, iterations; the objective is our rollout and cost, eager as mbrl-lib
uses a model, and also our compiled evaluator). Prints a table, then one JSON line.

  python bench/planners.py [--seeds 5] [--planners cem,icem,...] [--budget-ms 16] [--peer-ticks 200]
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Callable

import numpy as np
import torch
from common import emit_json, machine, percentiles_ms, print_table

from mbrl_control.core.builders import build_model, build_planner, build_task, robot_params
from mbrl_control.core.dynamics import CartPoleDynamics, DynamicsModel
from mbrl_control.core.episode import run_episode
from mbrl_control.core.planners import Planner
from mbrl_control.core.rollout import TrajectoryEvaluator
from mbrl_control.core.tasks import Task
from mbrl_control.paths import config_dir

DT = 0.02
SWING_UP_TICKS, BALANCE_TICKS = 400, 300
PLANNERS = {  # name: (builder name, config)
    "cem": ("cem", {}),
    "cem@500x1": ("cem", {"iterations": 1}),
    "icem": ("icem", {}),
    # A budget small enough to separate them (one more compiled graph, shared by both).
    "cem@100x1": ("cem", {"population": 100, "elites": 10, "iterations": 1}),
    "icem@100x1": ("icem", {"population": 100, "elites": 10}),
    "mppi": ("mppi", {}),
    "ilqr": ("ilqr", {"horizon": 50}),
    "lqr": ("lqr", {}),
    "nmpc": ("nmpc", {}),
}


def initial_states(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hanging = torch.tensor([0.0, math.pi, 0.0, 0.0]) + 0.1 * torch.randn(4, generator=g)
    upright = (2 * torch.rand(4, generator=g) - 1) * torch.tensor([0.3, 0.2, 0.3, 0.5])
    return {"swing_up": hanging, "balance": upright}


def samples_per_tick(planner: Planner) -> int | None:
    cfg = getattr(planner, "config", None)
    if hasattr(cfg, "population"):
        return sum(getattr(planner, "populations", [cfg.population] * cfg.iterations))
    if hasattr(cfg, "samples"):
        return cfg.samples * cfg.iterations
    return None


def run_planner(
    name: str, model: DynamicsModel, task: Task, plant: DynamicsModel, seeds: int, budget_s: float | None
) -> dict:
    kind, config = PLANNERS[name]
    planner = build_planner(kind, model, task, dict(config, seed=0), compile=True)
    planner.plan(torch.zeros(task.state_dim))  # compile and warm up outside the timing
    ticks, outcome, costs, misses = [], {"swing_up": [], "balance": []}, {"swing_up": [], "balance": []}, 0
    for seed in range(seeds):
        for task_name, x0 in initial_states(seed).items():
            steps = SWING_UP_TICKS if task_name == "swing_up" else BALANCE_TICKS
            ep = run_episode(planner, plant, x0, steps=steps, budget_s=budget_s)
            ticks.append(ep.tick_s)
            outcome[task_name].append(task.success(ep.states, ep.times))
            states = torch.from_numpy(ep.states[:-1]).float().unsqueeze(0)
            actions = torch.from_numpy(ep.actions).float().unsqueeze(0)
            costs[task_name].append(float(task.running_cost(states, actions)) / steps)
            misses += int(np.sum(ep.tick_s > budget_s)) if budget_s else 0
    p50, p99 = percentiles_ms(np.concatenate(ticks))
    successes = outcome["swing_up"] + outcome["balance"]
    return {
        "tick_ms_p50": round(p50, 3),
        "tick_ms_p99": round(p99, 3),
        "success_rate": round(float(np.mean(successes)), 3),
        "swing_up_success": round(float(np.mean(outcome["swing_up"])), 3),
        "balance_success": round(float(np.mean(outcome["balance"])), 3),
        "mean_cost": round(float(np.mean(costs["swing_up"] + costs["balance"])), 4),
        "mean_cost_swing_up": round(float(np.mean(costs["swing_up"])), 4),
        "mean_cost_balance": round(float(np.mean(costs["balance"])), 4),
        "samples_per_tick": samples_per_tick(planner),
        "ticks_over_budget": misses,
        "horizon": planner.horizon,
    }


def closed_loop_ticks(act: Callable[[torch.Tensor], torch.Tensor], plant: DynamicsModel, ticks: int) -> np.ndarray:
    """Tick durations of ``act(x[nx]) -> u[nu]`` controlling the plant from hanging."""
    x = torch.tensor([[0.0, math.pi - 0.1, 0.0, 0.0]], dtype=torch.float64)
    durations = []
    for _ in range(ticks):
        start = time.perf_counter()
        u = act(x[0].float())
        durations.append(time.perf_counter() - start)
        x = plant.step(x, u.reshape(1, -1).double())
    return np.array(durations[3:])


def time_pytorch_mppi(model: DynamicsModel, task: Task, plant: DynamicsModel, ticks: int) -> dict | None:
    try:
        from pytorch_mppi import MPPI
    except ImportError:
        return None
    from mbrl_control.core.planners import MPPIConfig

    cfg = MPPIConfig()
    w = task.weights
    half_range = float(task.action_high[0])
    controller = MPPI(
        lambda x, u: model.step(x, u),
        lambda x, u: task.state_cost(x) + w.action * (u * u).sum(-1),
        task.state_dim,
        noise_sigma=torch.eye(task.action_dim) * (cfg.noise_std * half_range) ** 2,
        num_samples=cfg.samples,
        horizon=cfg.horizon,
        lambda_=cfg.temperature,
        u_min=task.action_low,
        u_max=task.action_high,
        terminal_state_cost=lambda states, actions: task.terminal_cost(states[..., -1, :]),
    )
    p50, p99 = percentiles_ms(closed_loop_ticks(controller.command, plant, ticks))
    return {"tick_ms_p50": round(p50, 3), "tick_ms_p99": round(p99, 3), "samples": cfg.samples, "horizon": cfg.horizon}


def time_mbrl_cem(model: DynamicsModel, task: Task, plant: DynamicsModel, ticks: int, compiled: bool) -> dict | None:
    try:
        from mbrl.planning import CEMOptimizer
    except ImportError:
        return None
    from mbrl_control.core.planners import CEMConfig

    cfg = CEMConfig()
    optimizer = CEMOptimizer(
        num_iterations=cfg.iterations,
        elite_ratio=cfg.elites / cfg.population,
        population_size=cfg.population,
        lower_bound=[task.action_low.tolist()] * cfg.horizon,
        upper_bound=[task.action_high.tolist()] * cfg.horizon,
        alpha=cfg.momentum,
        device=torch.device("cpu"),
    )
    evaluator = TrajectoryEvaluator(model, task, compile=compiled)
    mean = torch.zeros(cfg.horizon, task.action_dim)

    def act(x: torch.Tensor) -> torch.Tensor:
        plan = optimizer.optimize(lambda population: -evaluator(x, population)[0], x0=mean)
        mean[:-1], mean[-1] = plan[1:].clone(), plan[-1]
        return plan[0]

    act(torch.zeros(task.state_dim))  # compile outside the timing
    p50, p99 = percentiles_ms(closed_loop_ticks(act, plant, ticks))
    return {"tick_ms_p50": round(p50, 3), "tick_ms_p99": round(p99, 3), "population": cfg.population,
            "iterations": cfg.iterations, "horizon": cfg.horizon, "objective": "compiled" if compiled else "eager"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--planners", default=",".join(PLANNERS))
    parser.add_argument("--budget-ms", type=float, default=16.0, help="per-tick deadline; 0 for none")
    parser.add_argument("--peer-ticks", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    params = robot_params("cartpole", config_dir() / "urdf" / "cartpole.urdf")
    model, task = build_model(params, DT), build_task(params)
    plant = CartPoleDynamics(params, DT, substeps=8, integrator="euler").double()
    budget_s = args.budget_ms * 1e-3 if args.budget_ms > 0 else None

    results = {}
    for name in args.planners.split(","):
        results[name] = run_planner(name, model, task, plant, args.seeds, budget_s)
        print(f"  {name}: {results[name]}", flush=True)
    print(f"\nPlanners on the cart-pole: {args.seeds} seeds x (swing-up {SWING_UP_TICKS} + balance "
          f"{BALANCE_TICKS} ticks), deadline {args.budget_ms} ms, 1 thread")
    headers = ["planner", "horizon", "samples/tick", "p50 ms", "p99 ms", "swing-up", "balance",
               "cost swing-up", "cost balance", "over budget"]
    print_table(headers, [[n, r["horizon"], r["samples_per_tick"] or "-", r["tick_ms_p50"], r["tick_ms_p99"],
                           r["swing_up_success"], r["balance_success"], r["mean_cost_swing_up"],
                           r["mean_cost_balance"], r["ticks_over_budget"]]
                          for n, r in results.items()])

    peers = {
        "pytorch_mppi": time_pytorch_mppi(model, task, plant, args.peer_ticks),
        "mbrl_cem_eager_objective": time_mbrl_cem(model, task, plant, args.peer_ticks, compiled=False),
        "mbrl_cem_compiled_objective": time_mbrl_cem(model, task, plant, args.peer_ticks, compiled=True),
    }
    ours = {"pytorch_mppi": "mppi", "mbrl_cem_eager_objective": "cem", "mbrl_cem_compiled_objective": "cem"}
    print("\nPeers (closed loop from hanging, same budgets and dynamics):")
    rows = []
    for peer, figures in peers.items():
        mine = results.get(ours[peer])
        if figures is None:
            rows.append([peer, "-", "-", "not installed: skipped"])
            continue
        if mine is not None:
            figures["speedup_p50"] = round(figures["tick_ms_p50"] / mine["tick_ms_p50"], 2)
        rows.append([peer, figures["tick_ms_p50"], figures["tick_ms_p99"],
                     f"ours ({ours[peer]}) is {figures.get('speedup_p50', '?')}x faster at p50"])
    print_table(["peer", "p50 ms", "p99 ms", "note"], rows)

    def met(test: Callable[[], bool]) -> bool | None:
        """The target's verdict; None when a planner or peer it needs was not run."""
        try:
            return bool(test())
        except (KeyError, TypeError):
            return None

    icem, cem = results.get("icem"), results.get("cem")
    targets = {
        "icem_cem_success_with_third_of_samples": met(lambda: icem["success_rate"] >= cem["success_rate"]
                                                      and icem["samples_per_tick"] * 3 <= cem["samples_per_tick"]),
        "mppi_3x_faster_than_pytorch_mppi": met(lambda: peers["pytorch_mppi"]["speedup_p50"] >= 3.0),
        "cem_10x_faster_than_mbrl_lib": met(lambda: peers["mbrl_cem_eager_objective"]["speedup_p50"] >= 10.0),
        "ilqr_h50_p99_le_2ms": met(lambda: results["ilqr"]["tick_ms_p99"] <= 2.0),
        "nmpc_p99_ms": results.get("nmpc", {}).get("tick_ms_p99"),
    }
    print("\nTargets:", targets)
    emit_json({"benchmark": "planners", "machine": machine(),
               "settings": {"seeds": args.seeds, "swing_up_ticks": SWING_UP_TICKS, "balance_ticks": BALANCE_TICKS,
                            "budget_ms": args.budget_ms, "dt": DT, "configs": {n: PLANNERS[n] for n in results}},
               "planners": results, "peers": peers, "targets": targets})


if __name__ == "__main__":
    main()
