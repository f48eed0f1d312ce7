"""ros2 launch mbrl_control learn.launch.py [episodes:=10] [episode_length:=10] [mode:=lockstep]
[planner:=<the robot config's, else cem>] [control_rate:=<the robot config's>] [device:=cpu|cuda|auto]
[randomize:=false] [output_dir:=runs/learn-<stamp>]

Model-based RL from scratch: the controller explores, the learner fits an ensemble to what it
sees and publishes it, the controller plans on it; the episode manager resets the robot every
episode, records the learning curve and ends the launch. With planner:=policy it is MBPO: the
learner also trains a SAC policy in rollouts of each model and the controller runs it. A thin adapter over
mbrl_control.graph.learn_graph, which the pip-only launcher (mbrl-control launch learn) reads too.
"""

from mbrl_control.graph import LEARN_ARGUMENTS, learn_graph
from mbrl_control.launch_adapter import launch_description


def generate_launch_description():
    return launch_description(LEARN_ARGUMENTS, learn_graph)
