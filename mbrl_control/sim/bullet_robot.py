"""A URDF robot in PyBullet, driven by joint efforts, with a fixed physics step.

ROS-free: the sim node wraps it with topics and timing; tests use it directly.
"""

from __future__ import annotations

import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pybullet
from pybullet_utils.bullet_client import BulletClient

from mbrl_control.core.urdf import absolute_mesh_paths


@dataclass
class JointSample:
    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray


class BulletRobot:
    """One robot in its own PyBullet client (several may live in one process).

    ``joint_names`` lists the movable joints in URDF order. Efforts are applied with
    TORQUE_CONTROL after PyBullet's default velocity motors are switched off, and PyBullet's
    default link damping is removed so the URDF's joint damping is the only dissipation.
    """

    def __init__(self, urdf: str | Path, physics_dt: float, gravity: float = 9.81, gui: bool = False):
        self._client = BulletClient(connection_mode=pybullet.GUI if gui else pybullet.DIRECT)
        c = self._client
        c.setGravity(0.0, 0.0, -gravity)
        c.setTimeStep(physics_dt)
        self.physics_dt = physics_dt
        self._folder = Path(urdf).parent  # a reloaded text's relative meshes are found from here
        self._load(urdf)
        self._nominal: tuple[BulletClient, int, list[int]] | None = None

    def compensate_gravity(self, urdf: str | Path, gravity: float) -> None:
        """From now on add, at every physics step, the efforts that hold the robot ``urdf`` still
        against ``gravity``: the robot's own controller compensating gravity from its nominal
        model (Franka, Kinova, KUKA FRI torque mode). What the nominal model lacks (a payload, a
        randomized link) stays uncompensated, as on a real robot. Computed in a client of its own
        that is never stepped."""
        c = BulletClient(connection_mode=pybullet.DIRECT)
        c.setGravity(0.0, 0.0, -gravity)
        body = c.loadURDF(str(urdf), useFixedBase=True, flags=pybullet.URDF_USE_INERTIA_FROM_FILE)
        named = {c.getJointInfo(body, j)[1].decode(): j for j in range(c.getNumJoints(body))}
        missing = [n for n in self.joint_names if n not in named]
        if missing:
            raise ValueError(f"the nominal robot {urdf} lacks joints {missing}")
        self._nominal = (c, body, [named[n] for n in self.joint_names])

    def compensation(self, position: "np.ndarray | list[float]") -> np.ndarray:
        """The efforts the robot's own gravity compensation adds at ``position`` (zeros without one)."""
        if self._nominal is None:
            return np.zeros(len(self._indices))
        c, body, indices = self._nominal
        zeros = [0.0] * len(indices)
        return np.array(c.calculateInverseDynamics(body, [float(q) for q in position], zeros, zeros))

    def reload(self, urdf_text: str) -> None:
        """Replace the robot by the one ``urdf_text`` describes (same joints; domain randomization)."""
        names = self.joint_names
        root = ET.fromstring(urdf_text)
        absolute_mesh_paths(root, self._folder)  # the text is loaded from a temp file
        self._client.removeBody(self.body)
        with tempfile.NamedTemporaryFile("w", suffix=".urdf") as f:
            f.write(ET.tostring(root, encoding="unicode"))
            f.flush()
            self._load(f.name)
        if self.joint_names != names:
            raise ValueError(f"reloaded robot has joints {self.joint_names}, expected {names}")

    def _load(self, urdf: str | Path) -> None:
        c = self._client
        self.body = c.loadURDF(str(urdf), useFixedBase=True, flags=pybullet.URDF_USE_INERTIA_FROM_FILE)
        self.joint_names: list[str] = []
        self._joint_index: dict[str, int] = {}
        for j in range(c.getNumJoints(self.body)):
            info = c.getJointInfo(self.body, j)
            c.changeDynamics(self.body, j, linearDamping=0.0, angularDamping=0.0)
            if info[2] == pybullet.JOINT_FIXED:
                continue
            name = info[1].decode()
            self.joint_names.append(name)
            self._joint_index[name] = j
        self._indices = [self._joint_index[n] for n in self.joint_names]
        c.setJointMotorControlArray(
            self.body, self._indices, pybullet.VELOCITY_CONTROL, forces=[0.0] * len(self._indices)
        )
        self._effort = np.zeros(len(self._indices))

    def indices(self, names: list[str]) -> list[int]:
        """Positions of ``names`` in ``joint_names`` (raises for an unknown joint)."""
        missing = [n for n in names if n not in self._joint_index]
        if missing:
            raise ValueError(f"unknown joints {missing}; the URDF has {self.joint_names}")
        return [self.joint_names.index(n) for n in names]

    def reset(self, position: np.ndarray, velocity: np.ndarray) -> None:
        for k, j in enumerate(self._indices):
            self._client.resetJointState(self.body, j, float(position[k]), float(velocity[k]))
        self._effort[:] = 0.0

    def step(self, effort: np.ndarray, n_steps: int = 1) -> None:
        """Hold ``effort`` (one per movable joint) for ``n_steps`` physics steps."""
        self._effort[:] = effort
        forces = self._effort.tolist()
        for _ in range(n_steps):
            if self._nominal is not None:  # positions only: this runs every physics step
                positions = [s[0] for s in self._client.getJointStates(self.body, self._indices)]
                forces = (self._effort + self.compensation(positions)).tolist()
            # PyBullet clears TORQUE_CONTROL forces after every stepSimulation: set them each step.
            self._client.setJointMotorControlArray(
                self.body, self._indices, pybullet.TORQUE_CONTROL, forces=forces
            )
            self._client.stepSimulation()

    def holding_effort(self, position: np.ndarray) -> np.ndarray:
        """The effort that holds the joints still at ``position`` against gravity (PyBullet's
        inverse dynamics at rest): what brakes holding them there exert, and their joint torque
        sensors read; on top of the robot's own gravity compensation, where it has one)."""
        zeros = [0.0] * len(self._indices)
        held = np.array(self._client.calculateInverseDynamics(self.body, [float(q) for q in position], zeros, zeros))
        return held - self.compensation(position)

    def state(self) -> JointSample:
        states = self._client.getJointStates(self.body, self._indices)
        return JointSample(
            position=np.array([s[0] for s in states]),
            velocity=np.array([s[1] for s in states]),
            effort=self._effort.copy(),
        )

    def close(self) -> None:
        for client in (self._client, self._nominal[0] if self._nominal else None):
            try:
                if client is not None:
                    client.disconnect()
            except pybullet.error:
                pass
