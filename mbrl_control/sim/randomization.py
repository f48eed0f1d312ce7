"""The simulated robot's physics beyond its URDF: a payload the URDF does not know (a model error
the controller must cope with) and domain randomization, one draw per episode: a learner that only
ever sees one exact robot overfits it ("performance bias"); a spread of masses, lengths, frictions,
motor gains and payloads makes the learned model, and what is planned with it, robust to the real one.

Pure: draws parameters and rewrites the URDF text; the sim node reloads the robot from it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np

from mbrl_control.core.util import setting


@dataclass(frozen=True)
class PayloadConfig:
    """What the real robot carries that its URDF does not say: the controller's model never sees it."""

    link: str = setting("", "the link that carries the payload (its mass_scale and the point mass); empty: none")
    mass: float = setting(0.0, "a point mass fixed to the link at offset [kg] (a tool or load the URDF does not know)",
                          0.0, 1000.0)
    offset: tuple[float, ...] = setting((0.0, 0.0, 0.0), "where the point mass sits in the link's frame [m]",
                                        -10.0, 10.0)
    mass_scale: float = setting(1.0, "multiplier on the link's own mass and inertia (a heavier link of the same "
                                "shape: the cart-pole's pole 30 % heavier is 1.3)", 0.01, 100.0)

    def __post_init__(self) -> None:
        if len(self.offset) != 3:
            raise ValueError(f"payload offset needs 3 values [m], got {len(self.offset)}")
        if not self.link and (self.mass > 0.0 or self.mass_scale != 1.0):
            raise ValueError("payload mass or mass_scale needs payload.link: the link that carries it")


def apply_payload(text: str, link: str, mass: float = 0.0, offset: tuple[float, ...] = (0.0, 0.0, 0.0),
                  mass_scale: float = 1.0) -> str:
    """``text`` with ``link``'s mass and inertia times ``mass_scale`` and a point mass of ``mass``
    kg fixed to it at ``offset`` (a child link on a fixed joint, which PyBullet lumps into it)."""
    if mass <= 0.0 and mass_scale == 1.0:
        return text
    root = ET.fromstring(text)
    carrier = root.find(f"link[@name='{link}']")
    if carrier is None:
        raise ValueError(f"payload link '{link}' is not in the URDF")
    if mass_scale != 1.0:
        inertial = carrier.find("inertial")
        if inertial is None:
            raise ValueError(f"payload link '{link}' has no inertial to scale")
        element = inertial.find("mass")
        element.set("value", _fmt(float(element.get("value")) * mass_scale))
        inertia = inertial.find("inertia")
        if inertia is not None:
            for key in ("ixx", "ixy", "ixz", "iyy", "iyz", "izz"):
                inertia.set(key, _fmt(float(inertia.get(key, "0")) * mass_scale))
    if mass > 0.0:
        name = f"{link}_payload"
        body = ET.SubElement(root, "link", name=name)
        inertial = ET.SubElement(body, "inertial")
        ET.SubElement(inertial, "origin", xyz=" ".join(_fmt(v) for v in offset), rpy="0 0 0")
        ET.SubElement(inertial, "mass", value=_fmt(mass))
        tiny = _fmt(1e-6 * mass)  # a point mass; PyBullet wants a positive inertia
        ET.SubElement(inertial, "inertia", ixx=tiny, ixy="0", ixz="0", iyy=tiny, iyz="0", izz=tiny)
        joint = ET.SubElement(root, "joint", name=f"{name}_joint", type="fixed")
        ET.SubElement(joint, "parent", link=link)
        ET.SubElement(joint, "child", link=name)
        ET.SubElement(joint, "origin", xyz="0 0 0", rpy="0 0 0")
    return ET.tostring(root, encoding="unicode")


@dataclass(frozen=True)
class RandomizationConfig:
    enabled: bool = setting(False, "draw new physical parameters at every reset")
    link: str = setting("", "the link whose mass and length are scaled (a rod along its joint's z axis); empty: none")
    mass_scale: tuple[float, ...] = setting((0.8, 1.2), "uniform range of the link's mass multiplier", 0.01, 100.0)
    length_scale: tuple[float, ...] = setting((0.8, 1.2), "uniform range of the link's length multiplier", 0.01, 100.0)
    joint_damping: tuple[float, ...] = setting((0.0, 0.05), "uniform range of viscous damping added to every joint", 0.0, 100.0)
    motor_gain: tuple[float, ...] = setting((0.9, 1.1), "uniform range of applied effort per commanded effort", 0.0, 10.0)
    payload_mass: tuple[float, ...] = setting((0.0, 0.0), "uniform range of a point mass added to payload.mass at "
                                              "payload.link and offset [kg]", 0.0, 1000.0)
    seed: int = setting(0, "random seed of the draws", 0, 2**31 - 1)
    every_reset: bool = setting(True, "draw anew at every reset (domain randomization); false: draw once and keep it, "
                                "a robot of its own for the whole run (a fleet's robots)")


@dataclass(frozen=True)
class PhysicalDraw:
    mass_scale: float = 1.0
    length_scale: float = 1.0
    joint_damping: float = 0.0
    motor_gain: float = 1.0
    payload_mass: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.__dict__.items()}


class DomainRandomizer:
    def __init__(self, config: RandomizationConfig, payload: PayloadConfig = PayloadConfig()) -> None:
        for name in ("mass_scale", "length_scale", "joint_damping", "motor_gain", "payload_mass"):
            low, high = getattr(config, name)
            if not low <= high:
                raise ValueError(f"randomization '{name}' needs [low, high] with low <= high")
        if config.enabled and config.payload_mass[1] > 0.0 and not payload.link:
            raise ValueError("randomization 'payload_mass' needs payload.link: the link that carries it")
        self.config = config
        self.payload = payload
        self.rng = np.random.default_rng(config.seed)
        self._kept: PhysicalDraw | None = None

    def draw(self) -> PhysicalDraw:
        if not self.config.enabled:
            return PhysicalDraw()
        if self._kept is not None:
            return self._kept
        c, u = self.config, self.rng.uniform
        draw = PhysicalDraw(u(*c.mass_scale), u(*c.length_scale), u(*c.joint_damping), u(*c.motor_gain),
                            u(*c.payload_mass) if c.payload_mass[1] > 0.0 else 0.0)
        if not c.every_reset:
            self._kept = draw
        return draw

    def urdf(self, text: str, draw: PhysicalDraw) -> str:
        """``text`` with the link scaled, damping added and the payload's drawn mass, per ``draw``."""
        if draw == PhysicalDraw():
            return text
        text = apply_payload(text, self.payload.link, draw.payload_mass, self.payload.offset)
        if (draw.mass_scale, draw.length_scale, draw.joint_damping) == (1.0, 1.0, 0.0):
            return text
        root = ET.fromstring(text)
        link = root.find(f"link[@name='{self.config.link}']")
        if link is None:
            raise ValueError(f"randomization link '{self.config.link}' is not in the URDF")
        m, s = draw.mass_scale, draw.length_scale
        inertial = link.find("inertial")
        if inertial is not None:
            mass = inertial.find("mass")
            mass.set("value", _fmt(float(mass.get("value")) * m))
            origin = inertial.find("origin")
            if origin is not None:
                origin.set("xyz", _scale_xyz(origin.get("xyz", "0 0 0"), (1.0, 1.0, s)))
            inertia = inertial.find("inertia")
            if inertia is not None:  # a rod along z: ixx, iyy ~ m L^2, izz ~ m
                for key, factor in (("ixx", m * s * s), ("iyy", m * s * s), ("izz", m)):
                    inertia.set(key, _fmt(float(inertia.get(key, "0")) * factor))
        for shape in list(link.iter("visual")) + list(link.iter("collision")):
            origin, box = shape.find("origin"), shape.find("geometry/box")
            if origin is not None:
                origin.set("xyz", _scale_xyz(origin.get("xyz", "0 0 0"), (1.0, 1.0, s)))
            if box is not None:
                box.set("size", _scale_xyz(box.get("size"), (1.0, 1.0, s)))
        for joint in root.iter("joint"):
            if joint.get("type") == "fixed":
                continue
            dynamics = joint.find("dynamics")
            if dynamics is None:
                dynamics = ET.SubElement(joint, "dynamics")
            dynamics.set("damping", _fmt(float(dynamics.get("damping", "0")) + draw.joint_damping))
        return ET.tostring(root, encoding="unicode")


def _fmt(v: float) -> str:
    return f"{v:.9g}"


def _scale_xyz(text: str, factors: tuple[float, float, float]) -> str:
    return " ".join(_fmt(float(v) * f) for v, f in zip(text.split(), factors))
