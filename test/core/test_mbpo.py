"""MBPO: the policy's bytes, the model MDP, SAC in model rollouts balancing the cart-pole, the
policy planner, iCEM warm-started by the policy, and the critic as a terminal cost.

The analytic model stands in for the learned one (training an ensemble first would only add
minutes); the "real" data are random transitions around upright, the branch points of the model
rollouts. SAC trains once per session, one thread (~1 min on two busy cores).
"""

import json
import math
import threading
import time

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from mbrl_control.core.builders import build_planner, with_terminal
from mbrl_control.core.learning.transitions import Transitions
from mbrl_control.core.mbpo import (
    Policy,
    PolicyFormatError,
    PolicySpec,
    ValueFunction,
    ValueSpec,
    load_policy,
    policy_from_bytes,
    policy_to_bytes,
    save_policy,
    value_from_bytes,
    value_to_bytes,
)
from mbrl_control.core.mbpo.env import ModelEnv, ModelMDP, ModelRollouts
from mbrl_control.core.mbpo.trainer import CANCEL_CHECK_STEPS, MBPOConfig, MixedReplayBuffer, closed_loop, train_mbpo
from mbrl_control.core.planners import ICEMConfig, ICEMPlanner, PolicyPlanner, PolicyPlannerConfig
from mbrl_control.core.rollout import TrajectoryEvaluator
from mbrl_control.core.tasks.critic_terminal import ValueFunctionTerminalCost
from mbrl_control_testing.episode import run_episode

DT = 0.02
REAL_BOX = (1.5, 0.6, 2.0, 3.0)  # half-widths of the random "real" states around upright
START_BOX = (0.5, 0.25, 0.5, 0.5)  # closed-loop starts: the balance task
# The defaults (4000 SAC steps, 25-step rollouts) but gamma 0.98, which these balance tests were
# calibrated with (the learner in the loop moved to 0.99 in e11598e, these tests stayed).
CONFIG = MBPOConfig(seed=0, gamma=0.98)


def box_states(box, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (2 * torch.rand(n, len(box), generator=g) - 1) * torch.tensor(box)


def random_transitions(model, n: int, seed: int = 0) -> Transitions:
    """Uniform states in REAL_BOX, uniform forces, the model's next states: a stand-in replay buffer."""
    x = box_states(REAL_BOX, n, seed)
    u = (2 * torch.rand(n, 1, generator=torch.Generator().manual_seed(seed + 1)) - 1) * 20.0
    with torch.no_grad():
        x_next = model.step(x, u)
    return Transitions(
        seq=np.arange(n), state=x.numpy(), action=u.numpy(), next_state=x_next.numpy(),
        reward=np.zeros(n, np.float32), done=np.zeros(n, bool), stamp=np.zeros(n), episode=np.zeros(n, np.int64),
    )


@pytest.fixture(scope="module")
def real(cartpole) -> Transitions:
    return random_transitions(cartpole.model, 3000)


@pytest.fixture(scope="module")
def trained(cartpole, real):
    start = time.perf_counter()
    result = train_mbpo(cartpole.model, cartpole.task, real, CONFIG)
    print(f"MBPO: {result.sac_steps} SAC steps, {time.perf_counter() - start:.1f} s, best epoch {result.best_epoch}")
    return result


def small_policy(seed: int = 0, hidden=(16, 16)) -> Policy:
    spec = PolicySpec(state_dim=4, action_dim=1, hidden=hidden, action_low=(-20.0,), action_high=(20.0,),
                      angle_dims=(1,))
    policy = Policy(spec, version=3, extra={"note": "test"})
    g = torch.Generator().manual_seed(seed)
    policy.load_state_({k: torch.randn(v.shape, generator=g) for k, v in policy.state_dict().items()})
    return policy


# -- (a) bytes -----------------------------------------------------------------------------------


def test_policy_bytes_round_trip(tmp_path):
    policy = small_policy()
    data = policy_to_bytes(policy)
    back = policy_from_bytes(data)
    assert back.spec == policy.spec and back.version == 3 and back.extra == {"note": "test"}
    x = box_states(REAL_BOX, 50, 1) + torch.tensor([0.0, 2 * math.pi, 0.0, 0.0])  # wound angles too
    torch.testing.assert_close(back(x), policy(x), rtol=0, atol=0)
    u = back(x)
    assert u.shape == (50, 1) and (u.abs() <= 20.0).all()
    torch.testing.assert_close(back(x), back(x - torch.tensor([0.0, 2 * math.pi, 0.0, 0.0])))  # sees (sin, cos)
    path = save_policy(tmp_path / "p" / "policy.safetensors", policy)
    torch.testing.assert_close(load_policy(path)(x), policy(x), rtol=0, atol=0)
    value = ValueFunction(ValueSpec(policy.spec, (8, 8), 0.98, (2.0, 0.8, 4.0, 8.0), 50.0, q_scale=0.1))
    value.load_state_({k: torch.randn(v.shape) for k, v in value.state_dict().items()})
    torch.testing.assert_close(value_from_bytes(value_to_bytes(value))(x), value(x), rtol=0, atol=0)


def _reencode(data: bytes, change_tensors=None, change_meta=None) -> bytes:
    """``data`` with its tensors and/or metadata edited: a well-formed blob with wrong contents."""
    from mbrl_control.core.learning.storage import safetensors_metadata

    tensors, meta = load_safetensors(data), safetensors_metadata(data)
    if change_tensors:
        change_tensors(tensors)
    if change_meta:
        change_meta(meta)
    return save_safetensors(tensors, metadata=meta)


def _edit_spec(meta: dict, **changes) -> None:
    meta["spec"] = json.dumps(json.loads(meta["spec"]) | changes)


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda d: d[: len(d) // 2], "malformed|header"),
        (lambda d: d[:8] + b"{garbage" + d[16:], "header"),
        (lambda d: b"", "too short"),
        (lambda d: _reencode(d, lambda t: t.__setitem__("mean.weight", torch.zeros(1, 8))), "shape"),
        (lambda d: _reencode(d, lambda t: t.__setitem__("mean.bias", torch.tensor([math.nan]))), "non-finite"),
        (lambda d: _reencode(d, lambda t: t.__setitem__("mean.bias", torch.zeros(1, dtype=torch.float64))), "dtype"),
        (lambda d: _reencode(d, lambda t: t.pop("latent.0.bias")), "missing"),
        (lambda d: _reencode(d, lambda t: t.__setitem__("extra.weight", torch.zeros(1))), "unexpected"),
        (lambda d: _reencode(d, change_meta=lambda m: m.__setitem__("spec", m["spec"].replace("16", "32"))), "shape"),
        (lambda d: _reencode(d, change_meta=lambda m: m.__setitem__("format", "mbrl_control.value")), "format"),
        (lambda d: _reencode(d, change_meta=lambda m: m.__setitem__("format_version", "99")), "version"),
        (lambda d: _reencode(d, change_meta=lambda m: m.__setitem__("spec", "[1, 2]")), "metadata"),
        (lambda d: _reencode(d, change_meta=lambda m: _edit_spec(m, action_high=[-30.0])), "bounds"),
        (lambda d: _reencode(d, change_meta=lambda m: _edit_spec(m, angle_dims=[7])), "angle_dims"),
    ],
    ids=["truncated", "header", "empty", "shape", "nan", "dtype", "missing", "extra", "spec", "format", "version",
         "spec-json", "bounds", "angles"],
)
def test_damaged_or_foreign_policy_bytes_are_refused_with_a_reason(damage, reason):
    data = policy_to_bytes(small_policy())
    with pytest.raises(PolicyFormatError, match=reason):
        policy_from_bytes(damage(data))
    assert isinstance(PolicyFormatError("x"), ValueError)


def test_a_policy_of_another_architecture_is_not_swapped_in(cartpole):
    planner = PolicyPlanner(cartpole.model, cartpole.task, small_policy(0))
    x0 = torch.tensor([0.1, 0.1, 0.0, 0.0])
    before = planner.plan(x0).actions
    with pytest.raises(PolicyFormatError, match="shape|architecture"):
        planner.load_policy_bytes_(policy_to_bytes(small_policy(1, hidden=(16, 8))))
    torch.testing.assert_close(planner.plan(x0).actions, before)  # the old one still in use
    weight = planner.policy.mean.weight
    planner.load_policy_bytes_(policy_to_bytes(small_policy(1)))  # same architecture: in place
    assert planner.policy.mean.weight is weight
    torch.testing.assert_close(planner.plan(x0).actions, small_policy(1)(x0.unsqueeze(0)))


# -- the model MDP ---------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:.*Box observation space:UserWarning")  # unbounded observations, on purpose
def test_model_env_and_batched_rollouts_are_the_same_mdp(cartpole, real):
    task = cartpole.task
    mdp = ModelMDP(cartpole.model, task, CONFIG.region, CONFIG.angle_dims, gamma=0.98, reward_scale=10.0)
    # Leaving is never cheaper than staying: the exit costs the worst step in the region, forever.
    corner = torch.tensor([CONFIG.region])
    worst_step = float(task.step_cost(corner, torch.full((1, 1), 20.0)))
    assert mdp.exit_cost == pytest.approx(worst_step / (1 - 0.98), rel=1e-5)
    starts = torch.from_numpy(real.state[:200])
    starts = starts[mdp.inside(starts)]
    env = ModelEnv(mdp, starts, rollout_length=5, seed=0)
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=3)
    x = torch.from_numpy(info["state"]).unsqueeze(0)
    assert any(torch.equal(x[0], s) for s in starts)  # a real state: MBPO's branch point
    for t in range(5):
        a = np.array([0.3], np.float32)
        obs, reward, terminated, truncated, info = env.step(a)
        x_next = cartpole.model.step(x, torch.tensor([[6.0]]))
        torch.testing.assert_close(torch.from_numpy(info["state"]), x_next[0])
        cost = float(task.step_cost(x, torch.tensor([[6.0]])))  # a step alone: no change of command priced
        assert reward == pytest.approx(-10.0 * cost, rel=1e-5)  # a = 0.3 of the 20 N half-range
        assert truncated == (t == 4 and not terminated)
        x = x_next
    # Off the region's edge: terminated, and the step pays the exit cost.
    edge = torch.tensor([[1.99, 0.0, 3.9, 0.0]])
    _, reward, terminated = mdp.step(edge, torch.ones(1, 1))
    assert bool(terminated[0]) and float(reward[0]) < -10.0 * mdp.exit_cost
    # Batched: terminated rollouts drop out; every transition starts inside the region.
    rollouts = ModelRollouts(mdp, starts, rollout_length=20, generator=torch.Generator().manual_seed(0))
    batch = rollouts.generate(lambda o: torch.ones(len(o), 1), count=100)  # full force: they all leave
    assert 100 < len(batch) < 100 * 20 and batch.dones.sum() == 100
    assert torch.isfinite(batch.observations).all() and (batch.actions == 1.0).all()


def test_sac_batches_mix_real_and_model_transitions_at_the_real_ratio(cartpole, real):
    mdp = ModelMDP(cartpole.model, cartpole.task, CONFIG.region, CONFIG.angle_dims)
    real_batch = mdp.batch_from(real)
    env = ModelEnv(mdp, torch.zeros(1, 4), 1)
    buffer = MixedReplayBuffer(1, env.observation_space, env.action_space, real=real_batch, capacity=500,
                               real_ratio=0.05)
    assert len(buffer.sample(40).observations) == 40  # no model data yet: all real
    rollouts = ModelRollouts(mdp, torch.zeros(1, 4), 5, torch.Generator())
    model_batch = rollouts.generate(lambda o: torch.zeros(len(o), 1), 200)  # upright at rest: 1000 transitions
    model_batch.rewards.fill_(123.0)  # a marker no real transition carries
    buffer.add_model(model_batch)
    buffer.add_model(model_batch)  # 1000 into 500: the FIFO keeps the newest
    assert buffer.model_size == 500
    sample = buffer.sample(200)
    assert int((sample.rewards == 123.0).sum()) == 190 and sample.rewards.shape == (200, 1)


# -- (b) MBPO balances ---------------------------------------------------------------------------


def balance_failures(cartpole, policy: Policy, steps: int = 300, plant=None) -> tuple[list[int], np.ndarray]:
    """The starts (of 16 around upright) from which ``policy`` fails the task on ``plant`` (default:
    the simulator-equivalent one) in ``steps`` ticks, and each start's fraction of ticks upright."""
    x0 = box_states(START_BOX, 16, seed=7).double()
    states = closed_loop(policy, plant or cartpole.plant, x0, steps).numpy()
    times = np.arange(steps + 1) * DT
    upright = np.array([cartpole.task.within_tolerance(s).mean() for s in states])
    return [i for i, s in enumerate(states) if not cartpole.task.success(s, times)], upright


def test_mbpo_policy_trained_in_model_rollouts_balances_in_closed_loop(cartpole, trained):
    """From 16 starts around upright, 6 s on the simulator-equivalent plant: the task's 5 s
    success window, and >= 95% of all ticks upright."""
    failed, upright = balance_failures(cartpole, trained.policy)
    assert not failed and upright.mean() >= 0.95, f"fell from starts {failed[:4]}; upright {upright.round(2)}"
    # and on the mismatched plant (conftest: heavier pole, damped joints, 90 % motor gain)
    failed, upright = balance_failures(cartpole, trained.policy, plant=cartpole.mismatched_plant)
    assert not failed and upright.mean() >= 0.95, f"mismatched: fell from {failed[:4]}; upright {upright.round(2)}"
    assert trained.sac_steps == CONFIG.sac_steps and trained.returns[trained.best_epoch - 1] == max(trained.returns)


def test_a_warm_started_round_goes_on_from_the_previous_rounds_networks(cartpole, real, trained):
    """The learning loop's rounds continue SAC: one gradient step from the last round's state
    still balances; the same step from scratch does not."""
    one_step = MBPOConfig(epochs=1, sac_steps=1, rollouts_per_epoch=16, eval_starts=0, seed=1)
    warm = train_mbpo(cartpole.model, cartpole.task, real, one_step, warm_start=trained.sac_state)
    cold = train_mbpo(cartpole.model, cartpole.task, real, one_step)
    assert warm.sac_steps == cold.sac_steps == 1 and warm.warm_started and not cold.warm_started
    assert not balance_failures(cartpole, warm.policy)[0]
    assert len(balance_failures(cartpole, cold.policy)[0]) >= 8
    # A state of other networks (a checkpoint from another `hidden`) is left out, not fatal.
    other = {k: v[..., :1] for k, v in trained.sac_state.items()}
    assert not train_mbpo(cartpole.model, cartpole.task, real, one_step, warm_start=other).warm_started


def test_training_reports_its_sac_steps_and_model_return_after_every_epoch(cartpole, real):
    tiny = MBPOConfig(epochs=3, sac_steps=7, rollouts_per_epoch=16, eval_starts=4, eval_steps=10, seed=2)
    reports = []
    result = train_mbpo(cartpole.model, cartpole.task, real, tiny, progress=lambda *report: reports.append(report))
    assert [(done, total) for done, total, _ in reports] == [(3, 7), (5, 7), (7, 7)]  # 7 steps over 3 epochs
    assert [f["epoch"] for _, _, f in reports] == [1, 2, 3]
    assert [f["model_return"] for _, _, f in reports] == result.returns


def test_a_cancelled_round_stops_within_a_chunk_of_sac_steps_and_returns_a_policy(cartpole, real):
    """A learner told to stop (its cancel event) gets its thread back within CANCEL_CHECK_STEPS SAC
    steps, with a policy, instead of finishing a round of a million steps."""
    cancel = threading.Event()
    endless = MBPOConfig(epochs=1, sac_steps=1_000_000, rollouts_per_epoch=16, eval_starts=4, eval_steps=10, seed=3)
    threading.Timer(1.0, cancel.set).start()
    result = train_mbpo(cartpole.model, cartpole.task, real, endless, cancel=cancel)
    assert result.stopped_by == "cancelled" and result.epochs == 0 and not result.returns
    assert result.sac_steps % CANCEL_CHECK_STEPS == 0 and result.sac_steps < 1_000_000
    assert isinstance(result.policy, Policy)


# -- (c) the policy planner ----------------------------------------------------------------------


def test_policy_planner_tick_is_one_forward_pass_within_bounds_and_deterministic(cartpole, trained, tmp_path):
    model, task = cartpole.model, cartpole.task
    path = save_policy(tmp_path / "policy.safetensors", trained.policy)
    planner = build_planner("policy", model, task, {"path": str(path)}, compile=False)
    assert isinstance(planner, PolicyPlanner) and planner.horizon == 1
    calls = []
    planner.policy.register_forward_hook(lambda *args: calls.append(1))
    x0 = torch.tensor([0.2, -0.15, 0.1, 0.3])
    plan = planner.plan(x0)
    assert len(calls) == 1  # a tick: one forward pass
    assert plan.actions.shape == (1, 1) and plan.states.shape == (2, 4)
    assert task.action_low <= plan.actions[0] <= task.action_high
    torch.testing.assert_close(plan.actions[0], trained.policy(x0.unsqueeze(0))[0])
    torch.testing.assert_close(plan.states[1], model.step(x0.unsqueeze(0), plan.actions)[0])
    again = planner.plan(x0)
    assert torch.equal(again.actions, plan.actions) and again.cost == plan.cost
    # Longer horizons roll the policy through the model (for the markers).
    long = PolicyPlanner(model, task, trained.policy, PolicyPlannerConfig(horizon=10))
    rollout = long.plan(x0)
    assert rollout.actions.shape == (10, 1) and rollout.states.shape == (11, 4)
    torch.testing.assert_close(rollout.actions[0], plan.actions[0])
    torch.testing.assert_close(rollout.states[5], model.step(rollout.states[4:5], rollout.actions[4:5])[0])
    # In closed loop through the planner interface: balances, as the policy does.
    episode = run_episode(planner, cartpole.plant, x0, steps=300)
    assert task.success(episode.states, episode.times)  # (its tick time: bench/mbpo.py, not a test)


def test_build_planner_policy_needs_a_policy(cartpole):
    with pytest.raises(ValueError, match="policy.path"):
        build_planner("policy", cartpole.model, cartpole.task, {}, compile=False)


# -- (d) policy-warm-started iCEM, and the critic as a terminal cost ------------------------------

# Few samples and a short horizon (eager: ~2 ms a tick): 8 sequences of 5 ticks (0.1 s), iCEM's
# other settings its defaults. Starts wider than the balance task's.
FEW = ICEMConfig(population=8, elites=2, horizon=5, keep_elites=0.5, policy_fraction=0.25, seed=0)
ICEM_STARTS = box_states((0.5, 0.3, 0.5, 1.0), 6, seed=11)


def closed_loop_cost(planner, cartpole, starts, steps=250):
    """Mean running cost per tick and the number of successful episodes (5 s), planner in the loop."""
    task, costs, successes = cartpole.task, [], 0
    for x0 in starts:
        episode = run_episode(planner, cartpole.plant, x0, steps=steps)
        x, u = torch.from_numpy(episode.states[:-1]).float(), torch.from_numpy(episode.actions).float()
        costs.append(float(task.running_cost(x.unsqueeze(0), u.unsqueeze(0))) / steps)
        successes += task.success(episode.states, episode.times)
    return float(np.mean(costs)), successes


@pytest.fixture(scope="module")
def icem_runs(cartpole, trained):
    """Closed-loop (cost per tick, successes) of iCEM with FEW samples: with the task's own
    terminal cost, with the critic's, and with the critic's plus the policy's warm start."""
    model, task = cartpole.model, cartpole.task
    critic = with_terminal(task, model, "value", value=trained.value)
    runs = {}
    setups = {"task": (task, None), "value": (critic, None), "value+policy": (critic, trained.policy)}
    for name, (terminal, policy) in setups.items():
        planner = ICEMPlanner(TrajectoryEvaluator(model, terminal), FEW, policy=policy)
        runs[name] = closed_loop_cost(planner, cartpole, ICEM_STARTS)
    print("iCEM@8x5 (cost per tick, successes of 6):", runs)
    return runs


def test_policy_warm_started_icem_does_better_than_icem_with_the_same_few_samples(cartpole, trained, icem_runs):
    (plain_cost, plain_ok), (warm_cost, warm_ok) = icem_runs["value"], icem_runs["value+policy"]
    assert warm_cost < plain_cost and warm_ok >= plain_ok and warm_ok >= len(ICEM_STARTS) - 2
    # The policy's rollouts (2 of 8, the first noise-free) come right after the kept elites, and
    # the plan is never worse than the policy's own rollout, which is among those evaluated.
    planner = ICEMPlanner(TrajectoryEvaluator(cartpole.model, cartpole.task), FEW, policy=trained.policy)
    x0 = ICEM_STARTS[0]
    plan = planner.plan(x0)
    actions, states = planner._policy_rollout(x0.unsqueeze(0), steps=FEW.horizon)
    own_cost = float(cartpole.task.trajectory_cost(states.transpose(0, 1), actions.transpose(0, 1))[0])
    assert planner._n_policy == 2 and set(plan.info) == {"policy_best"}
    assert plan.cost <= own_cost * (1 + 1e-5)
    # A new policy of the same architecture is copied in place.
    weight = planner._policy_rollout.policy.mean.weight
    planner.set_policy(trained.policy)
    assert planner._policy_rollout.policy.mean.weight is weight


def test_critic_terminal_cost_ranks_states_and_lets_a_short_horizon_balance(cartpole, trained, icem_runs):
    model, task = cartpole.model, cartpole.task
    terminal = with_terminal(task, model, "value", value=trained.value)
    assert isinstance(terminal, ValueFunctionTerminalCost) and terminal.success is not None
    upright, tilted, outside = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.3, 0.3, 0.5, 0.5], [0.0, 1.5, 0.0, 0.0]])
    costs = terminal.terminal_cost(torch.stack([upright, tilted, outside]))
    assert costs[0] < costs[1] < costs[2]
    expected = trained.value.spec.exit_value + float(task.terminal_cost(outside))
    assert float(costs[2]) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="value.path"):
        with_terminal(task, model, "value")
    # 0.1 s of horizon cannot see a fall coming; the critic can.
    (task_cost, task_ok), (value_cost, value_ok) = icem_runs["task"], icem_runs["value"]
    assert value_cost < task_cost and value_ok > task_ok
