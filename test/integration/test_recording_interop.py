"""A recording made through the nodes opens in readers other than ours: rosbags (an independent
rosbag2 reader) decodes every message of every topic from the schemas in the file, and finds the
QoS profiles, type hashes and bag metadata where rosbag2's MCAP storage plugin puts them."""

from pathlib import Path

import yaml
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rosbags.highlevel import AnyReader
from rosbags.interfaces import QosDurability, QosReliability
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosutil import logs, run_mpc

from mbrl_control.recording.msgdefs import SEPARATOR, message_definition, msg_text

KILTED = get_typestore(Stores.ROS2_KILTED)

# What rosbag2's decoder (rosbag2_storage/yaml.hpp, convert<BagMetadata>::decode, version 9) reads
# from the 'rosbag2' record: a missing key fails `ros2 bag info`.
BAG_KEYS = {"version", "storage_identifier", "duration", "starting_time", "message_count", "topics_with_message_count",
            "relative_file_paths", "compression_format", "compression_mode", "files", "custom_data", "ros_distro"}
TOPIC_KEYS = {"name", "type", "serialization_format", "offered_qos_profiles", "type_description_hash"}
QOS_KEYS = {"history", "depth", "reliability", "durability", "deadline", "lifespan", "liveliness",
            "liveliness_lease_duration", "avoid_ros_namespace_conventions"}


def _mcap_summary(path: Path):
    with open(path, "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        records = {m.name: m.metadata for m in reader.iter_metadata()}
    return summary, records


def test_a_recording_through_the_nodes_opens_in_rosbags_and_every_message_decodes(domain, tmp_path):
    path = tmp_path / "run.mcap"
    code, summary = run_mpc({"mode": "lockstep", "duration": "2", "record": "true", "record_path": str(path)},
                            domain, tmp_path)
    assert code == 0 and summary.get("ticks", 0) >= 90, (summary, logs(tmp_path))  # 2 s at 50 Hz: the loop ran
    mcap, records = _mcap_summary(path)
    assert mcap is not None, "no summary section: the recorder did not close the file"
    assert mcap.statistics.message_count > 100
    channels = {c.topic: c for c in mcap.channels.values()}
    counts = {mcap.channels[c].topic: n for c, n in mcap.statistics.channel_message_counts.items()}

    decoded: dict[str, int] = {}
    with AnyReader([path]) as reader:  # types come from the file's own schemas
        assert reader.message_count == mcap.statistics.message_count
        connections = {c.topic: c for c in reader.connections}
        assert set(connections) == set(channels)
        for connection, _, raw in reader.messages():
            msg = reader.deserialize(raw, connection.msgtype)
            assert msg.__msgtype__ == connection.msgtype
            decoded[connection.topic] = decoded.get(connection.topic, 0) + 1
        for topic, connection in connections.items():
            # The schema in the file is the very type the publishers used: its hash (computed by
            # rosbags from the schema) is the hash the publishers announced, and kilted's.
            recorded_hash = channels[topic].metadata["topic_type_hash"]
            assert recorded_hash.startswith("RIHS01_"), (topic, recorded_hash)
            assert reader.typestore.hash_rihs01(connection.msgtype) == recorded_hash == \
                KILTED.hash_rihs01(connection.msgtype), topic
            assert connection.ext.serialization_format == "cdr"
            assert connection.ext.offered_qos_profiles, f"{topic}: no offered QoS"
    assert decoded == counts  # every message of every topic, as many as the file's statistics say
    for topic in ("/mpc_controller/plan", "/diagnostics", "/joint_states", "/run_monitor/summary"):
        assert decoded.get(topic, 0) > 0, (topic, decoded)  # MarkerArray, DiagnosticArray, JointState, String

    # Each publisher's offered QoS, not the recorder's request: a profile per node on /diagnostics
    # that was there when the recorder found the topic (as rosbag2 does; how many depends on start-up
    # order: CI once saw one); the estimator's state is best effort (sensor data), the summary latched.
    qos = {topic: c.ext.offered_qos_profiles for topic, c in connections.items()}
    assert len(qos["/diagnostics"]) >= 1, qos["/diagnostics"]
    assert all(q.reliability == QosReliability.RELIABLE for q in qos["/diagnostics"]), qos["/diagnostics"]
    assert [(q.reliability, q.durability) for q in qos["/estimator/state"]] == \
        [(QosReliability.BEST_EFFORT, QosDurability.VOLATILE)]
    assert [(q.reliability, q.durability) for q in qos["/run_monitor/summary"]] == \
        [(QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL)]
    assert [q.reliability for q in qos["/effort_controller/commands"]] == [QosReliability.RELIABLE]

    # The 'rosbag2' record: everything rosbag2's decoder reads, agreeing with the file.
    bag = yaml.safe_load(records["rosbag2"]["serialized_metadata"])
    assert BAG_KEYS <= set(bag), BAG_KEYS - set(bag)
    assert bag["version"] == 9 and bag["storage_identifier"] == "mcap"
    assert bag["message_count"] == mcap.statistics.message_count == bag["files"][0]["message_count"]
    assert bag["starting_time"]["nanoseconds_since_epoch"] == mcap.statistics.message_start_time
    assert bag["duration"]["nanoseconds"] == mcap.statistics.message_end_time - mcap.statistics.message_start_time
    assert bag["relative_file_paths"] == ["run.mcap"]
    topics = {t["topic_metadata"]["name"]: t for t in bag["topics_with_message_count"]}
    assert {name: t["message_count"] for name, t in topics.items()} == counts
    for name, t in topics.items():
        meta = t["topic_metadata"]
        assert TOPIC_KEYS <= set(meta), (name, TOPIC_KEYS - set(meta))
        assert meta["type"] == mcap.schemas[channels[name].schema_id].name
        assert meta["type_description_hash"] == channels[name].metadata["topic_type_hash"]
        assert meta["offered_qos_profiles"] == yaml.safe_load(channels[name].metadata["offered_qos_profiles"])
        for profile in meta["offered_qos_profiles"]:
            assert set(profile) == QOS_KEYS, (name, profile)

    # Our own readers (report.py, train --from) decode the same file with mcap-ros2-support.
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        assert sum(1 for _ in reader.iter_decoded_messages()) == mcap.statistics.message_count


def test_schemas_are_laid_out_as_rosbag2_writes_them_and_parse_to_kilteds_types():
    for type_name in ("visualization_msgs/msg/MarkerArray", "diagnostic_msgs/msg/DiagnosticArray",
                      "sensor_msgs/msg/JointState", "std_msgs/msg/Float64MultiArray", "rosgraph_msgs/msg/Clock"):
        schema = message_definition(type_name)
        root, *blocks = schema.split(f"\n{SEPARATOR}\nMSG: ")
        assert root == msg_text(type_name)  # the .msg file as installed, comments and all
        names = [block.split("\n", 1)[0] for block in blocks]
        assert len(names) == len(set(names)), names  # each dependency once
        for block in blocks:
            name, text = block.split("\n", 1)
            assert "/msg/" not in name and text == msg_text(name)
        # rosbags reads the concatenation back to exactly kilted's definitions of every type in it.
        types = get_types_from_msg(schema, type_name)
        assert set(types) == {type_name} | {f"{n.split('/')[0]}/msg/{n.split('/')[1]}" for n in names}
        for name, fields in types.items():
            assert fields == KILTED.fielddefs[name], name
    # Dependencies in sorted order, each followed at once by its own (depth first), as
    # rosbag2's LocalMessageDefinitionSource nests them.
    names = [b.split("\n", 1)[0] for b in message_definition("visualization_msgs/msg/MarkerArray").split("MSG: ")[1:]]
    assert names[:2] == ["visualization_msgs/Marker", "builtin_interfaces/Duration"], names
