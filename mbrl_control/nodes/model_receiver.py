"""Receives learned models on a topic and hot-swaps them into the model a planner uses.

Each message is validated in full (format, architecture, shapes, finite values) before anything
changes; a bad one is rejected with a logged reason and counted, and the current model stays. A
good one is copied into the existing tensors in place (well under a millisecond), between ticks
(the executor runs this callback between control ticks), so compiled rollouts stay valid.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import UInt8MultiArray

from mbrl_control.core.dynamics.ensemble import EnsembleDynamics
from mbrl_control.core.learning.model_io import ModelFormatError, decode

# Reliable and transient-local: a controller that starts (or restarts) late gets the latest model.
MODEL_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class ModelReceiver:
    def __init__(self, node: Node, model: EnsembleDynamics, topic: str = "model",
                 on_swap: Callable[[], None] | None = None) -> None:
        self.node = node
        self.model = model
        self.on_swap = on_swap  # what depends on the model in use (an LQR terminal cost), redone after a swap
        self.version: int | None = None
        self.received_at: float | None = None  # time.monotonic() of the last swap
        self.info = None
        self.messages = 0  # model messages received (the publisher may have sent more: keep-last 1)
        self.swaps = 0  # of them, swapped into the model in use
        self.rejected = 0
        self.last_reject_reason = ""
        self.swap_ms_last = 0.0
        self.swap_ms_max = 0.0
        self.validate_ms_last = 0.0
        node.create_subscription(UInt8MultiArray, topic, self._on_model, MODEL_QOS)

    def _on_model(self, msg: UInt8MultiArray) -> None:
        start = time.perf_counter()
        self.messages += 1
        try:
            state, info = decode(bytes(msg.data), self.model)
            if self.version is not None and info.version <= self.version:
                raise ModelFormatError(f"version {info.version} is not newer than the current {self.version}")
        except ModelFormatError as exc:
            self.rejected += 1
            self.last_reject_reason = str(exc)
            self.node.get_logger().error(f"rejected model message: {exc}")
            return
        validated = time.perf_counter()
        self.model.load_state_(state)
        done = time.perf_counter()
        self.validate_ms_last = (validated - start) * 1e3
        self.swap_ms_last = (done - validated) * 1e3
        self.swap_ms_max = max(self.swap_ms_max, self.swap_ms_last)
        self.swaps += 1
        self.version, self.info, self.received_at = info.version, info, time.monotonic()
        if self.on_swap is not None:
            self.on_swap()
        self.node.get_logger().info(
            f"model v{info.version} in use (trained on {info.data_size} transitions, held-out MSE "
            f"{info.holdout_mse:.4f}); swap {self.swap_ms_last:.3f} ms"
        )

    def diagnostics(self) -> dict[str, object]:
        age = time.monotonic() - self.received_at if self.received_at is not None else -1.0
        return {
            "model_version": self.version if self.version is not None else "none",
            "model_age_s": f"{age:.1f}",
            "model_messages": self.messages,
            "model_swaps": self.swaps,
            "model_swap_ms_last": f"{self.swap_ms_last:.3f}",
            "model_swap_ms_max": f"{self.swap_ms_max:.3f}",
            "model_validate_ms_last": f"{self.validate_ms_last:.3f}",
            "rejected_models": self.rejected,
            "last_model_reject_reason": self.last_reject_reason,
        }
