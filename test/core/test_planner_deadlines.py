"""Every iterative planner is anytime: given a deadline it stops iterating and returns the best
plan so far, finite, with ``deadline_missed`` set."""

import math
import time

import pytest
import torch

from mbrl_control.core.builders import build_planner

CONFIGS = {
    "cem": {"iterations": 50, "population": 200},
    "icem": {"iterations": 50, "population": 200},
    "mppi": {"iterations": 50, "samples": 200},
    "ilqr": {"iterations": 50, "horizon": 30, "tolerance": 0.0},
}


@pytest.mark.parametrize("name", CONFIGS)
def test_deadline_stops_iterations_early(cartpole, name):
    planner = build_planner(name, cartpole.model, cartpole.task, CONFIGS[name], compile=False)
    x0 = torch.tensor([0.1, 3.0, 0.0, 0.2])
    planner.plan(x0, deadline=time.perf_counter())  # first-call set-up out of the way
    start = time.perf_counter()
    planner.plan(x0, deadline=start)  # one iteration (the first always runs): its cost on this machine
    one_iteration = time.perf_counter() - start
    budget = 2.5 * one_iteration
    start = time.perf_counter()
    plan = planner.plan(x0, deadline=start + budget)
    elapsed = time.perf_counter() - start
    assert plan.deadline_missed and 1 <= plan.iterations < 50
    assert math.isfinite(plan.cost) and torch.isfinite(plan.actions).all()
    # Stopping is judged by the mean iteration time: at most about one iteration past the budget.
    assert elapsed < budget + 3 * one_iteration
