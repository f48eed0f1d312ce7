"""ilqr_offline, the one optimised trajectory tracked by its own gains, on the cart-pole as the
controller node builds it (config/cartpole.yaml), against the PyBullet-equivalent plant.

The starts are hanging poles with estimation-sized noise. From the LQR's closed loop as its first
nominal, iLQR lands the first of them in a local minimum three times as expensive (measured: cost
179 against 62, upright only after 2.8 s); from holding still, the second in one that never
settles (201); from the default first nominal (receding-horizon iLQR's closed loop) both reach the
cheap swing-up.
"""

import numpy as np
import pytest
import torch

from mbrl_control.core.builders import build_mpc, robot_parameters
from mbrl_control_testing.episode import run_episode

LQR_TRAP = [-0.002, 3.141, -0.037, -0.059]
HOLD_TRAP = [0.004, 3.132, 0.157, -0.019]
STEPS = 350  # 7 s: up within 2, then 5 held


def build(first_nominal: str | None = None):
    extra = {} if first_nominal is None else {"ilqr_offline.first_nominal": first_nominal}
    return build_mpc(robot_parameters("cartpole") | {"compile": False} | extra, "ilqr_offline")


@pytest.fixture(scope="module")
def mpc():
    return build()


@pytest.mark.parametrize("x0", [LQR_TRAP, HOLD_TRAP], ids=["lqr_trap", "hold_trap"])
def test_swings_up_and_holds_from_hanging(mpc, cartpole, x0):
    ep = run_episode(mpc.planner, cartpole.plant, torch.tensor(x0), steps=STEPS)
    assert mpc.planner.trajectory_cost < 70.0
    assert mpc.task.success(ep.states, ep.times), f"trajectory cost {mpc.planner.trajectory_cost}"
    assert np.abs(ep.actions).max() <= float(mpc.task.action_high[0]) + 1e-6


@pytest.mark.parametrize("first_nominal, x0", [("lqr", LQR_TRAP), ("hold", HOLD_TRAP)])
def test_the_other_first_nominals_land_in_worse_minima(cartpole, first_nominal, x0):
    """The traps are real: each start fails from its other first nominal (so the test above can)."""
    mpc = build(first_nominal)
    ep = run_episode(mpc.planner, cartpole.plant, torch.tensor(x0), steps=STEPS)
    assert mpc.planner.trajectory_cost > 100.0
    assert not mpc.task.success(ep.states, ep.times)


# The iiwa at rest where its third goal of bench/arm.py (seed 0) starts, after reaching the second.
ARM_FAR_START = [-0.9854, -0.0493, -0.975, -1.5416, -0.0872, 0.3788, 0.0001,
                 0.0029, 0.0211, 0.0034, -0.015, 0.0004, 0.0011, 0.0]
ARM_GOAL = [-0.6713, -0.1090, 0.4538]


def test_on_the_arm_far_from_its_equilibrium_the_search_starts_from_an_lqr_about_where_it_is():
    """The equilibrium's LQR from far away throws the arm about (its 3 s cost 8.6e6; from it 100
    iterations ended at 4.8e6 and tracking spun the arm through its limits, then overflowed);
    holding still open loop falls away and overflows. The closed loop of an LQR about the start,
    at rest, is a finite, modest nominal; near the equilibrium the equilibrium's LQR stays. The arm
    carries its weight here: compensated (config/iiwa.yaml), every posture at rest is an equilibrium."""
    mpc = build_mpc(robot_parameters("iiwa") | {"compile": False, "gravity_compensated": False}, "ilqr_offline")
    planner, task = mpc.planner, mpc.task
    task.set_goal(np.array(ARM_GOAL))
    for start, expected in ((ARM_FAR_START, "lqr_here"), (mpc.robot.spec.x_eq, "lqr")):
        x0 = torch.tensor(start, dtype=torch.float32)
        planner.reset()
        planner._start_nominal(x0)
        ilqr = planner._ilqr
        cost = float(ilqr._rollout(ilqr._x0, ilqr._states, ilqr._actions, ilqr._feedforward, ilqr._gains,
                                   ilqr._step_sizes * 0.0)[0][0])
        assert planner.started_from == expected
        assert np.isfinite(cost) and cost < 1e4, (expected, cost)
        assert torch.isfinite(ilqr._states).all()
