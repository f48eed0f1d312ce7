"""Taps every topic of the graph as serialized bytes: the shared part of the recorder and the
Foxglove bridge. Topics are discovered as they appear and each is subscribed with a QoS its
publishers can serve (transient-local when they latch, reliable when they are, else best effort)."""

from __future__ import annotations

import importlib
import time
from typing import Callable

from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy


def message_class(type_name: str) -> type:
    """'sensor_msgs/msg/JointState' -> the generated message class."""
    package, _, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


class TopicTap:
    def __init__(
        self,
        node: Node,
        on_topic: Callable[[str, str, QoSProfile], None],
        on_message: Callable[[str, bytes, int], None],
        exclude: list[str],
        period: float,
        depth: int = 100,
    ) -> None:
        """``on_topic(topic, type_name, qos)`` once per new topic (raise to skip it), then
        ``on_message(topic, cdr_bytes, receive_time_ns)`` for each message; ``depth`` messages
        per topic wait in the middleware while the tap is busy (a recorder wants many)."""
        self.depth = depth
        self.node = node
        self.on_topic, self.on_message = on_topic, on_message
        self.exclude = set(exclude)
        self.subscriptions: dict[str, object] = {}
        self.skipped: dict[str, str] = {}
        # Wall (steady) time: in lockstep, sim time stands still until the run starts, which may
        # wait for this very tap (the controller's lockstep_readers).
        node.create_timer(period, self.discover, clock=Clock(clock_type=ClockType.STEADY_TIME))

    def qos_for(self, topic: str) -> QoSProfile:
        infos = self.node.get_publishers_info_by_topic(topic)
        latched = bool(infos) and all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
        reliable = bool(infos) and all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
        return QoSProfile(
            depth=self.depth,
            reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
        )

    def discover(self) -> None:
        for topic, types in self.node.get_topic_names_and_types():
            if topic in self.subscriptions or topic in self.skipped or topic in self.exclude:
                continue
            if len(types) != 1:
                self.skipped[topic] = f"several types {types}"
                continue
            if not self.node.get_publishers_info_by_topic(topic):
                continue  # only subscribers so far: no QoS to match yet
            qos = self.qos_for(topic)
            try:
                cls = message_class(types[0])
                self.on_topic(topic, types[0], qos)
            except (ImportError, AttributeError, FileNotFoundError, ValueError) as exc:
                self.skipped[topic] = str(exc)
                self.node.get_logger().warning(f"not tapping {topic} ({types[0]}): {exc}")
                continue
            self.subscriptions[topic] = self.node.create_subscription(
                cls, topic, lambda data, t=topic: self.on_message(t, data, time.time_ns()), qos, raw=True
            )
