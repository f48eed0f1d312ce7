"""Planners behind one interface: ``reset()`` and ``plan(x0, deadline) -> Plan``."""

from mbrl_control.core.planners.base import Plan, Planner
from mbrl_control.core.planners.cem import CEMConfig, CEMPlanner

__all__ = ["Plan", "Planner", "CEMConfig", "CEMPlanner"]
