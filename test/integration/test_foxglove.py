"""foxglove:=true streams the graph's topics over a WebSocket on localhost, in Foxglove's
protocol: the server advertises each topic with its ros2msg schema and sends CDR messages."""

import asyncio
import json
import socket
import struct

import websockets
from rclpy.serialization import deserialize_message
from rosutil import logs, start
from sensor_msgs.msg import JointState

from mbrl_control.graph import mpc_graph


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _first_joint_state(port: int, timeout: float) -> tuple[dict, bytes]:
    async def run():
        while True:  # the server starts with the node; retry until it listens (wait_for bounds it)
            try:
                ws = await websockets.connect(f"ws://127.0.0.1:{port}", subprotocols=["foxglove.sdk.v1"])
                break
            except OSError:
                await asyncio.sleep(0.2)
        async with ws:
            channel = None
            while True:
                frame = await ws.recv()
                if isinstance(frame, str):
                    msg = json.loads(frame)
                    if msg.get("op") == "advertise":
                        for ch in msg["channels"]:
                            if ch["topic"] == "/joint_states":
                                channel = ch
                                await ws.send(json.dumps({"op": "subscribe",
                                                          "subscriptions": [{"id": 1, "channelId": ch["id"]}]}))
                elif frame[0] == 1 and channel is not None:  # binary MessageData
                    _, sub_id, _log_time = struct.unpack_from("<BIQ", frame)
                    return channel, frame[13:]

    return await asyncio.wait_for(run(), timeout)


def test_foxglove_bridge_streams_topics_with_their_schemas(domain, tmp_path):
    port = _free_port()
    specs = [s for s in mpc_graph({"foxglove": "true"}) if s.name in ("sim", "foxglove_bridge")]
    specs[-1].parameters[-1]["port"] = port
    running = start(specs, domain, tmp_path / "logs")
    try:
        channel, payload = asyncio.run(_first_joint_state(port, 180))
    finally:
        running.stop()
    assert channel["encoding"] == "cdr" and channel["schemaEncoding"] == "ros2msg", (channel, logs(tmp_path))
    assert channel["schemaName"] == "sensor_msgs/msg/JointState"
    msg = deserialize_message(payload, JointState)
    assert list(msg.name) == ["slider_to_cart", "cart_to_pole"]
