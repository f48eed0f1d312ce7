"""Device hygiene without a GPU: every planner, the ensemble and the trainer make each tensor on
the device they were given, never on torch's default device.

The check: run with ``torch.set_default_device`` left alone and ``device="cpu"``, then again
with the default device set to ``meta`` (a device with no data: a tensor made without an
explicit device lands there, and any op mixing it with the CPU tensors, or reading its value,
fails). Both runs must give exactly the same plans. A tensor allocated on the default device in
a tick, an index tensor or a generator on the wrong device, would break the second run, as it
breaks a CUDA run. A model built with ``device="meta"`` shows the device argument reaches every
buffer (construction and a rollout; a tick would read values, which meta tensors do not have).
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from mbrl_control.core.builders import load_robot
from mbrl_control.core.dynamics import EnsembleConfig, EnsembleDynamics, PropagationConfig
from mbrl_control.core.learning import TrainerConfig, train_ensemble
from mbrl_control.core.mbpo.env import ModelMDP, ModelRollouts, policy_returns
from mbrl_control.core.mbpo.policy import Policy, policy_spec
from mbrl_control.core.planners import (
    CEMConfig,
    CEMPlanner,
    DPConfig,
    DPPlanner,
    ICEMConfig,
    ICEMPlanner,
    ILQRConfig,
    ILQRPlanner,
    LQRConfig,
    LQRPlanner,
    MPPIConfig,
    MPPIPlanner,
    PolicyPlanner,
    PolicyPlannerConfig,
)
from mbrl_control.core.planners.ilqr_offline import ILQROfflineConfig, ILQROfflinePlanner
from mbrl_control.core.planners.random import RandomPlanner
from mbrl_control.core.rollout import TrajectoryEvaluator
from mbrl_control.core.util import resolve_device
from mbrl_control_testing.exploration import RandomExplorer, explore

DT = 0.02
X0 = (0.1, math.pi - 0.3, 0.0, 0.2)
ENSEMBLE = EnsembleConfig(state_dim=4, action_dim=1, dt=DT, members=3, hidden=16, layers=2, angle_dims=(1,))


@contextmanager
def default_device(name: str | None):
    """``torch.set_default_device(name)`` for the block (None: leave it alone)."""
    if name is None:
        yield
        return
    torch.set_default_device(name)
    try:
        yield
    finally:
        torch.set_default_device(None)


def analytic(params):
    robot = load_robot("cartpole")  # a model and task of its own: planners move them to their device
    return robot.model, robot.task


def ensemble(params, mode: str = "ts1", noise: bool = True):
    return EnsembleDynamics(ENSEMBLE, PropagationConfig(mode=mode, output_noise=noise, seed=4)).freeze(), load_robot("cartpole").task


def ensemble_with_reward(params):
    """An (untrained) ensemble with a reward head, planned on with its reward (``reward: learned``)."""
    from mbrl_control.core.learning import LearnedRewardTask

    config = EnsembleConfig(**{**ENSEMBLE.to_dict(), "learn_reward": True})
    model = EnsembleDynamics(config, PropagationConfig(mode="ts1", output_noise=True, seed=4)).freeze()
    return model, LearnedRewardTask(model, load_robot("cartpole").task)


def a_policy(task) -> Policy:
    torch.manual_seed(0)
    return Policy(policy_spec(task, (16, 16), (1,)))


# name -> (model and task, planner from (model, task, device, policy)); small budgets, eager
PLANNERS = {
    "cem": (analytic, lambda m, t, d, p: CEMPlanner(
        TrajectoryEvaluator(m, t), CEMConfig(population=40, elites=6, iterations=2, horizon=8), device=d)),
    "icem+policy": (analytic, lambda m, t, d, p: ICEMPlanner(
        TrajectoryEvaluator(m, t), ICEMConfig(population=40, elites=6, iterations=3, horizon=8, population_decay=1.5),
        policy=p, device=d)),
    "mppi": (analytic, lambda m, t, d, p: MPPIPlanner(
        TrajectoryEvaluator(m, t), MPPIConfig(samples=40, horizon=8, iterations=2), device=d)),
    "ilqr": (analytic, lambda m, t, d, p: ILQRPlanner(m, t, ILQRConfig(horizon=8, iterations=2), device=d)),
    "ilqr_offline": (analytic, lambda m, t, d, p: ILQROfflinePlanner(
        m, t, ILQROfflineConfig(horizon=12, iterations=4), device=d)),
    "lqr": (analytic, lambda m, t, d, p: LQRPlanner(m, t, LQRConfig(horizon=5), device=d)),
    "dp": (analytic, lambda m, t, d, p: DPPlanner(
        m, t, DPConfig(grid_points=(3, 5, 3, 3), actions=3, horizon=3, max_iterations=200), compile=False, device=d)),
    "policy": (analytic, lambda m, t, d, p: PolicyPlanner(m, t, p, PolicyPlannerConfig(horizon=3), device=d)),
    "random": (analytic, lambda m, t, d, p: RandomPlanner(t.action_low, t.action_high, 4)),
    "cem on ensemble ts1": (ensemble, lambda m, t, d, p: CEMPlanner(
        TrajectoryEvaluator(m, t), CEMConfig(population=40, elites=6, iterations=2, horizon=8), device=d)),
    "cem on ensemble's learned reward": (ensemble_with_reward, lambda m, t, d, p: CEMPlanner(
        TrajectoryEvaluator(m, t), CEMConfig(population=40, elites=6, iterations=2, horizon=8), device=d)),
    "icem on ensemble tsinf": (lambda p: ensemble(p, "tsinf"), lambda m, t, d, p: ICEMPlanner(
        TrajectoryEvaluator(m, t), ICEMConfig(population=40, elites=6, iterations=2, horizon=8), device=d)),
    "mppi on ensemble expectation": (lambda p: ensemble(p, "expectation"), lambda m, t, d, p: MPPIPlanner(
        TrajectoryEvaluator(m, t), MPPIConfig(samples=40, horizon=8, iterations=2), device=d)),
    "ilqr on ensemble": (lambda p: ensemble(p, "expectation", noise=False), lambda m, t, d, p: ILQRPlanner(
        m, t, ILQRConfig(horizon=8, iterations=2), device=d)),
}


def two_ticks(params, name: str, default: str | None) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Build ``name`` on the CPU with ``device="cpu"`` under the given default device and plan
    twice (the second from the warm start), with a deadline (its time checks run too)."""
    make_model, make_planner = PLANNERS[name]
    # Model, task, policy and state arrive from outside: built before, on the CPU.
    model, task = make_model(params)
    policy, x0 = a_policy(task), torch.tensor(X0)
    plans = []
    with default_device(default):
        planner = make_planner(model, task, "cpu", policy)
        for _ in range(2):
            plan = planner.plan(x0, deadline=1e12)
            assert plan.actions.device.type == "cpu" and plan.states.device.type == "cpu"
            plans.append((plan.actions.numpy(), plan.states.numpy(), plan.cost))
            x0 = plan.states[1]
    return plans


@pytest.mark.parametrize("name", list(PLANNERS))
def test_every_planner_allocates_on_its_device_not_the_default_one(cartpole, name):
    reference = two_ticks(cartpole.params, name, default=None)
    under_meta = two_ticks(cartpole.params, name, default="meta")
    for (a, s, c), (a2, s2, c2) in zip(reference, under_meta):
        np.testing.assert_array_equal(a2, a)
        np.testing.assert_array_equal(s2, s)
        assert c2 == c or (math.isnan(c) and math.isnan(c2))


def transitions(cartpole):
    task = load_robot("cartpole").task
    policies = [RandomExplorer(task.action_low, task.action_high, hold=5, seed=i) for i in range(3)]
    starts = torch.tensor([[0.0, math.pi, 0.0, 0.0], [0.3, 2.0, 0.0, 0.0], [-0.2, -1.0, 0.5, 0.0]])
    return explore(cartpole.plant, policies, starts, 100, torch.tensor([0.001, 0.002, 0.01, 0.02]))


def test_training_allocates_on_the_models_device_not_the_default_one(cartpole):
    data = transitions(cartpole)
    config = TrainerConfig(max_epochs=3, batch_size=64, input_noise=0.01, seed=2)
    states = []
    for default in (None, "meta"):
        with default_device(default):
            model = EnsembleDynamics(ENSEMBLE, device="cpu")
            result = train_ensemble(model, data, config)
            assert result.epochs == 3 and math.isfinite(result.holdout.mse)
        states.append(model.state_dict())
    for name, value in states[0].items():
        torch.testing.assert_close(states[1][name], value, rtol=0, atol=0, msg=name)


def test_mbpo_rollouts_allocate_on_the_models_device_not_the_default_one(cartpole):
    model, task = ensemble(cartpole.params)
    starts = torch.tensor([X0, (0.0, 0.1, 0.0, 0.0)])  # real states, from outside
    outputs = []
    for default in (None, "meta"):
        model.reseed()
        policy = a_policy(task)
        with default_device(default):
            mdp = ModelMDP(model, task, region=(2.4, math.pi, 5.0, 10.0), angle_dims=(1,))
            actor = lambda obs: torch.tanh(policy.mean(policy.latent(obs)))  # noqa: E731 (normalised actions)
            batch = ModelRollouts(mdp, starts, 5, torch.Generator().manual_seed(0)).generate(actor, 6)
            returns = policy_returns(mdp, actor, starts, 5)
        outputs.append((batch.observations, batch.rewards, returns))
    for a, b in zip(*outputs):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


def test_a_device_argument_puts_every_buffer_there(cartpole):
    model, task = analytic(cartpole.params)
    planner = CEMPlanner(TrajectoryEvaluator(model, task), CEMConfig(population=20, elites=4, horizon=5), device="meta")
    assert task.action_low.device.type == "meta"  # moved with the evaluator
    assert {planner._mean.device.type, planner._samples_t[0].device.type, planner._elite_idx.device.type} == {"meta"}
    learned = EnsembleDynamics(ENSEMBLE, PropagationConfig(mode="ts1"), device="meta")
    assert {t.device.type for t in learned.state_dict().values()} == {"meta"}
    states = learned.rollout(torch.zeros(7, 4, device="meta"), torch.zeros(7, 5, 1, device="meta"))
    assert states.shape == (7, 6, 4) and states.device.type == "meta"


def test_same_weights_and_rollouts_on_any_device_for_a_seed(cartpole):
    """The initial weights and the member draws come from CPU generators: a second device (here
    the same CPU reached through ``device=``) gets exactly the same model and rollouts."""
    x0, actions = torch.randn(9, 4), torch.randn(9, 6, 1)
    a = EnsembleDynamics(ENSEMBLE, PropagationConfig(mode="ts1", seed=5))
    with default_device("meta"):
        b = EnsembleDynamics(ENSEMBLE, PropagationConfig(mode="ts1", seed=5), device="cpu")
        b_states = b.rollout(x0, actions, b.draw(9, 6))
    for name, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[name], value, rtol=0, atol=0)
    torch.testing.assert_close(b_states, a.rollout(x0, actions), rtol=0, atol=0)


def test_auto_picks_a_gpu_only_when_torch_sees_one():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_the_controllers_device_setting_is_checked_and_keeps_the_nodes_model_on_the_cpu():
    """``device`` as the controller node passes it: a GPU this torch cannot see is an error that
    names the setting (not a silent CPU run); ``auto`` plans here; the robot's own model and task,
    which the node uses between ticks, stay on the CPU whatever the planner's device."""
    from mbrl_control.core.builders import build_mpc, robot_parameters

    p = robot_parameters("cartpole") | {"planner": "cem", "compile": False, "cem.population": 60, "cem.horizon": 10}
    for bad in ("tpu", "cuda:x") + (() if torch.cuda.is_available() else ("cuda", "cuda:0")):
        with pytest.raises(ValueError, match="device"):
            build_mpc(p | {"device": bad})
    for device in ("auto", "cpu"):
        mpc = build_mpc(p | {"device": device, "rollout_threads": 2})
        plan = mpc.planner.plan(torch.tensor(X0), deadline=1e12)
        assert plan.actions.device.type == "cpu" and torch.isfinite(plan.actions).all()
        assert mpc.robot.task.action_low.device.type == "cpu"
        assert next(iter(mpc.robot.model.buffers()), torch.zeros(())).device.type == "cpu"
