"""The Savitzky-Golay command smoother: what it keeps, what it removes, and CEM held upright with a
command a motor can take (no ROS)."""

import math

import numpy as np
import pytest
import torch

from mbrl_control.core.builders import build_planner
from mbrl_control.core.planners import CEMConfig, CEMPlanner
from mbrl_control.core.planners.base import Plan, Planner
from mbrl_control.core.planners.smoothing import SmoothedPlanner
from mbrl_control.core.rollout import TrajectoryEvaluator
from mbrl_control_testing.episode import run_episode

LOW, HIGH = torch.tensor([-20.0]), torch.tensor([20.0])
WINDOW = 21  # ticks: a wide window, smoothing every tick (no settled spread)


class Scripted(Planner):
    """Plans ``command(t), command(t + 1), ...`` at its t-th call."""

    def __init__(self, command, horizon: int = 30) -> None:
        self.command, self.horizon, self.t = command, horizon, 0

    def reset(self) -> None:
        self.t = 0

    def plan(self, x0, deadline=None) -> Plan:
        steps = torch.arange(self.t, self.t + self.horizon, dtype=torch.float64)
        self.t += 1
        actions = torch.as_tensor(self.command(steps), dtype=torch.float32).view(-1, 1)
        return Plan(actions=actions, states=torch.zeros(self.horizon + 1, 4), cost=0.0)


def commands(planner: Planner, ticks: int) -> np.ndarray:
    return np.array([float(planner.plan(torch.zeros(4)).actions[0, 0]) for _ in range(ticks)])


def test_a_quadratic_command_passes_unchanged():
    def quadratic(t):
        return 2.0 - 0.3 * t + 0.004 * t**2

    sent = commands(SmoothedPlanner(Scripted(quadratic), 21, LOW, HIGH), 60)
    # Once the start-up fill (the first plan's action) has left the window, the past half is the
    # quadratic's own history and the fit reproduces it.
    np.testing.assert_allclose(sent[30:], quadratic(np.arange(30, 60.0)), atol=1e-3)


def test_sampling_noise_is_removed_and_a_slow_plan_is_followed():
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 3.0, size=10_000)

    def noisy_sine(t):  # a 1 Hz swing at 50 Hz ticks, each tick's plan with fresh noise at every step
        return 10.0 * np.sin(2 * math.pi * t.numpy() / 50.0) + noise[rng.integers(0, 10_000, size=len(t))]

    raw = commands(Scripted(noisy_sine), 500)
    sent = commands(SmoothedPlanner(Scripted(noisy_sine), 21, LOW, HIGH), 500)
    sine = 10.0 * np.sin(2 * math.pi * np.arange(500) / 50.0)
    raw_error, sent_error = (float(np.sqrt(np.mean((c[50:] - sine[50:]) ** 2))) for c in (raw, sent))
    assert sent_error < 0.35 * raw_error, (sent_error, raw_error)  # the swing kept, without lag; the noise gone


def test_reset_starts_the_history_over_and_commands_stay_within_the_limits():
    level = {"value": 19.0}
    planner = SmoothedPlanner(Scripted(lambda t: np.full(len(t), level["value"])), 9, LOW, HIGH)
    commands(planner, 20)
    level["value"] = -19.5
    planner.reset()
    assert float(planner.plan(torch.zeros(4)).actions[0, 0]) == pytest.approx(-19.5)  # not blended with +19
    overshoot = SmoothedPlanner(Scripted(lambda t: np.where(t % 2 == 0, 20.0, -20.0)), 9, LOW, HIGH)
    assert np.all(np.abs(commands(overshoot, 40)) <= 20.0)


@pytest.mark.parametrize("window", [2, 8, 1])
def test_a_bad_window_is_refused_by_name(window):
    with pytest.raises(ValueError, match="smoothing_window"):
        SmoothedPlanner(Scripted(lambda t: t), window, LOW, HIGH)


def test_build_planner_smooths_sampling_planners_as_configured(cartpole):
    assert isinstance(build_planner("cem", cartpole.model, cartpole.task,
                                    {"population": 20, "elites": 4, "smoothing_window": WINDOW}, compile=False),
                      SmoothedPlanner)
    plain = build_planner("cem", cartpole.model, cartpole.task, {"population": 20, "elites": 4, "smoothing_window": 0},
                          compile=False)
    assert isinstance(plain, CEMPlanner)
    default = build_planner("cem", cartpole.model, cartpole.task, {"population": 20, "elites": 4}, compile=False)
    assert getattr(default, "window", 0) == CEMConfig().smoothing_window  # the config's default window
    assert not isinstance(build_planner("ilqr", cartpole.model, cartpole.task, {"horizon": 10}, compile=False),
                          SmoothedPlanner)


def test_cem_swings_up_and_holds_the_mismatched_plant_with_a_smooth_command(cartpole):
    """Measured (seed 0): the RMS change per tick over the last 5 s falls from 3.75 N to 0.25 N."""
    evaluator = TrajectoryEvaluator(cartpole.model, cartpole.task, compile=True)  # CEM's graph (test_cem)
    x0 = torch.tensor([0.0, math.pi, 0.0, 0.0]) + 0.1 * torch.randn(4, generator=torch.Generator().manual_seed(0))
    deltas = {}
    for window in (0, WINDOW):
        cem = CEMPlanner(evaluator, CEMConfig(seed=0))
        planner = SmoothedPlanner(cem, window, LOW, HIGH) if window else cem
        ep = run_episode(planner, cartpole.mismatched_plant, x0, steps=400)
        assert cartpole.task.success(ep.states, ep.times), f"window {window}"
        deltas[window] = float(np.sqrt(np.mean(np.diff(ep.actions[-251:, 0]) ** 2)))
    smoothed = deltas[WINDOW]
    assert smoothed < 0.25 * deltas[0] and smoothed < 1.0, deltas


def test_a_settled_planner_samples_narrower_and_holds_its_command_still(cartpole):
    """Hanging, a planner with the settled options plans exactly as one without; held upright past
    ``settle_ticks`` it is settled (narrow spread, first-step changes priced, smoothing on), its
    command changes less from tick to tick, and the mismatched plant is still held."""
    evaluator = TrajectoryEvaluator(cartpole.model, cartpole.task, compile=True)  # CEM's graph (test_cem)
    settled_options = {"settled_std": 0.1, "settled_rate": 0.02}
    wide = CEMPlanner(evaluator, CEMConfig(seed=0))
    settled = CEMPlanner(evaluator, CEMConfig(seed=0, **settled_options))
    hanging = torch.tensor([0.0, math.pi - 0.1, 0.0, 0.0])
    torch.testing.assert_close(settled.plan(hanging).actions, wide.plan(hanging).actions, rtol=0.0, atol=0.0)
    assert not settled.settled

    upright = torch.tensor([0.05, 0.1, 0.0, -0.2])
    smoothed = build_planner("cem", cartpole.model, cartpole.task, dict(settled_options, seed=0, smoothing_window=7))
    deltas = {}
    for name, planner in (("wide", wide), ("settled", settled), ("settled and smoothed", smoothed)):
        ep = run_episode(planner, cartpole.mismatched_plant, upright, steps=300)
        assert cartpole.task.success(ep.states, ep.times), name
        deltas[name] = float(np.sqrt(np.mean(np.diff(ep.actions[-251:, 0]) ** 2)))
    assert settled.settled and smoothed.settled
    assert deltas["settled"] < 0.5 * deltas["wide"], deltas
    assert deltas["settled and smoothed"] < deltas["settled"], deltas
    settled.plan(hanging)
    assert not settled.settled  # leaving the tolerance ends it at once


def test_smoothing_waits_for_its_condition_and_keeps_the_history():
    on = {"value": False}
    noisy = Scripted(lambda t: np.where(t % 2 == 0, 5.0, -5.0))
    raw = commands(Scripted(lambda t: np.where(t % 2 == 0, 5.0, -5.0)), 40)
    sent = commands(SmoothedPlanner(noisy, 9, LOW, HIGH, active=lambda: on["value"]), 20)
    np.testing.assert_array_equal(sent, raw[:20])  # off: the plan's own command
    planner = SmoothedPlanner(Scripted(lambda t: np.where(t % 2 == 0, 5.0, -5.0)), 9, LOW, HIGH,
                              active=lambda: on["value"])
    commands(planner, 20)
    on["value"] = True
    assert np.abs(commands(planner, 20)).max() < 2.0  # on: the alternation averaged away at once
