"""The recorder: writes every topic of the run to an MCAP file (runs/<stamp>/run.mcap), as
serialized CDR with rosbag2's schemas, so `ros2 bag info/play` and Foxglove read it.

New topics are discovered as they appear. Each is subscribed with a QoS its publishers can serve
(transient-local when they latch, reliable when they are, else best effort). SIGINT/SIGTERM close
the file properly; a write error (a full disk) stops recording, is reported in /diagnostics, and
never disturbs the other nodes.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from mbrl_control.nodes.diagnostics import ERROR, OK, DiagnosticsPublisher
from mbrl_control.nodes.params import ParamSpec, declare_parameters
from mbrl_control.nodes.runtime import main_for
from mbrl_control.recording.mcap_file import McapRecorder

PARAMS = [
    ParamSpec("output", "", "MCAP file to write; empty: runs/<YYYYmmdd-HHMMSS>/run.mcap"),
    ParamSpec("exclude", ["/parameter_events"], "topics not to record"),
    ParamSpec("discovery_period", 0.5, "how often to look for new topics [s]", 0.05, 60.0),
    ParamSpec("chunk_size", 65536, "MCAP chunk size [bytes]: at most this is lost in a hard crash", 1024, 1 << 26),
    ParamSpec("diagnostics_rate", 1.0, "diagnostics publish rate [Hz]", 0.1, 100.0),
]


def message_class(type_name: str) -> type:
    package, _, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


class RecorderNode(Node):
    def __init__(self) -> None:
        super().__init__("recorder")
        p = declare_parameters(self, PARAMS)
        self.p = p
        output = p["output"] or f"runs/{time.strftime('%Y%m%d-%H%M%S')}/run.mcap"
        self.recorder = McapRecorder(Path(output), chunk_size=p["chunk_size"])
        self.recorder.add_metadata("mbrl_control", {"started": time.strftime("%Y-%m-%dT%H:%M:%S")})
        self.error = ""
        self.dropped = 0
        self.subscriptions_by_topic = {}
        self.diagnostics = DiagnosticsPublisher(self)
        self.create_timer(p["discovery_period"], self._discover)
        self.create_timer(1.0 / p["diagnostics_rate"], self._publish_diagnostics)
        self.get_logger().info(f"recording to {self.recorder.path}")

    def _qos_for(self, topic: str) -> QoSProfile:
        infos = self.get_publishers_info_by_topic(topic)
        latched = bool(infos) and all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
        reliable = bool(infos) and all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
        return QoSProfile(
            depth=100,
            reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
        )

    def _discover(self) -> None:
        for topic, types in self.get_topic_names_and_types():
            if topic in self.subscriptions_by_topic or topic in self.p["exclude"] or len(types) != 1:
                continue
            if not self.get_publishers_info_by_topic(topic):
                continue  # only subscribers so far: no QoS to match yet
            try:
                cls = message_class(types[0])
                qos = self._qos_for(topic)
                self.recorder.add_topic(topic, types[0], offered_qos=f"{qos.reliability.name},{qos.durability.name}")
            except (ImportError, AttributeError, FileNotFoundError, ValueError) as exc:
                self.get_logger().warn(f"not recording {topic} ({types[0]}): {exc}")
                self.subscriptions_by_topic[topic] = None
                continue
            self.subscriptions_by_topic[topic] = self.create_subscription(
                cls, topic, lambda data, t=topic: self._on_message(t, data), qos, raw=True
            )

    def _on_message(self, topic: str, data: bytes) -> None:
        if self.error:
            self.dropped += 1
            return
        try:
            self.recorder.write(topic, data, time.time_ns())
        except OSError as exc:  # disk full, file size limit, I/O error: stop recording, keep running
            self.error = f"{type(exc).__name__}: {exc}"
            self.dropped += 1
            self.get_logger().error(f"recording stopped: {self.error}")

    def _publish_diagnostics(self) -> None:
        values = {"output": str(self.recorder.path), "topics": len(self.recorder.channels),
                  "messages": sum(self.recorder.counts.values()), "bytes": self.recorder.bytes_written,
                  "dropped": self.dropped}
        if self.error:
            self.diagnostics.publish(ERROR, f"recording stopped: {self.error}", values)
        else:
            self.diagnostics.publish(OK, "recording", values)

    def close(self) -> None:
        try:
            self.recorder.close()
            self.get_logger().info(f"recorded {sum(self.recorder.counts.values())} messages to {self.recorder.path}")
        except OSError as exc:
            self.get_logger().error(f"could not finish {self.recorder.path}: {exc}")


main = main_for(RecorderNode)

if __name__ == "__main__":
    main()
