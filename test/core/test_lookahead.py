"""The controller's latency compensation: an estimate carried from its stamp to when the command
acts, under the commands sent meanwhile."""

from __future__ import annotations

import math

import numpy as np
import torch

from mbrl_control.core.builders import build_model, load_robot
from mbrl_control.core.estimation.lookahead import StateLookahead

DT = 0.0025


def _stepped(model, x: np.ndarray, commands: list[np.ndarray]) -> np.ndarray:
    state = torch.tensor(x, dtype=torch.float32)[None]
    for u in commands:
        state = model.step(state, torch.tensor(u, dtype=torch.float32)[None])
    return state[0].double().numpy()


def test_the_estimate_is_carried_forward_under_the_commands_as_sent():
    """From the stamp to t in whole model steps: the command acting at the stamp, then each one
    from when it was sent; the same as stepping the model by hand."""
    spec = load_robot("cartpole").spec
    model = build_model(spec, DT)
    lookahead = StateLookahead(model, compile=False)
    x = np.array([0.1, 3.0, 0.2, -0.5])
    lookahead.command_sent(np.array([4.0]), 0.0)
    lookahead.command_sent(np.array([-8.0]), 0.0125)  # five steps after the stamp below
    carried = lookahead.predict(x, 0.0025, 0.0225)
    by_hand = _stepped(model, x, [np.array([4.0])] * 4 + [np.array([-8.0])] * 4)
    np.testing.assert_allclose(carried, by_hand, atol=1e-6)
    held = _stepped(model, x, [np.array([4.0])] * 8)
    assert np.abs(carried - held).max() > 1e-4  # the later command matters


def test_nothing_to_carry_leaves_the_estimate_as_it_is():
    """Before any command (a braked arm, a robot not ours yet), at or before the stamp: unchanged."""
    spec = load_robot("cartpole").spec
    lookahead = StateLookahead(build_model(spec, DT), compile=False)
    x = np.array([0.1, 3.0, 0.2, -0.5])
    np.testing.assert_array_equal(lookahead.predict(x, 0.0, 0.02), x)
    lookahead.command_sent(np.array([4.0]), 0.01)
    np.testing.assert_array_equal(lookahead.predict(x, 0.0, 0.02), x)  # nothing known to act at the stamp
    np.testing.assert_array_equal(lookahead.predict(x, 0.02, 0.02), x)
    lookahead.command_sent(np.array([1.0]), 0.005)  # a clock that went back: the record starts over
    np.testing.assert_array_equal(lookahead.predict(x, 0.0, 0.02), x)
    assert not math.isnan(lookahead.predict(x, 0.006, 0.02)[0])


def test_an_old_estimate_is_carried_at_most_max_span():
    """The lookahead's model steps are paid inside the control tick: an estimate older than
    ``max_span`` is carried only that far from its stamp."""
    spec = load_robot("cartpole").spec
    model = build_model(spec, DT)
    capped, free = StateLookahead(model, max_span=0.01, compile=False), StateLookahead(model, compile=False)
    x = np.array([0.1, 3.0, 0.2, -0.5])
    for lookahead in (capped, free):
        lookahead.command_sent(np.array([4.0]), 0.0)
    np.testing.assert_allclose(capped.predict(x, 0.0, 0.05), free.predict(x, 0.0, 0.01), atol=1e-9)
    assert np.abs(free.predict(x, 0.0, 0.05) - free.predict(x, 0.0, 0.01)).max() > 1e-3
