"""Savitzky-Golay smoothing of the command a sampling planner sends (nav2 MPPI's filter).

A sampling planner's first action carries its sampling noise: one step's effort barely changes a
30-step sequence's cost, so the best sequence's first step wanders by newtons from tick to tick
(the cart-pole's CEM: about 3.5 N RMS change per 20 ms tick against a 20 N limit), and a motor
takes that as vibration. The command sent is instead a least-squares quadratic through the last
``window // 2`` commands this smoother returned and the plan's next ``window // 2 + 1`` steps, evaluated now: noise
far above the plan's bandwidth goes, the plan's trend stays (a quadratic passes unchanged; for a
centred fit a cubic gives the same weights), and unlike a first-order low-pass it adds no lag to
a plan that follows one.

The rest of the plan, its predicted states and the planner's warm start are left as planned: the
filter shapes what leaves the tick, not what is optimised. Gradient planners (iLQR, NMPC, LQR)
plan smooth commands already and are not wrapped.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from mbrl_control.core.planners.base import Plan, Planner

ORDER = 2  # of the fitted polynomial


def smoothing_problem(window: int) -> str | None:
    """Why ``window`` cannot be a smoothing window (None: it can; 0 is off)."""
    if window and (window % 2 == 0 or window <= ORDER):
        return f"smoothing_window must be 0 (off) or odd and above {ORDER}, got {window}"
    return None


class SmoothedPlanner(Planner):
    """``planner`` whose first action is smoothed with the commands this wrapper returned before.

    Its own history, not the commands the safety layer finally sent: they differ only where the
    layer clamps, and a planner that reads nothing from outside plans the same in a test, a
    benchmark and the node. After ``reset`` the history starts over, filled with the first
    plan's own action, so a new episode starts unbiased. The smoothed command is clipped to
    ``low``/``high`` (the fit can overshoot them by a little).

    ``active``: smooth only while it returns True (the planner's ``settled``: a catch or a push
    needs the plan's own command, not one that lags it); the history records every command."""

    def __init__(self, planner: Planner, window: int, low: Tensor, high: Tensor,
                 active: Callable[[], bool] | None = None) -> None:
        from scipy.signal import savgol_coeffs

        problem = smoothing_problem(window) or (None if window else "smoothing is off (window 0): use the planner")
        if problem:
            raise ValueError(problem)
        self.planner, self.window = planner, window
        self.horizon = planner.horizon
        half = window // 2
        weights = torch.as_tensor(savgol_coeffs(window, ORDER, use="dot"), dtype=torch.float32)
        self._past_weights = weights[:half].view(1, -1).contiguous()  # oldest first
        self._plan_weights = weights[half:].view(1, -1).contiguous()  # now, then the plan's next steps
        # A plan shorter than the window's future half repeats its last step (as the warm starts do).
        self._plan_index = torch.arange(half + 1).clamp(max=planner.horizon - 1)
        nu = low.shape[-1]
        # The commands returned, a ring (no copies per tick): _order[head] lists its slots oldest first.
        self._ring = torch.zeros(half, nu)
        self._order = [torch.tensor([(head + k) % half for k in range(half)]) for head in range(half)]
        self._head = 0
        self._past = torch.zeros(half, nu)
        self._next = torch.zeros(half + 1, nu)
        self._smoothed = torch.zeros(1, nu)
        self._low = low.detach().float().cpu()
        self._high = high.detach().float().cpu()
        self._started = False
        self._active = active

    def reset(self) -> None:
        self.planner.reset()
        self._started = False

    def plan(self, x0: Tensor, deadline: float | None = None) -> Plan:
        plan = self.planner.plan(x0, deadline)
        actions = plan.actions  # the plan's own CPU copy (host_copies): changed in place
        if not self._started:
            self._ring.copy_(actions[0].expand_as(self._ring))
            self._started = True
        if self._active is None or self._active():
            torch.index_select(self._ring, 0, self._order[self._head], out=self._past)
            torch.index_select(actions, 0, self._plan_index, out=self._next)
            torch.mm(self._plan_weights, self._next, out=self._smoothed)
            self._smoothed.addmm_(self._past_weights, self._past)
            torch.clamp(self._smoothed[0], self._low, self._high, out=actions[0])
        self._ring[self._head].copy_(actions[0])  # the newest; the oldest slot is overwritten
        self._head = (self._head + 1) % self._ring.shape[0]
        return plan

    def __getattr__(self, name: str) -> Any:
        # Everything else (config, set_budget, budget_problem, set_policy, evaluator) is the wrapped
        # planner's: a running controller tunes and swaps policies in it as if unwrapped.
        if name == "planner":  # not yet set (during construction or unpickling)
            raise AttributeError(name)
        return getattr(self.planner, name)
