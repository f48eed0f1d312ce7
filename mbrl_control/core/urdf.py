"""Reads the physical parameters a model needs from a URDF file (no ROS, no PyBullet).

The sim loads the same file, so the analytic model and the simulated robot cannot disagree on
masses, inertias, damping or limits.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class UrdfLink:
    name: str
    mass: float = 0.0
    com: np.ndarray = field(default_factory=lambda: np.zeros(3))
    inertia: np.ndarray = field(default_factory=lambda: np.zeros((3, 3)))  # about the COM, link frame


@dataclass(frozen=True)
class UrdfJoint:
    name: str
    type: str
    parent: str
    child: str
    axis: np.ndarray
    origin_xyz: np.ndarray
    lower: float = -math.inf
    upper: float = math.inf
    effort: float = math.inf
    velocity: float = math.inf
    damping: float = 0.0
    friction: float = 0.0
    origin_rpy: np.ndarray = field(default_factory=lambda: np.zeros(3))  # fixed roll-pitch-yaw [rad]


@dataclass(frozen=True)
class UrdfRobot:
    name: str
    links: dict[str, UrdfLink]
    joints: dict[str, UrdfJoint]

    @property
    def root_link(self) -> str:
        """The one link that is no joint's child (the fixed base)."""
        children = {j.child for j in self.joints.values()}
        roots = [name for name in self.links if name not in children]
        if len(roots) != 1:
            raise ValueError(f"URDF '{self.name}' must have exactly one root link, found {roots}")
        return roots[0]

    @property
    def movable_joints(self) -> list[UrdfJoint]:
        """Joints that carry state, in file order (the order PyBullet reports them in)."""
        return [j for j in self.joints.values() if j.type != "fixed"]


def _floats(text: str | None, default: str) -> np.ndarray:
    return np.array([float(v) for v in (text or default).split()], dtype=np.float64)


def rpy_matrix(rpy: np.ndarray) -> np.ndarray:
    """The rotation URDF means by ``rpy``: fixed-axis roll about x, then pitch about y, then yaw about z."""
    r, p, y = rpy
    rx = np.array([[1, 0, 0], [0, math.cos(r), -math.sin(r)], [0, math.sin(r), math.cos(r)]])
    ry = np.array([[math.cos(p), 0, math.sin(p)], [0, 1, 0], [-math.sin(p), 0, math.cos(p)]])
    rz = np.array([[math.cos(y), -math.sin(y), 0], [math.sin(y), math.cos(y), 0], [0, 0, 1]])
    return rz @ ry @ rx


def read_urdf(path: str | Path) -> UrdfRobot:
    """Parse links (mass, COM, inertia) and joints (origin, axis, limits, dynamics) of a URDF file."""
    root = ET.parse(path).getroot()
    links: dict[str, UrdfLink] = {}
    for el in root.findall("link"):
        inertial = el.find("inertial")
        if inertial is None:
            links[el.get("name")] = UrdfLink(el.get("name"))
            continue
        origin = inertial.find("origin")
        com = _floats(origin.get("xyz") if origin is not None else None, "0 0 0")
        rot = rpy_matrix(_floats(origin.get("rpy") if origin is not None else None, "0 0 0"))
        mass_el = inertial.find("mass")
        mass = float(mass_el.get("value")) if mass_el is not None else 0.0
        i = inertial.find("inertia")
        get = (lambda k: float(i.get(k, "0"))) if i is not None else (lambda k: 0.0)
        inertia = np.array(
            [
                [get("ixx"), get("ixy"), get("ixz")],
                [get("ixy"), get("iyy"), get("iyz")],
                [get("ixz"), get("iyz"), get("izz")],
            ]
        )
        links[el.get("name")] = UrdfLink(el.get("name"), mass, com, rot @ inertia @ rot.T)
    joints: dict[str, UrdfJoint] = {}
    for el in root.findall("joint"):
        limit = el.find("limit")
        dyn = el.find("dynamics")
        origin = el.find("origin")
        axis = el.find("axis")
        lim = (lambda k, d: float(limit.get(k, d))) if limit is not None else (lambda k, d: float(d))
        jtype = el.get("type")
        bounded = jtype in ("prismatic", "revolute")
        joints[el.get("name")] = UrdfJoint(
            name=el.get("name"),
            type=jtype,
            parent=el.find("parent").get("link"),
            child=el.find("child").get("link"),
            axis=_floats(axis.get("xyz") if axis is not None else None, "1 0 0"),
            origin_xyz=_floats(origin.get("xyz") if origin is not None else None, "0 0 0"),
            origin_rpy=_floats(origin.get("rpy") if origin is not None else None, "0 0 0"),
            lower=lim("lower", "-inf") if bounded else -math.inf,
            upper=lim("upper", "inf") if bounded else math.inf,
            effort=lim("effort", "inf"),
            velocity=lim("velocity", "inf"),
            damping=float(dyn.get("damping", "0")) if dyn is not None else 0.0,
            friction=float(dyn.get("friction", "0")) if dyn is not None else 0.0,
        )
    return UrdfRobot(root.get("name", ""), links, joints)


def absolute_mesh_paths(root: ET.Element, base: Path, uri: bool = False) -> None:
    """Make ``root``'s relative mesh filenames absolute (from the URDF's folder ``base``), in place,
    so the text still finds its meshes from elsewhere (a rewritten copy in a temp file; rviz, which
    resolves only ``file://`` URIs, with ``uri``)."""
    for mesh in root.iter("mesh"):
        name = mesh.get("filename", "")
        if name and "://" not in name and not name.startswith("/"):
            path = (base / name).resolve()
            mesh.set("filename", path.as_uri() if uri else str(path))

