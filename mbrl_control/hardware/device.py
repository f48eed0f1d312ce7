"""The device interface of the driver template, and a loopback device to test it without hardware.

To run the stack on your own robot, subclass ``Device`` (open/close the connection, read joint
states, write efforts) and start the driver with ``device:=your_package.your_module:YourDevice``.
"""

from __future__ import annotations

import abc
import importlib
import time
from dataclasses import dataclass

import numpy as np


@dataclass
class JointReading:
    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray


class Device(abc.ABC):
    """One robot's joints; arrays are in the order of the ``joints`` the driver was given."""

    def __init__(self, joints: list[str]) -> None:
        self.joints = list(joints)

    @abc.abstractmethod
    def open(self) -> None:
        """Connect (serial port, CAN bus, EtherCAT master, ...). Raise on failure."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection; must be safe to call twice."""

    @abc.abstractmethod
    def read(self) -> JointReading: ...

    @abc.abstractmethod
    def write(self, effort: np.ndarray) -> None: ...

    def safe_stop(self) -> np.ndarray:
        """Called every loop while the driver must not drive the joints (e-stop latched, inactive,
        no fresh command); returns the efforts it applied. Zero effort here, which is safe for a
        robot that rests safely unpowered (a cart-pole, a wheeled base). An arm must not go limp:
        its ``Device`` overrides this to engage its brakes (or, without brakes, to command its own
        gravity compensation) and returns what it applied."""
        effort = np.zeros(len(self.joints))
        self.write(effort)
        return effort


class LoopbackDevice(Device):
    """Each joint a unit mass with viscous damping, integrated on every read: efforts written
    come back as motion, so limits, timeouts and the e-stop can be tested end to end."""

    def __init__(self, joints: list[str], mass: float = 1.0, damping: float = 2.0) -> None:
        super().__init__(joints)
        self.mass, self.damping = mass, damping
        n = len(joints)
        self.position, self.velocity, self.effort = np.zeros(n), np.zeros(n), np.zeros(n)
        self.is_open = False
        self._last: float | None = None

    def open(self) -> None:
        self.is_open = True
        self._last = time.monotonic()

    def close(self) -> None:
        self.is_open = False

    def write(self, effort: np.ndarray) -> None:
        if not self.is_open:
            raise RuntimeError("device is not open")
        self.effort = np.asarray(effort, dtype=float).copy()

    def read(self) -> JointReading:
        if not self.is_open:
            raise RuntimeError("device is not open")
        now = time.monotonic()
        dt = min(now - self._last, 0.1)
        self._last = now
        accel = (self.effort - self.damping * self.velocity) / self.mass
        self.velocity = self.velocity + dt * accel
        self.position = self.position + dt * self.velocity
        return JointReading(self.position.copy(), self.velocity.copy(), self.effort.copy())


def load_device_class(path: str) -> type[Device]:
    """``'package.module:ClassName'`` -> the class; it must subclass Device."""
    module_name, _, class_name = path.partition(":")
    if not module_name or not class_name:
        raise ValueError(f"device '{path}' must look like 'package.module:ClassName'")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Device)):
        raise ValueError(f"device '{path}' is not a subclass of mbrl_control.hardware.device.Device")
    return cls
