"""ros2 launch mbrl_control mpc.launch.py [robot:=cartpole] [mode:=realtime|lockstep] [gui:=false]
[use_sim:=true] [hardware:=mock|ros2_control|loopback|pkg.module:Device] [planner:=cem] [duration:=0]
[record:=false] [rviz:=false]  (ros2 launch mbrl_control mpc.launch.py --show-args lists them all)

A thin adapter: the node graph itself (nodes, parameter files, remappings per argument) lives in
mbrl_control.graph, which the pip-only launcher (mbrl-control launch mpc) reads too.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from mbrl_control.graph import MPC_ARGUMENTS, mpc_graph


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
            on_exit=Shutdown(reason=f"{spec.name} finished") if spec.ends_launch else None,
        )
        for spec in mpc_graph(args)
    ]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument(a.name, default_value=a.default, description=a.description, choices=list(a.choices) or None)
            for a in MPC_ARGUMENTS
        ]
        + [OpaqueFunction(function=_nodes)]
    )
