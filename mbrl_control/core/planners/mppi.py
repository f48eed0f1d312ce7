"""Model predictive path integral control (MPPI; Williams et al. 2017, nav2_mppi_controller's form).

Split as in nav2: the task's cost is the critic (evaluated with the batched rollout), this module
is the optimizer. Each iteration samples noise ``eps`` around the current control sequence ``u``
(colored along time: smooth sequences, no extra smoothing pass), clips the perturbed sequences to
the action bounds, scores each as its task cost plus the control cost
``gamma * sum_t u_t^T Sigma^-1 eps_t`` of the information-theoretic derivation, and moves ``u``
to the softmax-weighted (temperature ``lambda``) average of the samples.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from mbrl_control.core.planners.base import Plan, Planner, host_copies, no_time_for_another, shift_in_time
from mbrl_control.core.planners.noise import ColoredNoise
from mbrl_control.core.rollout import TrajectoryEvaluator
from mbrl_control.core.util import setting


@dataclass(frozen=True)
class MPPIConfig:
    samples: int = setting(500, "action sequences sampled per iteration", 2, 100000)
    horizon: int = setting(30, "planning horizon [ticks]", 1, 1000)
    iterations: int = setting(1, "iterations per tick", 1, 100)
    temperature: float = setting(0.3, "lambda: lower follows the best samples more greedily", 1e-4, 100.0)
    gamma: float = setting(0.015, "weight of the control cost u' Sigma^-1 eps (0 drops it)", 0.0, 10.0)
    noise_std: float = setting(0.5, "sampling std as a fraction of the action half-range", 1e-3, 10.0)
    noise_beta: float = setting(1.0, "colored-noise exponent along time: 0 white, 2 Brownian-like", 0.0, 4.0)
    seed: int = setting(0, "sampling seed", 0, 2**31 - 1)
    smoothing_window: int = setting(0, "Savitzky-Golay smoothing of the command sent, over this many ticks of past "
                                    "commands and plan (odd; 0: off): sampling noise a motor would take as vibration", 0, 101)


def path_integral_weights(costs: Tensor, temperature: float, out: Tensor) -> Tensor:
    """``out = softmax(-(costs - min costs) / temperature)``.

    Non-finite costs become the largest float: weight 0 beside any finite cost, uniform weights
    (not NaN) if every cost is non-finite.
    """
    largest = torch.finfo(costs.dtype).max
    torch.nan_to_num(costs, nan=largest, posinf=largest, out=out)
    out.sub_(out.min()).mul_(-1.0 / temperature).exp_()  # the best sample gets exp(0): no overflow
    return out.div_(out.sum())


class MPPIPlanner(Planner):
    """MPPI with a warm start shifted by one step each tick and buffers allocated once.

    Member 0 of every batch is the current control sequence itself (zero noise), so the warm start
    is always scored. ``Plan.actions`` is the updated control sequence; ``Plan.states`` and
    ``Plan.cost`` are the weight-averaged sampled states and costs, the path-integral estimate of
    where it leads (rolling the new sequence out exactly would cost one more batch per tick).
    """

    def __init__(self, evaluator: TrajectoryEvaluator, config: MPPIConfig = MPPIConfig(),
                 device: torch.device | str | None = None) -> None:
        if config.samples < 2 or config.iterations < 1 or config.horizon < 1:
            raise ValueError("need samples >= 2, iterations >= 1 and horizon >= 1")
        if config.temperature <= 0 or config.noise_std <= 0 or config.gamma < 0:
            raise ValueError("need temperature > 0, noise_std > 0 and gamma >= 0")
        self.evaluator = evaluator
        self.config = config
        self.horizon = config.horizon
        if device is not None:  # the evaluator's model and task move there
            evaluator.to(device)
        self.device = device = evaluator.task.action_low.device  # the evaluator's (it moves its task with its model)
        task = evaluator.task
        low, high = task.action_low.float(), task.action_high.float()
        nu, T, K = low.shape[0], config.horizon, config.samples
        self._generator = torch.Generator(device="cpu").manual_seed(config.seed)  # see ColoredNoise
        self._noise = ColoredNoise(T, nu, K, config.noise_beta, self._generator, device)
        with torch.device(device):  # every buffer on the evaluator's device, allocated once
            self._low = low.view(1, nu, 1)
            self._high = high.view(1, nu, 1)
            std = config.noise_std * 0.5 * (high - low)
            self._std = std.view(1, nu, 1)
            self._gamma_inv_var = (config.gamma / std**2).view(1, nu, 1)  # gamma Sigma^-1, diagonal
            self._center = (0.5 * (low + high)).expand(T, nu).contiguous()
            self._samples_t = torch.empty(T, nu, K)
            self._samples = self._samples_t.permute(2, 0, 1)  # [K, T, nu] view for the evaluator
            self._eps = torch.empty(T, nu, K)
            self._control_cost = torch.empty(T, nu, K)
            self._total = torch.empty(K)
            self._weights = torch.empty(K)
            self._x0 = torch.empty(task.state_dim)
            self._mean = torch.empty(T, nu)
            self._scratch = torch.empty(T, nu)
        self.reset()

    def reset(self) -> None:
        self._mean.copy_(self._center)
        self._generator.manual_seed(self.config.seed)

    def plan(self, x0: Tensor, deadline: float | None = None) -> Plan:
        cfg = self.config
        start = time.perf_counter()
        x0 = self._x0.copy_(x0)  # onto the device (and float32)
        done = 0
        mean = self._mean.unsqueeze(-1)
        for it in range(cfg.iterations):
            if no_time_for_another(self.device, deadline, start, it):
                break
            noise = self._noise.sample()
            torch.addcmul(mean, self._std, noise, out=self._samples_t)
            self._samples_t[..., 0] = self._mean
            torch.clamp(self._samples_t, self._low, self._high, out=self._samples_t)
            torch.sub(self._samples_t, mean, out=self._eps)  # the noise actually applied, after clipping
            costs, states = self.evaluator(x0, self._samples)
            # Control cost gamma * sum_t u_t^T Sigma^-1 eps_t, per sample.
            torch.mul(self._eps, mean, out=self._control_cost).mul_(self._gamma_inv_var)
            torch.sum(self._control_cost, dim=(0, 1), out=self._total)
            self._total.add_(costs)
            path_integral_weights(self._total, cfg.temperature, out=self._weights)
            torch.matmul(self._samples_t, self._weights, out=self._mean)
            done += 1
        weights = self._weights
        figures = torch.stack([weights @ torch.nan_to_num(costs, nan=0.0, posinf=0.0), costs.min(), 1.0 / (weights @ weights)])
        actions, states, figures = host_copies(self._mean, torch.tensordot(weights, states, dims=1), figures)
        cost, min_cost, effective = figures.tolist()
        plan = Plan(
            actions=actions,
            states=states,
            cost=cost,
            iterations=done,
            deadline_missed=done < cfg.iterations,
            info={"min_cost": min_cost, "effective_samples": effective},
        )
        shift_in_time(self._mean, self._scratch)
        return plan

    # -- the budget, changed between ticks by a running controller -----------------------------
    def budget_problem(self, compiled: bool = False, **budget: int) -> str | None:
        """Why the budget ``samples``, ``iterations`` cannot be used from the next tick (None: it
        can). Samples are drawn into the noise buffer allocated at start, so they can go down and
        back up to that number; with a ``compiled`` evaluator another number of samples would
        compile a new graph inside a tick (tens of seconds), so it is refused."""
        unknown = set(budget) - {"samples", "iterations"}
        if unknown:
            return f"no runtime setting {sorted(unknown)} (the budget is samples, iterations)"
        config = dataclasses.replace(self.config, **budget)
        if config.samples < 2 or config.iterations < 1:
            return f"need samples >= 2 (got {config.samples}) and iterations >= 1 (got {config.iterations})"
        allocated = self._allocated_noise().capacity
        if config.samples > allocated:
            return (f"samples {config.samples} exceeds the {allocated} allocated at start: lower it, or restart with "
                    "more")
        if compiled and config.samples != self.config.samples:
            return (f"samples {config.samples} would compile a new rollout graph inside a tick (tens of seconds): "
                    "restart with it, or tune it with an eager evaluator (compile off)")
        return None

    def set_budget(self, **budget: int) -> None:
        """Plan with the budget ``samples``, ``iterations`` from the next call (between ticks);
        ValueError (``budget_problem``'s reason) and no change if it does not fit. The control
        sequence (the warm start) is kept."""
        problem = self.budget_problem(**budget)
        if problem:
            raise ValueError(problem)
        config = dataclasses.replace(self.config, **budget)
        K = config.samples
        if K != self.config.samples:
            T, nu = self._mean.shape
            noise = self._allocated_noise()
            noise.sample_count = K
            self._noise = noise
            with torch.device(self._mean.device):
                self._samples_t = torch.empty(T, nu, K)
                self._samples = self._samples_t.permute(2, 0, 1)
                self._eps = torch.empty(T, nu, K)
                self._control_cost = torch.empty(T, nu, K)
                self._total = torch.empty(K)
                self._weights = torch.empty(K)
        self.config = config

    def _allocated_noise(self) -> "_FirstSamples":
        """The noise allocated at start, of which each draw uses the first ``sample_count``."""
        if not isinstance(self._noise, _FirstSamples):
            self._noise = _FirstSamples(self._noise, self.config.samples)
        return self._noise


class _FirstSamples:
    """The first ``sample_count`` sequences of each draw of a ``ColoredNoise`` allocated for
    ``capacity`` (a draw stays the same size: no allocation after start)."""

    def __init__(self, noise: ColoredNoise, capacity: int) -> None:
        self.noise = noise
        self.capacity = self.sample_count = capacity

    def sample(self) -> Tensor:
        return self.noise.sample()[..., : self.sample_count]
