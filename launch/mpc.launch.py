"""ros2 launch mbrl_control mpc.launch.py [robot:=cartpole] [mode:=realtime|lockstep] [gui:=false]
[use_sim:=true] [hardware:=mock|ros2_control|loopback|pkg.module:Device] [planner:=cem] [duration:=0]
[record:=false] [rviz:=false]  (ros2 launch mbrl_control mpc.launch.py --show-args lists them all)

A thin adapter: the node graph itself (nodes, parameter files, remappings per argument) lives in
mbrl_control.graph, which the pip-only launcher (mbrl-control launch mpc) reads too.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable, Shutdown
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node

from mbrl_control.graph import MPC_ARGUMENTS, mpc_graph

DISCOVERY_RANGE = "ROS_AUTOMATIC_DISCOVERY_RANGE"


def _nodes(context):
    args = {a.name: LaunchConfiguration(a.name).perform(context) for a in MPC_ARGUMENTS}
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
            on_exit=[Shutdown(reason=f"{spec.name} finished")] if spec.ends_launch else None,
        )
        for spec in mpc_graph(args)
    ]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            # Security default, as the pip-only launcher: DDS discovery stays on this machine
            # unless ROS_AUTOMATIC_DISCOVERY_RANGE is already set (to anything).
            SetEnvironmentVariable(DISCOVERY_RANGE, EnvironmentVariable(DISCOVERY_RANGE, default_value="LOCALHOST")),
        ]
        + [
            DeclareLaunchArgument(a.name, default_value=a.default, description=a.description, choices=list(a.choices) or None)
            for a in MPC_ARGUMENTS
        ]
        + [OpaqueFunction(function=_nodes)]
    )
