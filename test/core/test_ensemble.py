"""The probabilistic ensemble as a DynamicsModel: propagation modes, seeding, Jacobians, in-place
weight swaps and compiled planning, on small models (training is in test_learning_trainer.py)."""

import math

import pytest
import torch

from mbrl_control.core.builders import load_robot
from mbrl_control.core.dynamics import EnsembleConfig, EnsembleDynamics, ModelStateError, PropagationConfig
from mbrl_control.core.planners import CEMConfig, CEMPlanner
from mbrl_control.core.rollout import TrajectoryEvaluator

CARTPOLE = EnsembleConfig(state_dim=4, action_dim=1, dt=0.02, angle_dims=(1,))


def marker_ensemble(mode: str, members: int = 5, output_noise: bool = False, seed: int = 0) -> EnsembleDynamics:
    """Member e always predicts the state change e + 1 (every dim), so a step reveals the member
    that made it; its predicted std is the same for all members."""
    model = EnsembleDynamics(
        EnsembleConfig(state_dim=2, action_dim=1, dt=0.1, members=members, hidden=8, layers=2),
        PropagationConfig(mode=mode, output_noise=output_noise, seed=seed),
    ).freeze()
    with torch.no_grad():
        for w in model.weights:
            w.zero_()
        out_bias = model.biases[-1]
        out_bias.zero_()
        out_bias[:, 0, :2] = (torch.arange(members, dtype=torch.float32) + 1).unsqueeze(-1)
        out_bias[:, 0, 2:] = -5.0  # raw log-variance: std 0.08, so the member stays readable
    return model


def members_used(model: EnsembleDynamics, particles: int, steps: int) -> torch.Tensor:
    """``[particles, steps]`` index of the member that moved each particle at each step."""
    states = model.rollout(torch.zeros(particles, 2), torch.zeros(particles, steps, 1))
    return (states[:, 1:, 0] - states[:, :-1, 0]).round().long() - 1


@pytest.mark.parametrize("mode", ["ts1", "tsinf", "expectation"])
def test_rollout_shapes_and_start(mode):
    model = EnsembleDynamics(CARTPOLE, PropagationConfig(mode=mode)).freeze()
    x0, actions = torch.randn(13, 4), torch.randn(13, 6, 1)  # 13: not a multiple of 5 members
    states = model.rollout(x0, actions)
    assert states.shape == (13, 7, 4) and states.dtype == torch.float32
    torch.testing.assert_close(states[:, 0], x0)
    assert model.step(x0, actions[:, 0]).shape == (13, 4)


def test_ts1_redraws_each_particles_member_every_step_with_balanced_groups():
    used = members_used(marker_ensemble("ts1"), particles=500, steps=40)
    # Every step each member takes exactly 100 of the 500 particles (one equal group per bmm).
    counts = torch.stack([(used == e).sum(0) for e in range(5)])
    assert (counts == 100).all()
    # Each particle's member is uniform and independent from step to step.
    freq = torch.stack([(used == e).float().mean() for e in range(5)])
    assert (freq - 0.2).abs().max() < 0.02
    changed = (used[:, 1:] != used[:, :-1]).float().mean()
    assert abs(changed - 0.8) < 0.02
    # Particles do not move in lockstep: two particles share their member sequence only by chance.
    same_as_next = (used[:-1] == used[1:]).all(1).float().mean()
    assert same_as_next < 0.01


def test_tsinf_keeps_each_particles_member_for_the_whole_rollout():
    model = marker_ensemble("tsinf")
    used = members_used(model, particles=500, steps=20)
    assert (used == used[:, :1]).all()
    assert (torch.stack([(used[:, 0] == e).sum() for e in range(5)]) == 100).all()
    assert not torch.equal(members_used(model, 500, 20)[:, 0], used[:, 0])  # a new draw per rollout


def test_expectation_moves_by_the_mean_of_the_members():
    states = marker_ensemble("expectation").rollout(torch.zeros(3, 2), torch.zeros(3, 4, 1))
    torch.testing.assert_close(states[:, -1], torch.full((3, 2), 4 * 3.0))  # mean of 1..5 is 3


def test_output_noise_follows_the_predicted_gaussian():
    model = marker_ensemble("tsinf", output_noise=True)
    _, var = model.predict(torch.zeros(1, 2), torch.zeros(1, 1))
    std = var[0, 0, 0].sqrt()
    particles = 5000
    states = model.rollout(torch.zeros(particles, 2), torch.zeros(particles, 1, 1))
    delta = states[:, 1] - states[:, 0]
    member = delta[:, 0].round() - 1  # noise std ~0.2 leaves the member readable
    noise = delta - (member + 1).unsqueeze(-1)
    assert noise.mean().abs() < 4 * std / math.sqrt(noise.numel())
    assert abs(noise.std() / std - 1) < 0.05


def test_same_seed_same_rollouts_and_reseed_restarts_them():
    x0, actions = torch.randn(50, 4), torch.randn(50, 10, 1)
    a = EnsembleDynamics(CARTPOLE, PropagationConfig(seed=7, output_noise=True)).freeze()
    b = EnsembleDynamics(CARTPOLE, PropagationConfig(seed=7, output_noise=True)).freeze()
    first = a.rollout(x0, actions)
    torch.testing.assert_close(first, b.rollout(x0, actions), rtol=0, atol=0)
    assert not torch.equal(first, a.rollout(x0, actions))  # every rollout draws anew
    a.reseed()
    torch.testing.assert_close(first, a.rollout(x0, actions), rtol=0, atol=0)
    a.reseed(8)
    assert not torch.equal(first, a.rollout(x0, actions))


def test_jacobians_are_those_of_the_ensemble_mean():
    # A sampling model (TS1 with output noise): the Jacobians still come from the mean step.
    model = EnsembleDynamics(CARTPOLE, PropagationConfig(mode="ts1", output_noise=True)).freeze().double()
    x, u = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 1, dtype=torch.float64)
    A, B = model.jacobians(x, u)
    assert A.shape == (3, 4, 4) and B.shape == (3, 4, 1)
    for i in range(3):
        ref_a, ref_b = torch.autograd.functional.jacobian(
            lambda xi, ui: model.mean_step(xi.unsqueeze(0), ui.unsqueeze(0)).squeeze(0), (x[i], u[i])
        )
        torch.testing.assert_close(A[i], ref_a)
        torch.testing.assert_close(B[i], ref_b)
    A2, _ = model.jacobians(x, u)
    torch.testing.assert_close(A2, A, rtol=0, atol=0)  # deterministic, however the model samples


def test_bfloat16_planning_stays_close_to_float32():
    fp32 = EnsembleDynamics(CARTPOLE, PropagationConfig(mode="tsinf", seed=1)).freeze()
    bf16 = fp32.clone(PropagationConfig(mode="tsinf", seed=1, dtype="bfloat16"), trainable=False)
    x0, actions = torch.randn(100, 4), 10 * torch.randn(100, 30, 1)
    a, b = fp32.rollout(x0, actions), bf16.rollout(x0, actions)
    spread = (a[:, -1] - x0).std(0)
    assert ((a[:, -1] - b[:, -1]).abs().max(0).values / spread).max() < 0.05


def test_load_state_validates_then_copies_in_place():
    model = EnsembleDynamics(CARTPOLE, PropagationConfig(dtype="bfloat16")).freeze()
    other = EnsembleDynamics(CARTPOLE, PropagationConfig(seed=3))
    ptrs = {k: v.data_ptr() for k, v in model.state_dict().items()}
    model.load_state_(other.state_dict())
    assert {k: v.data_ptr() for k, v in model.state_dict().items()} == ptrs
    x, u = torch.randn(8, 4), torch.randn(8, 1)
    torch.testing.assert_close(model.mean_step(x, u), other.mean_step(x, u))
    torch.testing.assert_close(model._plan_w1, other.weights[1].detach().bfloat16())  # copies refreshed

    before = {k: v.clone() for k, v in model.state_dict().items()}
    bad_cases = {
        "shape": {**other.state_dict(), "weights.1": torch.zeros(5, 64, 32)},
        "non-finite": {**other.state_dict(), "biases.0": torch.full((5, 1, 64), math.nan)},
        "missing": {k: v for k, v in other.state_dict().items() if k != "delta_std"},
        "dtype": {**other.state_dict(), "delta_mean": torch.zeros(4, dtype=torch.float64)},
        "positive": {**other.state_dict(), "input_std": torch.zeros(6)},
    }
    for reason, state in bad_cases.items():
        with pytest.raises(ModelStateError, match=reason):
            model.load_state_(state)
    other_architecture = EnsembleDynamics(EnsembleConfig(4, 1, 0.02, angle_dims=(1,), hidden=32))
    with pytest.raises(ModelStateError, match="architecture"):
        model.load_state_(other_architecture.check_state(other_architecture.state_dict()))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed by a rejected load"

    # Checked once (in the subscriber), copied later (at a tick boundary) without checking again.
    checked = model.check_state(EnsembleDynamics(CARTPOLE, PropagationConfig(seed=9)).state_dict())
    model.load_state_(checked)
    assert torch.equal(model.weights[2], checked.tensors[list(model.state_dict()).index("weights.2")])


def test_compiled_cem_plans_on_the_ensemble_and_sees_swapped_weights_without_recompiling():
    task = load_robot("cartpole").task
    model = EnsembleDynamics(CARTPOLE, PropagationConfig(mode="ts1", seed=0)).freeze()
    eager = TrajectoryEvaluator(model, task, compile=False)
    compiled = TrajectoryEvaluator(model, task, compile=True)
    x0 = torch.tensor([0.1, 3.0, 0.0, 0.2])
    actions = (5 * torch.randn(8, 1, 50)).permute(2, 0, 1)  # the CEM's time-major layout

    def same_draws(evaluator):
        model.reseed()
        return evaluator(x0, actions)

    compiled(x0, actions)  # compile outside the comparison
    assert compiled._fn != compiled._evaluate, "the ensemble rollout did not compile (fullgraph)"
    torch.testing.assert_close(same_draws(compiled), same_draws(eager), rtol=1e-4, atol=1e-4)
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert frames > 0
    model.load_state_(EnsembleDynamics(CARTPOLE, PropagationConfig(seed=5)).state_dict())
    torch.testing.assert_close(same_draws(compiled)[1], same_draws(eager)[1], rtol=1e-4, atol=1e-4)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == frames  # no recompilation

    planner = CEMPlanner(compiled, CEMConfig(population=50, elites=5, iterations=2, horizon=8))
    plan = planner.plan(x0)
    assert plan.actions.shape == (8, 1) and math.isfinite(plan.cost)
    assert (plan.actions.abs() <= task.action_high).all()


def test_refitting_the_normalizer_keeps_the_learned_function():
    """A warm-started round refits the statistics to more data; the model must not change by it."""
    g = torch.Generator().manual_seed(0)
    model = EnsembleDynamics(EnsembleConfig(4, 1, 0.02, angle_dims=(1,), learn_reward=True))
    x, u = torch.randn(200, 4, generator=g), 5 * torch.randn(200, 1, generator=g)
    model.fit_normalizer(x, u, x + 0.1 * torch.randn(200, 4, generator=g), torch.randn(200, generator=g))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    xq, uq = torch.randn(50, 4, generator=g), torch.randn(50, 1, generator=g)
    (mean0, var0), r0 = model.predict(xq, uq), model.predict_reward(xq, uq)
    stats0 = model.input_std.clone(), model.delta_mean.clone()
    model.refit_normalizer(3 * x + 1, 2 * u - 1, 3 * x + 1.5, 4 * torch.randn(200, generator=g) + 2)
    (mean1, var1), r1 = model.predict(xq, uq), model.predict_reward(xq, uq)
    assert (model.input_std - stats0[0]).abs().max() > 1.0 and (model.delta_mean - stats0[1]).abs().max() > 0.5
    torch.testing.assert_close(mean1, mean0, atol=1e-5, rtol=1e-5)  # the statistics moved, the function did not
    torch.testing.assert_close(var1, var0, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(r1, r0, atol=1e-5, rtol=1e-5)


def test_action_margin_trusts_the_model_only_for_the_actions_it_was_fitted_on():
    config = EnsembleConfig(state_dim=2, action_dim=1, dt=0.1, hidden=8, layers=2, action_margin=0.25)
    model = EnsembleDynamics(config, PropagationConfig(mode="expectation")).freeze()
    assert model.kernel_unsupported and "action_margin" in model.kernel_unsupported
    x = torch.zeros(4, 2)
    far = torch.tensor([[-100.0], [-3.0], [3.0], [100.0]])
    unfitted = model.mean_step(x, far)
    assert not torch.allclose(unfitted[0], unfitted[1])  # wide open before it has seen data
    actions = torch.linspace(-1.0, 1.0, 50).unsqueeze(-1)
    states = torch.randn(50, 2)
    model.fit_normalizer(states, actions, states + 0.1 * actions)
    low, high = model.trusted_actions()
    torch.testing.assert_close(low, torch.tensor([-1.5]))  # the data's range [-1, 1] widened by 0.25 of it
    torch.testing.assert_close(high, torch.tensor([1.5]))
    x = torch.zeros(4, 2)
    torch.testing.assert_close(model.mean_step(x, far), model.mean_step(x, far.clamp(-1.5, 1.5)))
    inside = torch.tensor([[-1.2], [0.0], [0.7], [1.4]])
    assert len({round(float(v), 6) for v in model.mean_step(x, inside)[:, 0]}) == 4  # inside: not clamped
    # The range is part of the learned model: it travels with the weights.
    copy = EnsembleDynamics(config)
    copy.load_state_(model.state_dict())
    torch.testing.assert_close(copy.trusted_actions()[1], high)
    # Off by default, and never on a residual (whose inputs are clamped to their range already).
    assert EnsembleDynamics(CARTPOLE).trusted_actions() is None
    residual = EnsembleConfig(state_dim=2, action_dim=1, dt=0.1, action_margin=0.25, target="residual")
    assert EnsembleDynamics(residual).trusted_actions() is None
