"""The fused AVX-512 rollout (core/dynamics/ensemble_kernel) against the ensemble's torch rollout:
the same function to float rounding, for shapes other than the cart-pole's, in both propagation
modes and both dtypes, and it follows weights that change in place (swaps, training steps)."""

import math

import pytest
import torch

from mbrl_control.core.dynamics import EnsembleConfig, EnsembleDynamics, PropagationConfig, ensemble_kernel

# Not the cart-pole: two angles, two actions, three members, a hidden size that is no multiple of
# the kernel's 24-row blocks, a reward row in the output layer.
ODD = EnsembleConfig(state_dim=5, action_dim=2, dt=0.05, members=3, hidden=40, layers=3, angle_dims=(1, 3),
                     learn_reward=True)


def kernel_and_torch(config: EnsembleConfig, mode: str, dtype: str = "float32", seed: int = 4):
    fused = EnsembleDynamics(config, PropagationConfig(mode=mode, dtype=dtype, seed=seed)).freeze()
    with torch.no_grad():  # a fitted normaliser, not the identity
        g = torch.Generator().manual_seed(seed)
        fused.input_mean.copy_(0.3 * torch.randn(config.input_dim, generator=g))
        fused.input_std.copy_(0.5 + torch.rand(config.input_dim, generator=g))
        fused.delta_mean.copy_(0.01 * torch.randn(config.state_dim, generator=g))
        fused.delta_std.copy_(0.01 + 0.1 * torch.rand(config.state_dim, generator=g))
    reference = fused.clone(PropagationConfig(mode=mode, dtype=dtype, seed=seed, kernel="torch"), trainable=False)
    return fused, reference


def same_draws(a: EnsembleDynamics, b: EnsembleDynamics, x0: torch.Tensor, actions: torch.Tensor):
    a.reseed()
    b.reseed()
    return a.rollout(x0, actions), b.rollout(x0, actions)


def where_it_runs(model: EnsembleDynamics) -> None:
    """The kernel runs on this machine, or says why not for a reason outside the test's control."""
    reason = model.kernel_unsupported
    assert reason is None or "AVX" in reason or "compiler" in reason, reason


@pytest.mark.parametrize("mode", ["ts1", "tsinf"])
@pytest.mark.parametrize("activation", ["silu", "relu"])
def test_the_fused_rollout_is_the_torch_rollout_in_float32(mode, activation):
    config = EnsembleConfig(**{**ODD.to_dict(), "angle_dims": ODD.angle_dims, "activation": activation})
    fused, reference = kernel_and_torch(config, mode)
    where_it_runs(fused)
    assert reference.kernel_unsupported == "propagation.kernel is 'torch'"
    x0 = torch.tensor([0.2, 3.0, -0.5, -7.0, 1.0]) + 0.1 * torch.randn(70, 5)  # 70: a part-filled block of 16
    actions = 3 * torch.randn(70, 9, 2)
    a, b = same_draws(fused, reference, x0, actions)
    assert a.shape == (70, 10, 5)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_an_output_offset_moves_every_step_the_same_in_the_kernel_and_in_torch():
    fused, reference = kernel_and_torch(ODD, "ts1")
    where_it_runs(fused)
    x0, actions = torch.randn(40, 5), torch.randn(40, 7, 2)
    before, _ = same_draws(fused, reference, x0, actions)  # the kernel has packed this model already
    offset = torch.tensor([0.0, 0.0, 0.3, -0.2, 0.1])
    fused.set_output_offset_(offset)
    reference.set_output_offset_(offset)
    a, b = same_draws(fused, reference, x0, actions)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert (a - before).abs().amax() > 0.1  # the offset reached the kernel's rollout
    fused.set_output_offset_(torch.zeros(5))
    torch.testing.assert_close(same_draws(fused, reference, x0, actions)[0], before, rtol=1e-5, atol=1e-5)


def test_bfloat16_hidden_layers_match_torchs_bfloat16_rollout():
    fused, reference = kernel_and_torch(ODD, "ts1", dtype="bfloat16")
    where_it_runs(fused)
    x0, actions = torch.randn(64, 5), 3 * torch.randn(64, 12, 2)
    a, b = same_draws(fused, reference, x0, actions)
    # Both round the hidden activations and weights to bf16; torch also rounds each matmul's output.
    spread = (b[:, -1] - x0).std(0)
    assert ((a - b).abs().amax((0, 1)) / spread).max() < 0.02


def test_the_kernel_follows_weights_changed_in_place():
    fused, reference = kernel_and_torch(ODD, "ts1")
    x0, actions = torch.randn(30, 5), torch.randn(30, 6, 2)
    same_draws(fused, reference, x0, actions)  # packs the first weights
    new = EnsembleDynamics(ODD, PropagationConfig(seed=11)).state_dict()
    fused.load_state_(new)  # a hot swap
    reference.load_state_(new)
    torch.testing.assert_close(*same_draws(fused, reference, x0, actions), rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # an optimiser's step: in place, no load_state_
        for model in (fused, reference):
            model.weights[1].mul_(1.5)
            model.biases[0].add_(0.2)
    torch.testing.assert_close(*same_draws(fused, reference, x0, actions), rtol=1e-5, atol=1e-5)


def test_models_the_kernel_does_not_take_say_why_and_use_torch():
    cases = {
        "expectation": PropagationConfig(mode="expectation"),
        "output noise": PropagationConfig(output_noise=True),
        "'torch'": PropagationConfig(kernel="torch"),
    }
    for words, propagation in cases.items():
        assert words in EnsembleDynamics(ODD, propagation).kernel_unsupported
    tanh = EnsembleConfig(**{**ODD.to_dict(), "angle_dims": ODD.angle_dims, "activation": "tanh"})
    assert "tanh" in EnsembleDynamics(tanh).kernel_unsupported
    with pytest.raises(ValueError, match="kernel"):
        PropagationConfig(kernel="cuda")


def test_a_trainable_model_rolls_out_with_torch_so_gradients_flow():
    model = EnsembleDynamics(ODD, PropagationConfig(mode="tsinf"))  # not frozen
    states = model.rollout(torch.zeros(6, 5), torch.ones(6, 3, 2))
    states.sum().backward()
    assert model.weights[1].grad is not None and torch.isfinite(model.weights[1].grad).all()


def test_angles_far_from_zero_are_wrapped_like_torch():
    """Encoders wind: the kernel's sin/cos must hold for angles of tens of radians."""
    config = EnsembleConfig(state_dim=2, action_dim=1, dt=0.1, members=1, hidden=8, layers=1, angle_dims=(0,))
    fused, reference = kernel_and_torch(config, "tsinf")
    x0 = torch.linspace(-60.0, 60.0, 257).unsqueeze(1).expand(-1, 2).contiguous()
    a, b = same_draws(fused, reference, x0, torch.zeros(257, 1, 1))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert math.isfinite(float(a.sum()))


def test_the_kernel_is_built_once_per_machine_and_source(tmp_path, monkeypatch):
    """The library is cached on disk under a key of source and compiler: loading it again builds
    nothing, and an edited source is built anew rather than loaded stale."""
    lib, _, why = ensemble_kernel._library()
    if lib is None:
        assert "compiler" in why or "kernel" in why  # and the ensemble uses torch (checked above)
        return
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    edited = tmp_path / "ensemble_kernel.cpp"
    edited.write_text(ensemble_kernel.SOURCE.read_text() + "\n// edited\n")
    try:
        built = {}
        for source, expected in ((ensemble_kernel.SOURCE, 1), (ensemble_kernel.SOURCE, 1), (edited, 2)):
            monkeypatch.setattr(ensemble_kernel, "SOURCE", source)
            ensemble_kernel._library.cache_clear()
            assert ensemble_kernel._library()[0] is not None
            libraries = list((tmp_path / "mbrl_control").glob("ensemble_kernel-*.so"))
            assert len(libraries) == expected
            for path in libraries:  # a library once built is loaded, never rebuilt
                assert built.setdefault(path, path.stat().st_mtime_ns) == path.stat().st_mtime_ns
    finally:
        ensemble_kernel._library.cache_clear()  # the process's own library again, from the real cache


def test_the_kernels_threads_give_the_same_rollout_as_one():
    """Each thread takes a share of every step's blocks and waits for the others after the step:
    the result is the one-thread result exactly, whatever the split (here with a TS1 redraw
    every step, so each step reads what the other thread wrote)."""
    fused, _ = kernel_and_torch(ODD, "ts1")
    x0, actions = torch.randn(99, 5), torch.randn(99, 8, 2)
    fused.reseed()
    one = fused.rollout(x0, actions)
    for threads in (2, 3, 64):
        fused.rollout_threads = threads
        fused.reseed()
        torch.testing.assert_close(fused.rollout(x0, actions), one, rtol=0, atol=0)


def test_an_evaluator_hands_its_threads_to_a_model_that_threads_itself():
    from mbrl_control.core.builders import load_robot
    from mbrl_control.core.rollout import TrajectoryEvaluator

    task = load_robot("cartpole").task
    config = EnsembleConfig(state_dim=4, action_dim=1, dt=0.02, members=3, hidden=16, layers=2, angle_dims=(1,))
    model = EnsembleDynamics(config, PropagationConfig(mode="ts1")).freeze()
    evaluator = TrajectoryEvaluator(model, task, threads=2)
    if model.kernel_unsupported is None:
        assert (evaluator.threads, model.rollout_threads) == (1, 2)  # no shares: one set of draws
    else:
        assert (evaluator.threads, model.rollout_threads) == (2, 1)
    costs, states = evaluator(torch.tensor([0.0, 3.0, 0.0, 0.0]), torch.randn(30, 7, 1))
    assert costs.shape == (30,) and states.shape == (30, 8, 4) and torch.isfinite(costs).all()
