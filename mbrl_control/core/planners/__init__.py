"""Planners behind one interface: ``reset()`` and ``plan(x0, deadline) -> Plan``.

The CasADi NMPC lives in ``mbrl_control.core.planners.nmpc`` (imported on demand: casadi).
"""

from mbrl_control.core.planners.base import Plan, Planner
from mbrl_control.core.planners.cem import CEMConfig, CEMPlanner
from mbrl_control.core.planners.dp import DPConfig, DPPlanner
from mbrl_control.core.planners.icem import ICEMConfig, ICEMPlanner
from mbrl_control.core.planners.ilqr import ILQRConfig, ILQRPlanner
from mbrl_control.core.planners.lqr import LQRConfig, LQRFallback, LQRPlanner
from mbrl_control.core.planners.mppi import MPPIConfig, MPPIPlanner
from mbrl_control.core.planners.policy import PolicyPlanner, PolicyPlannerConfig

__all__ = [
    "Plan",
    "Planner",
    "CEMConfig",
    "CEMPlanner",
    "DPConfig",
    "DPPlanner",
    "ICEMConfig",
    "ICEMPlanner",
    "ILQRConfig",
    "ILQRPlanner",
    "LQRConfig",
    "LQRFallback",
    "LQRPlanner",
    "MPPIConfig",
    "MPPIPlanner",
    "PolicyPlanner",
    "PolicyPlannerConfig",
]
