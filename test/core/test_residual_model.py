"""The residual model (the URDF model plus a learned ensemble of its error): exactly the analytic model
while untrained, the plain ensemble's propagation semantics, and it learns a known model error."""

import numpy as np
import pytest
import torch

from mbrl_control.core.builders import build_ensemble, build_mpc, load_robot, robot_parameters
from mbrl_control.core.dynamics import DynamicsModel, EnsembleConfig, EnsembleDynamics, PropagationConfig
from mbrl_control.core.dynamics.residual import ResidualDynamics
from mbrl_control.core.learning import (
    ModelFormatError,
    ModelInfo,
    TrainerConfig,
    Transitions,
    decode,
    encode,
    residual_transitions,
    train_ensemble,
)


def marker_ensemble(mode: str, target: str, members: int = 5) -> EnsembleDynamics:
    """Member e always predicts the change e + 1 (every dim): a step reveals the member that made it."""
    model = EnsembleDynamics(
        EnsembleConfig(state_dim=2, action_dim=1, dt=0.1, members=members, hidden=8, layers=2, target=target),
        PropagationConfig(mode=mode),
    ).freeze()
    with torch.no_grad():
        for w in model.weights:
            w.zero_()
        model.biases[-1].zero_()
        model.biases[-1][:, 0, :2] = (torch.arange(members, dtype=torch.float32) + 1).unsqueeze(-1)
    return model


class Still(DynamicsModel):
    """``x_next = x``: the residual alone is then what moves a state."""

    def __init__(self, nx: int, nu: int, dt: float) -> None:
        super().__init__()
        self.state_dim, self.action_dim, self.dt = nx, nu, dt

    def step(self, x, u):
        return x.clone()


def cartpole_residual(mode: str = "ts1", seed: int = 0) -> ResidualDynamics:
    robot = load_robot("cartpole")
    p = robot_parameters("cartpole") | {"model": "residual"}
    ensemble = build_ensemble(p, robot.spec, {"mode": mode, "seed": seed}).freeze()
    return ResidualDynamics(robot.model, ensemble)


@pytest.mark.parametrize("mode", ["ts1", "tsinf", "expectation"])
def test_untrained_residual_is_exactly_the_analytic_model(mode):
    model = cartpole_residual(mode)
    assert model.config.target == "residual"
    g = torch.Generator().manual_seed(1)
    x0, actions = torch.randn(13, 4, generator=g), 5.0 * torch.randn(13, 20, 1, generator=g)
    torch.testing.assert_close(model.rollout(x0, actions), model.analytic.rollout(x0, actions), rtol=0, atol=0)
    torch.testing.assert_close(model.step(x0, actions[:, 0]), model.analytic.step(x0, actions[:, 0]), rtol=0, atol=0)
    a, b = model.jacobians(x0, actions[:, 0])
    a0, b0 = model.analytic.jacobians(x0, actions[:, 0])
    torch.testing.assert_close(a, a0)
    torch.testing.assert_close(b, b0)


@pytest.mark.parametrize("mode", ["ts1", "tsinf", "expectation"])
def test_residual_propagates_like_the_plain_ensemble(mode):
    """On a model that stands still, the residual model moves particles exactly as the plain
    ensemble does with the same draws: the same member for the same particle at the same step."""
    plain, residual = marker_ensemble(mode, "state_change"), marker_ensemble(mode, "residual")
    model = ResidualDynamics(Still(2, 1, plain.dt), residual)
    x0, actions = torch.zeros(23, 2), torch.zeros(23, 9, 1)
    draws = model.draw(23, 9)
    torch.testing.assert_close(model.rollout(x0, actions, draws), plain.rollout(x0, actions, draws))


def test_residual_learns_a_motor_gain_and_friction_the_urdf_does_not_know():
    """Synthetic plant: the cart-pole's motor delivers 70 % of the command and the cart has extra
    viscous friction. The residual model's held-out one-step error falls at least 10x below the
    analytic model's, in every state dimension that the error moves."""
    robot = load_robot("cartpole")
    analytic = robot.model
    dt = analytic.dt

    def plant(x, u):
        x_next = analytic.step(x, 0.7 * u)
        friction = torch.zeros_like(x)
        friction[:, 2] = -2.0 * x[:, 2] * dt  # cart velocity decays faster
        return x_next + friction

    def data(n, seed):
        g = torch.Generator().manual_seed(seed)
        low = torch.tensor([-1.0, -np.pi, -2.0, -6.0])
        x = low + 2 * (-low) * torch.rand(n, 4, generator=g)
        u = 20.0 * (2 * torch.rand(n, 1, generator=g) - 1)
        with torch.no_grad():
            return x, u, plant(x, u)

    x, u, x_next = data(4000, 0)
    transitions = Transitions(
        seq=np.arange(len(x)), state=x.numpy(), action=u.numpy(), next_state=x_next.numpy(),
        reward=np.zeros(len(x), np.float32), done=np.zeros(len(x), bool), stamp=np.arange(len(x)) * dt,
        episode=np.zeros(len(x), np.int64))
    p = robot_parameters("cartpole") | {"model": "residual", "ensemble.members": 3, "ensemble.hidden": 64}
    ensemble = build_ensemble(p, robot.spec, {"mode": "expectation"})
    torch.manual_seed(0)
    train_ensemble(ensemble, residual_transitions(analytic, transitions, robot.spec.angle_dims),
                   TrainerConfig(max_epochs=60, patience=10, seed=0))
    model = ResidualDynamics(analytic, ensemble.freeze())
    xt, ut, truth = data(1000, 1)
    with torch.no_grad():
        analytic_error = ((analytic.step(xt, ut) - truth) ** 2).mean(0)
        residual_error = ((model.step(xt, ut) - truth) ** 2).mean(0)
    moved = analytic_error > 1e-8
    assert moved[2] and moved[3]  # the velocities carry the error
    assert bool((residual_error[moved] * 10 < analytic_error[moved]).all()), (residual_error, analytic_error)


def test_residual_controller_plans_and_refuses_a_model_learned_from_scratch():
    p = robot_parameters("cartpole") | {"model": "residual", "planner": "cem", "compile": False, "cem.population": 50,
                                        "cem.horizon": 10, "cem.iterations": 2}
    mpc = build_mpc(p)
    assert isinstance(mpc.model, ResidualDynamics) and mpc.learned is mpc.model.residual
    assert mpc.fallback is not None  # LQR of the analytic model
    plan = mpc.planner.plan(torch.tensor([0.0, 0.2, 0.0, 0.0]))
    assert plan.actions.shape[-1] == 1 and bool(torch.isfinite(plan.actions).all())
    scratch = build_ensemble(p | {"model": "learned"}, mpc.robot.spec)
    blob = encode(scratch, ModelInfo(scratch.config, version=1))
    with pytest.raises(ModelFormatError):
        decode(blob, mpc.learned)
    same = encode(mpc.learned, ModelInfo(mpc.learned.config, version=1))
    decode(same, mpc.learned)


def test_residual_refuses_what_it_cannot_plan():
    p = robot_parameters("cartpole") | {"model": "residual", "compile": False}
    with pytest.raises(ValueError, match="nmpc"):
        build_mpc(p | {"planner": "nmpc"})
    with pytest.raises(ValueError, match="policy"):
        build_mpc(p | {"planner": "policy"})
    with pytest.raises(ValueError, match="target 'residual'"):
        ResidualDynamics(load_robot("cartpole").model,
                         EnsembleDynamics(EnsembleConfig(state_dim=4, action_dim=1, dt=0.02), PropagationConfig()))


def _episodes(x, u, x_next, per_episode, dt):
    n = len(x)
    return Transitions(
        seq=np.arange(n), state=x.numpy(), action=u.numpy(), next_state=x_next.numpy(),
        reward=np.zeros(n, np.float32), done=np.zeros(n, bool), stamp=np.arange(n) * dt,
        episode=np.arange(n) // per_episode)


def _states_and_forces(seed: int, n: int = 1500):
    """The cart-pole and ``n`` states and forces drawn across its range (and the generator)."""
    robot = load_robot("cartpole")
    g = torch.Generator().manual_seed(seed)
    low = torch.tensor([-1.0, -np.pi, -2.0, -6.0])
    x = low + 2 * (-low) * torch.rand(n, 4, generator=g)
    u = 20.0 * (2 * torch.rand(n, 1, generator=g) - 1)
    return robot, x, u, g


def test_a_residual_reaches_the_robot_only_if_it_predicts_the_newest_episodes_end():
    """The check trains without the newest episode and scores it there: a real model
    error (a weak motor) passes; residuals that are only noise (estimates' jitter) do not, so the
    controller keeps the URDF model rather than a network extrapolating noise."""
    from mbrl_control.core.learning.trainer import BackgroundTrainer, check_generalization

    robot, x, u, g = _states_and_forces(3)
    analytic, dt = robot.model, robot.model.dt
    with torch.no_grad():
        weak = analytic.step(x, 0.7 * u)
        noisy = analytic.step(x, u) + torch.tensor([0.002, 0.004, 0.06, 0.12]) * torch.randn(1500, 4, generator=g)
    p = robot_parameters("cartpole") | {"model": "residual", "ensemble.members": 3}
    config = TrainerConfig(max_epochs=40, patience=8, seed=0)
    real = residual_transitions(analytic, _episodes(x, u, weak, 500, dt))
    noise = residual_transitions(analytic, _episodes(x, u, noisy, 500, dt))
    passed = check_generalization(build_ensemble(p, robot.spec), real, config)
    failed = check_generalization(build_ensemble(p, robot.spec), noise, config)
    assert passed.passed and passed.model_score < 0.2 and passed.samples == 500 and passed.trained_on == 1000
    first = check_generalization(build_ensemble(p, robot.spec), real.select(real.episode == 0), config)
    assert first.passed and first.samples == 150 and first.trained_on == 350  # one episode: its end
    assert not failed.passed and failed.model_score > 0.95
    assert check_generalization(build_ensemble(p, robot.spec), real.select(np.arange(20)), config) is None

    trainer = BackgroundTrainer(config, prepare=lambda d: residual_transitions(analytic, d), residual=True)
    model = build_ensemble(p, robot.spec)
    assert trainer.start(model, _episodes(x, u, noisy, 500, dt)) and trainer.join(120)
    outcome = trainer.poll()
    assert outcome.state is None and outcome.error is None and not outcome.info["check"].passed
    assert trainer.start(model, _episodes(x, u, weak, 500, dt)) and trainer.join(120)
    outcome = trainer.poll()
    assert outcome.state is not None and outcome.info["check"].passed
    model.load_state_(outcome.state)
    assert not model.is_zero_residual()
    model.zero_residual_()
    assert model.is_zero_residual()
    with torch.no_grad():
        torch.testing.assert_close(ResidualDynamics(analytic, model.freeze()).mean_step(x, u), analytic.step(x, u))
    # A residual of one sign in a dimension (a constant drag): zeroed, it still adds exactly nothing.
    with torch.no_grad():
        drag = analytic.step(x, u) + torch.tensor([0.0, 0.0, 0.05, 0.0])
    biased = _episodes(x, u, drag, 500, dt)
    one_sign = build_ensemble(p, robot.spec)
    train_ensemble(one_sign, residual_transitions(analytic, biased), config)
    assert float(one_sign.delta_low[2]) <= 0.0 <= float(one_sign.delta_high[2])
    one_sign.zero_residual_()
    with torch.no_grad():
        torch.testing.assert_close(ResidualDynamics(analytic, one_sign.freeze()).mean_step(x, u), analytic.step(x, u))


def test_a_residual_corrects_only_the_dimensions_where_it_predicted_the_newest_episode():
    """A weak motor's residual is in the velocities; in the positions it is half an acceleration
    error times dt^2, mostly under the estimates' jitter (as on the arm with a payload). The check
    passes on the mean of its per-dimension scores, and the published residual corrects the
    velocities alone: it adds exactly nothing to the positions, on the controller's side of the
    wire too."""
    from mbrl_control.core.learning.model_io import ModelInfo, encode, load_into
    from mbrl_control.core.learning.trainer import BackgroundTrainer

    robot, x, u, g = _states_and_forces(4)
    analytic, dt = robot.model, robot.model.dt
    with torch.no_grad():
        weak = analytic.step(x, 0.7 * u)
        weak[:, :2] += torch.tensor([0.0008, 0.0015]) * torch.randn(1500, 2, generator=g)
    p = robot_parameters("cartpole") | {"model": "residual", "ensemble.members": 3}
    trainer = BackgroundTrainer(TrainerConfig(max_epochs=40, patience=8, seed=0),
                                prepare=lambda d: residual_transitions(analytic, d), residual=True)
    learner_side = build_ensemble(p, robot.spec)
    assert trainer.start(learner_side, _episodes(x, u, weak, 500, dt)) and trainer.join(120)
    outcome = trainer.poll()
    check = outcome.info["check"]
    assert check.passed and check.dims == (2, 3), check.describe()
    assert min(check.dim_scores[:2]) > 0.55 and max(check.dim_scores[2:]) < 0.3
    learner_side.load_state_(outcome.state)
    controller_side = build_ensemble(p, robot.spec)
    load_into(controller_side, encode(learner_side, ModelInfo(learner_side.config, 1, 1500, 0.0, 0.0)))
    with torch.no_grad():
        planned = ResidualDynamics(analytic, controller_side.freeze()).mean_step(x, u)
        urdf = analytic.step(x, u)
        torch.testing.assert_close(planned[:, :2], urdf[:, :2], rtol=0.0, atol=0.0)
        true_velocity_residual = (analytic.step(x, 0.7 * u) - urdf)[:, 2:]
        error = ((planned[:, 2:] - urdf[:, 2:] - true_velocity_residual) ** 2).mean(0) / (true_velocity_residual**2).mean(0)
    assert bool((error < 0.2).all()), error  # the velocities' residual, learned
