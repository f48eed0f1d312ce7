"""Parameters declared from a table: descriptor, range and description for each, and an error
that names the parameter when a value is wrong, so a node fails at start and says why.

Tuning while a node runs: a spec marked ``dynamic`` is declared writable on a node that applies
it at runtime (``RuntimeParameters``: checked on set, applied by the node at the start of its next
tick); every other parameter is read-only, and its descriptor says why (``ros2 param describe``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException, ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter

from mbrl_control.core.robot import RobotConfig, RobotSpec, RobotSpecError, robot_spec
from mbrl_control.core.util import section  # noqa: F401  (nodes take their parameter sections from here)
from mbrl_control.paths import resolve_urdf

if TYPE_CHECKING:
    from mbrl_control.core.tasks.residual import ResidualTask

_ARRAY_TYPES = {str: Parameter.Type.STRING_ARRAY, float: Parameter.Type.DOUBLE_ARRAY, int: Parameter.Type.INTEGER_ARRAY,
                bool: Parameter.Type.BOOL_ARRAY}


class ParameterError(ValueError):
    """A parameter value a node cannot start with."""


# Why a parameter is read-only, unless its spec says more precisely.
FIXED_AT_START = ("the node builds its model, task, planner, buffers and timers from it at start: restart the node to "
                  "change it")
READ_AT_START_HERE = "this node reads it once at start (a node that applies it at runtime has it writable)"


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: bool | int | float | str | list
    description: str
    low: float | None = None  # inclusive bounds; for lists, of every element
    high: float | None = None
    choices: tuple[str, ...] = ()
    element: type | None = None  # an empty list's element type (ROS must know an array's type)
    dynamic: bool = False  # settable at runtime on a node that applies it (RuntimeParameters)
    fixed_because: str = ""  # why it is read-only (default FIXED_AT_START)

    def __post_init__(self) -> None:
        if self.default == [] and self.element is None:
            raise TypeError(f"ParamSpec '{self.name}': an empty list default needs its element type")

    def allowed(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.low is not None or self.high is not None:
            return f"in [{self.low}, {self.high}]"
        return f"of type {type(self.default).__name__}"

    def why_read_only(self) -> str:
        if self.dynamic:  # read-only only where the node does not apply it at runtime
            return READ_AT_START_HERE
        return self.fixed_because or FIXED_AT_START

    def descriptor(self, runtime: bool = False) -> ParameterDescriptor:
        """The ROS descriptor: writable only for a dynamic spec on a node that applies it at
        runtime (``runtime``); the constraints say which values it takes and, for a read-only
        one, why (rclpy's refusal of a set names no reason, ``ros2 param describe`` shows this)."""
        writable = self.dynamic and runtime
        d = ParameterDescriptor(description=self.description, read_only=not writable)
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
        notes = [self.allowed()] if self.choices else []
        notes.append("settable at runtime, applied at the start of the next tick" if writable
                     else f"read-only: {self.why_read_only()}")
        d.additional_constraints = "; ".join(notes)
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


def declare_parameters(node: Node, specs: list[ParamSpec],
                       runtime: "RuntimeParameters | None" = None) -> dict[str, Any]:
    """Declare every spec on ``node`` and return the values, or raise ParameterError. With
    ``runtime``, the dynamic specs are declared writable and handed to it; without, every
    parameter is read-only (the node reads it at start only)."""
    values: dict[str, Any] = {}
    for spec in specs:
        descriptor = spec.descriptor(runtime is not None)
        try:
            if spec.default == []:  # declared by type: an empty list would be taken for a byte array
                value = node.declare_parameter(spec.name, _ARRAY_TYPES[spec.element], descriptor).value
                value = [] if value is None else value
            else:
                value = node.declare_parameter(spec.name, spec.default, descriptor).value
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
        if runtime is not None:
            runtime.track(spec, value)  # after declaring: a declaration is not a change to stage
    return values


def specs_from(config_class: type, prefix: str, exclude: tuple[str, ...] = (), dynamic: tuple[str, ...] = (),
               fixed_because: str = "", names: dict[str, str] | None = None) -> list[ParamSpec]:
    """ROS parameter specs ``<prefix>.<field>`` for a core config dataclass declared with
    ``mbrl_control.core.util.setting`` (tuples become lists, as ROS arrays, typed by the tuple's
    element); ``exclude`` names fields the node sets itself, ``dynamic`` those settable at runtime,
    ``fixed_because`` why the others are not, ``names`` a field's parameter name where it is not
    ``<prefix>.<field>``."""
    from mbrl_control.core.util import settings_of

    names = names or {}
    return [
        ParamSpec(names.get(f.name) or (f"{prefix}.{f.name}" if prefix else f.name),
                  list(f.default) if isinstance(f.default, tuple) else f.default,
                  f.doc, f.low, f.high, f.choices, element=f.element, dynamic=f.name in dynamic,
                  fixed_because=fixed_because)
        for f in settings_of(config_class)
        if f.name not in exclude
    ]


# What every node that knows the robot declares (config/<robot>.yaml's ``/**`` section).
ROBOT_PARAMS = specs_from(RobotConfig, "", fixed_because=(
    "it describes the robot, and every node built its model, task, buffers, compiled graphs and timers from it at "
    "start: restart the stack to change it"))


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

    structure = ("the task's terms are built at start (their weights and task.terminal change at runtime, goals arrive "
                 "on /goal_pose): restart to change it")
    specs = specs_from(TaskConfig, "task", dynamic=("terminal",), fixed_because=structure)
    if terms is None:
        return specs
    specs = specs_from(SuccessConfig, "task.success") + specs_from(GoalRegionConfig, "task.goal_region")
    for name in terms:
        specs += specs_from(TermConfig, f"task.{name}", dynamic=("weight",), fixed_because=structure)
    return specs


def declare_task_node_parameters(node: Node, specs: list[ParamSpec]) -> tuple[dict[str, Any], "ResidualTask"]:
    """A node that judges or drives the task (run monitor, episode manager, goal publisher): its
    parameters and the robot's, the task's, and the task built from them; ParameterError naming
    what does not fit."""
    from mbrl_control.core.builders import task_from_params

    p = declare_task_parameters(node, declare_parameters(node, specs))
    urdf_param(p)
    try:
        return p, task_from_params(p)
    except ValueError as exc:
        raise ParameterError(str(exc)) from exc


def declare_task_parameters(node: Node, p: dict[str, Any],
                            runtime: "RuntimeParameters | None" = None) -> dict[str, Any]:
    """Declare the task's parameters on ``node`` and return ``p`` with them: first ``task.*``,
    then the terms ``task.terms`` names, each ``task.<term>.*`` (weights writable with ``runtime``)."""
    values = dict(p) | declare_parameters(node, task_parameter_specs(), runtime)
    return values | declare_parameters(node, task_parameter_specs(list(values["task.terms"])), runtime)


class RuntimeParameters:
    """A node's parameters that change while it runs (``ParamSpec.dynamic``), in the manner of
    nav2's parameter handlers: a set is checked at once (the spec's range, then the node's own
    ``check(changes, values)``, which returns why not or None) and refused with the reason, the
    old value kept; an accepted change is stored, and the node hands it to ``apply(changes)`` at
    the start of its next tick (``apply_pending``), so no tick ever plans with half a change.
    Every change and refusal is logged; a read-only parameter's set is logged with why it is.

    Integers given for a float parameter are taken as floats (``ros2 param set ... 5``).
    """

    def __init__(self, node: Node, check: Callable[[dict[str, Any], dict[str, Any]], str | None],
                 apply: Callable[[dict[str, Any]], None]) -> None:
        self.node = node
        self.check = check
        self.apply = apply
        self.specs: dict[str, ParamSpec] = {}  # every parameter declared through this, dynamic or not
        self.values: dict[str, Any] = {}  # the values in use (applied)
        self.pending: dict[str, Any] = {}  # accepted, applied at the start of the next tick
        self.applied = 0
        self.refused = 0
        node.add_pre_set_parameters_callback(self._before_set)
        node.add_on_set_parameters_callback(self._on_set)

    def track(self, spec: ParamSpec, value: Any) -> None:
        self.specs[spec.name] = spec
        self.values[spec.name] = value

    @property
    def dynamic_names(self) -> list[str]:
        return [name for name, spec in self.specs.items() if spec.dynamic]

    def _before_set(self, parameters: list[Parameter]) -> list[Parameter]:
        out = []
        for param in parameters:
            spec = self.specs.get(param.name)
            if spec is not None and not spec.dynamic:
                self.node.get_logger().warning(f"parameter '{param.name}' is read-only: {spec.why_read_only()}")
            elif spec is not None:
                param = _as_declared_type(spec, param)
            out.append(param)
        return out

    def _on_set(self, parameters: list[Parameter]) -> SetParametersResult:
        changes: dict[str, Any] = {}
        for param in parameters:
            spec = self.specs.get(param.name)
            if spec is None or not spec.dynamic:
                continue  # a declaration, or a parameter someone else handles
            value = list(param.value) if isinstance(spec.default, list) else param.value
            problem = _value_problem(spec, value)
            if problem:
                return self._refuse(problem)
            changes[param.name] = value
        if not changes:
            return SetParametersResult(successful=True)
        problem = self.check(changes, self.values | self.pending | changes)
        if problem:
            return self._refuse(f"{', '.join(changes)}: {problem}")
        self.pending |= changes
        return SetParametersResult(successful=True)

    def _refuse(self, reason: str) -> SetParametersResult:
        self.refused += 1
        self.node.get_logger().warning(f"parameter change refused: {reason}")
        return SetParametersResult(successful=False, reason=reason)

    def apply_pending(self) -> None:
        """Apply the changes accepted since the last call (the node calls this first in a tick)."""
        if not self.pending:
            return
        changes, self.pending = self.pending, {}
        try:
            self.apply(changes)
        except Exception as exc:  # checked when set, so a bug: say so, and keep the tick alive
            self.node.get_logger().error(f"could not apply {changes}: {type(exc).__name__}: {exc}")
            return
        for name, value in changes.items():
            self.node.get_logger().info(f"parameter '{name}': {self.values[name]!r} -> {value!r}")
            self.values[name] = value
        self.applied += len(changes)


def _as_declared_type(spec: ParamSpec, param: Parameter) -> Parameter:
    """``param`` with integers made floats where the parameter holds floats."""
    floats = isinstance(spec.default, float) or (isinstance(spec.default, list) and (
        spec.element is float or (spec.default and isinstance(spec.default[0], float))))
    if floats and param.type_ == Parameter.Type.INTEGER:
        return Parameter(param.name, Parameter.Type.DOUBLE, float(param.value))
    if floats and param.type_ == Parameter.Type.INTEGER_ARRAY:
        return Parameter(param.name, Parameter.Type.DOUBLE_ARRAY, [float(v) for v in param.value])
    return param


def _value_problem(spec: ParamSpec, value: Any) -> str | None:
    """Why ``value`` is no value for ``spec`` (finite, in range, one of its choices), or None."""
    values = value if isinstance(value, list) else [value]
    if any(isinstance(v, float) and not math.isfinite(v) for v in values):
        return f"parameter '{spec.name}' = {value!r} is not finite"
    try:
        spec.check(value)
    except ParameterError as exc:
        return str(exc)
    return None
