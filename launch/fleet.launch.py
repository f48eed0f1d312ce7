"""ros2 launch mbrl_control fleet.launch.py [robots:=2] [part:=all|robots|learner] [episodes:=10]
[episode_length:=10] [mode:=lockstep] [robot:=<config>] [planner:=...] [device:=cpu|cuda|auto]
[randomize:=true] [output_dir:=runs/learn-<stamp>]

Several robots learning together: the robot stack (sim, estimator, controller) once per robot in
namespaces robot_0 ... robot_<n-1>, one learner taking every robot's transitions and publishing
the one model every controller follows, one episode manager running the robots' episodes in step.
part:=robots on the robots' host and part:=learner on the GPU host split it in two launches that
find each other over DDS. A thin adapter over mbrl_control.graph.fleet_graph, which the pip-only
launcher (mbrl-control launch fleet) reads too.
"""

from mbrl_control.graph import FLEET_ARGUMENTS, fleet_graph
from mbrl_control.launch_adapter import launch_description


def generate_launch_description():
    return launch_description(FLEET_ARGUMENTS, fleet_graph)
