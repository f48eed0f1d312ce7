"""Tasks: batched costs and success criteria, as weighted residual terms read from config."""

from mbrl_control.core.tasks.base import Task
from mbrl_control.core.tasks.residual import ResidualTask, build_residual_task

__all__ = ["Task", "ResidualTask", "build_residual_task"]
