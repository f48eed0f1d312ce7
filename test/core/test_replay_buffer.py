"""The replay buffer keeps every acknowledged transition through SIGKILLs, torn writes and damaged
chunks, reloads on restart, and caps its size by its documented policy."""

import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from mbrl_control.core.learning import ReplayBuffer, ReplayBufferError, TransitionAssembler

WRITER = """
import sys
import numpy as np
from mbrl_control.core.learning.replay_buffer import ReplayBuffer

buf = ReplayBuffer(4, 1, sys.argv[1], chunk_size=int(sys.argv[2]), max_transitions=10**6)
i = buf.next_seq
print(-1, buf.next_seq, flush=True)
while True:
    s = np.array([i, i + 0.5, -i, i * 0.25], np.float32)
    buf.append(s, [i % 7], s + 1, -float(i), i % 50 == 49, i * 0.02, i // 50)
    if i % 5 == 4:
        print(buf.sync(), flush=True)  # acknowledged: every seq below this number is durable
    i += 1
"""


def expected_values(seq: np.ndarray) -> dict[str, np.ndarray]:
    s = np.stack([seq, seq + 0.5, -seq, seq * 0.25], axis=1).astype(np.float32)
    return {
        "state": s,
        "action": (seq % 7).astype(np.float32)[:, None],
        "next_state": s + 1,
        "reward": -seq.astype(np.float32),
        "done": seq % 50 == 49,
        "stamp": seq * 0.02,
        "episode": seq // 50,
    }


def assert_intact_prefix(directory, at_least: int) -> int:
    """Reload: transitions 0..n-1 exactly, n >= at_least, every value as written."""
    buf = ReplayBuffer(4, 1, directory, chunk_size=7, max_transitions=10**6)
    data = buf.snapshot()
    n = len(data)
    assert n >= at_least, f"lost acknowledged transitions: {n} < {at_least}"
    np.testing.assert_array_equal(data.seq, np.arange(n))
    for name, want in expected_values(data.seq).items():
        np.testing.assert_array_equal(getattr(data, name), want, err_msg=name)
    assert buf.next_seq == n
    buf.close()
    assert not list(directory.glob("*.tmp")) and not list(directory.glob("*.corrupt"))
    return n


def run_writer_and_kill(directory, acknowledged_target: int) -> int:
    """Start a writer process, SIGKILL it once it acknowledged ``acknowledged_target``; returns
    the last acknowledged count."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(directory), "7"], stdout=subprocess.PIPE, text=True
    )
    acked = 0
    try:
        start = int(proc.stdout.readline().split()[1])
        for line in proc.stdout:
            acked = int(line)
            if acked >= start + acknowledged_target:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: it keeps appending and sealing until here
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return acked


def test_sigkilled_writer_loses_no_acknowledged_transition_and_resumes(tmp_path):
    acked = run_writer_and_kill(tmp_path, 300)
    n = assert_intact_prefix(tmp_path, acked)
    acked = run_writer_and_kill(tmp_path, 150)  # the restarted writer continues the numbering
    assert acked >= n + 150
    assert_intact_prefix(tmp_path, acked)


def test_reload_round_trip_is_exact(tmp_path):
    buf = ReplayBuffer(4, 1, tmp_path, chunk_size=10)
    seq = np.arange(37)
    values = expected_values(seq)
    for i in seq:
        buf.append(values["state"][i], values["action"][i], values["next_state"][i], values["reward"][i],
                   values["done"][i], values["stamp"][i], values["episode"][i])
    before = buf.snapshot()
    buf.close()
    after = ReplayBuffer(4, 1, tmp_path, chunk_size=10)
    assert after.report["chunks"] == 3 and after.report["tail_records"] == 7
    for name in ("seq", "state", "action", "next_state", "reward", "done", "stamp", "episode"):
        np.testing.assert_array_equal(getattr(after.snapshot(), name), getattr(before, name))


def test_each_transition_keeps_its_robot_through_the_tail_and_sealed_chunks(tmp_path):
    buf = ReplayBuffer(4, 1, tmp_path, chunk_size=10)
    robots = np.array([i % 3 if i % 4 else 65535 for i in range(27)])
    for i, robot in enumerate(robots):
        buf.append(np.full(4, i), [0.0], np.full(4, i + 1), 0.0, False, i * 0.02, 0, robot=int(robot))
    np.testing.assert_array_equal(buf.snapshot().robot, robots)
    buf.close()
    after = ReplayBuffer(4, 1, tmp_path, chunk_size=10)
    assert after.report["chunks"] == 2 and after.report["tail_records"] == 7
    np.testing.assert_array_equal(after.snapshot().robot, robots)
    with pytest.raises(ValueError, match="robot id"):
        after.append(np.zeros(4), [0.0], np.zeros(4), 0.0, False, 1.0, 0, robot=65536)


def test_a_buffer_written_before_fleets_reads_as_robot_0(tmp_path):
    """Chunks sealed without a robot array (and tail records whose robot bytes were padding) load as robot 0's."""
    from safetensors.numpy import save

    from mbrl_control.core.learning import replay_buffer as rb

    buf = ReplayBuffer(4, 1, tmp_path, chunk_size=10)
    fill(buf, 14)
    buf.close()
    (chunk,) = tmp_path.glob("chunk_*.safetensors")
    arrays = rb._chunk_arrays(ReplayBuffer(4, 1, tmp_path, chunk_size=10)._chunks[0][0])
    del arrays["robot"]  # as a version-1 chunk from before fleets
    meta = {"format": "mbrl_control.replay_chunk", "version": "1", "state_dim": "4", "action_dim": "1",
            "crc32": str(rb._arrays_crc(arrays))}
    chunk.write_bytes(save(arrays, metadata=meta))
    old = ReplayBuffer(4, 1, tmp_path, chunk_size=10)
    assert old.report["chunks"] == 1 and old.report["corrupt_chunks"] == 0 and len(old) == 14
    np.testing.assert_array_equal(old.snapshot().robot, np.zeros(14))


def fill(buf: ReplayBuffer, count: int, episode_length: int = 25) -> None:
    for _ in range(count):
        i = buf.next_seq
        buf.append(np.full(4, i), [0.0], np.full(4, i + 1), 0.0, False, i * 0.02, i // episode_length)


def test_torn_tail_record_is_dropped_and_appends_continue(tmp_path):
    buf = ReplayBuffer(4, 1, tmp_path, chunk_size=100)
    fill(buf, 12)
    buf.close()
    wal = tmp_path / "wal.bin"
    record = buf._dtype.itemsize
    with open(wal, "ab") as f:  # a record cut short by a crash, then random garbage after a full one
        f.write(os.urandom(record // 2))
    reloaded = ReplayBuffer(4, 1, tmp_path, chunk_size=100)
    assert len(reloaded) == 12 and reloaded.report["torn_bytes"] == record // 2
    fill(reloaded, 3)
    reloaded.close()
    with open(wal, "r+b") as f:  # flip a byte inside the last record: its CRC fails
        f.seek(-5, os.SEEK_END)
        byte = f.read(1)
        f.seek(-5, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0xFF]))
    again = ReplayBuffer(4, 1, tmp_path, chunk_size=100)
    np.testing.assert_array_equal(again.snapshot().seq, np.arange(14))


def test_damaged_chunk_is_set_aside_and_the_rest_loads(tmp_path):
    buf = ReplayBuffer(4, 1, tmp_path, chunk_size=10)
    fill(buf, 35)
    buf.close()
    chunk = sorted(tmp_path.glob("chunk_*.safetensors"))[1]
    data = bytearray(chunk.read_bytes())
    data[-20] ^= 0x01  # one bit of one stored value
    chunk.write_bytes(bytes(data))
    reloaded = ReplayBuffer(4, 1, tmp_path, chunk_size=10)
    assert reloaded.report["corrupt_chunks"] == 1 and len(list(tmp_path.glob("*.corrupt"))) == 1
    seq = reloaded.snapshot().seq
    np.testing.assert_array_equal(seq, np.r_[0:10, 20:35])
    fill(reloaded, 1)
    assert reloaded.snapshot().seq[-1] == 35  # sequence numbers are never reused


@pytest.mark.parametrize("keep_first_episode", [True, False])
def test_size_cap_drops_oldest_chunks_but_keeps_the_first_episode(tmp_path, keep_first_episode):
    buf = ReplayBuffer(4, 1, tmp_path, chunk_size=10, max_transitions=50, keep_first_episode=keep_first_episode)
    fill(buf, 207)  # episodes of 25: episode 0 lies in the chunks 0-9, 10-19 and 20-29
    seq = buf.snapshot().seq
    newest = np.arange(180, 207)
    if keep_first_episode:
        np.testing.assert_array_equal(seq, np.r_[0:30, newest])
    else:
        np.testing.assert_array_equal(seq, np.r_[150:180, newest])
    assert len(buf) <= buf.max_transitions + buf.chunk_size
    assert len(list(tmp_path.glob("chunk_*.safetensors"))) == 5
    buf.close()
    reloaded = ReplayBuffer(4, 1, tmp_path, chunk_size=10, max_transitions=50, keep_first_episode=keep_first_episode)
    np.testing.assert_array_equal(reloaded.snapshot().seq, seq)
    fill(reloaded, 1)
    assert reloaded.snapshot().seq[-1] == 207


def test_memory_only_buffer_applies_the_same_cap():
    buf = ReplayBuffer(2, 1, None, chunk_size=10, max_transitions=30)
    for i in range(95):
        buf.append(np.zeros(2), [0.0], np.zeros(2), 0.0, False, 0.0, i // 10)
    np.testing.assert_array_equal(buf.snapshot().seq, np.r_[0:10, 70:95])


def test_refuses_a_directory_of_other_sizes(tmp_path):
    ReplayBuffer(4, 1, tmp_path).close()
    with pytest.raises(ReplayBufferError, match="sizes"):
        ReplayBuffer(3, 1, tmp_path)


def test_snapshots_taken_while_appending_are_consistent():
    buf = ReplayBuffer(4, 1, None, chunk_size=16, max_transitions=10**6)
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            fill(buf, 1)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(50):  # each copies all so far while the writer races on: time grows as the square
            data = buf.snapshot()
            np.testing.assert_array_equal(data.seq, np.arange(len(data)))
            np.testing.assert_array_equal(data.state[:, 0], data.seq)
    finally:
        stop.set()
        thread.join()


def test_assembler_pairs_consecutive_ticks_only():
    asm = TransitionAssembler(dt=0.02)
    assert asm.push(0.00, [0.0, 0.0], [1.0], episode=0, reward=-1.0) is None
    state, action, next_state, reward, stamp, episode = asm.push(0.02, [1.0, 0.0], [2.0], episode=0)
    np.testing.assert_array_equal(state, [0.0, 0.0])
    np.testing.assert_array_equal(next_state, [1.0, 0.0])
    assert action[0] == 1.0 and reward == -1.0 and stamp == 0.0 and episode == 0
    assert asm.push(0.10, [2.0, 0.0], [0.0], episode=0) is None  # a gap of 4 periods
    assert asm.push(0.12, [3.0, 0.0], [0.0], episode=1) is None  # a new episode
    assert asm.push(0.14, [4.0, 0.0], [0.0], episode=1) is not None
    assert asm.dropped_gaps == 2
