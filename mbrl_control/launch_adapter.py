"""The one adapter from a node-graph description (mbrl_control.graph) to launch_ros actions,
shared by every launch file. Imports launch and launch_ros: only launch files import it."""

from __future__ import annotations

from typing import Callable

from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable, Shutdown
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from mbrl_control.dependencies import missing_packages, missing_packages_message
from mbrl_control.graph import EXIT_BAD_PARAMETER, LaunchArgument, NodeSpec

DISCOVERY_RANGE = "ROS_AUTOMATIC_DISCOVERY_RANGE"


def _shutdown_if_refused(name: str) -> Callable:
    """A node that cannot start with its parameters ends the launch, as the pip-only launcher does:
    no half-running stack (its [FATAL] line says which parameter)."""

    def on_exit(event, context):
        if event.returncode == EXIT_BAD_PARAMETER:
            return [Shutdown(reason=f"{name} could not start with its parameters")]
        return None

    return on_exit


def launch_description(arguments: list[LaunchArgument], build: Callable[[dict[str, str]], list[NodeSpec]]) -> LaunchDescription:
    def nodes(context):
        missing = missing_packages()  # a colcon build without `pip install -r requirements.txt`
        if missing:
            raise RuntimeError(missing_packages_message(missing))
        args = {a.name: LaunchConfiguration(a.name).perform(context) for a in arguments}
        return [
            Node(
                package=spec.package,
                executable=spec.executable,
                name=spec.name,
                namespace=spec.namespace,  # given, so dict overrides key on the node's full name
                parameters=spec.parameters,
                remappings=spec.remappings,
                arguments=spec.arguments,
                output="screen",
                emulate_tty=True,
                # A list: launch then counts the action among the Node's sub-entities (get_sub_entities()).
                on_exit=[Shutdown(reason=f"{spec.name} finished")] if spec.ends_launch else _shutdown_if_refused(spec.name),
            )
            for spec in build(args)
        ]

    return LaunchDescription(
        [
            # Security default, as the pip-only launcher: DDS discovery stays on this machine
            # unless ROS_AUTOMATIC_DISCOVERY_RANGE is already set (to anything).
            SetEnvironmentVariable(DISCOVERY_RANGE, EnvironmentVariable(DISCOVERY_RANGE, default_value="LOCALHOST")),
        ]
        + [
            DeclareLaunchArgument(a.name, default_value=a.default, description=a.description, choices=list(a.choices) or None)
            for a in arguments
        ]
        + [OpaqueFunction(function=nodes)]
    )
