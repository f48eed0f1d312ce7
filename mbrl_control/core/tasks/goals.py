"""Goals a reach task can be given: seeded random points the robot can reach.

Drawn in joint space (uniform inside the joint limits, a margin in) and mapped through forward
kinematics, so every goal is a point the arm's own configuration reaches; points outside the
task's goal region (too low, too far) are drawn again.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mbrl_control.core.tasks.residual import ResidualTask


def random_goals(task: ResidualTask, count: int, seed: int, margin: float = 0.15,
                 max_draws: int = 100_000) -> np.ndarray:
    """``count`` reachable goals ``[count, 3]`` for ``task``'s reach point, from seed ``seed``.

    ``margin`` [rad or m] keeps the drawn joint positions that far inside their limits (a goal at
    a joint limit is reachable, but only by pressing against it)."""
    if not task.has_goal:
        raise ValueError("the task has no goal to draw (no link_position term)")
    spec = task.spec
    low = np.where(np.isfinite(spec.position_lower), spec.position_lower + margin, -math.pi)
    high = np.where(np.isfinite(spec.position_upper), spec.position_upper - margin, math.pi)
    rng = np.random.default_rng(seed)
    goals: list[np.ndarray] = []
    drawn = 0
    while len(goals) < count:
        if drawn >= max_draws:
            raise ValueError(f"only {len(goals)} of {count} random configurations put the point inside the goal region "
                             "(task.goal_region.*): is the region reachable?")
        q = rng.uniform(low, high, size=(256, spec.nq))
        drawn += len(q)
        states = np.concatenate([q, np.zeros_like(q)], axis=-1)
        with torch.no_grad():
            points = task.reach_point(states)
        for p in points:
            if not task.clamp_goal(p)[1]:  # already inside the region
                goals.append(p)
                if len(goals) == count:
                    break
    return np.stack(goals)
