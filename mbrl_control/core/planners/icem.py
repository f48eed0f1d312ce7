"""Improved CEM (iCEM, Pinneri et al. 2020): colored noise, elites kept across iterations and ticks.

Against plain CEM: samples are colored noise along time (smooth sequences explore further per
sample), a fraction of the elites is carried into the next iteration and, shifted by one step,
into the next tick (good sequences are not thrown away and re-found), and the plan executed is
the best sequence seen this tick. Together these reach CEM's success with a fraction of its
samples per tick.

Population decay (``population_decay > 1``): iteration ``i`` evaluates the first
``max(population / decay^i, 2 elites)`` members of one preallocated buffer. Under a compiled
evaluator every distinct population size is its own compiled graph (a cold compile each, ~70 s
for the cart-pole at horizon 30, then cached on disk), and at cart-pole sizes a compiled call
costs mostly fixed overhead (about 170 us at 100 samples against 250 us at 500), so the default
keeps the population constant: one graph, which at population 500 and horizon 30 is CEM's own.
Decay pays off with an eager model whose cost grows with the batch (a learned ensemble).

Settled spread (``settled_std > 0``): once the state has stayed within the task's success
tolerance (the pole balanced, the arm at its goal) for ``settle_ticks``, each tick starts from
this narrower spread instead of ``init_std``, and from ``init_std`` again as soon as it leaves. The
wide spread is what finds a swing-up; held at the goal it is sampling noise in the first action,
which a motor takes as vibration. The dwell lets a catch's transient pass with the full spread.

Policy warm start (``policy``, e.g. MBPO's): in each tick's first iteration, ``policy_fraction``
of the population are the policy's closed-loop rollouts through the model from ``x0`` (the first
noise-free, the others with ``policy_noise`` on every action, the feedback correcting it), as
open-loop sequences. The planner can only do better than the policy's own rollout then: that
rollout is evaluated, and the plan is the best sequence evaluated. One batched rollout per tick,
into preallocated buffers (compiled with ``compile``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from mbrl_control.core.mbpo.policy import Policy
from mbrl_control.core.planners.base import Plan, Planner, host_copies, no_time_for_another, shift_in_time
from mbrl_control.core.planners.noise import ColoredNoise
from mbrl_control.core.planners.policy import PolicyRollout
from mbrl_control.core.rollout import TrajectoryEvaluator, compile_or_eager
from mbrl_control.core.util import setting

SETTLED_STD_HELP = ("initial std once the state has stayed within the task's success tolerance for settle_ticks "
                    "(settled), as a fraction of the action half-range; 0: never settled, init_std always")
SETTLED_RATE_HELP = ("while settled, the weight of each sequence's first-step change from the last first action "
                     "planned, squared [1/N^2 or 1/(N m)^2], added to its cost: holds the command still against "
                     "estimate noise")
SETTLE_TICKS_HELP = "ticks within the success tolerance before the state counts as settled (a catch's transient first)"


@dataclass(frozen=True)
class ICEMConfig:
    population: int = setting(500, "action sequences per iteration", 2, 100000)
    elites: int = setting(20, "elites refitted per iteration", 1, 100000)
    iterations: int = setting(1, "iterations per tick", 1, 100)
    horizon: int = setting(30, "planning horizon [ticks]", 1, 1000)
    noise_beta: float = setting(2.0, "colored-noise exponent: 0 white, 2 Brownian-like", 0.0, 4.0)
    keep_elites: float = setting(0.3, "fraction of the elites carried into the next iteration and tick", 0.0, 1.0)
    population_decay: float = setting(1.0, "population of iteration i: population / decay^i (1: constant)", 1.0, 10.0)
    init_std: float = setting(0.5, "initial std as a fraction of the action half-range", 0.0, 10.0)
    settled_std: float = setting(0.0, SETTLED_STD_HELP, 0.0, 10.0)
    settle_ticks: int = setting(50, SETTLE_TICKS_HELP, 0, 100000)
    settled_rate: float = setting(0.0, SETTLED_RATE_HELP, 0.0, 1e6)
    min_std: float = setting(0.02, "std floor as a fraction of the action half-range", 0.0, 10.0)
    momentum: float = setting(0.1, "weight of the old distribution in each refit", 0.0, 1.0)
    seed: int = setting(0, "sampling seed", 0, 2**31 - 1)
    smoothing_window: int = setting(0, "Savitzky-Golay smoothing of the command sent, over this many ticks of past "
                                    "commands and plan (odd; 0: off): sampling noise a motor would take as vibration; "
                                    "with settled_std, only while settled", 0, 101)
    policy_fraction: float = setting(0.1, "with a policy: population share of its closed-loop rollouts", 0.0, 1.0)
    policy_noise: float = setting(0.1, "action noise std on all but the first of them, fraction of the half-range",
                                  0.0, 10.0)


def population_schedule(config: ICEMConfig) -> list[int]:
    """The population of each iteration: ``population / decay^i``, at least two elites' worth."""
    P, K = config.population, config.elites
    return [max(math.ceil(P / config.population_decay**i), min(2 * K, P)) for i in range(config.iterations)]


class ICEMPlanner(Planner):
    """iCEM over open-loop action sequences; every buffer allocated once, time-major.

    Member layout of each evaluated batch ``[T, nu, n]``: 0 is the current mean, ``1..keep`` are
    the kept elites (from the previous iteration, or from the previous tick shifted by one step),
    the rest are fresh colored-noise samples around the mean, all clipped to the action bounds.
    With a ``policy``, the first iteration of a tick has the policy's rollouts right after the
    kept elites (see the module docstring); ``set_policy`` swaps a new one in.
    """

    def __init__(
        self,
        evaluator: TrajectoryEvaluator,
        config: ICEMConfig = ICEMConfig(),
        policy: Policy | None = None,
        compile: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        if not 0 < config.elites <= config.population:
            raise ValueError("need 0 < elites <= population")
        if config.iterations < 1 or config.horizon < 1:
            raise ValueError("need iterations >= 1 and horizon >= 1")
        if not 0.0 <= config.keep_elites <= 1.0 or config.population_decay < 1.0:
            raise ValueError("need 0 <= keep_elites <= 1 and population_decay >= 1")
        self.evaluator = evaluator
        self.config = config
        self.horizon = config.horizon
        if device is not None:  # the evaluator's model and task move there
            evaluator.to(device)
        self.device = device = evaluator.task.action_low.device  # the evaluator's (it moves its task with its model)
        task = evaluator.task
        low, high = task.action_low.float(), task.action_high.float()
        nu, T, P, K = low.shape[0], config.horizon, config.population, config.elites
        self.populations = [
            max(math.ceil(P / config.population_decay**i), min(2 * K, P)) for i in range(config.iterations)
        ]
        self._keep = min(round(config.keep_elites * K), min(self.populations) - 1)
        self._generator = torch.Generator(device="cpu").manual_seed(config.seed)  # see ColoredNoise
        self._noise = ColoredNoise(T, nu, P, config.noise_beta, self._generator, device)
        with torch.device(device):  # every buffer on the evaluator's device, allocated once
            self._low = low.view(1, nu, 1)
            self._high = high.view(1, nu, 1)
            half_range = 0.5 * (high - low)
            self._center = (0.5 * (low + high)).expand(T, nu).contiguous()
            self._init_std = (config.init_std * half_range).expand(T, nu).contiguous()
            self._settled_std = (config.settled_std * half_range).expand(T, nu).contiguous()
            self._min_std = (config.min_std * half_range).expand(T, nu).contiguous()
            # One storage; iteration i sees its first populations[i] members as a contiguous [T, nu, n].
            storage = torch.empty(T * nu * P)
            self._samples_t = [storage[: T * nu * n].view(T, nu, n) for n in self.populations]
            self._x0 = torch.empty(task.state_dim)
            self._mean = torch.empty(T, nu)
            self._std = torch.empty(T, nu)
            self._scratch = torch.empty(T, nu)
            self._elite_costs = torch.empty(K)
            self._elite_idx = torch.empty(K, dtype=torch.long)
            self._elites = torch.empty(T, nu, K)
            self._elite_std = torch.empty(T, nu)
            self._elite_mean = torch.empty(T, nu)
            self._kept = torch.empty(T, nu, self._keep)
            self._kept_scratch = torch.empty(T, nu, self._keep)
            self._best_actions = torch.empty(T, nu)
            self._last_first = torch.zeros(nu, 1)  # the last plan's first action, for settled_rate
            self._change = torch.empty(nu, P)
            self._rate_cost = torch.empty(P)
            self._best_states = torch.empty(T + 1, task.state_dim)
            self._policy_std = config.policy_noise * half_range
        self._compile = compile
        self._policy_rollout: PolicyRollout | None = None
        self._n_policy = 0
        if policy is not None:
            self.set_policy(policy)
        self.reset()

    def set_policy(self, policy: Policy) -> None:
        """Warm-start with ``policy`` from the next tick: the first one sets the rollout up (and
        compiles it, with ``compile``); later ones copy their weights into it in place (same
        architecture, else ``PolicyFormatError`` and nothing changes)."""
        if self._policy_rollout is not None:
            self._policy_rollout.policy.load_state_(policy)
            return
        cfg = self.config
        slots = self.populations[0] - 1 - self._keep  # after the mean and the kept elites
        n = min(max(1, round(cfg.policy_fraction * cfg.population)), slots) if cfg.policy_fraction > 0 else 0
        if n < 1:
            raise ValueError("no room for policy rollouts: raise population or policy_fraction, or lower keep_elites")
        T, nu, nx = cfg.horizon, self._mean.shape[1], self.evaluator.task.state_dim
        self._policy_x0 = torch.zeros(n, nx, device=self.device)
        self._policy_noise = torch.zeros(T, n, nu, device=self.device)
        self._policy_noise_host = torch.zeros(T, n, nu, device="cpu") if self.device.type != "cpu" else self._policy_noise
        rollout = PolicyRollout(self.evaluator.model, self.evaluator.task, policy)
        self._policy_fn = rollout
        if self._compile:
            with torch.no_grad():
                self._policy_fn = compile_or_eager(rollout, (self._policy_x0, self._policy_noise), self.device)
        self._policy_rollout, self._n_policy = rollout, n

    def _policy_sequences(self, x0: Tensor) -> Tensor:
        """``[T, nu, n]``: the action sequences of the policy's closed-loop rollouts from ``x0``."""
        self._policy_noise_host.normal_(generator=self._generator)  # torch.randn's numbers, on the host
        if self._policy_noise_host is not self._policy_noise:
            self._policy_noise.copy_(self._policy_noise_host, non_blocking=True)
        self._policy_noise.mul_(self._policy_std)
        self._policy_noise[:, 0].zero_()  # one rollout is the policy's own
        self._policy_x0.copy_(x0.expand_as(self._policy_x0))
        with torch.no_grad():
            actions, _ = self._policy_fn(self._policy_x0, self._policy_noise)
        return actions.permute(0, 2, 1)

    def reset(self) -> None:
        self._ticks_within = 0
        self.settled = False
        self._mean.copy_(self._center)
        self._has_kept = False
        self._generator.manual_seed(self.config.seed)

    def plan(self, x0: Tensor, deadline: float | None = None) -> Plan:
        cfg = self.config
        start = time.perf_counter()
        settled = self._settled(x0)
        self._std.copy_(self._settled_std if settled else self._init_std)
        x0 = self._x0.copy_(x0)  # onto the device (and float32)
        best_cost = float("inf")
        done = 0
        keep = self._keep
        policy_best = 0.0
        for it, samples_t in enumerate(self._samples_t):
            if no_time_for_another(self.device, deadline, start, it):
                break
            n = samples_t.shape[-1]
            noise = self._noise.sample()[..., :n]
            torch.addcmul(self._mean.unsqueeze(-1), self._std.unsqueeze(-1), noise, out=samples_t)
            samples_t[..., 0] = self._mean
            if self._has_kept and keep > 0:
                samples_t[..., 1 : 1 + keep] = self._kept
            if it == 0 and self._n_policy:
                samples_t[..., 1 + keep : 1 + keep + self._n_policy] = self._policy_sequences(x0)
            torch.clamp(samples_t, self._low, self._high, out=samples_t)
            costs, states = self.evaluator(x0, samples_t.permute(2, 0, 1))
            costs = torch.nan_to_num(costs, nan=float("inf"))
            if settled and cfg.settled_rate > 0.0:  # also in the plan's reported cost
                costs.add_(self._first_step_change_cost(samples_t[0]), alpha=cfg.settled_rate)
            torch.topk(costs, cfg.elites, largest=False, sorted=True, out=(self._elite_costs, self._elite_idx))
            iteration_best = self._elite_costs[0].item()  # on a GPU: waits for this iteration
            if iteration_best < best_cost:
                best_cost = iteration_best
                best = self._elite_idx[0]
                policy_best = float(it == 0 and 1 + keep <= int(best) < 1 + keep + self._n_policy)
                self._best_actions.copy_(samples_t[..., best])
                self._best_states.copy_(states[best])
            torch.index_select(samples_t, -1, self._elite_idx, out=self._elites)
            self._kept.copy_(self._elites[..., :keep])
            self._has_kept = True
            torch.mean(self._elites, dim=-1, out=self._elite_mean)
            torch.std(self._elites, dim=-1, out=self._elite_std)
            self._mean.mul_(cfg.momentum).add_(self._elite_mean, alpha=1.0 - cfg.momentum)
            self._std.mul_(cfg.momentum).add_(self._elite_std, alpha=1.0 - cfg.momentum)
            torch.maximum(self._std, self._min_std, out=self._std)
            done += 1
        self._last_first.copy_(self._best_actions[0].unsqueeze(-1))
        actions, states = host_copies(self._best_actions, self._best_states)
        plan = Plan(
            actions=actions,
            states=states,
            cost=best_cost,
            iterations=done,
            deadline_missed=done < cfg.iterations,
            info={"policy_best": policy_best} if self._n_policy else {},
        )
        self._shift_warm_start()
        return plan

    def _settled(self, x0: Tensor) -> bool:
        """Whether the state has been within the task's success tolerance for ``settle_ticks``
        ticks up to ``x0`` (always False without ``settled_std``); kept in ``settled``."""
        if self.config.settled_std <= 0.0:
            return False
        state = x0.detach().to("cpu", torch.float64).numpy()[None]
        within = bool(self.evaluator.task.within_tolerance(state)[0])
        self._ticks_within = self._ticks_within + 1 if within else 0
        self.settled = self._ticks_within > self.config.settle_ticks
        return self.settled

    def _first_step_change_cost(self, first: Tensor) -> Tensor:
        """``[n]``: each sequence's squared change of its first action ``first[nu, n]`` from the last plan's."""
        n = first.shape[-1]
        change = torch.sub(first, self._last_first, out=self._change[:, :n])
        change.square_()
        return torch.sum(change, dim=0, out=self._rate_cost[:n])

    def _shift_warm_start(self) -> None:
        """Next tick: drop the step just executed from the mean and the kept elites, repeat the last."""
        shift_in_time(self._mean, self._scratch)
        shift_in_time(self._kept, self._kept_scratch)

    # -- the budget, changed between ticks by a running controller -----------------------------
    def budget_problem(self, compiled: bool = False, **budget: int) -> str | None:
        """Why the budget ``population``, ``elites``, ``iterations`` cannot be used from the next
        tick (None: it can). The population lives in the buffers allocated at start, so it can go
        down and back up to that size; with a ``compiled`` evaluator a population size it has not
        been compiled for would compile a new graph inside a tick (tens of seconds), so it is refused."""
        unknown = set(budget) - {"population", "elites", "iterations"}
        if unknown:
            return f"no runtime setting {sorted(unknown)} (the budget is population, elites, iterations)"
        config = dataclasses.replace(self.config, **budget)
        if not 0 < config.elites <= config.population or config.iterations < 1:
            return f"need 0 < elites ({config.elites}) <= population ({config.population}) and iterations >= 1"
        allocated = self._allocated_samples().numel() // self._mean.numel()
        if config.population > allocated:
            return (f"population {config.population} exceeds the {allocated} sequences allocated at start: lower it, "
                    "or restart with a larger one")
        populations = population_schedule(config)
        if compiled and not set(populations) <= self._compiled_sizes():
            return (f"population sizes {sorted(set(populations) - self._compiled_sizes())} would compile a new rollout "
                    "graph inside a tick (tens of seconds): restart with them, or tune them with an eager evaluator "
                    "(compile off)")
        keep = min(round(config.keep_elites * config.elites), min(populations) - 1)
        if self._n_policy and 1 + keep + self._n_policy > populations[0]:
            return f"population {populations[0]} leaves no room for the {self._n_policy} policy rollouts"
        return None

    def set_budget(self, **budget: int) -> None:
        """Plan with the budget ``population``, ``elites``, ``iterations`` from the next call
        (between ticks); ValueError (``budget_problem``'s reason) and no change if it does not
        fit. The warm start is kept: the mean, and the best of the kept elites."""
        problem = self.budget_problem(**budget)
        if problem:
            raise ValueError(problem)
        self._compiled_sizes()  # remember what the evaluator saw before the sizes change
        config = dataclasses.replace(self.config, **budget)
        T, nu, K = self._mean.shape[0], self._mean.shape[1], config.elites
        populations = population_schedule(config)
        storage = self._allocated_samples()
        keep = min(round(config.keep_elites * K), min(populations) - 1)
        if K != self.config.elites:
            new = functools.partial(torch.empty, device=self._mean.device)
            self._elite_costs, self._elites = new(K), new(T, nu, K)
            self._elite_idx = new(K, dtype=torch.long)
        if keep != self._keep:
            kept = torch.empty(T, nu, keep, device=self._mean.device)
            n = min(keep, self._keep)
            kept[..., :n] = self._kept[..., :n]  # elites are sorted: the best ones stay
            self._has_kept = self._has_kept and keep <= self._keep
            self._kept, self._kept_scratch, self._keep = kept, torch.empty_like(kept), keep
        self._samples_t = [storage[: T * nu * n].view(T, nu, n) for n in populations]
        self.populations, self.config = populations, config

    def _allocated_samples(self) -> Tensor:
        """The flat sample storage allocated at start (the first iteration's view of it, then)."""
        if not hasattr(self, "_sample_storage"):
            self._sample_storage = self._samples_t[0].view(-1)
        return self._sample_storage

    def _compiled_sizes(self) -> set[int]:
        """The batch sizes the evaluator has been given (a compiled one has a graph for each)."""
        if not hasattr(self, "_sizes_seen"):
            self._sizes_seen = set(self.populations)
        self._sizes_seen |= set(self.populations)
        return self._sizes_seen
