"""diagnostic_msgs helpers: one DiagnosticStatus per node, key-values from a dict."""

from __future__ import annotations

from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

OK, WARN, ERROR, STALE = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR, DiagnosticStatus.STALE


class DiagnosticsPublisher:
    """Publishes the node's status on /diagnostics, the topic aggregators and rqt read."""

    def __init__(self, node: Node, hardware_id: str = "") -> None:
        self._node = node
        self._pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # The node's name, under its namespace in a fleet ("robot_0/mpc_controller"): one status per node.
        namespace = node.get_namespace().strip("/")
        self._name = f"{namespace}/{node.get_name()}" if namespace else node.get_name()
        self._hardware_id = hardware_id

    def _scheduling(self) -> dict[str, str]:
        scheduling = getattr(self._node, "scheduling", None)  # set by nodes.runtime.run_node
        return {"scheduling": scheduling} if scheduling else {}

    def publish(self, level: bytes, message: str, values: dict[str, Any]) -> None:
        status = DiagnosticStatus(
            level=level,
            name=self._name,
            message=message,
            hardware_id=self._hardware_id,
            values=[KeyValue(key=k, value=str(v)) for k, v in (values | self._scheduling()).items()],
        )
        msg = DiagnosticArray()
        msg.header.stamp = self._node.get_clock().now().to_msg()
        msg.status = [status]
        self._pub.publish(msg)


def values_of(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}
