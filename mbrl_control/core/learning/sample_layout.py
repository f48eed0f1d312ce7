"""The controller's per-tick sample as one flat float64 row (a std_msgs/Float64MultiArray whose
layout label names the fields): the scalars of the header, the state planned from, the command
sent, its reward. Writers and readers both go through :class:`SampleLayout`, and readers find the
fields by the label's names, so recordings made with an older header stay readable.

Header fields, in order (``HEADER``):

- ``stamp``: the state's stamp [s of robot time];
- ``episode``: the episode number (-1 before an episode manager numbers them);
- ``seq``: the controller's tick sequence number, also in its ``~/timing`` record, counting every
  control tick (planned or not): a judge tells from it exactly which samples were sent. Samples
  recorded before it existed read as ``seq = -1``.

Adding a header field (a robot id, say): append its name to ``HEADER``, give :class:`Sample` the
field with the value older rows read as, and pass it to :meth:`SampleLayout.pack`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

HEADER = ("stamp", "episode", "seq")
# What a header field reads as in a row recorded without it.
MISSING = {"seq": -1}
_STATE = re.compile(r"x\d+")
_ACTION = re.compile(r"u\d+")


@dataclass(frozen=True)
class Sample:
    stamp: float
    episode: int
    seq: int
    state: np.ndarray  # [nx] float64
    action: np.ndarray  # [nu] float64
    reward: float


@dataclass(frozen=True)
class SampleLayout:
    """Where each field of a sample row lives: ``[*header, x0..x{nx-1}, u0..u{nu-1}, reward]``."""

    state_dim: int
    action_dim: int
    header: tuple[str, ...] = HEADER

    @property
    def labels(self) -> list[str]:
        return [*self.header, *(f"x{i}" for i in range(self.state_dim)),
                *(f"u{i}" for i in range(self.action_dim)), "reward"]

    @property
    def label(self) -> str:
        """The labels joined by commas: what the message's ``layout.dim[0].label`` holds."""
        return ",".join(self.labels)

    @property
    def size(self) -> int:
        return len(self.header) + self.state_dim + self.action_dim + 1

    @classmethod
    def from_label(cls, label: str) -> "SampleLayout":
        """The layout a message's label describes: this version's, an older one's (no ``seq``), or a
        newer one's (header fields this version does not know are skipped)."""
        names = label.split(",")
        header = []
        for name in names:
            if _STATE.fullmatch(name):
                break
            header.append(name)
        nx = sum(1 for name in names if _STATE.fullmatch(name))
        nu = sum(1 for name in names if _ACTION.fullmatch(name))
        layout = cls(nx, nu, tuple(header))
        if names != layout.labels or "stamp" not in header or "episode" not in header:
            raise ValueError(f"not a sample layout: '{label}'")
        return layout

    def pack(self, *, stamp: float, episode: int, seq: int, state: np.ndarray, action: np.ndarray,
             reward: float) -> list[float]:
        """The row to publish (only this version's header can be written)."""
        if self.header != HEADER:
            raise ValueError(f"samples are written with the header {HEADER}, not {self.header}")
        return [float(stamp), float(episode), float(seq), *map(float, state), *map(float, action), float(reward)]

    def valid(self, row: np.ndarray) -> bool:
        """Whether ``row`` has this layout's length and only finite values."""
        return row.shape == (self.size,) and bool(np.all(np.isfinite(row)))

    def unpack(self, row) -> Sample:
        """The fields of one row (a sequence of floats of this layout's size)."""
        row = np.asarray(row, dtype=np.float64)
        if row.shape != (self.size,):
            raise ValueError(f"a sample of this layout has {self.size} values, got {row.shape}")
        head = dict(zip(self.header, row[: len(self.header)].tolist()))
        start = len(self.header)
        return Sample(
            stamp=head["stamp"],
            episode=int(head["episode"]),
            seq=int(head.get("seq", MISSING["seq"])),
            state=row[start: start + self.state_dim],
            action=row[start + self.state_dim: start + self.state_dim + self.action_dim],
            reward=float(row[-1]),
        )


class SampleReader:
    """Reads the samples of one robot's sizes, whichever layout version wrote them: the sample, or
    None for a row that is malformed (wrong length, a non-finite value, an unknown label) or holds
    another robot's state and command (a foreign stream)."""

    def __init__(self, state_dim: int, action_dim: int) -> None:
        self.sizes = (state_dim, action_dim)
        self._layouts: dict[str, SampleLayout | None] = {}  # by label: parsed once per stream

    def read(self, label: str, row) -> Sample | None:
        if label not in self._layouts:
            try:
                layout = SampleLayout.from_label(label)
            except ValueError:
                layout = None
            if layout is not None and (layout.state_dim, layout.action_dim) != self.sizes:
                layout = None
            self._layouts[label] = layout
        layout = self._layouts[label]
        data = np.asarray(row, dtype=np.float64)
        if layout is None or not layout.valid(data):
            return None
        return layout.unpack(data)
