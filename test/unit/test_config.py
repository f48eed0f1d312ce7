"""config/*.yaml holds every tunable value, and only parameters the nodes declare, in range."""

from pathlib import Path

import pytest
import yaml

from mbrl_control.config import node_parameters
from mbrl_control.nodes import (
    controller_node,
    driver_node,
    episode_manager,
    estimator_node,
    foxglove_bridge_node,
    goal_publisher,
    learner_node,
    mock_hardware_node,
    recorder_node,
    run_monitor,
    sim_node,
)
from mbrl_control.nodes.params import task_parameter_specs
from mbrl_control.nodes.scheduling import SCHEDULING_PARAMS
from mbrl_control.paths import config_dir

NODES = {
    "sim": sim_node.PARAMS,
    "mpc_controller": controller_node.PARAMS,
    "run_monitor": run_monitor.PARAMS,
    "mock_hardware": mock_hardware_node.PARAMS,
    "driver": driver_node.PARAMS,
    "recorder": recorder_node.PARAMS,
    "foxglove_bridge": foxglove_bridge_node.PARAMS,
    "estimator": estimator_node.PARAMS,
    "learner": learner_node.PARAMS,
    "episode_manager": episode_manager.PARAMS,
    "goal_publisher": goal_publisher.PARAMS,
}
NODES = {node: specs + SCHEDULING_PARAMS for node, specs in NODES.items()}  # every node declares these (runtime)
TASK_NODES = ("mpc_controller", "run_monitor", "episode_manager", "learner", "goal_publisher")  # declare task.*
CONFIGS = sorted(p for p in config_dir().glob("*.yaml") if "ros__parameters" in p.read_text())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_configured_parameter_is_declared_typed_and_in_range(path: Path):
    doc = yaml.safe_load(path.read_text())
    wildcard = node_parameters(path, "__none__")
    task = task_parameter_specs() + task_parameter_specs(list(wildcard.get("task.terms", [])))
    nodes = {node: specs + (task if node in TASK_NODES else []) for node, specs in NODES.items()}
    declared_anywhere = {s.name for specs in nodes.values() for s in specs}
    assert set(wildcard) <= declared_anywhere, set(wildcard) - declared_anywhere
    for node, specs in nodes.items():
        if node not in doc:
            continue
        by_name = {s.name: s for s in specs}
        own = set(node_parameters(path, node)) - set(wildcard)
        assert own <= set(by_name), f"{node}: undeclared {own - set(by_name)}"
        for name, value in node_parameters(path, node).items():
            if name not in by_name:
                continue  # a /** value meant for other nodes
            spec = by_name[name]
            assert type(value) is type(spec.default) or (isinstance(value, list) and isinstance(spec.default, list)), (
                f"{node}.{name}: {value!r} is not a {type(spec.default).__name__}"
            )
            spec.check(value)


def test_controller_config_sets_every_declared_parameter():
    params = node_parameters(config_dir() / "cartpole.yaml", "mpc_controller")
    missing = {s.name for s in controller_node.PARAMS} - set(params)
    assert not missing, f"config/cartpole.yaml leaves {missing} at code defaults"
