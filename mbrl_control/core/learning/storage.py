"""Crash-safe file writes and safetensors headers, shared by the replay buffer and checkpoints."""

from __future__ import annotations

import json
import os
from pathlib import Path

MAX_HEADER_BYTES = 1 << 20  # real headers are a few kB; refuse absurd lengths before parsing


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_dir(directory: Path) -> None:
    """Make renames and deletions in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """``path`` holds either its old content or all of ``data``, whenever the process dies:
    a temporary file, fsynced, renamed over it, the directory fsynced."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors blob, read from its JSON header alone.

    Raises ValueError when the blob is too short, the header length does not fit, or the header
    is not a JSON object.
    """
    if len(data) < 8:
        raise ValueError(f"{len(data)} bytes is too short for a safetensors header")
    n = int.from_bytes(data[:8], "little")
    if n > min(len(data) - 8, MAX_HEADER_BYTES):
        raise ValueError(f"header length {n} does not fit the {len(data)}-byte blob")
    header = json.loads(data[8 : 8 + n])
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict):
        raise ValueError("__metadata__ is not a JSON object")
    return meta


def checked_metadata(data: bytes, fmt: str, format_version: int, error: type[Exception]) -> dict[str, str]:
    """The metadata of one of our safetensors messages, after checking it names ``fmt`` at
    ``format_version``; else ``error`` saying what is wrong."""
    try:
        meta = safetensors_metadata(data)
    except ValueError as exc:
        raise error(f"unreadable header: {exc}") from exc
    if meta.get("format") != fmt:
        raise error(f"format is {meta.get('format')!r}, expected {fmt!r}")
    if meta.get("format_version") != str(format_version):
        raise error(f"format version {meta.get('format_version')!r}, this code reads {format_version}")
    return meta
