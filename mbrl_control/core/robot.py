"""A robot as data: its URDF and a few parameters (config/<robot>.yaml), turned into the one
description every part of the stack asks: joints, state layout, which states are angles,
limits, the equilibrium it regulates about, what a safe command is.

Nodes, planners and tasks never branch on a robot's name; they read a ``RobotSpec``. The state is
the ``state_joints``' positions then their velocities; the action is one effort per
``command_joints`` entry (the rest are passive, like the cart-pole's hinge).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mbrl_control.core.urdf import read_urdf
from mbrl_control.core.util import setting
from mbrl_control.paths import resolve_urdf

DYNAMICS = ("rigid_body", "cartpole")
SAFE_COMMANDS = ("zero", "gravity_hold")


class RobotSpecError(ValueError):
    """A robot description that does not fit its URDF (names the parameter at fault)."""


@dataclass(frozen=True)
class RobotConfig:
    """The parameters that describe a robot (``/**`` in config/<robot>.yaml, read by every node)."""

    urdf: str = setting("", "robot URDF; relative paths are under the package's config/, 'pybullet_data:<path>' "
                            "is a file shipped with pybullet")
    gravity: float = setting(9.81, "gravity [m/s^2]", 0.0, 30.0)
    gravity_compensated: bool = setting(
        False, "the robot's own controller adds the efforts that hold it against gravity (from its nominal URDF) to "
               "every command, as Franka's (libfranka: torques 'without gravity'), Kinova's and KUKA's FRI torque mode "
               "do: commands, and every model, are the efforts on top (the sim compensates so too)")
    state_joints: tuple[str, ...] = setting((), "joints of the state vector, in order (positions, then velocities)")
    command_joints: tuple[str, ...] = setting((), "actuated joints, in the order of the command array")
    control_rate: float = setting(50.0, "control ticks per second [Hz]", 1.0, 1000.0)
    control_phase: float = setting(0.0, "realtime: the controller ticks this fraction of the control period past each "
                                        "multiple of it on the ROS clock, and the estimator publishes its publish_lead "
                                        "before that (fleet.launch.py spreads the robots of one host across the period)",
                                   0.0, 0.999)
    effort_limits: tuple[float, ...] = setting((), "per command joint, an effort limit below the URDF's that planners, "
                                                   "tasks and the safety layer use (a data sheet's; empty: the URDF's)",
                                               0.0, 1e6)
    equilibrium: tuple[float, ...] = setting((), "joint positions (state_joints order) the robot regulates about: LQR's "
                                                 "linearisation point, the posture of the tasks' terms (empty: zeros)")
    keypoint_links: tuple[str, ...] = setting((), "links whose points rviz shows along a plan and with the estimate's "
                                                  "uncertainty (empty: the last link)")
    keypoint_offsets: tuple[float, ...] = setting((), "per keypoint link, the point in its frame: x, y, z each [m] "
                                                      "(empty: the links' origins)", -100.0, 100.0)


@dataclass(frozen=True)
class RobotSpec:
    """What the stack knows of a robot; arrays in ``state_joints`` order unless said otherwise."""

    urdf: Path
    name: str
    state_joints: tuple[str, ...]
    command_joints: tuple[str, ...]
    joint_types: tuple[str, ...]
    gravity: float  # the world's
    dt: float
    position_lower: np.ndarray  # -inf where unlimited (continuous joints)
    position_upper: np.ndarray
    velocity_limit: np.ndarray  # inf where the URDF gives none
    effort_limit: np.ndarray  # [nu], command_joints order
    equilibrium: np.ndarray  # [nq] positions
    keypoint_links: tuple[str, ...]  # points of the robot drawn in rviz ...
    keypoint_offsets: np.ndarray  # ... [K, 3], each in its link's frame
    gravity_compensated: bool = False  # the robot's controller cancels gravity under every command

    @property
    def model_gravity(self) -> float:
        """The gravity the robot's models see: none where its own controller compensates it."""
        return 0.0 if self.gravity_compensated else self.gravity

    @property
    def nq(self) -> int:
        return len(self.state_joints)

    @property
    def state_dim(self) -> int:
        return 2 * self.nq

    @property
    def action_dim(self) -> int:
        return len(self.command_joints)

    @property
    def angle_dims(self) -> tuple[int, ...]:
        """State entries that are angles which wind (continuous joints): wrapped, or fed to
        networks as (sin, cos). Revolute joints have limits inside +-pi and stay as they are."""
        return tuple(i for i, t in enumerate(self.joint_types) if t == "continuous")

    @property
    def rotational_dims(self) -> tuple[int, ...]:
        """Positions measured in radians (revolute and continuous joints)."""
        return tuple(i for i, t in enumerate(self.joint_types) if t in ("revolute", "continuous"))

    @property
    def command_index(self) -> tuple[int, ...]:
        """Per command joint, its index among the state joints."""
        return tuple(self.state_joints.index(j) for j in self.command_joints)

    @property
    def x_eq(self) -> np.ndarray:
        """The equilibrium state: the equilibrium positions at rest."""
        return np.concatenate([self.equilibrium, np.zeros(self.nq)])

    def joint_indices(self, joints: list[str] | tuple[str, ...], parameter: str) -> tuple[int, ...]:
        """State indices of ``joints`` (all state joints if empty); ``parameter`` names the caller in errors."""
        if not joints:
            return tuple(range(self.nq))
        unknown = [j for j in joints if j not in self.state_joints]
        if unknown:
            raise RobotSpecError(f"parameter '{parameter}': joints {unknown} are not state joints {list(self.state_joints)}")
        return tuple(self.state_joints.index(j) for j in joints)


def robot_spec(p: Mapping[str, Any], urdf: str | Path | None = None) -> RobotSpec:
    """The robot of the flat parameters ``p`` (``RobotConfig``'s fields); ``urdf`` overrides ``p['urdf']``.
    Raises ``RobotSpecError`` naming the parameter that does not fit the URDF."""
    path = Path(urdf) if urdf is not None else resolve_urdf(str(p.get("urdf", "")))
    if not path.is_file():
        raise RobotSpecError(f"parameter 'urdf': no such file {path}")
    robot = read_urdf(path)
    state_joints = tuple(p.get("state_joints") or ())
    command_joints = tuple(p.get("command_joints") or ())
    movable = [j.name for j in robot.movable_joints]
    if not state_joints:
        raise RobotSpecError(f"parameter 'state_joints' is empty; the URDF's movable joints are {movable}")
    unknown = [j for j in state_joints if j not in movable]
    if unknown:
        raise RobotSpecError(f"parameter 'state_joints': {unknown} are not movable joints of {path.name} ({movable})")
    if not command_joints or any(j not in state_joints for j in command_joints):
        raise RobotSpecError(f"parameter 'command_joints' = {list(command_joints)} must name state joints {list(state_joints)}")
    joints = [robot.joints[j] for j in state_joints]
    equilibrium = np.asarray(p.get("equilibrium") or np.zeros(len(joints)), dtype=np.float64)
    if equilibrium.shape != (len(joints),):
        raise RobotSpecError(f"parameter 'equilibrium' needs {len(joints)} positions (one per state joint), got {len(equilibrium)}")
    effort = np.array([robot.joints[j].effort for j in command_joints], dtype=np.float64)
    if not np.all(np.isfinite(effort) & (effort > 0)):
        raise RobotSpecError(f"{path.name}: every command joint needs a positive <limit effort=...> (got {effort.tolist()})")
    tighter = np.asarray(p.get("effort_limits") or effort, dtype=np.float64)
    if tighter.shape != effort.shape or np.any(tighter <= 0):
        raise RobotSpecError(f"parameter 'effort_limits' needs {len(effort)} positive values (one per command joint) or none")
    effort = np.minimum(effort, tighter)  # never above the URDF's
    links = tuple(p.get("keypoint_links") or ()) or (robot.joints[state_joints[-1]].child,)
    unknown_links = [link for link in links if link not in robot.links]
    if unknown_links:
        raise RobotSpecError(f"parameter 'keypoint_links': {unknown_links} are not links of {path.name}")
    offsets = np.asarray(p.get("keypoint_offsets") or np.zeros(3 * len(links)), dtype=np.float64)
    if offsets.shape != (3 * len(links),):
        raise RobotSpecError(f"parameter 'keypoint_offsets' needs 3 values per keypoint link ({3 * len(links)}), "
                             f"got {len(offsets)}")
    rate = float(p.get("control_rate", RobotConfig.control_rate))
    return RobotSpec(
        urdf=path,
        name=robot.name,
        state_joints=state_joints,
        command_joints=command_joints,
        joint_types=tuple(j.type for j in joints),
        gravity=float(p.get("gravity", RobotConfig.gravity)),
        dt=1.0 / rate,
        position_lower=np.array([j.lower if j.type != "continuous" else -math.inf for j in joints]),
        position_upper=np.array([j.upper if j.type != "continuous" else math.inf for j in joints]),
        velocity_limit=np.array([j.velocity if j.velocity > 0 else math.inf for j in joints]),
        effort_limit=effort,
        equilibrium=equilibrium,
        keypoint_links=links,
        keypoint_offsets=offsets.reshape(-1, 3),
        gravity_compensated=bool(p.get("gravity_compensated", RobotConfig.gravity_compensated)),
    )
