"""The recorder: writes every topic of the run to an MCAP file (runs/<stamp>/run.mcap), as
serialized CDR with rosbag2's schemas and metadata (each topic's publishers' QoS and type hash, the
bag's metadata record), so `ros2 bag info/play`, Foxglove and rosbag2 readers such as rosbags read it.

New topics are discovered as they appear (see topic_tap.py). SIGINT/SIGTERM close
the file properly. A full disk (or the file-size limit, or ``max_bytes``) is seen coming: the
recording stops with the file closed cleanly, so every message recorded until then reads back;
later messages are counted as ``dropped``. A write error nobody saw coming (an I/O error) stops
recording too. Either is reported in /diagnostics (ERROR, with the reason) and never disturbs the
other nodes.
"""

from __future__ import annotations

import time
from pathlib import Path

from rclpy.node import Node
from rclpy.qos import QoSProfile

from mbrl_control.nodes.diagnostics import ERROR, OK, DiagnosticsPublisher
from mbrl_control.nodes.params import ParamSpec, declare_parameters
from mbrl_control.nodes.runtime import main_for
from mbrl_control.nodes.topic_tap import TopicTap
from mbrl_control.recording.bag_metadata import qos_profile, type_hash
from mbrl_control.recording.mcap_file import McapRecorder

PARAMS = [
    ParamSpec("output", "", "MCAP file to write; empty: runs/<YYYYmmdd-HHMMSS>/run.mcap"),
    ParamSpec("exclude", ["/parameter_events"], "topics not to record"),
    ParamSpec("discovery_period", 0.5, "how often to look for new topics [s]", 0.05, 60.0),
    ParamSpec("chunk_size", 65536, "MCAP chunk size [bytes]: at most this is lost in a hard crash", 1024, 1 << 26),
    ParamSpec("max_bytes", 0, "stop recording (file closed, complete) before it grows past this [bytes]; 0: no cap "
              "but the disk's free space and the file-size limit", 0, 1 << 62),
    ParamSpec("queue_depth", 10000, "messages per topic waiting while the recorder is busy (a starved recorder "
              "catches up instead of losing the oldest)", 10, 10000000),
    ParamSpec("drain_on_stop", 2.0, "at SIGINT/SIGTERM, keep recording what is still queued for up to this long [s]",
              0.0, 60.0),
    ParamSpec("diagnostics_rate", 1.0, "diagnostics publish rate [Hz]", 0.1, 100.0),
]


class RecorderNode(Node):
    def __init__(self) -> None:
        super().__init__("recorder")
        p = declare_parameters(self, PARAMS)
        self.p = p
        output = p["output"] or f"runs/{time.strftime('%Y%m%d-%H%M%S')}/run.mcap"
        self.recorder = McapRecorder(Path(output), chunk_size=p["chunk_size"], max_bytes=p["max_bytes"])
        self.recorder.add_metadata("mbrl_control", {"started": time.strftime("%Y-%m-%dT%H:%M:%S")})
        self.error = ""
        self.dropped = 0
        self.diagnostics = DiagnosticsPublisher(self)
        self.received = 0
        self.drain_on_stop = p["drain_on_stop"]  # nodes.runtime.spin_then_drain
        self.tap = TopicTap(self, self._on_topic, self._on_message, p["exclude"], p["discovery_period"], p["queue_depth"])
        self.create_timer(1.0 / p["diagnostics_rate"], self._publish_diagnostics)
        self.get_logger().info(f"recording to {self.recorder.path}")

    def _on_topic(self, topic: str, type_name: str, qos: QoSProfile) -> None:
        # As rosbag2 records a topic: what each publisher offers, not what the recorder requests.
        publishers = self.get_publishers_info_by_topic(topic)
        self.recorder.add_topic(topic, type_name, [qos_profile(p.qos_profile) for p in publishers],
                                type_hash(str(p.topic_type_hash) for p in publishers))

    def drain_count(self) -> int:
        return self.received

    def _on_message(self, topic: str, data: bytes, receive_ns: int) -> None:
        self.received += 1
        if self.error:
            self.dropped += 1
            return
        if not self.recorder.fits(len(data)):  # stop while the file can still be closed complete
            self.error = f"{self.recorder.limit_reason}; file closed complete"
            self.dropped += 1
            self.get_logger().error(f"recording stopped: {self.error}")
            try:
                self.recorder.close()
            except OSError as exc:
                self.error += f" (but closing it failed: {exc})"
            return
        try:
            self.recorder.write(topic, data, receive_ns)
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
