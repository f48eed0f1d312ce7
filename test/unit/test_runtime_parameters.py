"""Which parameters change at runtime is data (``ParamSpec.dynamic``), and the descriptors say so:
writable only where a node applies them, read-only with the reason everywhere else."""

import dataclasses

import pytest

from mbrl_control.core.builders import build_planner, load_robot, planner_config_class
from mbrl_control.nodes import controller_node, estimator_node
from mbrl_control.nodes.params import FIXED_AT_START, ROBOT_PARAMS, ParamSpec, task_parameter_specs


def by_name(specs):
    return {s.name: s for s in specs}


def test_descriptor_is_writable_only_for_a_dynamic_spec_on_a_node_that_applies_it():
    weight = ParamSpec("task.upright.weight", 1.0, "weight", 0.0, 1e9, dynamic=True)
    assert not weight.descriptor(runtime=True).read_only
    assert "settable at runtime" in weight.descriptor(runtime=True).additional_constraints
    assert weight.descriptor(runtime=True).floating_point_range[0].to_value == 1e9
    elsewhere = weight.descriptor(runtime=False)  # e.g. the run monitor, which judges with the weights
    assert elsewhere.read_only and "reads it once at start" in elsewhere.additional_constraints
    planner = ParamSpec("planner", "cem", "planning algorithm", choices=("cem", "mppi"))
    d = planner.descriptor(runtime=True)
    assert d.read_only and d.additional_constraints == f"one of cem, mppi; read-only: {FIXED_AT_START}"


def test_structural_parameters_stay_read_only_and_say_why():
    controller = by_name(controller_node.PARAMS)
    for name in ("urdf", "state_joints", "command_joints", "control_rate", "effort_limits"):
        assert not controller[name].dynamic
        assert "describes the robot" in controller[name].why_read_only()
    for name in ("planner", "mode", "model", "compile", "ensemble.hidden", "torch_threads"):
        assert not controller[name].dynamic and controller[name].why_read_only()
    assert "horizon" in controller["cem.horizon"].why_read_only() and not controller["cem.horizon"].dynamic
    task = by_name(task_parameter_specs() + task_parameter_specs(["upright"]))
    assert task["task.upright.weight"].dynamic and task["task.terminal"].dynamic
    residual = task["task.upright.residual"]
    assert not residual.dynamic and "terms are built at start" in residual.why_read_only()
    assert not any(s.dynamic for s in ROBOT_PARAMS)


def test_the_dynamic_parameters_are_the_ones_the_nodes_apply():
    controller = {s.name for s in controller_node.PARAMS if s.dynamic}
    budgets = {f"{planner}.{field}" for planner, fields in controller_node.RUNTIME_BUDGET.items() for field in fields}
    assert controller == {"deadline_fraction", "marker_rate", "terminal_weight", *controller_node.SAFETY_PARAMS,
                          *budgets}
    estimator = {s.name for s in estimator_node.PARAMS if s.dynamic}
    assert estimator == {"marker_rate", "estimator.position_noise_std", "estimator.velocity_noise_std",
                         "estimator.accel_noise_density"}


@pytest.mark.parametrize("name", sorted(controller_node.RUNTIME_BUDGET))
def test_each_runtime_budget_is_one_the_planner_takes(name):
    """RUNTIME_BUDGET (the controller's table) and the planners' set_budget must not drift apart."""
    robot = load_robot("cartpole")
    fields = controller_node.RUNTIME_BUDGET[name]
    config_fields = {f.name for f in dataclasses.fields(planner_config_class(name))}
    assert set(fields) <= config_fields
    planner = build_planner(name, robot.model, robot.task, {"horizon": 10}, compile=False)
    current = {field: getattr(planner.config, field) for field in fields}
    assert planner.budget_problem(compiled=True, **current) is None  # no change is always fine
    halved = {field: max(1, value // 2) for field, value in current.items()}
    halved = {**halved, **({"elites": min(halved["elites"], halved["population"])} if "elites" in halved else {})}
    assert planner.budget_problem(**halved) is None
    planner.set_budget(**halved)
    assert {field: getattr(planner.config, field) for field in fields} == halved
    assert "no runtime setting" in planner.budget_problem(horizon=5)
