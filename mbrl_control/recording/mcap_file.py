"""Writes serialized ROS 2 messages (CDR bytes) to an MCAP file the way rosbag2 does (profile
'ros2', 'ros2msg' schemas, 'cdr' encoding), so `ros2 bag` and Foxglove open it; and reads it back.

Chunks are small and the file is flushed as each one completes, so a crash loses at most the
chunk in flight; a clean close (SIGINT/SIGTERM included) writes the index and loses nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from mcap.reader import make_reader
from mcap.writer import CompressionType, Writer

from mbrl_control.recording.msgdefs import message_definition, normalize


class McapRecorder:
    def __init__(self, path: str | Path, chunk_size: int = 64 * 1024) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._stream = open(self.path, "wb")
        self._writer = Writer(self._stream, chunk_size=chunk_size, compression=CompressionType.NONE)
        self._writer.start(profile="ros2", library="mbrl_control")
        self._schemas: dict[str, int] = {}
        self.channels: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.bytes_written = 0
        self.closed = False

    def add_topic(self, topic: str, type_name: str, offered_qos: str = "") -> int:
        type_name = normalize(type_name)
        if type_name not in self._schemas:
            self._schemas[type_name] = self._writer.register_schema(
                name=type_name, encoding="ros2msg", data=message_definition(type_name).encode()
            )
        channel = self._writer.register_channel(
            topic=topic, message_encoding="cdr", schema_id=self._schemas[type_name],
            metadata={"offered_qos_profiles": offered_qos} if offered_qos else {},
        )
        self.channels[topic] = channel
        self.counts[topic] = 0
        return channel

    def write(self, topic: str, data: bytes, log_time_ns: int, publish_time_ns: int | None = None) -> None:
        before = self._stream.tell()
        self._writer.add_message(
            channel_id=self.channels[topic], log_time=log_time_ns, data=data,
            publish_time=publish_time_ns if publish_time_ns is not None else log_time_ns,
            sequence=self.counts[topic],
        )
        self.counts[topic] += 1
        self.bytes_written += len(data)
        if self._stream.tell() != before:  # a chunk went out: push it to the disk
            self._stream.flush()

    def add_metadata(self, name: str, data: dict[str, str]) -> None:
        self._writer.add_metadata(name, data)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._writer.finish()
        finally:
            self._stream.close()


def read_messages(path: str | Path, topics: list[str] | None = None) -> Iterator[tuple[str, str, bytes, int]]:
    """``(topic, type name, CDR bytes, log time ns)`` for every message, in log-time order.

    Works on files that were cut short (no summary section) by streaming through them.
    """
    with open(path, "rb") as f:
        reader = make_reader(f)
        for schema, channel, message in reader.iter_messages(topics=topics, log_time_order=False):
            yield channel.topic, schema.name, message.data, message.log_time
