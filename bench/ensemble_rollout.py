"""The learned ensemble's rollout against the CPU's own matmul speed and against a plain peer.

What bounds planning on the learned model is the rollout: for the 5 x (3 x 64, SiLU) cart-pole
ensemble with TS1, 500 sequences x 30 steps is 1.3 GFLOP of matmuls a CEM iteration. This
script measures, on this machine:

1. the CPU's real matmul throughput (GFLOP/s): a large square GEMM (the peak a library reaches)
   and the rollout's own shape (a [5, 100, 64] x [5, 64, 64] batched matmul), fp32 and bf16, on
   one thread and on two (intra-op);
2. the compiled TS1 rollout of 500 x 30 (and its cost), fp32 and bf16, on one and two threads
   (``TrajectoryEvaluator(threads=2)``: two halves of the batch at once), with the fused AVX-512
   rollout (core/dynamics/ensemble_kernel.cpp) and with torch's batched matmuls: time, GFLOP/s,
   the fraction of the peak (of that dtype and thread count) that is, and ns per sample-step;
3. the peer: a plain batched-matmul ensemble (per step a random permutation, ``baddbmm`` per
   layer, eager), as one writes it for pytorch_mppi's dynamics callback, on one and two threads;
   with pytorch_mppi importable (``make bench-peers``'s venv), its MPPI iteration of the same
   budget on that ensemble as well;
4. CEM 500 x 30 x 5 ticks (TS1) in closed loop: tick p50/p99 (wall, and the planning thread's
   CPU time, which other load does not inflate), on one and two threads, fp32 and bf16;
5. with ``--scale``: tick time against population, horizon and ensemble size (table and a plot,
   ``bench/ensemble_scale.png``).

Timing only: the ensemble's weights are its (seeded) initial ones; planning success on a trained
ensemble is ``bench/icem_budget.py``'s. Prints tables, then one JSON line.

  python bench/ensemble_rollout.py [--quick] [--ticks 300] [--scale] [--skip-cem]
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch
from common import CpuTimedPlanner, emit_json, machine, percentiles_ms, print_table

from mbrl_control.core.builders import load_robot
from mbrl_control.core.dynamics import CartPoleDynamics, EnsembleConfig, EnsembleDynamics, PropagationConfig
from mbrl_control.core.planners import CEMConfig, CEMPlanner
from mbrl_control.core.rollout import TrajectoryEvaluator
from mbrl_control_testing.episode import run_episode

HANGING = torch.tensor([0.0, math.pi, 0.0, 0.0])
ROLLOUT = (500, 30)  # sequences x steps: one CEM iteration of the budget
CEM_BUDGET = (500, 30, 5)  # population, horizon, iterations; target p99 <= 10 ms
TARGET_MS = 10.0


def ensemble_config(dt: float = 0.02, members: int = 5, hidden: int = 64, layers: int = 3) -> EnsembleConfig:
    return EnsembleConfig(state_dim=4, action_dim=1, dt=dt, members=members, hidden=hidden, layers=layers,
                          angle_dims=(1,))


def flops_per_sample_step(config: EnsembleConfig, with_variance: bool = False) -> int:
    """Matmul FLOPs of one particle's step under one member: input layer, hidden layers, mean head."""
    h, out = config.hidden, config.state_dim * (2 if with_variance else 1)
    return 2 * (config.input_dim * h + (config.layers - 1) * h * h + h * out)


def best_seconds(fn, repeats: int, rounds: int = 7) -> float:
    """Fastest mean over ``rounds`` of ``repeats`` calls (wall time): a throughput figure."""
    return best_wall_and_cpu(fn, repeats, rounds)[0]


def best_wall_and_cpu(fn, repeats: int, rounds: int = 7) -> tuple[float, float]:
    """Fastest means over ``rounds`` of ``repeats`` calls: wall time, and the calling thread's CPU
    time (which other processes' load does not inflate; with two threads, the caller's share)."""
    fn()
    wall = cpu = math.inf
    for _ in range(rounds):
        start, start_cpu = time.perf_counter(), time.thread_time()
        for _ in range(repeats):
            fn()
        cpu = min(cpu, (time.thread_time() - start_cpu) / repeats)
        wall = min(wall, (time.perf_counter() - start) / repeats)
    return wall, cpu


def with_threads(threads: int):
    class _Threads:
        def __enter__(self):
            self.before = torch.get_num_threads()
            torch.set_num_threads(threads)

        def __exit__(self, *exc):
            torch.set_num_threads(self.before)

    return _Threads()


def matmul_peaks(quick: bool) -> list[dict]:
    """GFLOP/s of a large GEMM and of the rollout's own batched shape, fp32 and bf16."""
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for threads in (1, 2):
            with with_threads(threads):
                for big in (512,) if quick else (512, 1024, 2048):
                    a, b = torch.randn(big, big, dtype=dtype), torch.randn(big, big, dtype=dtype)
                    s = best_seconds(lambda: torch.mm(a, b), 3 if quick else max(2, 10 * 1024**3 // big**3))
                    rows.append({"shape": f"mm {big}^3", "dtype": str(dtype).removeprefix("torch."),
                                 "threads": threads, "gflops": round(2 * big**3 / s / 1e9, 1)})
                for group in (100, 50):
                    x, w = torch.randn(5, group, 64, dtype=dtype), torch.randn(5, 64, 64, dtype=dtype)
                    s = best_seconds(lambda: torch.bmm(x, w), 50 if quick else 500)
                    rows.append({"shape": f"bmm 5x{group}x64x64", "dtype": str(dtype).removeprefix("torch."),
                                 "threads": threads, "gflops": round(2 * 5 * group * 64 * 64 / s / 1e9, 1),
                                 "us": round(s * 1e6, 2)})
    return rows


def peak(peaks: list[dict], dtype: str, threads: int) -> float:
    """The machine's matmul peak: the best rate any measured shape reached (dtype, threads)."""
    return max(r["gflops"] for r in peaks if r["dtype"] == dtype and r["threads"] == threads)


class BaddbmmEnsemble:
    """The peer: our ensemble's weights, stepped the plain way (eager, per step a random
    permutation into equal member groups, ``baddbmm`` per layer, the inverse permutation back)."""

    def __init__(self, model: EnsembleDynamics) -> None:
        self.model = model
        self.weights = [w.detach().transpose(1, 2).contiguous() for w in model.weights]  # [E, in, out]
        self.biases = [b.detach() for b in model.biases]

    @torch.no_grad()
    def step(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        m, E, nx = self.model, self.model.config.members, self.model.state_dim
        K = x.shape[0]
        perm = torch.randperm(K)
        h = m.features(x[perm], u[perm]).view(E, K // E, -1)
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            h = torch.nn.functional.silu(torch.baddbmm(b, h, w))
        out = torch.baddbmm(self.biases[-1][..., :nx], h, self.weights[-1][..., :nx]).view(K, nx)
        x_next = torch.empty_like(x)
        x_next[perm] = x[perm] + out * m.delta_std + m.delta_mean
        return x_next

    def rollout(self, x0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        x, states = x0, [x0]
        for t in range(actions.shape[1]):
            x = self.step(x, actions[:, t])
            states.append(x)
        return torch.stack(states, dim=1)


def rollout_rows(peaks: list[dict], task, quick: bool) -> list[dict]:
    """Our compiled TS1 rollout (+ cost) per dtype and thread count, and the peer's."""
    B, T = ROLLOUT
    config = ensemble_config()
    flops = flops_per_sample_step(config) * B * T
    actions = (10 * torch.randn(T, 1, B)).permute(2, 0, 1)  # the planners' time-major layout
    rows = []
    repeats = 5 if quick else 30
    variants = [("ours, fused", "float32", 1, True), ("ours, fused", "float32", 2, True),
                ("ours, fused", "bfloat16", 1, True), ("ours, fused", "bfloat16", 2, True),
                ("ours, torch", "float32", 1, True), ("ours, torch", "float32", 2, True),
                ("ours, torch", "bfloat16", 2, True), ("ours, torch (eager)", "float32", 1, False)]
    for name, dtype, threads, compiled in variants:
        kernel = "auto" if "fused" in name else "torch"
        model = EnsembleDynamics(config, PropagationConfig(mode="ts1", dtype=dtype, kernel=kernel)).freeze()
        if kernel == "auto" and model.kernel_unsupported:
            print(f"{name} {dtype}: not on this machine ({model.kernel_unsupported})")
            continue
        evaluator = TrajectoryEvaluator(model, task, compile=compiled, threads=threads)
        start = time.perf_counter()
        with torch.no_grad():
            evaluator(HANGING, actions)
            compile_s = time.perf_counter() - start
            s, cpu = best_wall_and_cpu(lambda: evaluator(HANGING, actions), repeats)
        rows.append(_rollout_row(name, dtype, threads, s, flops, B * T, peaks, compile_s, cpu))
    peer = BaddbmmEnsemble(EnsembleDynamics(config, PropagationConfig(mode="ts1")).freeze())
    x0 = HANGING.expand(B, -1)
    for threads in (1, 2):
        with with_threads(threads):
            s, cpu = best_wall_and_cpu(lambda: task.trajectory_cost(peer.rollout(x0, actions), actions), repeats)
        rows.append(_rollout_row("peer: plain baddbmm ensemble", "float32", threads, s, flops, B * T, peaks, 0.0, cpu))
    mppi = pytorch_mppi_iteration(peer, task, repeats)
    if mppi is not None:
        for threads, s in mppi:
            rows.append(_rollout_row("peer: pytorch_mppi MPPI iteration", "float32", threads, s, flops, B * T, peaks, 0.0))
    return rows


def _rollout_row(name, dtype, threads, seconds, flops, sample_steps, peaks, compile_s, cpu_s=math.nan) -> dict:
    gflops = flops / seconds / 1e9
    return {"rollout": name, "dtype": dtype, "threads": threads, "ms": round(seconds * 1e3, 3),
            "caller_cpu_ms": round(cpu_s * 1e3, 3) if math.isfinite(cpu_s) else None,
            "ns_per_sample_step": round(seconds / sample_steps * 1e9, 1), "gflops": round(gflops, 1),
            "fraction_of_peak": round(gflops / peak(peaks, dtype, threads), 3),
            "compile_s": round(compile_s, 1)}


def pytorch_mppi_iteration(peer: BaddbmmEnsemble, task, repeats: int) -> list[tuple[int, float]] | None:
    """Seconds of one pytorch_mppi ``command`` (one MPPI iteration, 500 x 30) on the peer ensemble."""
    try:
        from pytorch_mppi import MPPI
    except ImportError:
        return None
    B, T = ROLLOUT
    out = []
    for threads in (1, 2):
        with with_threads(threads):
            controller = MPPI(peer.step, lambda x, u: task.state_cost(x) + 1e-4 * (u * u).sum(-1), task.state_dim,
                              noise_sigma=torch.eye(task.action_dim) * 10.0**2, num_samples=B, horizon=T,
                              lambda_=0.3, u_min=task.action_low, u_max=task.action_high)
            out.append((threads, best_seconds(lambda: controller.command(HANGING), max(3, repeats // 3))))
    return out


def cem_tick(task, plant, population: int, horizon: int, iterations: int, ticks: int, threads: int = 1,
             dtype: str = "float32", members: int = 5, kernel: str = "auto") -> dict:
    """Closed-loop CEM ticks on a (seeded, untrained) TS1 ensemble: latency only."""
    model = EnsembleDynamics(ensemble_config(members=members),
                             PropagationConfig(mode="ts1", dtype=dtype, kernel=kernel)).freeze()
    planner = CpuTimedPlanner(CEMPlanner(
        TrajectoryEvaluator(model, task, compile=True, threads=threads),
        CEMConfig(population=population, elites=max(2, population // 10), horizon=horizon, iterations=iterations)))
    start = time.perf_counter()
    planner.plan(HANGING)  # compile outside the timing
    compile_s = time.perf_counter() - start
    planner.cpu_s.clear()
    load = os.getloadavg()[0]
    episode = run_episode(planner, plant, HANGING, steps=ticks)
    p50, p99 = percentiles_ms(episode.tick_s)
    cpu50, cpu99 = percentiles_ms(np.array(planner.cpu_s))
    flops = flops_per_sample_step(model.config) * population * horizon * iterations
    return {"population": population, "horizon": horizon, "iterations": iterations, "members": members,
            "threads": threads, "dtype": dtype, "rollout": "fused" if model.kernel_unsupported is None else "torch", "ticks": ticks, "tick_ms_p50": round(p50, 3),
            "tick_ms_p99": round(p99, 3), "caller_cpu_ms_p50": round(cpu50, 3), "caller_cpu_ms_p99": round(cpu99, 3),
            "gflops_at_p50": round(flops / (p50 * 1e-3) / 1e9, 1), "loadavg_1min": round(max(load, os.getloadavg()[0]), 2),
            "compile_s": round(compile_s, 1)}


def scale_rows(task, plant, ticks: int) -> list[dict]:
    """Tick time against population, horizon and ensemble size around the 500 x 30 x 5 budget."""
    rows = []
    for population in (100, 250, 1000, 2000):
        rows.append(cem_tick(task, plant, population, 30, 5, ticks, threads=2))
    for horizon in (15, 60):
        rows.append(cem_tick(task, plant, 500, horizon, 5, ticks, threads=2))
    for members in (1, 3, 10):
        rows.append(cem_tick(task, plant, 500, 30, 5, ticks, threads=2, members=members))
    return rows


def plot_scale(rows: list[dict], reference: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, key, label in zip(axes, ("population", "horizon", "members"), ("population", "horizon [ticks]", "members")):
        others = [k for k in ("population", "horizon", "members") if k != key]
        points = sorted([r for r in rows + [reference] if all(r[k] == reference[k] for k in others)], key=lambda r: r[key])
        ax.plot([r[key] for r in points], [r["tick_ms_p50"] for r in points], "o-", label="p50")
        ax.plot([r[key] for r in points], [r["tick_ms_p99"] for r in points], "s--", label="p99")
        ax.set_xlabel(label)
        ax.set_ylabel("CEM tick [ms]")
        ax.grid(True, alpha=0.3)
    axes[0].legend()
    fig.suptitle("CEM x 5 iterations on the TS1 ensemble (64 x 3), two threads")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small repeats and ticks (a smoke run)")
    parser.add_argument("--ticks", type=int, default=300)
    parser.add_argument("--skip-cem", action="store_true", help="only the matmul and rollout figures")
    parser.add_argument("--scale", action="store_true", help="also tick time against population, horizon, members")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    ticks = 30 if args.quick else args.ticks
    params = load_robot("cartpole").model.params
    task = load_robot("cartpole").task
    plant = CartPoleDynamics(params, 0.02, substeps=8, integrator="euler").double()

    peaks = matmul_peaks(args.quick)
    print("Matmul throughput of this CPU (best of repeated runs)")
    print_table(["shape", "dtype", "threads", "GFLOP/s", "us"],
                [[r["shape"], r["dtype"], r["threads"], r["gflops"], r.get("us", "")] for r in peaks])

    rollouts = rollout_rows(peaks, task, args.quick)
    print(f"\nTS1 rollout + cost, {ROLLOUT[0]} x {ROLLOUT[1]} on the 5 x 3 x 64 ensemble "
          f"({flops_per_sample_step(ensemble_config()) / 1e3:.1f} kFLOP per sample-step)")
    print_table(["rollout", "dtype", "threads", "ms", "caller cpu ms", "ns/sample-step", "GFLOP/s", "of peak",
                 "compile s"],
                [[r["rollout"], r["dtype"], r["threads"], r["ms"], r["caller_cpu_ms"], r["ns_per_sample_step"],
                  r["gflops"], r["fraction_of_peak"], r["compile_s"]] for r in rollouts])
    ours = min((r for r in rollouts if r["rollout"].startswith("ours")), key=lambda r: r["ns_per_sample_step"])
    peers = [r for r in rollouts if r["rollout"].startswith("peer")]
    best_peer = min(peers, key=lambda r: r["ns_per_sample_step"])
    report: dict = {"benchmark": "ensemble_rollout", "machine": machine(), "matmul": peaks, "rollouts": rollouts,
                    "per_sample_step_vs_peer": {"ours": ours, "peer": best_peer,
                                                "speedup": round(best_peer["ns_per_sample_step"] / ours["ns_per_sample_step"], 2),
                                                "target": 2.0}}
    report["per_sample_step_vs_peer"]["met"] = report["per_sample_step_vs_peer"]["speedup"] >= 2.0

    if not args.skip_cem:
        pop, horizon, iters = CEM_BUDGET
        ticks_rows = [cem_tick(task, plant, pop, horizon, iters, ticks, threads, dtype, kernel=kernel)
                      for kernel in ("auto", "torch") for threads in (1, 2) for dtype in ("float32", "bfloat16")]
        print(f"\nCEM {pop} x {horizon} x {iters} ticks on the TS1 ensemble, closed loop (untrained weights: latency only)")
        print_table(["rollout", "threads", "dtype", "ticks", "p50 ms", "p99 ms", "caller cpu p50", "caller cpu p99", "GFLOP/s",
                     "load", "compile s"],
                    [[r["rollout"], r["threads"], r["dtype"], r["ticks"], r["tick_ms_p50"], r["tick_ms_p99"], r["caller_cpu_ms_p50"],
                      r["caller_cpu_ms_p99"], r["gflops_at_p50"], r["loadavg_1min"], r["compile_s"]] for r in ticks_rows])
        best = min(ticks_rows, key=lambda r: r["tick_ms_p99"])
        report["cem_ticks"] = ticks_rows
        report["target"] = {"cem_500x30x5_ts1_p99_ms": TARGET_MS, "best": {k: best[k] for k in ("rollout", "threads", "dtype")},
                            "measured": best["tick_ms_p99"], "met": best["tick_ms_p99"] <= TARGET_MS}
        if args.scale:
            scale = scale_rows(task, plant, ticks)
            reference = next(r for r in ticks_rows if r["threads"] == 2 and r["dtype"] == "float32")  # the first: fused where it runs
            print("\nScale: CEM tick against population, horizon and ensemble members (two threads, fp32)")
            print_table(["population", "horizon", "members", "p50 ms", "p99 ms", "GFLOP/s"],
                        [[r["population"], r["horizon"], r["members"], r["tick_ms_p50"], r["tick_ms_p99"],
                          r["gflops_at_p50"]] for r in [reference] + scale])
            path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ensemble_scale.png")
            plot_scale(scale, reference, path)
            print(f"plot: {path}")
            report["scale"] = scale
    emit_json(report)


if __name__ == "__main__":
    main()
