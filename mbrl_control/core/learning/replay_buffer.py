"""A replay buffer of transitions that survives being killed at any moment.

On disk (``directory``):

- ``wal.bin``: the write-ahead tail. A 32-byte header (magic, version, state and action sizes,
  the sequence number it starts at) and then fixed-size records, each carrying its sequence
  number and a CRC32. ``append`` writes
  one record with one ``write`` (so a killed process loses nothing ``append`` returned from; a
  power loss keeps what ``sync`` acknowledged). On reload the tail is read up to the first record
  that is short, fails its CRC or breaks the sequence (a torn last write), and cut there.
- ``chunk_<first>_<last>.safetensors``: sealed chunks of ``chunk_size`` transitions. A chunk is
  written to a temporary file, fsynced, renamed into place and the directory fsynced; only then
  is the tail replaced, atomically too, by an empty one starting at the next sequence number. A
  crash between the two leaves the same transitions in both, which reload drops from the tail by
  sequence number. Each chunk stores a CRC32 of its arrays: a damaged chunk
  is set aside (renamed ``*.corrupt``) and reported, never loaded.

Size cap: when the sealed chunks hold more than ``max_transitions``, whole chunks are dropped
oldest first (files deleted), except, with ``keep_first_episode``, the chunks holding the first
episode ever recorded (the random-action seed data that anchors the model's coverage). So the
buffer holds at most ``max_transitions`` plus the unsealed tail (< ``chunk_size``), unless the
pinned chunks alone exceed the cap. Sequence numbers are never reused, eviction or not.

No pickle anywhere: records are a numpy structured dtype, chunks are safetensors.
"""

from __future__ import annotations

import logging
import os
import threading
import zlib
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from mbrl_control.core.learning.storage import fsync_dir, safetensors_metadata, write_all, write_atomic
from mbrl_control.core.learning.transitions import Transitions

log = logging.getLogger(__name__)

WAL_MAGIC = b"MBRLWAL\x01"
FORMAT_VERSION = 1
_HEADER = np.dtype(
    [("magic", "S8"), ("version", "<u4"), ("state_dim", "<u4"), ("action_dim", "<u4"), ("pad", "V4"), ("base_seq", "<i8")]
)
CHUNK_PREFIX = "chunk_"
MAX_ROBOT = 65535  # robot ids are stored in 16 bits


def record_dtype(state_dim: int, action_dim: int) -> np.dtype:
    """One write-ahead record; ``crc`` covers every byte after it."""
    return np.dtype(
        [
            ("crc", "<u4"),
            ("done", "u1"),
            # In what was padding: records written before fleets read as robot 0, CRC unchanged.
            ("robot", "<u2"),
            ("pad", "V1"),
            ("seq", "<i8"),
            ("stamp", "<f8"),
            ("episode", "<i8"),
            ("reward", "<f4"),
            ("state", "<f4", (state_dim,)),
            ("action", "<f4", (action_dim,)),
            ("next_state", "<f4", (state_dim,)),
        ]
    )


class ReplayBufferError(RuntimeError):
    """The directory holds a buffer this one cannot continue (other sizes, unknown format)."""


class ReplayBuffer:
    """Transitions appended one at a time, in memory and (with ``directory``) on disk.

    Thread-safe: a subscriber may append while a trainer takes ``snapshot()``s.
    """

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        directory: str | Path | None = None,
        chunk_size: int = 1000,
        max_transitions: int = 200_000,
        keep_first_episode: bool = True,
    ) -> None:
        if chunk_size < 1 or max_transitions < chunk_size:
            raise ValueError("need chunk_size >= 1 and max_transitions >= chunk_size")
        self.state_dim, self.action_dim = state_dim, action_dim
        self.chunk_size = chunk_size
        self.max_transitions = max_transitions
        self.keep_first_episode = keep_first_episode
        self.directory = Path(directory) if directory is not None else None
        self._dtype = record_dtype(state_dim, action_dim)
        self._lock = threading.RLock()
        self._chunks: list[tuple[Transitions, Path | None]] = []
        self._tail = np.zeros(chunk_size, self._dtype)
        self._tail_len = 0
        self._next_seq = 0
        self._synced_seq = 0
        self._first_episode: int | None = None
        self._fd: int | None = None
        self.report: dict[str, int] = {"chunks": 0, "tail_records": 0, "torn_bytes": 0, "corrupt_chunks": 0, "evicted": 0}
        if self.directory is not None:
            self._open()

    # -- public API ----------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._lock:
            return sum(len(c) for c, _ in self._chunks) + self._tail_len

    @property
    def next_seq(self) -> int:
        """Sequence number the next append gets (= transitions ever appended, evicted included)."""
        return self._next_seq

    @property
    def synced_seq(self) -> int:
        """Every transition with a smaller sequence number is on disk and fsynced."""
        return self._synced_seq

    def append(
        self,
        state: np.ndarray,
        action: np.ndarray,
        next_state: np.ndarray,
        reward: float,
        done: bool,
        stamp: float,
        episode: int,
        sync: bool = False,
        robot: int = 0,
    ) -> int:
        """Record one transition; returns its sequence number. ``sync``: fsync before returning.
        ``robot``: which robot of a fleet it came from (0 to 65535)."""
        if not 0 <= robot <= MAX_ROBOT:
            raise ValueError(f"robot id {robot} is outside 0..{MAX_ROBOT}")
        with self._lock:
            rec = self._tail[self._tail_len : self._tail_len + 1]
            rec["seq"], rec["stamp"], rec["episode"] = self._next_seq, stamp, episode
            rec["reward"], rec["done"], rec["robot"] = reward, bool(done), robot
            rec["state"], rec["action"], rec["next_state"] = state, action, next_state
            rec["crc"] = zlib.crc32(rec.tobytes()[4:])
            if self._fd is not None:
                write_all(self._fd, rec.tobytes())
            if self._first_episode is None:
                self._first_episode = int(episode)
            seq = self._next_seq
            self._next_seq += 1
            self._tail_len += 1
            if sync:
                self.sync()
            if self._tail_len == self.chunk_size:
                self._seal()
            return seq

    def sync(self) -> int:
        """Make every appended transition durable; returns ``synced_seq``."""
        with self._lock:
            if self._fd is not None:
                os.fsync(self._fd)
            self._synced_seq = self._next_seq
            return self._synced_seq

    def snapshot(self) -> Transitions:
        """A copy of everything held, oldest first (what the trainer trains on)."""
        with self._lock:
            parts = [c for c, _ in self._chunks] + [_records_to_transitions(self._tail[: self._tail_len])]
            return Transitions.concatenate(parts)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
                self._synced_seq = self._next_seq

    # -- sealing and eviction ------------------------------------------------------------------
    def _seal(self) -> None:
        """Move the full tail into a chunk (durably first), then empty the tail."""
        chunk = _records_to_transitions(self._tail[: self._tail_len].copy())
        path = None
        if self.directory is not None:
            path = self.directory / f"{CHUNK_PREFIX}{chunk.seq[0]:012d}_{chunk.seq[-1]:012d}.safetensors"
            write_atomic(path, _chunk_bytes(chunk))
            self._reset_wal()
        self._chunks.append((chunk, path))
        self._tail_len = 0
        self._evict()

    def _reset_wal(self) -> None:
        """Atomically replace the write-ahead tail by an empty one starting at ``next_seq``."""
        if self._fd is not None:
            os.close(self._fd)
        path = self.directory / "wal.bin"
        write_atomic(path, _header_bytes(self.state_dim, self.action_dim, self._next_seq))
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._synced_seq = self._next_seq

    def _evict(self) -> None:
        held = sum(len(c) for c, _ in self._chunks)
        i, removed = 0, False
        while held > self.max_transitions and i < len(self._chunks):
            chunk, path = self._chunks[i]
            if self.keep_first_episode and self._first_episode is not None and (chunk.episode == self._first_episode).any():
                i += 1
                continue
            if path is not None:
                path.unlink(missing_ok=True)
                removed = True
            del self._chunks[i]
            held -= len(chunk)
            self.report["evicted"] += len(chunk)
        if removed:
            fsync_dir(self.directory)

    # -- reload --------------------------------------------------------------------------------
    def _open(self) -> None:
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        for tmp in d.glob("*.tmp"):  # a write that never reached its rename
            tmp.unlink()
        for path in sorted(d.glob(f"{CHUNK_PREFIX}*.safetensors")):
            try:
                chunk = self._read_chunk(path)
            except (ValueError, OSError, SafetensorError) as exc:
                log.error("replay buffer: %s is damaged (%s); set aside as .corrupt", path.name, exc)
                path.rename(path.with_suffix(".corrupt"))
                self.report["corrupt_chunks"] += 1
                continue
            self._chunks.append((chunk, path))
        self.report["chunks"] = len(self._chunks)
        if self._chunks:
            self._next_seq = int(self._chunks[-1][0].seq[-1]) + 1
            self._first_episode = int(self._chunks[0][0].episode[0])
        self._recover_tail(d / "wal.bin")
        self._synced_seq = self._next_seq
        if self._tail_len >= self.chunk_size:  # only if chunk_size shrank between runs
            self._seal()
        self._evict()

    def _read_chunk(self, path: Path) -> Transitions:
        data = path.read_bytes()
        arrays = load_safetensors(data)
        meta = safetensors_metadata(data)
        if meta.get("format") != "mbrl_control.replay_chunk" or int(meta.get("version", -1)) != FORMAT_VERSION:
            raise ValueError(f"not a version {FORMAT_VERSION} replay chunk: {meta}")
        if int(meta["state_dim"]) != self.state_dim or int(meta["action_dim"]) != self.action_dim:
            raise ReplayBufferError(f"{path.name} holds other state/action sizes than {self.state_dim}/{self.action_dim}")
        if int(meta["crc32"]) != _arrays_crc(arrays):
            raise ValueError("CRC mismatch")
        # A chunk sealed before fleets has no robot array: all its transitions are robot 0's.
        robot = arrays["robot"].astype(np.int64) if "robot" in arrays else None
        chunk = Transitions(**{k: arrays[k] for k in _CHUNK_FIELDS}, done=arrays["done"].astype(bool), robot=robot)
        if len(chunk) == 0 or not (np.diff(chunk.seq) == 1).all():
            raise ValueError("sequence numbers are not contiguous")
        if self._chunks and chunk.seq[0] <= self._chunks[-1][0].seq[-1]:
            raise ValueError("overlaps the previous chunk")
        return chunk

    def _recover_tail(self, path: Path) -> None:
        """Read the valid prefix of the write-ahead tail; rewrite it without what follows."""
        size = _HEADER.itemsize
        if not path.exists() or path.stat().st_size < size:  # never created (its creation is atomic)
            self._reset_wal()
            return
        raw = path.read_bytes()
        head = np.frombuffer(raw[:size], _HEADER)[0]
        if head["magic"] != WAL_MAGIC or head["version"] != FORMAT_VERSION:
            raise ReplayBufferError(f"{path} is not a version {FORMAT_VERSION} write-ahead log")
        if (head["state_dim"], head["action_dim"]) != (self.state_dim, self.action_dim):
            raise ReplayBufferError(
                f"{path} holds state/action sizes {head['state_dim']}/{head['action_dim']}, "
                f"not {self.state_dim}/{self.action_dim}"
            )
        body = raw[size:]
        rec_size = self._dtype.itemsize
        records = np.frombuffer(body[: len(body) - len(body) % rec_size], self._dtype)
        valid, expected = 0, int(head["base_seq"])
        for rec in records:
            if rec["seq"] != expected or zlib.crc32(rec.tobytes()[4:]) != rec["crc"]:
                break
            expected += 1
            valid += 1
        torn = len(body) - valid * rec_size
        self._next_seq = max(self._next_seq, int(head["base_seq"]))
        fresh = records[:valid][records[:valid]["seq"] >= self._next_seq]  # sealed ones stay in their chunk
        n = len(fresh)
        self._tail = np.zeros(max(n, self.chunk_size), self._dtype)
        self._tail[:n] = fresh
        self._tail_len = n
        self.report["tail_records"], self.report["torn_bytes"] = n, torn
        if n:
            self._next_seq = int(fresh["seq"][-1]) + 1
            if self._first_episode is None:
                self._first_episode = int(fresh["episode"][0])
        if torn or n != valid:  # rewrite: no torn bytes, no records already sealed
            if torn:
                log.warning("replay buffer: dropped a torn write-ahead tail of %d bytes", torn)
            first = self._next_seq - n
            write_atomic(path, _header_bytes(self.state_dim, self.action_dim, first) + fresh.tobytes())
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)

_CHUNK_FIELDS = ("seq", "state", "action", "next_state", "reward", "stamp", "episode")


def _records_to_transitions(records: np.ndarray) -> Transitions:
    return Transitions(
        seq=records["seq"].copy(),
        state=records["state"].copy(),
        action=records["action"].copy(),
        next_state=records["next_state"].copy(),
        reward=records["reward"].copy(),
        done=records["done"].astype(bool),
        stamp=records["stamp"].copy(),
        episode=records["episode"].copy(),
        robot=records["robot"].astype(np.int64),
    )


def _chunk_arrays(chunk: Transitions) -> dict[str, np.ndarray]:
    arrays = {k: np.ascontiguousarray(getattr(chunk, k)) for k in _CHUNK_FIELDS}
    arrays["done"] = chunk.done.astype(np.uint8)
    arrays["robot"] = chunk.robot.astype(np.uint16)
    return arrays


def _arrays_crc(arrays: dict[str, np.ndarray]) -> int:
    crc = 0
    for k in sorted(arrays):
        crc = zlib.crc32(np.ascontiguousarray(arrays[k]).tobytes(), crc)
    return crc


def _chunk_bytes(chunk: Transitions) -> bytes:
    arrays = _chunk_arrays(chunk)
    meta = {
        "format": "mbrl_control.replay_chunk",
        "version": str(FORMAT_VERSION),
        "state_dim": str(chunk.state.shape[1]),
        "action_dim": str(chunk.action.shape[1]),
        "crc32": str(_arrays_crc(arrays)),
    }
    return save_safetensors(arrays, metadata=meta)


def _header_bytes(state_dim: int, action_dim: int, base_seq: int) -> bytes:
    head = np.zeros(1, _HEADER)
    head["magic"], head["version"] = WAL_MAGIC, FORMAT_VERSION
    head["state_dim"], head["action_dim"], head["base_seq"] = state_dim, action_dim, base_seq
    return head.tobytes()
