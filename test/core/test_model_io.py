"""Model messages and checkpoints: exact round trips, and every malformed, foreign or damaged model
refused with a reason before it can reach the planner."""

import json
import math

import pytest
import torch
from safetensors.torch import save as save_safetensors

from mbrl_control.core.dynamics import EnsembleConfig, EnsembleDynamics, PropagationConfig
from mbrl_control.core.learning import (
    ModelFormatError,
    ModelInfo,
    build_from_bytes,
    decode,
    encode,
    latest_checkpoint,
    load_into,
    save_checkpoint,
)
from mbrl_control.core.learning.storage import safetensors_metadata

CONFIG = EnsembleConfig(state_dim=4, action_dim=1, dt=0.02, angle_dims=(1,))


def trained_looking(seed: int) -> EnsembleDynamics:
    """A model with non-default weights and normaliser."""
    model = EnsembleDynamics(CONFIG, PropagationConfig(seed=seed))
    g = torch.Generator().manual_seed(seed)
    x, u = torch.randn(100, 4, generator=g), torch.randn(100, 1, generator=g)
    model.fit_normalizer(x, u, x + 0.1 * torch.randn(100, 4, generator=g))
    return model


def info(version: int = 3) -> ModelInfo:
    return ModelInfo(config=CONFIG, version=version, data_size=1234, holdout_nll=-1.5, holdout_mse=0.01)


def test_message_round_trip_is_exact():
    source, target = trained_looking(1), EnsembleDynamics(CONFIG, PropagationConfig(mode="tsinf")).freeze()
    blob = encode(source, info())
    received = load_into(target, blob)
    assert (received.version, received.data_size, received.holdout_mse) == (3, 1234, 0.01)
    assert received.config == CONFIG and received.created > 0
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k
    x, u = torch.randn(9, 4), torch.randn(9, 1)
    torch.testing.assert_close(target.mean_step(x, u), source.mean_step(x, u), rtol=0, atol=0)
    rebuilt, _ = build_from_bytes(blob)
    assert rebuilt.config == CONFIG


def tampered(state_change=None, meta_change=None) -> bytes:
    """A message from a valid model with its tensors or metadata altered."""
    source = trained_looking(2)
    blob = encode(source, info())
    state = {k: v.clone() for k, v in source.state_dict().items()}
    meta = safetensors_metadata(blob)
    if state_change:
        state_change(state)
    if meta_change:
        meta_change(meta)
    return save_safetensors(state, metadata=meta)


def set_info(meta, **changes):
    d = json.loads(meta["info"])
    for k, v in changes.items():
        if k in d["config"]:
            d["config"][k] = v
        else:
            d[k] = v
    meta["info"] = json.dumps(d)


REJECTED = {
    "garbage": (lambda: b"\x00\x01not a model at all", "too short|header"),
    "truncated": (lambda: encode(trained_looking(2), info())[:-100], "malformed|header"),
    "lying header length": (lambda: (10**9).to_bytes(8, "little") + b"{}", "header length"),
    "another format": (lambda: tampered(meta_change=lambda m: m.update(format="something.else")), "format"),
    "newer format version": (lambda: tampered(meta_change=lambda m: m.update(format_version="99")), "version"),
    "other architecture": (lambda: tampered(meta_change=lambda m: set_info(m, hidden=32)), "hidden"),
    "no info": (lambda: tampered(meta_change=lambda m: m.pop("info")), "info"),
    "wrong shape": (lambda: tampered(lambda s: s.update({"weights.1": torch.zeros(5, 64, 63)})), "weights.1.*shape"),
    "NaN weights": (lambda: tampered(lambda s: s["weights.2"].view(-1).__setitem__(7, math.nan)), "weights.2.*non-finite"),
    "missing tensor": (lambda: tampered(lambda s: s.pop("min_logvar")), "missing.*min_logvar"),
    "extra tensor": (lambda: tampered(lambda s: s.update(spare=torch.zeros(1))), "unexpected.*spare"),
    "float64 tensor": (lambda: tampered(lambda s: s.update(delta_std=s["delta_std"].double())), "dtype"),
    "zero std": (lambda: tampered(lambda s: s["input_std"].zero_()), "input_std.*positive"),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_bad_message_is_rejected_with_a_reason_and_the_model_untouched(case):
    make, reason = REJECTED[case]
    model = trained_looking(1).freeze()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ModelFormatError, match=reason):
        load_into(model, make())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_config_must_match_the_receiving_model():
    blob = encode(trained_looking(1), info())
    other = EnsembleDynamics(EnsembleConfig(state_dim=4, action_dim=1, dt=0.01, angle_dims=(1,)))
    with pytest.raises(ModelFormatError, match="dt"):
        decode(blob, other)


def test_hot_swap_copies_into_the_existing_tensors():
    model = EnsembleDynamics(CONFIG, PropagationConfig(dtype="bfloat16")).freeze()
    ptrs = {k: v.data_ptr() for k, v in model.state_dict().items()} | {"plan": model._plan_w1.data_ptr()}
    load_into(model, encode(trained_looking(4), info()))
    assert ptrs == {k: v.data_ptr() for k, v in model.state_dict().items()} | {"plan": model._plan_w1.data_ptr()}


def test_checkpoints_are_found_newest_first_and_damage_is_detected(tmp_path):
    models = {v: trained_looking(v) for v in (1, 2, 3)}
    for v, m in models.items():
        save_checkpoint(tmp_path, m, info(v), keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ensemble_v00000002.json", "ensemble_v00000002.safetensors",
        "ensemble_v00000003.json", "ensemble_v00000003.safetensors",
    ]
    summary = json.loads((tmp_path / "ensemble_v00000003.json").read_text())
    assert summary["version"] == 3 and summary["data_size"] == 1234 and summary["holdout_mse"] == 0.01
    assert len(summary["normalizer"]["delta_std"]) == 4
    target = EnsembleDynamics(CONFIG)
    blob, found = latest_checkpoint(tmp_path, target)
    assert found.version == 3
    load_into(target, blob)
    assert torch.equal(target.weights[0], models[3].weights[0])

    newest = tmp_path / "ensemble_v00000003.safetensors"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x10  # a flipped bit deep inside the weights
    newest.write_bytes(bytes(data))
    blob, found = latest_checkpoint(tmp_path, target)
    assert found.version == 2  # the damaged one is skipped
    (tmp_path / "ensemble_v00000002.json").write_text("{ not json")
    assert latest_checkpoint(tmp_path, target) is None
    assert not list(tmp_path.glob("*.tmp"))
