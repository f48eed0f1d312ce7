"""rosbag2's metadata, in the form rosbag2's MCAP storage plugin writes it (metadata version 9, the
format of jazzy, kilted and rolling), so `ros2 bag`, rosbags and other rosbag2 readers take our files:

- each channel's ``offered_qos_profiles``: a YAML list with one QoS profile per publisher, policies
  by their rmw names (rosbag2_storage/src/rosbag2_storage/qos.cpp, ``convert<rclcpp::QoS>::encode``);
- each channel's ``topic_type_hash``: the publishers' type hash, 'RIHS01_<hex>', or '' when they
  disagree or have none (rosbag2_transport recorder.cpp, ``type_description_hash_for_topic``);
- a metadata record 'rosbag2' whose ``serialized_metadata`` is the bag's metadata as YAML
  (rosbag2_storage/yaml.hpp, ``convert<BagMetadata>::encode``; rosbag2_storage_mcap
  mcap_storage.cpp, ``update_metadata``).

Humble's rosbag2 wrote the QoS policies as integers (metadata version <= 8); readers from jazzy on
take either form, rosbags too; humble's own player takes only integers, as for any bag a newer
rosbag2 recorded.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

import yaml

VERSION = 9  # rosbag2_storage/bag_metadata.hpp: BagMetadata::version
STORAGE_IDENTIFIER = "mcap"
SERIALIZATION_FORMAT = "cdr"
RECORD_NAME = "rosbag2"  # the MCAP metadata record rosbag2 reads back (mcap_storage.cpp, read_metadata)
NO_MESSAGES_START_NS = 2**63 - 1  # std::chrono::nanoseconds::max(): rosbag2's start of a bag without messages
NS_PER_S = 1_000_000_000
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's: the same text, 4x faster


def _duration(nanoseconds: int) -> dict[str, int]:
    # rmw_time_t {sec, nsec}; an infinite duration (2**63 - 1 ns) is RMW_DURATION_INFINITE {9223372036, 854775807}.
    return {"sec": nanoseconds // NS_PER_S, "nsec": nanoseconds % NS_PER_S}


def qos_profile(profile: Any) -> dict:
    """One offered QoS profile as rosbag2 writes it; ``profile`` is an rclpy QoSProfile (what
    ``get_publishers_info_by_topic`` reports a publisher offers). The policies' enum names, in lower
    case, are rmw's names for them (rmw/src/qos_string_conversions.c): keep_last, reliable, ..."""
    return {
        "history": profile.history.name.lower(),
        "depth": int(profile.depth),
        "reliability": profile.reliability.name.lower(),
        "durability": profile.durability.name.lower(),
        "deadline": _duration(profile.deadline.nanoseconds),
        "lifespan": _duration(profile.lifespan.nanoseconds),
        "liveliness": profile.liveliness.name.lower(),
        "liveliness_lease_duration": _duration(profile.liveliness_lease_duration.nanoseconds),
        "avoid_ros_namespace_conventions": bool(profile.avoid_ros_namespace_conventions),
    }


def _dump(node: Any) -> str:
    return yaml.dump(node, Dumper=DUMPER, sort_keys=False, default_flow_style=False).rstrip("\n")


def qos_profiles_yaml(profiles: list[dict]) -> str:
    """A channel's ``offered_qos_profiles`` value: the list of profiles (``qos_profile``) as YAML."""
    return _dump(profiles)


def type_hash(hashes: Iterable[str]) -> str:
    """The type hash of a topic from its publishers' hashes (str of rclpy's TypeHash): the one they
    all give, '' when they disagree or give none."""
    valid = {h for h in hashes if h.startswith("RIHS")}
    return valid.pop() if len(valid) == 1 else ""


def bag_metadata_yaml(file_name: str, topics: list[dict], start_ns: int | None, end_ns: int | None) -> str:
    """The 'rosbag2' record's ``serialized_metadata`` for a one-file bag. ``topics``: one dict per
    channel with name, type, offered_qos_profiles (list of ``qos_profile`` dicts),
    type_description_hash and message_count; ``start_ns``/``end_ns``: first and last log time
    (None without messages). Every key rosbag2's decoder requires for version 9 is written."""
    count = sum(t["message_count"] for t in topics)
    start = NO_MESSAGES_START_NS if start_ns is None else start_ns
    duration = 0 if start_ns is None or end_ns is None else end_ns - start_ns
    metadata = {
        "version": VERSION,
        "storage_identifier": STORAGE_IDENTIFIER,
        "duration": {"nanoseconds": duration},
        "starting_time": {"nanoseconds_since_epoch": start},
        "message_count": count,
        "topics_with_message_count": [
            {
                "topic_metadata": {
                    "name": t["name"],
                    "type": t["type"],
                    "serialization_format": SERIALIZATION_FORMAT,
                    "offered_qos_profiles": t["offered_qos_profiles"],
                    "type_description_hash": t["type_description_hash"],
                },
                "message_count": t["message_count"],
            }
            for t in topics
        ],
        "compression_format": "",
        "compression_mode": "",
        "relative_file_paths": [file_name],
        "files": [{
            "path": file_name,
            "starting_time": {"nanoseconds_since_epoch": start},
            "duration": {"nanoseconds": duration},
            "message_count": count,
        }],
        "custom_data": {},
        # rosbag2's writer stores $ROS_DISTRO and leaves it empty when it is not set (sequential_writer.cpp).
        "ros_distro": os.environ.get("ROS_DISTRO", ""),
    }
    return _dump(metadata)
