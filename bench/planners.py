"""Every planner on the same cart-pole tasks and seeds, and against peer implementations.

Tasks: swing-up from hanging (400 ticks) and balance from a perturbed upright state (300 ticks),
closed loop on the PyBullet-equivalent plant (Euler, 8 substeps, float64), ``--threads`` torch
threads (1 by default), each tick with the controller node's deadline (0.8 of the 20 ms period by
default). Per planner: tick p50/p99 over all its ticks (seeds x 700; the count is in the table),
success rate over all episodes (``task.success``), mean closed-loop running cost per step (also
per task: LQR cannot swing up, its swing-up cost is the track barrier's), samples per tick, and
the command's RMS change per tick over the balance episodes' last 5 s (``command_delta_rms``, as the
run monitor reports it). Each planner runs with config/cartpole.yaml's section for it (as the
controller would: CEM's settled spread and Savitzky-Golay smoothing, shown per row), under the
settings ``PLANNERS`` gives a row.
``cem@500x1`` is CEM at iCEM's default sample budget; the ``@100x1`` rows compare both at a
twenty-fifth of CEM's default budget.

Peers, when importable (``make bench-peers`` installs bench/requirements-peers.txt into a venv of
its own, ``.bench-peers``). Each comparison times ours and every peer row in the same loop: closed
loop from near hanging on the plant, the same budget, the same torch thread count (printed per
row), ``PEER_WARMUP_TICKS`` untimed ticks first (compilation, caches), then ``--peer-ticks`` timed
ticks per row (1000 by default: a p99 from at least 1000 samples). Peer rows are of two uses:

- best effort: the best the peer's API allows. pytorch_mppi with its own ``MPPI.compile()``
  (``torch.compile`` of the dynamics and running cost it calls; the terminal cost we hand it is
  compiled too); mbrl-lib's ``CEMOptimizer`` on our compiled objective (rollout and cost, the
  population copied to the layout it reads fastest); mbrl-lib's PETS agent with ``torch.compile`` on
  the trajectory evaluation function it is given.
- default use: as a user of that library would run it by default. pytorch_mppi on eager
  ``model.step``; ``CEMOptimizer`` on our objective, eager; and PETS as mbrl-lib builds it: a
  ``GaussianMLP`` ensemble in a ``OneDTransitionRewardModel``, a ``ModelEnv``, a
  ``TrajectoryOptimizerAgent`` with its ``CEMOptimizer``, at our learned-model budget (5 members
  x 64 hidden x 3 layers, CEM 500 x 30 x 5, TS1 = mbrl-lib's ``random_model`` propagation, one
  particle per sequence, each step sampled from the member's Gaussian as ``ModelEnv`` does),
  against our CEM on our ensemble at the same budget (TS1 with output noise, to do the same work).
  Both ensembles keep their random initial weights: a tick's time does not depend on them.

Ratios are the peer's tick time over ours (p50 and p99). The headline ("fair") ratio of a
comparison is against the peer at its best (its row with the lowest p50, whichever use); the
default-use ratio is against its default-use row. Prints a table, then one JSON line.

  python bench/planners.py [--seeds 5] [--planners cem,icem,...] [--budget-ms 16] [--threads 1]
                           [--peer-ticks 1000] [--peers mppi,cem,cem_ensemble] [--mbrl-particles 1]
"""

from __future__ import annotations

import argparse
import math
import time
import types
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from common import emit_json, machine, percentiles_ms, print_table

from mbrl_control.core.builders import build_planner, load_robot, robot_parameters
from mbrl_control.core.dynamics import (
    CartPoleDynamics,
    DynamicsModel,
    EnsembleConfig,
    EnsembleDynamics,
    PropagationConfig,
)
from mbrl_control.core.planners import CEMConfig, CEMPlanner, MPPIConfig, Planner
from mbrl_control.core.rollout import TrajectoryEvaluator
from mbrl_control.core.tasks import Task
from mbrl_control.core.util import section
from mbrl_control_testing.episode import run_episode

DT = 0.02
SWING_UP_TICKS, BALANCE_TICKS = 400, 300
COMMAND_WINDOW_TICKS = 250  # command_delta_rms over the last 5 s, as the run monitor reports it
PEER_WARMUP_TICKS = 10  # untimed ticks before each peer row's timing: compilation, first-call caches
NEAR_HANGING = (0.0, math.pi - 0.1, 0.0, 0.0)
TORCH_ACTIVATIONS = {"silu": "torch.nn.SiLU", "relu": "torch.nn.ReLU", "tanh": "torch.nn.Tanh"}  # for mbrl-lib's config
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
    name: str, model: DynamicsModel, task: Task, plant: DynamicsModel, seeds: int, budget_s: float | None,
    configured: dict | None = None,
) -> dict:
    """``configured``: the robot config's section for this planner (what the controller runs),
    under ``PLANNERS``' settings for the row."""
    kind, config = PLANNERS[name]
    planner = build_planner(kind, model, task, dict(configured or {}) | dict(config, seed=0), compile=True)
    planner.plan(torch.zeros(task.state_dim))  # compile and warm up outside the timing
    ticks, outcome, costs, misses = [], {"swing_up": [], "balance": []}, {"swing_up": [], "balance": []}, 0
    deltas: list[np.ndarray] = []
    for seed in range(seeds):
        for task_name, x0 in initial_states(seed).items():
            steps = SWING_UP_TICKS if task_name == "swing_up" else BALANCE_TICKS
            ep = run_episode(planner, plant, x0, steps=steps, budget_s=budget_s, task=task)
            if task_name == "balance":  # held upright: the RMS change per tick over the last 5 s
                deltas.append(np.diff(ep.actions[-COMMAND_WINDOW_TICKS - 1:], axis=0))
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
        "samples_per_tick": samples_per_tick(getattr(planner, "planner", planner)),
        "command_delta_rms": [round(float(v), 3) for v in np.sqrt(np.mean(np.square(np.concatenate(deltas)), axis=0))],
        "smoothing_window": getattr(planner, "window", 0),
        "settled_std": getattr(getattr(getattr(planner, "planner", planner), "config", None), "settled_std", 0.0),
        "ticks": int(sum(len(t) for t in ticks)),
        "threads": torch.get_num_threads(),
        "ticks_over_budget": misses,
        "horizon": planner.horizon,
    }


Act = Callable[[torch.Tensor], torch.Tensor]  # x[nx] -> u[nu] (a tensor or an array)


def closed_loop_ticks(act: Act, plant: DynamicsModel, ticks: int, warmup: int = PEER_WARMUP_TICKS) -> np.ndarray:
    """Durations of ``ticks`` calls of ``act`` controlling the plant from near hanging, after
    ``warmup`` untimed calls on the same trajectory."""
    x = torch.tensor([NEAR_HANGING], dtype=torch.float64)
    durations = []
    for _ in range(warmup + ticks):
        start = time.perf_counter()
        u = act(x[0].float())
        durations.append(time.perf_counter() - start)
        x = plant.step(x, torch.as_tensor(u).reshape(1, -1).double())
    return np.array(durations[warmup:])


def timed_row(act: Act, plant: DynamicsModel, ticks: int) -> dict:
    seconds = closed_loop_ticks(act, plant, ticks)
    p50, p99 = percentiles_ms(seconds)
    return {"tick_ms_p50": round(p50, 3), "tick_ms_p99": round(p99, 3),
            "tick_ms_max": round(float(seconds.max()) * 1e3, 3), "ticks": len(seconds),
            "threads": torch.get_num_threads()}


def planner_act(planner: Planner) -> Act:
    return lambda x: planner.plan(x).actions[0]


def is_compiled(planner: Planner) -> bool:
    """Whether a sampling planner's evaluator compiled (``compile_or_eager`` falls back to eager)."""
    evaluator = planner.evaluator
    return evaluator._fn != evaluator._evaluate


def pytorch_mppi_act(model: DynamicsModel, task: Task, compiled: bool) -> Act | None:
    """pytorch_mppi's MPPI with our MPPI's budget (samples, horizon, temperature, noise), dynamics
    and costs; ``compiled``: its own ``MPPI.compile()`` and a compiled terminal cost."""
    try:
        from pytorch_mppi import MPPI
    except ImportError:
        return None
    cfg = MPPIConfig()
    half_range = float(task.action_high[0])

    def running_cost(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return task.running_cost(x.unsqueeze(-2), u.unsqueeze(-2))  # one step of ours, [K]

    def terminal_cost(states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return task.terminal_cost(states[..., -1, :])

    controller = MPPI(
        model.step,
        running_cost,
        task.state_dim,
        noise_sigma=torch.eye(task.action_dim) * (cfg.noise_std * half_range) ** 2,
        num_samples=cfg.samples,
        horizon=cfg.horizon,
        lambda_=cfg.temperature,
        u_min=task.action_low,
        u_max=task.action_high,
        terminal_state_cost=torch.compile(terminal_cost, dynamic=False) if compiled else terminal_cost,
    )
    if compiled:
        controller.compile(dynamic=False)  # the shapes never change; compiled on the first (warm-up) tick
    return controller.command


def mbrl_cem_act(model: DynamicsModel, task: Task, compiled_objective: bool) -> Act | None:
    """mbrl-lib's CEMOptimizer (our CEM's population, elites, iterations, momentum, horizon) on our
    rollout and cost, warm-started with last tick's plan shifted by one step. The compiled objective
    first copies the population time-major, the layout our compiled rollout reads fastest (3x
    faster here than the ``[B, T, nu]`` CEMOptimizer hands it, for a copy of microseconds)."""
    try:
        from mbrl.planning import CEMOptimizer
    except ImportError:
        return None
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
    evaluator = TrajectoryEvaluator(model, task, compile=compiled_objective)
    mean = torch.zeros(cfg.horizon, task.action_dim)

    def objective(x: torch.Tensor, population: torch.Tensor) -> torch.Tensor:
        if compiled_objective:
            population = population.permute(1, 2, 0).contiguous().permute(2, 0, 1)
        return -evaluator(x, population)[0]

    def act(x: torch.Tensor) -> torch.Tensor:
        plan = optimizer.optimize(lambda population: objective(x, population), x0=mean)
        mean[:-1], mean[-1] = plan[1:].clone(), plan[-1]
        return plan[0]

    return act


def mbrl_pets_act(task: Task, ensemble: EnsembleConfig, cem: CEMConfig, particles: int, compiled: bool) -> Act | None:
    """PETS planning as mbrl-lib builds it (its PETS example and ``create_one_dim_tr_model``): a
    GaussianMLP ensemble of our architecture (members, hidden units, hidden layers, SiLU) in a
    OneDTransitionRewardModel (delta targets, double-precision input normaliser), a ModelEnv with
    our cost as its reward, and a TrajectoryOptimizerAgent with its CEMOptimizer at our budget.
    ``random_model`` is mbrl-lib's TS1 (``fixed_model`` is TSinf). ``_recursive_: False``: hydra
    >= 1.1 (1.0.3, which mbrl 0.2.0 pins, fails on Python 3.11) would otherwise instantiate the
    nested configs before mbrl-lib reads them. ``compiled``: ``torch.compile`` on the trajectory
    evaluation function the agent calls (the one hook its API offers)."""
    try:
        import gymnasium
        import mbrl.models
        import mbrl.planning
        import mbrl.util.common
        import omegaconf
        from mbrl.env import termination_fns
    except ImportError:
        return None
    nx, nu = task.state_dim, task.action_dim
    cfg = omegaconf.OmegaConf.create({
        "dynamics_model": {
            "_target_": "mbrl.models.GaussianMLP", "_recursive_": False, "device": "cpu",
            "num_layers": ensemble.layers, "ensemble_size": ensemble.members, "hid_size": ensemble.hidden,
            "deterministic": False, "propagation_method": "random_model", "learn_logvar_bounds": False,
            "activation_fn_cfg": {"_target_": TORCH_ACTIVATIONS[ensemble.activation]},
        },
        "algorithm": {"learned_rewards": False, "target_is_delta": True, "normalize": True,
                      "normalize_double_precision": True},
        "overrides": {},
    })
    dynamics_model = mbrl.util.common.create_one_dim_tr_model(cfg, (nx,), (nu,))
    spaces = types.SimpleNamespace(  # all ModelEnv reads of a gym env
        observation_space=gymnasium.spaces.Box(-np.inf, np.inf, (nx,), np.float32),
        action_space=gymnasium.spaces.Box(task.action_low.numpy(), task.action_high.numpy(), dtype=np.float32),
    )

    def reward(actions: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        return -task.running_cost(next_obs.unsqueeze(-2), actions.unsqueeze(-2)).unsqueeze(-1)

    model_env = mbrl.models.ModelEnv(spaces, dynamics_model, termination_fns.no_termination, reward,
                                     generator=torch.Generator().manual_seed(0))
    agent_cfg = omegaconf.OmegaConf.create({
        "_target_": "mbrl.planning.TrajectoryOptimizerAgent", "_recursive_": False,
        "planning_horizon": cem.horizon, "replan_freq": 1, "verbose": False, "action_lb": "???", "action_ub": "???",
        "optimizer_cfg": {  # mbrl-lib's conf/action_optimizer/cem.yaml
            "_target_": "mbrl.planning.CEMOptimizer", "num_iterations": cem.iterations,
            "elite_ratio": cem.elites / cem.population, "population_size": cem.population, "alpha": cem.momentum,
            "lower_bound": "???", "upper_bound": "???", "return_mean_elites": True, "device": "cpu",
            "clipped_normal": False,
        },
    })
    agent = mbrl.planning.create_trajectory_optim_agent_for_model(model_env, agent_cfg, num_particles=particles)
    if compiled:
        agent.set_trajectory_eval_fn(torch.compile(agent.trajectory_eval_fn))
    return lambda x: agent.act(x.numpy())


def our_ensemble_planner(task: Task, ensemble: EnsembleConfig, cem: CEMConfig) -> Planner:
    """Our CEM on our ensemble: TS1 with output noise (what mbrl-lib's ModelEnv samples), compiled."""
    model = EnsembleDynamics(ensemble, PropagationConfig(mode="ts1", output_noise=True)).freeze()
    return CEMPlanner(TrajectoryEvaluator(model, task, compile=True), cem)


@dataclass
class PeerRow:
    name: str
    implementation: str
    use: str  # "best_effort" (the best its API allows) or "default_use" (as its users run it by default)
    build: Callable[[], Act | None]  # None: the library is not installed


@dataclass
class Comparison:
    name: str
    setting: str
    ours: str
    build_ours: Callable[[], Planner]
    peers: list[PeerRow]


def comparisons(model: DynamicsModel, task: Task, mbrl_particles: int) -> list[Comparison]:
    mppi, cem = MPPIConfig(), CEMConfig()
    ensemble = EnsembleConfig(state_dim=task.state_dim, action_dim=task.action_dim, dt=DT, angle_dims=(1,))
    sampling = lambda kind: build_planner(kind, model, task, {"seed": 0}, compile=True)
    particles = f", mbrl-lib {mbrl_particles} particles per sequence" if mbrl_particles != 1 else ""
    pets = lambda compiled: mbrl_pets_act(task, ensemble, cem, mbrl_particles, compiled)
    return [
        Comparison("mppi", f"MPPI, analytic model, {mppi.samples} samples x {mppi.horizon} steps",
                   "ours: mppi (compiled)", lambda: sampling("mppi"), [
                       PeerRow("pytorch_mppi_compiled", "pytorch_mppi, MPPI.compile()", "best_effort",
                               lambda: pytorch_mppi_act(model, task, compiled=True)),
                       PeerRow("pytorch_mppi_eager", "pytorch_mppi, eager model.step", "default_use",
                               lambda: pytorch_mppi_act(model, task, compiled=False)),
                   ]),
        Comparison("cem", f"CEM, analytic model, {cem.population} x {cem.horizon} steps x {cem.iterations} iterations",
                   "ours: cem (compiled)", lambda: sampling("cem"), [
                       PeerRow("mbrl_cem_compiled_objective", "mbrl-lib CEMOptimizer, our compiled objective",
                               "best_effort", lambda: mbrl_cem_act(model, task, compiled_objective=True)),
                       PeerRow("mbrl_cem_eager_objective", "mbrl-lib CEMOptimizer, our eager objective",
                               "default_use", lambda: mbrl_cem_act(model, task, compiled_objective=False)),
                   ]),
        Comparison("cem_ensemble",
                   f"CEM, learned ensemble ({ensemble.members} x {ensemble.hidden} x {ensemble.layers}, TS1, random "
                   f"weights), {cem.population} x {cem.horizon} x {cem.iterations}{particles}",
                   "ours: cem on EnsembleDynamics (compiled)", lambda: our_ensemble_planner(task, ensemble, cem), [
                       PeerRow("mbrl_pets_compiled_eval", "mbrl-lib PETS agent, torch.compile on its evaluation fn",
                               "best_effort", lambda: pets(True)),
                       PeerRow("mbrl_pets", "mbrl-lib PETS agent (GaussianMLP, ModelEnv, TrajectoryOptimizerAgent)",
                               "default_use", lambda: pets(False)),
                   ]),
    ]


def run_comparison(comparison: Comparison, plant: DynamicsModel, ticks: int) -> dict:
    """Ours and each peer row timed in the same closed loop; ratios theirs / ours; the fair ratio
    against the peer at its best (lowest p50 of its rows)."""
    planner = comparison.build_ours()
    ours = timed_row(planner_act(planner), plant, ticks) | {"implementation": comparison.ours,
                                                            "compiled": is_compiled(planner)}
    print(f"  {comparison.name} ours: {ours}", flush=True)
    peers: dict[str, dict] = {}
    for row in comparison.peers:
        act = row.build()
        if act is None:
            peers[row.name] = {"implementation": row.implementation, "use": row.use, "skipped": "not installed"}
            continue
        figures = timed_row(act, plant, ticks)
        peers[row.name] = figures | {"implementation": row.implementation, "use": row.use,
                                     "ratio_p50": round(figures["tick_ms_p50"] / ours["tick_ms_p50"], 2),
                                     "ratio_p99": round(figures["tick_ms_p99"] / ours["tick_ms_p99"], 2)}
        print(f"  {comparison.name} {row.name}: {peers[row.name]}", flush=True)
    timed = {name: r for name, r in peers.items() if "skipped" not in r}
    best = min(timed, key=lambda name: timed[name]["tick_ms_p50"]) if timed else None
    default = next((name for name, r in timed.items() if r["use"] == "default_use"), None)

    def ratio(row: str | None) -> dict | None:
        return {"row": row, "ratio_p50": timed[row]["ratio_p50"], "ratio_p99": timed[row]["ratio_p99"]} if row else None

    return {"setting": comparison.setting, "ours": ours, "peers": peers, "fair": ratio(best),
            "default_use": ratio(default)}


def print_peers(results: dict[str, dict], ticks: int) -> None:
    print(f"\nPeers: closed loop from near hanging, the same budget within a comparison, {PEER_WARMUP_TICKS} untimed "
          f"warm-up ticks, then {ticks} timed ticks per row; ratio = peer's tick time / ours")
    rows = []
    for name, c in results.items():
        o = c["ours"]
        rows.append([c["setting"], o["implementation"], "ours", o["threads"], o["ticks"], o["tick_ms_p50"],
                     o["tick_ms_p99"], o["tick_ms_max"], "-", "-"])
        for r in c["peers"].values():
            use = {"best_effort": "best effort", "default_use": "default use"}[r["use"]]
            if "skipped" in r:
                rows.append(["", r["implementation"], use, "-", "-", "-", "-", "-", r["skipped"], ""])
                continue
            rows.append(["", r["implementation"], use, r["threads"], r["ticks"], r["tick_ms_p50"], r["tick_ms_p99"],
                         r["tick_ms_max"], f"{r['ratio_p50']}x", f"{r['ratio_p99']}x"])
    print_table(["comparison", "implementation", "use", "threads", "ticks", "p50 ms", "p99 ms", "max ms",
                 "ratio p50", "ratio p99"], rows)
    for kind, label in (("fair", "Headline, fair (each peer at its best)"),
                        ("default_use", "Default use (as a user of that library would run it by default)")):
        parts = [f"{name} {c[kind]['ratio_p50']}x at p50 / {c[kind]['ratio_p99']}x at p99 ({c[kind]['row']})"
                 for name, c in results.items() if c[kind]]
        print(f"{label}: ours is " + ("; ".join(parts) if parts else "- (no peer installed)"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--planners", default=",".join(PLANNERS), help="'' for none (peers only)")
    parser.add_argument("--budget-ms", type=float, default=16.0, help="per-tick deadline; 0 for none")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, for ours and the peers alike")
    parser.add_argument("--peer-ticks", type=int, default=1000, help="timed ticks per peer-comparison row")
    parser.add_argument("--peers", default="mppi,cem,cem_ensemble", help="comparisons to run; '' for none")
    parser.add_argument("--mbrl-particles", type=int, default=1,
                        help="mbrl-lib PETS particles per sequence (ours: 1; its PETS example: 20)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # Every compiled evaluator here is one more entry of the same code object: raise Dynamo's
    # per-function limit so none falls back to eager, and fail loudly rather than time eager code.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    torch._dynamo.config.fail_on_recompile_limit_hit = True
    robot = load_robot("cartpole")
    params, model, task = robot.model.params, robot.model, robot.task
    controller = robot_parameters("cartpole")  # the planners' sections as the controller reads them
    plant = CartPoleDynamics(params, DT, substeps=8, integrator="euler").double()
    budget_s = args.budget_ms * 1e-3 if args.budget_ms > 0 else None

    results = {}
    for name in filter(None, args.planners.split(",")):
        configured = section(controller, PLANNERS[name][0])
        results[name] = run_planner(name, model, task, plant, args.seeds, budget_s, configured)
        print(f"  {name}: {results[name]}", flush=True)
    if results:
        print(f"\nPlanners on the cart-pole: {args.seeds} seeds x (swing-up {SWING_UP_TICKS} + balance "
              f"{BALANCE_TICKS} ticks), deadline {args.budget_ms} ms, {args.threads} torch thread(s)")
        headers = ["planner", "horizon", "samples/tick", "threads", "ticks", "p50 ms", "p99 ms", "swing-up", "balance",
                   "cost swing-up", "cost balance", "over budget", "balance du rms N", "smoothing", "settled std"]
        print_table(headers, [[n, r["horizon"], r["samples_per_tick"] or "-", r["threads"], r["ticks"],
                               r["tick_ms_p50"], r["tick_ms_p99"], r["swing_up_success"], r["balance_success"],
                               r["mean_cost_swing_up"], r["mean_cost_balance"], r["ticks_over_budget"],
                               r["command_delta_rms"][0], r["smoothing_window"] or "-", r["settled_std"] or "-"]
                              for n, r in results.items()])

    wanted = set(filter(None, args.peers.split(",")))
    peers = {c.name: run_comparison(c, plant, args.peer_ticks)
             for c in comparisons(model, task, args.mbrl_particles) if c.name in wanted}
    if peers:
        print_peers(peers, args.peer_ticks)

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
        # On the fair ratios: each peer at its best.
        "mppi_3x_faster_than_pytorch_mppi": met(lambda: peers["mppi"]["fair"]["ratio_p50"] >= 3.0),
        "cem_10x_faster_than_mbrl_lib": met(lambda: peers["cem"]["fair"]["ratio_p50"] >= 10.0),
        "ilqr_h50_p99_le_2ms": met(lambda: results["ilqr"]["tick_ms_p99"] <= 2.0),
        "nmpc_p99_ms": results.get("nmpc", {}).get("tick_ms_p99"),
    }
    print("\nTargets:", targets)
    ratios = {kind: {name: c[kind] for name, c in peers.items()} for kind in ("fair", "default_use")}
    emit_json({"benchmark": "planners", "machine": machine(),
               "settings": {"seeds": args.seeds, "swing_up_ticks": SWING_UP_TICKS, "balance_ticks": BALANCE_TICKS,
                            "budget_ms": args.budget_ms, "dt": DT, "threads": args.threads,
                            "peer_ticks": args.peer_ticks, "peer_warmup_ticks": PEER_WARMUP_TICKS,
                            "mbrl_particles": args.mbrl_particles,
                            "configs": {n: PLANNERS[n] for n in results},
                            "configured": {n: section(controller, PLANNERS[n][0]) for n in results}},
               "planners": results, "peers": peers, "peer_ratios": ratios, "headline_ratio": "fair",
               "targets": targets})


if __name__ == "__main__":
    main()
