"""The core on a GPU: latency of the issue's budgets, training throughput, equality with the CPU.

A prepared, self-contained check for a machine with a GPU: it runs the pure core from this
source tree (no install, no ROS, no network; needs torch and numpy; scipy and safetensors are
optional: their modules are stubbed if missing, as no path timed here calls them). Figures:

- analytic CEM 500 x 30 x 5 (rk4 cart-pole), closed-loop ticks: p50/p99 (target p99 <= 0.5 ms);
- the PETS paper's default budget: a 5 x 200 x 4 ensemble, CEM with 350 sequences x 20
  particles = 7 000 TS1 rollouts, horizon 15, 5 iterations: tick p50/p99 (target p99 <= 5 ms;
  untrained weights: latency only);
- ensemble training throughput (transitions per second, 5 x 64 x 3 and 5 x 200 x 4), on the
  device and on this machine's CPU;
- equality with the CPU up to float tolerance: the same rollouts (analytic; ensemble TS1, whose
  member draws come from a CPU generator on every device), the same first CEM action, and
  weights after the same training.

Each check reports its own error instead of ending the run. On a CPU (``--device cpu``, or no
GPU) it runs small sizes (a smoke run for CI): the figures then say nothing about targets.
Prints a table, then one JSON line.

  python bench/gpu_check.py [--device auto|cuda|cpu] [--ticks 300] [--full]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import sys
import time
import traceback
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def stub_missing(*names: str) -> list[str]:
    """Stand-ins for optional modules that are not installed: importing works, using fails."""

    class Missing(types.ModuleType):
        def __getattr__(self, attr: str):
            if attr.startswith("__"):
                raise AttributeError(attr)

            def unavailable(*args, **kwargs):
                raise ImportError(f"{self.__name__}.{attr}: not installed on this machine")

            return unavailable

    stubbed = []
    for name in names:
        top = name.split(".")[0]
        if importlib.util.find_spec(top) is None:
            sys.modules[name] = Missing(name)
            stubbed.append(name)
    return stubbed


STUBBED = stub_missing("scipy", "scipy.linalg", "scipy.sparse", "scipy.sparse.linalg", "safetensors",
                       "safetensors.torch")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mbrl_control.core.builders import load_robot  # noqa: E402
from mbrl_control.core.dynamics import CartPoleDynamics, EnsembleConfig, EnsembleDynamics, PropagationConfig  # noqa: E402
from mbrl_control.core.learning import TrainerConfig, Transitions, train_ensemble  # noqa: E402
from mbrl_control.core.planners import CEMConfig, CEMPlanner  # noqa: E402
from mbrl_control.core.rollout import TrajectoryEvaluator  # noqa: E402
from mbrl_control.core.util import resolve_device  # noqa: E402
from mbrl_control_testing.episode import run_episode  # noqa: E402

HANGING = (0.0, math.pi, 0.0, 0.0)
DT = 0.02
TARGETS_MS = {"analytic_cem": 0.5, "pets_budget": 5.0}


def percentiles_ms(seconds) -> tuple[float, float]:
    return float(np.percentile(seconds, 50) * 1e3), float(np.percentile(seconds, 99) * 1e3)


def sizes(full: bool) -> dict:
    if full:
        return {"cem": (500, 30, 5), "pets": dict(members=5, hidden=200, layers=4, population=350, particles=20,
                                                 horizon=15, iterations=5),
                "train": 20000, "train_epochs": 5, "iiwa_cem": (200, 20, 3), "compile_iiwa": True}
    # The CPU smoke test's CEM has the controller's population and horizon: that graph is in the
    # compiler's cache after `mbrl-control warmup` (a smaller one compiled afresh: 22 s).
    return {"cem": (500, 30, 2), "pets": dict(members=5, hidden=16, layers=2, population=20, particles=4, horizon=5,
                                            iterations=2),
            "train": 1000, "train_epochs": 2, "iiwa_cem": (20, 4, 1), "compile_iiwa": False}


def analytic() -> tuple:
    """A fresh cart-pole model and task (a planner moves them to its device)."""
    robot = load_robot("cartpole")
    return robot.model, robot.task


def cartpole():
    params = load_robot("cartpole").model.params
    plant = CartPoleDynamics(params, DT, substeps=8, integrator="euler").double()  # the sim's physics, on the CPU
    return params, plant


def tick_figures(planner, plant, ticks: int) -> dict:
    x0 = torch.tensor(HANGING)
    start = time.perf_counter()
    planner.plan(x0)  # compile (and capture) outside the timing
    planner.plan(x0)
    compile_s = time.perf_counter() - start
    episode = run_episode(planner, plant, x0, steps=ticks)
    p50, p99 = percentiles_ms(episode.tick_s)
    return {"ticks": ticks, "tick_ms_p50": round(p50, 4), "tick_ms_p99": round(p99, 4), "compile_s": round(compile_s, 1),
            "compiled": planner.evaluator._fn is not planner.evaluator._evaluate, "episode": episode}


def check_analytic_cem(device, s, ticks) -> dict:
    params, plant = cartpole()
    pop, horizon, iters = s["cem"]
    robot = load_robot("cartpole")
    model, task = robot.model, robot.task
    planner = CEMPlanner(TrajectoryEvaluator(model, task, compile=True),
                         CEMConfig(population=pop, elites=max(2, pop // 10), horizon=horizon, iterations=iters),
                         device=device)
    out = tick_figures(planner, plant, ticks)
    episode = out.pop("episode")
    out["success"] = task.success(episode.states, episode.times) if ticks * DT > task.success_config.window else None
    out.update(population=pop, horizon=horizon, iterations=iters)
    return out


def check_pets_budget(device, s, ticks) -> dict:
    params, plant = cartpole()
    p = s["pets"]
    config = EnsembleConfig(state_dim=4, action_dim=1, dt=DT, members=p["members"], hidden=p["hidden"],
                            layers=p["layers"], angle_dims=(1,))
    model = EnsembleDynamics(config, PropagationConfig(mode="ts1"), device=device).freeze()
    task = load_robot("cartpole").task
    evaluator = TrajectoryEvaluator(model, task, compile=True, particles=p["particles"])
    planner = CEMPlanner(evaluator, CEMConfig(population=p["population"], elites=max(2, p["population"] // 10),
                                              horizon=p["horizon"], iterations=p["iterations"]), device=device)
    out = tick_figures(planner, plant, ticks)
    out.pop("episode")
    out.update(p, rollouts=p["population"] * p["particles"])
    return out


def synthetic_transitions(n: int, seed: int = 0) -> Transitions:
    """``n`` one-step transitions of the cart-pole from random states and forces (plus noise)."""
    params, plant = cartpole()
    g = torch.Generator().manual_seed(seed)
    x = torch.tensor([1.0, math.pi, 2.0, 6.0]) * (2 * torch.rand(n, 4, generator=g) - 1)
    u = 20.0 * (2 * torch.rand(n, 1, generator=g) - 1)
    x_next = plant.step(x.double(), u.double()).float() + 0.001 * torch.randn(n, 4, generator=g)
    return Transitions(seq=np.arange(n), state=x.numpy(), action=u.numpy(), next_state=x_next.numpy(),
                       reward=np.zeros(n, np.float32), done=np.zeros(n, bool), stamp=np.arange(n) * DT,
                       episode=np.zeros(n, np.int64))


def training_rate(device, data: Transitions, epochs: int, hidden: int, layers: int) -> dict:
    config = EnsembleConfig(state_dim=4, action_dim=1, dt=DT, hidden=hidden, layers=layers, angle_dims=(1,))
    model = EnsembleDynamics(config, device=device)
    train_ensemble(model, synthetic_transitions(512, seed=9), TrainerConfig(max_epochs=1))  # warm up kernels
    model = EnsembleDynamics(config, device=device)
    result = train_ensemble(model, data, TrainerConfig(max_epochs=epochs, patience=10**6))
    rate = result.epochs * result.train_samples / result.seconds
    return {"device": str(device), "hidden": hidden, "layers": layers, "epochs": result.epochs,
            "train_transitions": result.train_samples, "seconds": round(result.seconds, 2),
            "transitions_per_s": round(rate), "holdout_mse": round(result.holdout.mse, 5)}


def check_training(device, s) -> dict:
    data = synthetic_transitions(s["train"])
    rows = []
    for hidden, layers in ((64, 3), (200, 4)):
        rows.append(training_rate(device, data, s["train_epochs"], hidden, layers))
        if device.type != "cpu":
            rows.append(training_rate(torch.device("cpu"), data, max(1, s["train_epochs"] // 5), hidden, layers))
    return {"rows": rows}


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().cpu().double() - b.detach().cpu().double()).abs().max())


def check_equality(device, s) -> dict:
    """CPU and ``device`` on the same inputs; ``ok`` when within float tolerance."""
    params, _ = cartpole()
    g = torch.Generator().manual_seed(0)
    B, T = 256, 20
    actions = 10 * torch.randn(B, T, 1, generator=g)
    x0 = torch.tensor(HANGING)
    out = {}
    # analytic rollouts and costs
    results = []
    for dev in (torch.device("cpu"), device):
        evaluator = TrajectoryEvaluator(*analytic(), device=dev)
        results.append(evaluator(x0.to(dev), actions.to(dev)))
    out["analytic_rollout_max_abs"] = max(max_difference(a, b) for a, b in zip(*results))
    # ensemble TS1 (member draws from a CPU generator on both), no output noise
    config = EnsembleConfig(state_dim=4, action_dim=1, dt=DT, angle_dims=(1,))
    results = []
    for dev in (torch.device("cpu"), device):
        model = EnsembleDynamics(config, PropagationConfig(mode="ts1", seed=3), device=dev).freeze()
        results.append(TrajectoryEvaluator(model, load_robot("cartpole").task, device=dev)(x0.to(dev), actions.to(dev)))
    out["ensemble_ts1_rollout_max_abs"] = max(max_difference(a, b) for a, b in zip(*results))
    # CEM: the same seed, so the same samples; elites may swap only on float ties. From a
    # swinging state (from rest at hanging, a short horizon's best is doing nothing).
    pop, horizon, iters = s["cem"]
    x_swinging = torch.tensor([0.2, 2.5, 0.5, 3.0])
    plans = []
    for dev in (torch.device("cpu"), device):
        planner = CEMPlanner(TrajectoryEvaluator(*analytic()),
                             CEMConfig(population=pop, elites=max(2, pop // 10), horizon=horizon, iterations=iters),
                             device=dev)
        plans.append(planner.plan(x_swinging))
    out["cem_first_action"] = [float(p.actions[0, 0]) for p in plans]
    out["cem_first_action_abs_diff"] = abs(out["cem_first_action"][0] - out["cem_first_action"][1])
    # training: the same bootstraps and minibatches (CPU generator), no input noise
    data = synthetic_transitions(2000, seed=4)
    weights = []
    for dev in (torch.device("cpu"), device):
        model = EnsembleDynamics(EnsembleConfig(state_dim=4, action_dim=1, dt=DT, hidden=32, layers=2, angle_dims=(1,)),
                                 device=dev)
        train_ensemble(model, data, TrainerConfig(max_epochs=2, patience=10**6))
        weights.append(model.state_dict())
    out["training_weights_max_abs"] = max(max_difference(weights[0][k], weights[1][k]) for k in weights[0])
    out["ok"] = (out["analytic_rollout_max_abs"] <= 1e-3 and out["ensemble_ts1_rollout_max_abs"] <= 1e-3
                 and out["cem_first_action_abs_diff"] <= 0.5 and out["training_weights_max_abs"] <= 1e-2)
    return out


def check_rigid_body(device, s, ticks) -> dict:
    """The 7-DoF iiwa (config/iiwa.yaml's URDF model and reach task): rollouts on the CPU and the
    device agree, and CEM ticks (the config's population and horizon) on the device; compiled
    at the issue's sizes only (its per-step graph takes minutes to compile on a CPU)."""
    x0 = torch.tensor([0.0, 0.6, 0.0, -1.2, 0.0, 0.8, 0.0] + [0.0] * 7)
    g = torch.Generator().manual_seed(0)
    pop, horizon, iters = s["iiwa_cem"]
    actions = 20.0 * torch.randn(pop, horizon, 7, generator=g)
    results = []
    for dev in (torch.device("cpu"), device):
        robot = load_robot("iiwa")
        results.append(TrajectoryEvaluator(robot.model, robot.task, device=dev)(x0.to(dev), actions.to(dev)))
    out = {"rollout_max_abs": max_difference(results[0][1], results[1][1]),
           "cost_max_rel": float(((results[0][0] - results[1][0].cpu()).abs() / results[0][0].abs().clamp_min(1e-6)).max())}
    robot = load_robot("iiwa")
    planner = CEMPlanner(TrajectoryEvaluator(robot.model, robot.task, compile=s["compile_iiwa"]),
                         CEMConfig(population=pop, elites=max(2, pop // 10), horizon=horizon, iterations=iters),
                         device=device)
    start = time.perf_counter()
    planner.plan(x0)
    out["compile_s"] = round(time.perf_counter() - start, 1)
    seconds = []
    for _ in range(min(ticks, 100)):
        t = time.perf_counter()
        planner.plan(x0)
        seconds.append(time.perf_counter() - t)
    p50, p99 = percentiles_ms(seconds)
    out.update(population=pop, horizon=horizon, iterations=iters, tick_ms_p50=round(p50, 3), tick_ms_p99=round(p99, 3))
    return out


def run(name: str, fn, *args) -> dict:
    start = time.perf_counter()
    try:
        result = fn(*args)
    except Exception as exc:  # one failing check must not hide the others' figures
        result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=8)}
        print(f"[{name}] failed:\n{result['traceback']}", file=sys.stderr)
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (cuda if torch sees one), cuda, cuda:1, cpu")
    parser.add_argument("--ticks", type=int, default=300)
    parser.add_argument("--full", action="store_true", help="the issue's sizes on a CPU too (slow)")
    parser.add_argument("--checks", default="analytic_cem,pets_budget,training,equality,rigid_body",
                        help="which checks to run, comma-separated")
    args = parser.parse_args()
    device = resolve_device(args.device)
    full = args.full or device.type == "cuda"
    s = sizes(full)
    ticks = args.ticks if full else min(args.ticks, 20)
    torch.set_num_threads(1)
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    info = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else
            platform.processor() or platform.machine(), "torch": torch.__version__, "python": platform.python_version(),
            "full_sizes": full, "stubbed_modules": STUBBED, "date": time.strftime("%Y-%m-%d"),
            "source": str(Path(sys.modules["mbrl_control"].__file__).parent),
            "ros_modules_loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("rclpy", "launch", "launch_ros"))}
    available = {
        "analytic_cem": (check_analytic_cem, device, s, ticks),
        "pets_budget": (check_pets_budget, device, s, ticks),
        "training": (check_training, device, s),
        "equality": (check_equality, device, s),
        "rigid_body": (check_rigid_body, device, s, ticks),
    }
    chosen = [c for c in args.checks.split(",") if c]
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        parser.error(f"unknown checks {unknown}; known: {list(available)}")
    checks = {name: run(name, *available[name]) for name in chosen}
    print(f"Core on {info['device']} ({info['device_name']}), torch {info['torch']}, "
          f"{'issue sizes' if full else 'small sizes (smoke run)'}")
    rows = []
    for name in ("analytic_cem", "pets_budget"):
        if name not in checks:
            continue
        c = checks[name]
        if "error" in c:
            rows.append([name, "error", "", "", "", c["error"][:60]])
            continue
        target = TARGETS_MS[name] if full else None
        met = None if target is None else c["tick_ms_p99"] <= target
        rows.append([name, c["tick_ms_p50"], c["tick_ms_p99"], target or "", met if met is not None else "",
                     f"compiled={c['compiled']} compile {c['compile_s']} s"])
        c["target_ms"], c["met"] = target, met
    header = f"{'check':<14}{'p50 ms':>10}{'p99 ms':>10}{'target':>8}{'met':>7}  notes"
    print(header)
    for r in rows:
        print(f"{r[0]:<14}{r[1]!s:>10}{r[2]!s:>10}{r[3]!s:>8}{r[4]!s:>7}  {r[5]}")
    for row in checks.get("training", {}).get("rows", []):
        print(f"training {row['device']:<8} {row['hidden']}x{row['layers']}: {row['transitions_per_s']} transitions/s "
              f"({row['epochs']} epochs of {row['train_transitions']} in {row['seconds']} s)")
    eq = checks.get("equality", {"error": "not run"})
    if "error" not in eq:
        print(f"equality with the CPU: ok={eq['ok']} (analytic {eq['analytic_rollout_max_abs']:.2e}, ensemble "
              f"{eq['ensemble_ts1_rollout_max_abs']:.2e}, CEM first action {eq['cem_first_action']}, training "
              f"{eq['training_weights_max_abs']:.2e})")
    rb = checks.get("rigid_body", {"error": "not run"})
    if "error" not in rb:
        print(f"iiwa (rigid body): rollouts CPU vs device max |dx| {rb['rollout_max_abs']:.2e}, cost rel "
              f"{rb['cost_max_rel']:.2e}; CEM {rb['population']} x {rb['horizon']} x {rb['iterations']} tick p50 "
              f"{rb['tick_ms_p50']} / p99 {rb['tick_ms_p99']} ms (compile {rb['compile_s']} s)")
    for c in checks.values():
        c.pop("traceback", None)
    sys.stdout.flush()
    print(json.dumps({"benchmark": "gpu_check", **info, **checks}), flush=True)


if __name__ == "__main__":
    main()
