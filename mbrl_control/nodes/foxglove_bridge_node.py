"""Streams every topic to Foxglove over a WebSocket on localhost (foxglove-sdk), for machines
without rviz: open Foxglove, "Open connection", ws://localhost:8765. Messages go out as the CDR
bytes they travel as, with rosbag2's schemas, so Foxglove decodes them like a ROS 2 bag."""

from __future__ import annotations

import foxglove
from rclpy.node import Node
from rclpy.qos import QoSProfile

from mbrl_control.nodes.diagnostics import OK, DiagnosticsPublisher
from mbrl_control.nodes.params import ParamSpec, declare_parameters
from mbrl_control.nodes.runtime import main_for
from mbrl_control.nodes.topic_tap import TopicTap
from mbrl_control.recording.msgdefs import message_definition, normalize

PARAMS = [
    ParamSpec("host", "127.0.0.1", "address to serve on (localhost by default: nothing leaves the machine)"),
    ParamSpec("port", 8765, "WebSocket port", 1, 65535),
    ParamSpec("exclude", ["/parameter_events"], "topics not to stream"),
    ParamSpec("discovery_period", 0.5, "how often to look for new topics [s]", 0.05, 60.0),
    ParamSpec("diagnostics_rate", 1.0, "diagnostics publish rate [Hz]", 0.1, 100.0),
]


class FoxgloveBridgeNode(Node):
    def __init__(self) -> None:
        super().__init__("foxglove_bridge")
        p = declare_parameters(self, PARAMS)
        self.server = foxglove.start_server(name="mbrl_control", host=p["host"], port=p["port"])
        self.channels: dict[str, foxglove.Channel] = {}
        self.sent = 0
        self.tap = TopicTap(self, self._on_topic, self._on_message, p["exclude"], p["discovery_period"])
        self.diagnostics = DiagnosticsPublisher(self)
        self.create_timer(1.0 / p["diagnostics_rate"], self._publish_diagnostics)
        self.get_logger().info(f"Foxglove WebSocket server on ws://{p['host']}:{p['port']}")

    def _on_topic(self, topic: str, type_name: str, qos: QoSProfile) -> None:
        schema = foxglove.Schema(name=normalize(type_name), encoding="ros2msg",
                                 data=message_definition(type_name).encode())
        self.channels[topic] = foxglove.Channel(topic, schema=schema, message_encoding="cdr")

    def _on_message(self, topic: str, data: bytes, receive_ns: int) -> None:
        self.channels[topic].log(data, log_time=receive_ns)
        self.sent += 1

    def _publish_diagnostics(self) -> None:
        self.diagnostics.publish(OK, "serving", {"topics": len(self.channels), "messages_sent": self.sent})

    def close(self) -> None:
        self.server.stop()


main = main_for(FoxgloveBridgeNode)

if __name__ == "__main__":
    main()
