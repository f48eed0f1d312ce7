"""Offset-free MPC (core/estimation/model_offset): the learned model's steady one-step error is
estimated from the states that follow its commands and fed back into its predictions."""

import math

import pytest
import torch

from mbrl_control.core.dynamics import EnsembleConfig, EnsembleDynamics, PropagationConfig
from mbrl_control.core.estimation.model_offset import ModelOffset

CONFIG = EnsembleConfig(state_dim=4, action_dim=1, dt=0.02, members=3, hidden=16, layers=2, angle_dims=(1,))
BIAS = torch.tensor([0.0, 0.0, 0.04, -0.06])  # a steady error in both accelerations (2 and 3 m|rad/s^2)


def model_with_normaliser() -> EnsembleDynamics:
    model = EnsembleDynamics(CONFIG, PropagationConfig(seed=3)).freeze()
    with torch.no_grad():
        model.delta_std.copy_(torch.tensor([0.02, 0.05, 0.1, 0.2]))
    return model


def run(model: EnsembleDynamics, offset: ModelOffset, ticks: int, noise: float = 0.01, seed: int = 0):
    """The plant is the model as learned plus BIAS (and estimate noise on the velocities): the
    one-step errors of the model in use (the offset included) per tick."""
    g = torch.Generator().manual_seed(seed)
    x, errors = torch.tensor([0.1, 0.2, 0.0, 0.0]), []
    for k in range(ticks):
        u = torch.randn(1, generator=g)
        offset.observe(x, k * CONFIG.dt)
        with torch.no_grad():
            predicted = model.mean_step(x[None], u[None])[0]
            saved = model.output_offset.clone()
            model.set_output_offset_(torch.zeros(4))
            x_next = model.mean_step(x[None], u[None])[0] + BIAS
            model.set_output_offset_(saved)
        x_next[2:] += noise * torch.randn(2, generator=g)
        errors.append((x_next - predicted).abs())
        offset.command_sent(x, u, k * CONFIG.dt)
        x = x_next
    return torch.stack(errors)


def test_the_offset_converges_to_the_steady_error_and_the_predictions_lose_it():
    model = model_with_normaliser()
    offset = ModelOffset(model, model, time_constant=0.2)
    errors = run(model, offset, ticks=200)
    torch.testing.assert_close(offset.offset, BIAS, atol=0.01, rtol=0)  # velocities: the bias, up to the noise
    assert offset.offset[:2].abs().max() == 0  # positions: left alone
    torch.testing.assert_close(model.output_offset, offset.offset)  # and in the model's predictions
    early, late = errors[:3, 2:].mean(), errors[-50:, 2:].mean()
    assert late < 0.3 * early, (early, late)
    assert offset.updates == 199  # every tick after the first


def test_the_time_constant_sets_how_fast_it_follows():
    model = model_with_normaliser()
    offset = ModelOffset(model, model, time_constant=0.2)
    run(model, offset, ticks=11, noise=0.0)  # ten updates: 1 - exp(-10 * 0.02 / 0.2) of the way
    torch.testing.assert_close(offset.offset[2:], (1 - math.exp(-1.0)) * BIAS[2:], rtol=0.05, atol=1e-4)


def test_a_state_that_is_not_one_step_after_the_command_is_not_used():
    model = model_with_normaliser()
    offset = ModelOffset(model, model, time_constant=0.2)
    x, u = torch.zeros(4), torch.zeros(1)
    offset.observe(x, 0.0)
    offset.command_sent(x, u, 0.0)
    offset.observe(x + 1.0, 2 * CONFIG.dt)  # a tick was missed
    assert offset.offset.abs().max() == 0 and offset.skipped == 1
    offset.observe(x + 1.0, 3 * CONFIG.dt)  # no command after the last state: nothing to compare
    assert offset.offset.abs().max() == 0 and offset.updates == 0


def test_the_offset_is_bounded_by_the_models_typical_change_and_reset_clears_it():
    model = model_with_normaliser()
    offset = ModelOffset(model, model, time_constant=0.02)  # one tick: the whole error at once
    x, u = torch.zeros(4), torch.zeros(1)
    offset.command_sent(x, u, 0.0)
    offset.observe(torch.tensor([0.0, 0.0, 50.0, -50.0]), CONFIG.dt)  # a glitch, not an offset
    torch.testing.assert_close(offset.offset[2:], torch.tensor([0.1, -0.2]))  # delta_std
    offset.reset()
    assert model.output_offset.abs().max() == 0 and offset.previous is None


def test_a_model_saved_or_cloned_carries_no_offset():
    model = model_with_normaliser()
    model.set_output_offset_(BIAS)
    assert "output_offset" not in model.state_dict()
    assert model.clone().output_offset.abs().max() == 0


def test_an_arm_holding_still_with_a_payload_its_urdf_lacks_gets_the_payloads_weight_as_its_effort_offset(tmp_path):
    """The iiwa holds still with 2 kg at its flange: it is commanded the torques that hold the true
    (loaded) arm, and the URDF model, without the payload, predicts it moving. The effort offset
    that explains its one-step errors converges to the payload's pull as joint torques (the URDF's
    gravity torques minus the loaded arm's: what the commands lose to the payload), and the URDF
    model with it holds still, and holds the arm with the loaded arm's torques."""
    from mbrl_control.core.builders import build_robot, robot_parameters
    from mbrl_control.core.dynamics.effort_offset import EffortOffsetDynamics
    from mbrl_control.core.estimation.model_offset import EffortOffset
    from mbrl_control.paths import resolve_urdf
    from mbrl_control.sim.randomization import apply_payload

    # The arm carrying its own weight (config/iiwa.yaml has it compensated): the truth is then the
    # loaded URDF alone. A robot's compensation knows the nominal URDF only, so the payload's pull
    # is the same offset either way.
    p = robot_parameters("iiwa") | {"gravity_compensated": False}
    urdf = resolve_urdf(p["urdf"])
    loaded = tmp_path / "loaded.urdf"
    loaded.write_text(apply_payload(urdf.read_text(), "lbr_iiwa_link_7", 2.0, (0.0, 0.0, 0.05)))
    truth, urdf_model = build_robot(p, loaded).model, build_robot(p).model
    shifted = EffortOffsetDynamics(urdf_model)
    offset = EffortOffset(shifted, shifted, time_constant=0.1, limit=build_robot(p).task.action_high)
    x = torch.tensor([0.3, 0.7, -0.2, -1.1, 0.4, 0.9, 0.1] + [0.0] * 7)
    with torch.no_grad():
        hold = truth.hold_action(x[None])[0]  # what keeps the loaded arm still
        weight = hold - urdf_model.hold_action(x[None])[0]
        for k in range(40):
            offset.observe(x, k * 0.02)  # it stays where it is: the truth's next state is x again
            offset.command_sent(x, hold, k * 0.02)
        assert float((truth.step(x[None], hold[None])[0] - x).abs().max()) < 1e-4
        torch.testing.assert_close(offset.offset, -weight, atol=0.05 * float(weight.abs().max()), rtol=0.0)
        torch.testing.assert_close(shifted.hold_action(x[None])[0], hold, atol=0.05 * float(weight.abs().max()), rtol=0.0)
        assert float(weight.abs().max()) > 5.0  # the payload is felt: N m on the shoulder and elbow
        torch.testing.assert_close(shifted.step(x[None], hold[None])[0], x, atol=2e-3, rtol=0.0)  # held, with the offset
        assert float((urdf_model.step(x[None], hold[None])[0] - x).abs().max()) > 0.05  # without it, it moves
    offset.reset()
    assert float(shifted.effort_offset.abs().max()) == 0.0


def test_the_effort_offset_goes_into_the_urdf_model_that_plans_and_is_refused_for_a_learned_one():
    from mbrl_control.core.builders import build_mpc, robot_parameters

    p = robot_parameters("cartpole") | {"planner": "cem", "compile": False, "model_offset.kind": "effort", "model_offset.time_constant": 0.2,
                                        "cem.population": 20, "cem.elites": 4, "cem.iterations": 1}
    analytic = build_mpc(p)
    assert analytic.effort_offset is analytic.model and analytic.effort_offset.model is analytic.robot.model
    residual = build_mpc(p | {"model": "residual"})
    assert residual.model.analytic is residual.effort_offset
    with pytest.raises(ValueError, match="model_offset.kind 'effort'"):
        build_mpc(p | {"model": "learned"})
    assert build_mpc(p | {"model_offset.time_constant": 0.0}).effort_offset is None  # off: the model as it is


def test_the_compiled_effort_update_follows_the_offset_it_changes_as_eager_does():
    """Compiled, the prediction reads the offset buffer that every update changes in place (a
    traced graph would bake its first value): the same offsets as eager, step by step."""
    from torch._dynamo.utils import counters

    from mbrl_control.core.builders import build_robot, robot_parameters
    from mbrl_control.core.dynamics.effort_offset import EffortOffsetDynamics
    from mbrl_control.core.estimation.model_offset import EffortOffset

    robot = build_robot(robot_parameters("cartpole"))
    offsets = {}
    for compiled in (False, True):
        shifted = EffortOffsetDynamics(robot.model)
        offset = EffortOffset(shifted, shifted, time_constant=0.1, limit=robot.task.action_high, compile=compiled)
        graphs = counters["stats"]["unique_graphs"]  # compiled at construction: none more in the loop (a stalled tick)
        g = torch.Generator().manual_seed(1)
        x, trace = torch.tensor([0.1, 0.2, 0.0, 0.0]), []
        for k in range(30):
            offset.observe(x, k * 0.02)
            u = torch.randn(1, generator=g)
            offset.command_sent(x, u, k * 0.02)
            with torch.no_grad():
                x = robot.model.step(x[None], (u + 2.0)[None])[0]  # a cart pushed 2 N harder than commanded
            trace.append(offset.offset.clone())
        assert counters["stats"]["unique_graphs"] == graphs
        offsets[compiled] = torch.stack(trace)
    torch.testing.assert_close(offsets[True], offsets[False], atol=1e-3, rtol=1e-3)
    assert abs(float(offsets[True][-1, 0]) - 2.0) < 0.1  # and it found the push
