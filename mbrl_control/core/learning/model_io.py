"""Learned ensembles to bytes and back (safetensors with a JSON header), for a model topic and for
checkpoints on disk; strict validation, so a malformed, foreign or damaged model is refused with a
reason instead of ever reaching the planner.

A model message (``encode``) is a safetensors blob: every tensor of the ensemble's ``state_dict``
(weights, log-variance bounds, normaliser) and, in its metadata, ``format``, ``format_version`` and
``info``: the JSON of a ``ModelInfo`` (model version, data size, held-out scores, the
architecture). ``decode`` accepts it only if all of these check out against the receiving model.

A checkpoint is ``ensemble_v<version>.safetensors`` (the same blob) plus ``ensemble_v<version>.json``
(the info, the normaliser for people, the blob's size and SHA-256). Both are written atomically,
blob first: the JSON is the commit point, and a blob that does not match its JSON is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from mbrl_control.core.dynamics.ensemble import (
    CheckedState,
    EnsembleConfig,
    EnsembleDynamics,
    ModelStateError,
    PropagationConfig,
)
from mbrl_control.core.learning.storage import checked_metadata, write_atomic

log = logging.getLogger(__name__)

FORMAT = "mbrl_control.ensemble"
FORMAT_VERSION = 1


class ModelFormatError(ValueError):
    """Bytes or files that are not a loadable model for this ensemble; the message says why."""


@dataclass
class ModelInfo:
    """What travels with the weights."""

    config: EnsembleConfig
    version: int = 0  # the learner's model counter; higher is newer
    data_size: int = 0  # transitions it was trained on
    holdout_nll: float = math.nan
    holdout_mse: float = math.nan  # 1.0 = no better than predicting the mean change
    created: float = 0.0  # unix time
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["config"] = self.config.to_dict()
        return json.dumps(d, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelInfo":
        d = json.loads(text)
        if not isinstance(d, dict) or not isinstance(d.get("config"), dict):
            raise ValueError("info is not an object with a config")
        d["config"] = EnsembleConfig.from_dict(d["config"])
        return cls(**d)


def encode(model: EnsembleDynamics, info: ModelInfo) -> bytes:
    """The model message: ``model``'s weights and normaliser with ``info``."""
    if info.config != model.config:
        raise ValueError("info.config differs from the model's config")
    info = dataclasses.replace(info, created=info.created or time.time())
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "info": info.to_json()}
    return save_safetensors(state, metadata=meta)


def read_info(data: bytes) -> ModelInfo:
    """The ``ModelInfo`` of a model message, checking only its header."""
    meta = checked_metadata(data, FORMAT, FORMAT_VERSION, ModelFormatError)
    try:
        return ModelInfo.from_json(meta["info"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFormatError(f"bad info: {exc}") from exc


def decode(data: bytes, model: EnsembleDynamics) -> tuple[CheckedState, ModelInfo]:
    """Validate a model message against ``model`` (the one it would be loaded into).

    Returns the checked state to hand to ``model.load_state_`` (a copy, no further checks: do
    this in the subscriber, the swap at the next tick) and its info; raises ``ModelFormatError``
    with the reason: malformed bytes, another format or version, another architecture, missing or
    extra tensors, wrong shapes or dtypes, non-finite values.
    """
    info = read_info(data)
    if info.config != model.config:
        ours, theirs = model.config.to_dict(), info.config.to_dict()
        diff = {k: (theirs[k], ours[k]) for k in ours if ours[k] != theirs[k]}
        raise ModelFormatError(f"architecture differs (received, expected): {diff}")
    try:
        state = load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ModelFormatError(f"malformed tensors: {exc}") from exc
    try:
        return model.check_state(state), info
    except ModelStateError as exc:
        raise ModelFormatError(str(exc)) from exc


def load_into(model: EnsembleDynamics, data: bytes) -> ModelInfo:
    """Validate a model message and hot-swap it into ``model`` (in place); raises on a bad one,
    leaving ``model`` untouched."""
    state, info = decode(data, model)
    model.load_state_(state)
    return info


def build_from_bytes(data: bytes, propagation: PropagationConfig = PropagationConfig()) -> tuple[EnsembleDynamics, ModelInfo]:
    """A new ensemble of the message's own architecture (e.g. a learner resuming from disk)."""
    model = EnsembleDynamics(read_info(data).config, propagation)
    return model, load_into(model, data)


# -- checkpoints ---------------------------------------------------------------------------------


def save_checkpoint(directory: str | Path, model: EnsembleDynamics, info: ModelInfo, keep: int = 5) -> Path:
    """Write checkpoint ``info.version`` atomically; keep the newest ``keep``. Returns its JSON path."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    stem = f"ensemble_v{info.version:08d}"
    blob = encode(model, info)
    write_atomic(d / f"{stem}.safetensors", blob)
    summary = json.loads(read_info(blob).to_json())
    summary.update(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        weights=f"{stem}.safetensors",
        bytes=len(blob),
        sha256=hashlib.sha256(blob).hexdigest(),
        normalizer={k: model.state_dict()[k].tolist() for k in ("input_mean", "input_std", "delta_mean", "delta_std")},
    )
    json_path = d / f"{stem}.json"
    write_atomic(json_path, json.dumps(summary, indent=1).encode())
    for old in sorted(d.glob("ensemble_v*.json"))[:-keep] if keep > 0 else []:
        old.with_suffix(".safetensors").unlink(missing_ok=True)
        old.unlink(missing_ok=True)
    return json_path


def read_checkpoint(json_path: str | Path) -> bytes:
    """The model blob of a checkpoint, checked against its JSON (size, SHA-256)."""
    json_path = Path(json_path)
    try:
        summary = json.loads(json_path.read_text())
        blob = (json_path.parent / summary["weights"]).read_bytes()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelFormatError(f"checkpoint {json_path.name}: {exc}") from exc
    if len(blob) != summary.get("bytes") or hashlib.sha256(blob).hexdigest() != summary.get("sha256"):
        raise ModelFormatError(f"checkpoint {json_path.name}: weights file does not match its SHA-256 (damaged)")
    return blob


def latest_checkpoint(directory: str | Path, model: EnsembleDynamics | None = None,
                      skipped: list[tuple[Path, str]] | None = None) -> tuple[bytes, ModelInfo] | None:
    """The newest checkpoint that reads back intact (and fits ``model``, if given); damaged ones
    are skipped with an error logged (and appended to ``skipped`` as (JSON path, reason)). None
    if there is none."""
    for json_path in sorted(Path(directory).glob("ensemble_v*.json"), reverse=True):
        try:
            blob = read_checkpoint(json_path)
            info = decode(blob, model)[1] if model is not None else read_info(blob)
            return blob, info
        except ModelFormatError as exc:
            log.error("skipping %s", exc)
            if skipped is not None:
                skipped.append((json_path, str(exc)))
    return None
