"""Joint messages in and out: validated conversion between sensor_msgs/JointState or
std_msgs/Float64MultiArray and the core's flat state and action vectors."""

from __future__ import annotations

from collections import Counter

import numpy as np
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray


class JointStateReader:
    """Turns JointState messages into ``x = [positions..., velocities...]`` in ``joints`` order.

    A message is rejected, counted by reason, and never used when a required joint is missing,
    the array lengths disagree with the names, or a value is not finite. Other joints are ignored,
    so a robot may publish more joints than the controller needs.
    """

    def __init__(self, joints: list[str], need_velocity: bool = True) -> None:
        self.joints = list(joints)
        self.need_velocity = need_velocity
        self.rejected: Counter[str] = Counter()

    def read(self, msg: JointState) -> np.ndarray | None:
        names = list(msg.name)
        n = len(names)
        if len(msg.position) != n or (self.need_velocity and len(msg.velocity) != n):
            return self._reject("length mismatch")
        try:
            idx = [names.index(j) for j in self.joints]
        except ValueError:
            return self._reject("unknown joint names")
        pos = np.asarray(msg.position, dtype=np.float64)[idx]
        # Without need_velocity, missing velocities read as zero (encoders that report positions only).
        has_velocity = len(msg.velocity) == n
        vel = np.asarray(msg.velocity, dtype=np.float64)[idx] if has_velocity else np.zeros(len(idx))
        x = np.concatenate([pos, vel])
        if not np.all(np.isfinite(x)):
            return self._reject("non-finite value")
        return x

    def _reject(self, reason: str) -> None:
        self.rejected[reason] += 1
        return None

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


def read_command(msg: Float64MultiArray, size: int) -> np.ndarray | str:
    """The command as an array, or the reason it is rejected."""
    data = np.asarray(msg.data, dtype=np.float64)
    if data.shape != (size,):
        return f"expected {size} values, got {data.size}"
    if not np.all(np.isfinite(data)):
        return "non-finite value"
    return data


def command_message(values: np.ndarray) -> Float64MultiArray:
    msg = Float64MultiArray()
    msg.data = [float(v) for v in values]
    return msg
