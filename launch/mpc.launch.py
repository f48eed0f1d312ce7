"""ros2 launch mbrl_control mpc.launch.py [robot:=cartpole] [mode:=realtime|lockstep] [gui:=false]
[use_sim:=true] [hardware:=mock|ros2_control|loopback|pkg.module:Device] [estimator:=ekf|ukf|none]
[planner:=cem|icem|mppi|ilqr|lqr|nmpc|dp] [duration:=0] [record:=false] [rviz:=false] [foxglove:=false]
(ros2 launch mbrl_control mpc.launch.py --show-args lists them all)

A thin adapter: the node graph itself (nodes, parameter files, remappings per argument) lives in
mbrl_control.graph, which the pip-only launcher (mbrl-control launch mpc) reads too.
"""

from mbrl_control.graph import MPC_ARGUMENTS, mpc_graph
from mbrl_control.launch_adapter import launch_description


def generate_launch_description():
    return launch_description(MPC_ARGUMENTS, mpc_graph)
