"""Writes serialized ROS 2 messages (CDR bytes) to an MCAP file the way rosbag2's MCAP storage plugin
does, so `ros2 bag`, Foxglove and independent readers (rosbags, mcap-ros2-support) open it
(recording/run_data.py reads it back). As rosbag2_storage_mcap/src/mcap_storage.cpp writes them: the header's profile
'ros2'; one schema per type, named 'pkg/msg/Type', encoding 'ros2msg', holding the concatenated
definition (msgdefs.py); one channel per topic, message encoding 'cdr', with metadata
``offered_qos_profiles`` and ``topic_type_hash``; and at close a metadata record 'rosbag2' holding
the bag's metadata (bag_metadata.py). Message log times are receive times.

Chunks are small and the file is flushed as each one completes, so a crash loses at most the
chunk in flight; a clean close (SIGINT/SIGTERM included) writes the index and loses nothing.

A full disk loses nothing either: before each message ``fits`` checks that the file could still
take it, the rest of its chunk and the closing index within the space left (free space on the
disk, the process's file-size limit RLIMIT_FSIZE, ``max_bytes``); when it could not, the writer
stops and closes the file cleanly, so everything accepted until then reads back.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

from mcap.writer import CompressionType, Writer

from mbrl_control.recording import bag_metadata
from mbrl_control.recording.msgdefs import message_definition, normalize

# Bytes per message beyond its data: its record header in the chunk and its message-index entry.
MESSAGE_OVERHEAD = 64
FREE_SPACE_RECHECK_S = 0.2
# The 'rosbag2' record written at close, beyond the topics' own entries: its fixed YAML, the record's
# header and its index entry; and per topic, beyond its name, type, QoS and hash, the keys and counts.
BAG_METADATA_BYTES = 1024
BAG_METADATA_TOPIC_BYTES = 256


class McapRecorder:
    def __init__(self, path: str | Path, chunk_size: int = 64 * 1024, max_bytes: int = 0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes  # 0: only the disk and RLIMIT_FSIZE bound the file
        self._stream = open(self.path, "wb")
        self._writer = Writer(self._stream, chunk_size=chunk_size, compression=CompressionType.NONE)
        self._writer.start(profile="ros2", library="mbrl_control")
        self._schemas: dict[str, int] = {}
        self.channels: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self._topics: dict[str, dict] = {}  # topic -> its entry in the closing 'rosbag2' record
        self._first_ns = bag_metadata.NO_MESSAGES_START_NS  # earliest and latest log time
        self._last_ns = 0
        self.bytes_written = 0
        self.closed = False
        # For ``fits``: what the open chunk and the closing summary will still need on disk.
        self._pending = 0  # bytes in the chunk being built (not yet in the file)
        self._registered = 0  # schema and channel records: repeated in the summary
        self._chunks = 0
        self._free: tuple[float, int] = (-1.0, 0)  # (monotonic time checked, free bytes on the disk)
        self.limit_reason = ""  # why the last ``fits`` said no

    def add_topic(self, topic: str, type_name: str, offered_qos_profiles: list[dict] | None = None,
                  type_hash: str = "") -> int:
        """A channel for ``topic``: ``offered_qos_profiles`` are its publishers' QoS profiles
        (``bag_metadata.qos_profile``), ``type_hash`` their type hash ('RIHS01_...'), as rosbag2 records them."""
        type_name = normalize(type_name)
        if type_name not in self._schemas:
            definition = message_definition(type_name).encode()
            self._schemas[type_name] = self._writer.register_schema(name=type_name, encoding="ros2msg", data=definition)
            self._registered += len(definition) + len(type_name) + 32
            self._pending += len(definition) + len(type_name) + 32
        profiles = list(offered_qos_profiles or [])
        qos_yaml = bag_metadata.qos_profiles_yaml(profiles)
        channel_bytes = len(topic) + len(qos_yaml) + len(type_hash) + 128
        self._registered += channel_bytes
        self._pending += channel_bytes
        # The closing 'rosbag2' record repeats the topic; only its own size, as the file ends with it.
        self._registered += len(topic) + len(type_name) + len(qos_yaml) + len(type_hash) + BAG_METADATA_TOPIC_BYTES
        channel = self._writer.register_channel(
            topic=topic, message_encoding=bag_metadata.SERIALIZATION_FORMAT, schema_id=self._schemas[type_name],
            metadata={"offered_qos_profiles": qos_yaml, "topic_type_hash": type_hash},
        )
        self.channels[topic] = channel
        self.counts[topic] = 0
        self._topics[topic] = {"name": topic, "type": type_name, "offered_qos_profiles": profiles,
                               "type_description_hash": type_hash}
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
        if log_time_ns < self._first_ns:
            self._first_ns = log_time_ns
        if log_time_ns > self._last_ns:
            self._last_ns = log_time_ns
        if self._stream.tell() != before:  # a chunk went out: push it to the disk
            self._stream.flush()
            self._pending, self._chunks = 0, self._chunks + 1
        else:
            self._pending += len(data) + MESSAGE_OVERHEAD

    def room(self) -> tuple[int, str]:
        """Bytes the file may still grow by, and what bounds it."""
        size = self._stream.tell()
        now = time.monotonic()
        if now - self._free[0] > FREE_SPACE_RECHECK_S:
            st = os.statvfs(self.path.parent)
            self._free = (now, st.f_bavail * st.f_frsize)
        bounds = [(self._free[1], f"disk full ({self._free[1]} bytes free on {self.path.parent})")]
        soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
        if soft != resource.RLIM_INFINITY:
            bounds.append((soft - size, f"file size limit reached (RLIMIT_FSIZE {soft} bytes)"))
        if self.max_bytes > 0:
            bounds.append((self.max_bytes - size, f"max_bytes reached ({self.max_bytes} bytes)"))
        return min(bounds)

    def closing_bytes(self) -> int:
        """What closing the file writes beyond the open chunk: the chunk's own record and indexes,
        the 'rosbag2' metadata record, the repeated schemas and channels, statistics, chunk
        indexes, offsets and the footer."""
        channels = len(self.channels)
        return 1024 + BAG_METADATA_BYTES + 16 * channels + self._registered + (self._chunks + 1) * (96 + 12 * channels)

    def fits(self, size: int) -> bool:
        """Whether a message of ``size`` bytes can be written and the file still closed cleanly."""
        room, why = self.room()
        need = self._pending + size + MESSAGE_OVERHEAD + self.closing_bytes()
        self.limit_reason = "" if need <= room else why
        return need <= room

    def add_metadata(self, name: str, data: dict[str, str]) -> None:
        self._writer.add_metadata(name, data)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._write_bag_metadata()
            self._writer.finish()
        finally:
            self._stream.close()

    def _write_bag_metadata(self) -> None:
        """rosbag2's 'rosbag2' record, as its writer leaves it at close (mcap_storage.cpp, update_metadata)."""
        topics = [{**entry, "message_count": self.counts[topic]} for topic, entry in self._topics.items()]
        span = (self._first_ns, self._last_ns) if any(self.counts.values()) else (None, None)
        serialized = bag_metadata.bag_metadata_yaml(self.path.name, topics, *span)
        self._writer.add_metadata(bag_metadata.RECORD_NAME, {"serialized_metadata": serialized})
