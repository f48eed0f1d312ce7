"""Receives MBPO policies on a topic and swaps them into the planner that uses one (the policy
planner, or iCEM's warm start), as models travel: safetensors bytes, validated in full first
(format, architecture, bounds, finite weights); a bad one is rejected with a logged reason and
counted, and the policy in use stays."""

from __future__ import annotations

import time

from rclpy.node import Node
from std_msgs.msg import UInt8MultiArray

from mbrl_control.core.mbpo.policy import PolicyFormatError, policy_from_bytes
from mbrl_control.nodes.model_receiver import MODEL_QOS


class PolicyReceiver:
    def __init__(self, node: Node, planner, topic: str = "/learner/policy") -> None:
        self.node, self.planner = node, planner  # a planner with set_policy(Policy)
        self.messages = 0  # policy messages received (the publisher may have sent more: keep-last 1)
        self.updates = 0  # of them, swapped into the planner
        self.rejected = 0
        self.last_reject_reason = ""
        self.swap_ms_max = 0.0
        node.create_subscription(UInt8MultiArray, topic, self._on_policy, MODEL_QOS)

    def _on_policy(self, msg: UInt8MultiArray) -> None:
        self.messages += 1
        try:
            policy = policy_from_bytes(bytes(msg.data))
            start = time.perf_counter()
            self.planner.set_policy(policy)
        except (PolicyFormatError, ValueError) as exc:
            self.rejected += 1
            self.last_reject_reason = str(exc)
            self.node.get_logger().error(f"rejected policy message: {exc}")
            return
        self.swap_ms_max = max(self.swap_ms_max, (time.perf_counter() - start) * 1e3)
        self.updates += 1
        self.node.get_logger().info(f"policy update {self.updates} in use")

    def diagnostics(self) -> dict[str, object]:
        return {"policy_messages": self.messages, "policy_updates": self.updates, "rejected_policies": self.rejected,
                "policy_swap_ms_max": f"{self.swap_ms_max:.3f}", "last_policy_reject_reason": self.last_reject_reason}
