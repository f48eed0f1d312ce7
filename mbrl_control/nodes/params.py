"""Parameters declared from a table: descriptor, range and description for each, and an error
that names the parameter when a value is wrong, so a node fails at start and says why."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException, ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter

from mbrl_control.core.robot import RobotConfig, RobotSpec, RobotSpecError, robot_spec
from mbrl_control.core.util import section  # noqa: F401  (nodes take their parameter sections from here)
from mbrl_control.paths import resolve_urdf

_ARRAY_TYPES = {str: Parameter.Type.STRING_ARRAY, float: Parameter.Type.DOUBLE_ARRAY, int: Parameter.Type.INTEGER_ARRAY,
                bool: Parameter.Type.BOOL_ARRAY}


class ParameterError(ValueError):
    """A parameter value a node cannot start with."""


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: bool | int | float | str | list
    description: str
    low: float | None = None  # inclusive bounds; for lists, of every element
    high: float | None = None
    choices: tuple[str, ...] = ()
    element: type | None = None  # an empty list's element type (ROS must know an array's type)

    def __post_init__(self) -> None:
        if self.default == [] and self.element is None:
            raise TypeError(f"ParamSpec '{self.name}': an empty list default needs its element type")

    def allowed(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.low is not None or self.high is not None:
            return f"in [{self.low}, {self.high}]"
        return f"of type {type(self.default).__name__}"

    def descriptor(self) -> ParameterDescriptor:
        d = ParameterDescriptor(description=self.description, read_only=True)
        scalar = self.default if not isinstance(self.default, list) else None
        if self.low is not None and self.high is not None and scalar is not None:
            if isinstance(scalar, bool):
                pass
            elif isinstance(scalar, int):
                d.integer_range = [IntegerRange(from_value=int(self.low), to_value=int(self.high), step=0)]
            elif isinstance(scalar, float):
                d.floating_point_range = [
                    FloatingPointRange(from_value=float(self.low), to_value=float(self.high), step=0.0)
                ]
        if self.choices:
            d.additional_constraints = self.allowed()
        return d

    def check(self, value: Any) -> None:
        values = value if isinstance(value, (list, tuple)) else [value]
        if self.choices and value not in self.choices:
            raise ParameterError(f"parameter '{self.name}' = {value!r} is not {self.allowed()} ({self.description})")
        for v in values:
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                if (self.low is not None and v < self.low) or (self.high is not None and v > self.high):
                    raise ParameterError(
                        f"parameter '{self.name}' = {value!r} is out of range: must be {self.allowed()} "
                        f"({self.description})"
                    )


def declare_parameters(node: Node, specs: list[ParamSpec]) -> dict[str, Any]:
    """Declare every spec on ``node`` and return the values, or raise ParameterError."""
    values: dict[str, Any] = {}
    for spec in specs:
        try:
            if spec.default == []:  # declared by type: an empty list would be taken for a byte array
                value = node.declare_parameter(spec.name, _ARRAY_TYPES[spec.element], spec.descriptor()).value
                value = [] if value is None else value
            else:
                value = node.declare_parameter(spec.name, spec.default, spec.descriptor()).value
        except InvalidParameterTypeException as exc:
            kind = type(spec.default).__name__
            hint = " (write 50.0, not 50, for a float)" if isinstance(spec.default, float) else ""
            raise ParameterError(f"parameter '{spec.name}' must be of type {kind}{hint}: {exc}") from exc
        except (InvalidParameterValueException, ParameterException) as exc:
            raise ParameterError(
                f"parameter '{spec.name}' is invalid: must be {spec.allowed()} ({spec.description}): {exc}"
            ) from exc
        if isinstance(spec.default, list) and value is not None:
            value = list(value)
        spec.check(value)
        values[spec.name] = value
    return values




def specs_from(config_class: type, prefix: str, exclude: tuple[str, ...] = ()) -> list[ParamSpec]:
    """ROS parameter specs ``<prefix>.<field>`` for a core config dataclass declared with
    ``mbrl_control.core.util.setting`` (tuples become lists, as ROS arrays); ``exclude`` names
    fields the node sets itself."""
    from mbrl_control.core.util import settings_of

    return [
        ParamSpec(f"{prefix}.{f.name}" if prefix else f.name, list(f.default) if isinstance(f.default, tuple) else f.default,
                  f.doc, f.low, f.high, f.choices, element=f.element)
        for f in settings_of(config_class)
        if f.name not in exclude
    ]


# What every node that knows the robot declares (config/<robot>.yaml's ``/**`` section).
ROBOT_PARAMS = specs_from(RobotConfig, "")


def urdf_param(p: dict[str, Any]) -> Path:
    """The robot's URDF from parameter ``urdf`` (relative: under config/; ``pybullet_data:<path>``);
    ParameterError if it is missing."""
    if not p["urdf"]:
        raise ParameterError("parameter 'urdf' is empty: give the robot's URDF (config/<robot>.yaml sets it)")
    urdf = resolve_urdf(p["urdf"])
    if not urdf.is_file():
        raise ParameterError(f"parameter 'urdf': no such file {urdf}")
    return urdf


def robot_spec_param(p: dict[str, Any]) -> RobotSpec:
    """The robot of a node's parameters, or ParameterError naming the one that does not fit."""
    try:
        return robot_spec(p, urdf_param(p))
    except RobotSpecError as exc:
        raise ParameterError(str(exc)) from exc


def task_parameter_specs(terms: list[str] | None = None) -> list[ParamSpec]:
    """The task's parameters (``task.*``; with ``terms``, also each ``task.<term>.*``, success and
    goal region; without, only the ones that name the terms)."""
    from mbrl_control.core.tasks.residual import GoalRegionConfig, SuccessConfig, TaskConfig
    from mbrl_control.core.tasks.terms import TermConfig

    specs = specs_from(TaskConfig, "task")
    if terms is None:
        return specs
    specs = specs_from(SuccessConfig, "task.success") + specs_from(GoalRegionConfig, "task.goal_region")
    for name in terms:
        specs += specs_from(TermConfig, f"task.{name}")
    return specs


def declare_task_parameters(node: Node, p: dict[str, Any]) -> dict[str, Any]:
    """Declare the task's parameters on ``node`` and return ``p`` with them: first ``task.*``,
    then the terms ``task.terms`` names, each ``task.<term>.*``."""
    values = dict(p) | declare_parameters(node, task_parameter_specs())
    return values | declare_parameters(node, task_parameter_specs(list(values["task.terms"])))
