"""Closed-loop acceptance of every new planner on the analytic cart-pole, no ROS involved.

The plant is the Euler, 8-substep model that reproduces PyBullet. Each planner balances from a
perturbed upright state, on that plant and on a mismatched one (conftest); the sampling planners
and iLQR also swing up from hanging. iCEM and MPPI
share one compiled evaluator at population 500 and horizon 30 (CEM's graph, already compiled
by test_cem); iLQR runs eager at horizon 30 so no cold compile lands in the suite (bench/planners.py
times it compiled at horizon 50).
"""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mbrl_control.core.planners import (
    ICEMConfig,
    ICEMPlanner,
    ILQRConfig,
    ILQRPlanner,
    LQRPlanner,
    MPPIConfig,
    MPPIPlanner,
)
from mbrl_control.core.planners.nmpc import NMPCPlanner
from mbrl_control.core.rollout import TrajectoryEvaluator
from mbrl_control_testing.episode import run_episode

DT = 0.02
HANGING = torch.tensor([0.0, math.pi, 0.0, 0.0])
PERTURBED_UPRIGHT = torch.tensor([0.3, 0.2, -0.3, 0.5])
PLANNERS = {  # name: (planner factory, seeds of the swing-up test; 0 = cannot swing up)
    "icem": (lambda rig, seed: ICEMPlanner(rig.compiled, ICEMConfig(seed=seed)), 3),
    "mppi": (lambda rig, seed: MPPIPlanner(rig.compiled, MPPIConfig(seed=seed)), 3),
    # iLQR is deterministic, the seed moves only the start: one here (20 s eager), and the
    # mismatched plant's swing-up below.
    "ilqr": (lambda rig, seed: ILQRPlanner(rig.model, rig.task, ILQRConfig(horizon=30)), 1),
    "lqr": (lambda rig, seed: LQRPlanner(rig.model, rig.task, equilibrium=rig.robot.equilibrium()), 0),
    "nmpc": (lambda rig, seed: NMPCPlanner(rig.model, rig.task), 0),
}


@pytest.fixture(scope="module")
def rig(cartpole) -> SimpleNamespace:
    return SimpleNamespace(**vars(cartpole), compiled=TrajectoryEvaluator(cartpole.model, cartpole.task, compile=True))


@pytest.mark.parametrize("name", [n for n, (_, seeds) in PLANNERS.items() if seeds])
def test_swings_up_and_balances(rig, name):
    make, seeds = PLANNERS[name]
    results = []
    for seed in range(seeds):
        g = torch.Generator().manual_seed(seed)
        x0 = HANGING + 0.1 * torch.randn(4, generator=g)
        ep = run_episode(make(rig, seed), rig.plant, x0, steps=400)  # 8 s: swing up, then 5 s balanced
        results.append(rig.task.success(ep.states, ep.times))
        assert np.abs(ep.actions).max() <= float(rig.task.action_high[0]) + 1e-6
    assert all(results), f"{name} succeeded for seeds {[i for i, ok in enumerate(results) if ok]}"


# On the mismatched plant (conftest: heavier pole, damped joints, 90 % motor gain), one seed each.
# Measured over seeds 0-1: iCEM 2/2, iLQR 2/2, CEM 3/3 (test_cem); MPPI 1/2 (seed 0 tips to
# 0.35 rad once in its last 5 s), so MPPI's swing-up is not claimed robust to this mismatch.
@pytest.mark.parametrize("name", ["icem", "ilqr"])
def test_swings_up_the_mismatched_plant(rig, name):
    make, _ = PLANNERS[name]
    x0 = HANGING + 0.1 * torch.randn(4, generator=torch.Generator().manual_seed(0))
    ep = run_episode(make(rig, 0), rig.mismatched_plant, x0, steps=400)
    assert rig.task.success(ep.states, ep.times)


@pytest.mark.parametrize("plant", ["plant", "mismatched_plant"])
@pytest.mark.parametrize("name", PLANNERS)
def test_balances_from_a_perturbed_upright_state(rig, name, plant):
    """On the exact plant and on the mismatched one (conftest: heavier pole, damping, weaker motor)."""
    make, _ = PLANNERS[name]
    ep = run_episode(make(rig, 1), getattr(rig, plant), PERTURBED_UPRIGHT, steps=300)
    assert rig.task.success(ep.states, ep.times)
    assert np.abs(ep.actions).max() <= float(rig.task.action_high[0]) + 1e-6
