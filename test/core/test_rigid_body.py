"""The URDF rigid-body model against PyBullet itself, and against the hand-written cart-pole."""

from pathlib import Path
from unittest import mock

import numpy as np
import pybullet_data
import pytest
import torch

from mbrl_control.core.dynamics import CartPoleDynamics, CartPoleParams, RigidBodyDynamics
from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.paths import config_dir
from mbrl_control.sim.bullet_robot import BulletRobot

IIWA = Path(pybullet_data.getDataPath()) / "kuka_iiwa" / "model.urdf"
IIWA_JOINTS = [f"lbr_iiwa_joint_{i}" for i in range(1, 8)]
CARTPOLE = config_dir() / "urdf" / "cartpole.urdf"
CARTPOLE_JOINTS = ["slider_to_cart", "cart_to_pole"]
ROBOTS = {  # urdf, state joints, command joints, end link
    "iiwa": (IIWA, IIWA_JOINTS, IIWA_JOINTS, "lbr_iiwa_link_7"),
    "cartpole": (CARTPOLE, CARTPOLE_JOINTS, ["slider_to_cart"], "pole"),
}
PHYSICS_DT, SUBSTEPS = 1.0 / 400.0, 8  # config/cartpole.yaml: 400 Hz physics, 50 Hz control


@pytest.fixture(scope="module", params=sorted(ROBOTS))
def robot(request):
    urdf, state, command, link = ROBOTS[request.param]
    sim = BulletRobot(urdf, PHYSICS_DT)
    assert sim.joint_names == state
    yield urdf, state, command, link, sim
    sim.close()


def _model(robot, dtype=torch.float64, **kwargs) -> RigidBodyDynamics:
    urdf, state, command, _, _ = robot
    kwargs = {"dt": PHYSICS_DT * SUBSTEPS, "substeps": SUBSTEPS, "integrator": "euler"} | kwargs
    return RigidBodyDynamics(urdf, state, command, dtype=dtype, **kwargs)


def _states(n: int, count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions inside the iiwa's tightest limits (+-2.09 rad) and the cart's track."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-2.0, 2.0, (count, n)), rng.uniform(-2.0, 2.0, (count, n)), rng.uniform(-5, 5, (count, n))


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_mass_matrix_and_inverse_dynamics_match_pybullet(robot, dtype, tolerance):
    _, state, _, _, sim = robot
    model = _model(robot, dtype)
    client, body, index = sim._client, sim.body, sim._indices
    q, qd, qdd = _states(len(state), 20, seed=0)
    to = lambda a: torch.tensor(a, dtype=dtype)  # noqa: E731
    mass = model.mass_matrix(to(q)).double().numpy()
    torque = model.inverse_dynamics(to(q), to(qd), to(qdd)).double().numpy()
    for i in range(len(q)):
        expected_mass = np.array(client.calculateMassMatrix(body, q[i].tolist()))
        expected_torque = np.array(
            client.calculateInverseDynamics(body, q[i].tolist(), qd[i].tolist(), qdd[i].tolist())
        )
        assert _relative(mass[i], expected_mass) < tolerance
        assert _relative(torque[i], expected_torque) < tolerance
    assert len(index) == len(state)


def test_forward_kinematics_matches_pybullet(robot):
    _, state, _, link, sim = robot
    model = _model(robot, torch.float64)
    q, _, _ = _states(len(state), 5, seed=1)
    position, rotation = model.forward_kinematics(torch.tensor(q), link)
    client, body = sim._client, sim.body
    link_index = next(j for j in range(client.getNumJoints(body)) if client.getJointInfo(body, j)[12].decode() == link)
    for i in range(len(q)):
        sim.reset(q[i], np.zeros(len(state)))
        frame = client.getLinkState(body, link_index, computeForwardKinematics=True)
        expected_rotation = np.array(client.getMatrixFromQuaternion(frame[5])).reshape(3, 3)
        np.testing.assert_allclose(position[i].numpy(), frame[4], atol=1e-6)
        np.testing.assert_allclose(rotation[i].numpy(), expected_rotation, atol=1e-6)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_one_control_period_matches_the_pybullet_sim(robot, dtype, tolerance):
    """Semi-implicit Euler at the sim's physics step, damping included, velocity motors off."""
    _, state, command, _, sim = robot
    model = _model(robot, dtype)
    n = len(state)
    q, qd, _ = _states(n, 10, seed=2)
    u = np.random.default_rng(3).uniform(-20, 20, (10, len(command)))
    predicted = model.step(torch.tensor(np.hstack([q, qd]), dtype=dtype), torch.tensor(u, dtype=dtype))
    for i in range(len(q)):
        effort = np.zeros(n)
        effort[[state.index(j) for j in command]] = u[i]
        sim.reset(q[i], qd[i])
        sim.step(effort, SUBSTEPS)
        s = sim.state()
        reached = np.concatenate([s.position, s.velocity])
        assert _relative(predicted[i].double().numpy(), reached) < tolerance
        assert np.abs(reached[n:] - qd[i]).max() > 1e-3  # the step moved something


def test_pybullet_applies_the_urdf_joint_damping():
    """The model's damping is the sim's: without it, one iiwa step would disagree."""
    sim = BulletRobot(IIWA, PHYSICS_DT)
    try:
        undamped = RigidBodyDynamics(IIWA, IIWA_JOINTS, dt=PHYSICS_DT, integrator="euler", dtype=torch.float64)
        undamped._damping.zero_()
        q, qd = np.full(7, 0.3), np.full(7, 2.0)
        sim.reset(q, qd)
        sim.step(np.zeros(7))
        reached = sim.state().velocity
        without = undamped.step(torch.tensor(np.r_[q, qd])[None], torch.zeros(1, 7, dtype=torch.float64))[0, 7:]
        assert np.abs(reached - without.numpy()).max() > 1e-2
    finally:
        sim.close()


@pytest.mark.parametrize("integrator", ["euler", "rk4"])
def test_generic_model_matches_the_hand_written_cartpole(integrator):
    params = CartPoleParams.from_urdf(CARTPOLE)
    hand = CartPoleDynamics(params, dt=0.02, substeps=2, integrator=integrator).double()
    generic = RigidBodyDynamics(
        CARTPOLE, CARTPOLE_JOINTS, ["slider_to_cart"], dt=0.02, substeps=2, integrator=integrator, dtype=torch.float64
    )
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g, dtype=torch.float64) * torch.tensor([1.0, 3.0, 2.0, 4.0], dtype=torch.float64)
    u = torch.randn(256, 1, generator=g, dtype=torch.float64) * 10.0
    torch.testing.assert_close(generic.step(x, u), hand.step(x, u), rtol=1e-10, atol=1e-10)
    generic32 = RigidBodyDynamics(CARTPOLE, CARTPOLE_JOINTS, ["slider_to_cart"], 0.02, 2, integrator)
    torch.testing.assert_close(generic32.step(x.float(), u.float()), hand.step(x, u).float(), rtol=1e-5, atol=1e-5)


def test_state_order_and_passive_joints():
    """Joints listed in any order give the same physics; a passive joint gets no effort."""
    forward = RigidBodyDynamics(CARTPOLE, CARTPOLE_JOINTS, ["slider_to_cart"], dtype=torch.float64)
    backward = RigidBodyDynamics(CARTPOLE, CARTPOLE_JOINTS[::-1], ["slider_to_cart"], dtype=torch.float64)
    x = torch.tensor([[0.3, 0.4, -0.5, 1.0]], dtype=torch.float64)
    swap = [1, 0, 3, 2]
    u = torch.tensor([[5.0]], dtype=torch.float64)
    torch.testing.assert_close(backward.step(x[:, swap], u)[:, swap], forward.step(x, u))
    mass = forward.mass_matrix(x[:, :2])
    torch.testing.assert_close(backward.mass_matrix(x[:, [1, 0]]), mass[:, [1, 0]][:, :, [1, 0]])
    euler = RigidBodyDynamics(CARTPOLE, CARTPOLE_JOINTS, ["slider_to_cart"], 0.02, 1, "euler", dtype=torch.float64)
    qdd = euler.forward_dynamics(x[:, :2], x[:, 2:], torch.tensor([[5.0, 0.0]], dtype=torch.float64))
    qd = x[:, 2:] + 0.02 * qdd
    torch.testing.assert_close(euler.step(x, u), torch.cat([x[:, :2] + 0.02 * qd, qd], 1))
    pushed_pole = euler.forward_dynamics(x[:, :2], x[:, 2:], torch.tensor([[5.0, 1.0]], dtype=torch.float64))
    assert not torch.allclose(pushed_pole, qdd)  # the hinge would move differently if it were driven
    with pytest.raises(ValueError, match="not movable"):
        RigidBodyDynamics(CARTPOLE, ["slider_to_cart", "world_to_rail"])
    with pytest.raises(ValueError, match="not among the state joints"):
        RigidBodyDynamics(CARTPOLE, ["slider_to_cart"], ["cart_to_pole"])


def test_finite_difference_jacobians_match_autograd():
    """The model's jacobians (central differences, one batched step) against exact reverse-mode
    autograd (the generic DynamicsModel.jacobians) in float64, and in float32 as iLQR and the EKF
    call them, on the controller's 20 ms implicit-damping step."""
    model = RigidBodyDynamics(IIWA, IIWA_JOINTS, dt=0.02, substeps=2, integrator="euler_implicit_damping",
                              dtype=torch.float64)
    q, qd, _ = _states(7, 3, seed=4)
    x = torch.tensor(np.hstack([q, qd]))
    u = torch.tensor(np.random.default_rng(5).uniform(-20, 20, (3, 7)))
    exact_a, exact_b = DynamicsModel.jacobians(model, x, u)  # torch.func through the chain
    a, b = model.jacobians(x, u)
    assert a.shape == (3, 14, 14) and b.shape == (3, 14, 7)
    torch.testing.assert_close(a, exact_a, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b, exact_b, rtol=1e-5, atol=1e-7)
    # The filter's (the state Jacobian and the step, from one batched step) against the same truth.
    x_next, a_state = model.step_and_state_jacobian(x, u)
    torch.testing.assert_close(a_state, exact_a, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x_next, model.step(x, u))
    a32, b32 = model.float().jacobians(x.float(), u.float())
    # float32: the ill-conditioned mass matrix (a light wrist) costs accuracy in any float32 derivative
    assert (a32.double() - exact_a).abs().max() < 1e-2 * exact_a.abs().max()
    assert (b32.double() - exact_b).abs().max() < 1e-2 * exact_b.abs().max()


def test_gravity_compensation_holds_the_iiwa_still():
    model = RigidBodyDynamics(IIWA, IIWA_JOINTS, dtype=torch.float64)
    q, _, _ = _states(7, 50, seed=6)
    q = torch.tensor(q)
    hold = model.gravity_torques(q)
    assert hold.abs().max() > 10.0  # gravity matters
    torch.testing.assert_close(model.bias(q, torch.zeros_like(q)), hold)
    qdd = model.forward_dynamics(q, torch.zeros_like(q), hold)
    assert qdd.abs().max() < 1e-9
    assert model.forward_dynamics(q, torch.zeros_like(q), torch.zeros_like(q)).abs().max() > 1.0
    sim = BulletRobot(IIWA, PHYSICS_DT)  # and the sim agrees: the arm stays where it is
    try:
        for i in range(5):
            sim.reset(q[i].numpy(), np.zeros(7))
            sim.step(hold[i].numpy(), SUBSTEPS)
            s = sim.state()
            assert np.abs(s.velocity).max() < 1e-6 and np.abs(s.position - q[i].numpy()).max() < 1e-8
    finally:
        sim.close()


def test_the_compiled_formulation_computes_the_same_physics():
    """Under torch.compile the model takes other code paths (tree sums and the Cholesky solve written
    out on rows); they are checked here in eager by faking the compiler's flag, which is fast."""
    model = RigidBodyDynamics(IIWA, IIWA_JOINTS, dt=0.02, substeps=2, integrator="rk4", dtype=torch.float64)
    q, qd, _ = _states(7, 16, seed=7)
    x = torch.tensor(np.hstack([q, qd]))
    u = torch.tensor(np.random.default_rng(8).uniform(-20, 20, (16, 7)))
    eager = (model.step(x, u), model.mass_matrix(x[:, :7]), model.bias(x[:, :7], x[:, 7:]))
    with mock.patch("torch.compiler.is_compiling", return_value=True):
        faked = (model.step(x, u), model.mass_matrix(x[:, :7]), model.bias(x[:, :7], x[:, 7:]))
    for a, b in zip(faked, eager):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_rollout_is_repeated_steps_and_end_effector_point():
    model = RigidBodyDynamics(IIWA, IIWA_JOINTS, dt=0.02, integrator="euler_implicit_damping", dtype=torch.float64)
    g = torch.Generator().manual_seed(9)
    x = torch.rand(5, 14, generator=g, dtype=torch.float64)
    actions = torch.rand(5, 4, 7, generator=g, dtype=torch.float64) * 10
    states = model.rollout(x, actions)
    assert states.shape == (5, 5, 14)
    for t in range(4):
        torch.testing.assert_close(states[:, t + 1], model.step(states[:, t], actions[:, t]))
    origin, rot = model.forward_kinematics(x[:, :7], "lbr_iiwa_link_7")
    tip, _ = model.forward_kinematics(x[:, :7], "lbr_iiwa_link_7", point=torch.tensor([0.0, 0.0, 0.1]))
    torch.testing.assert_close(tip, origin + 0.1 * rot[:, :, 2])
    base, _ = model.forward_kinematics(x[:, :7], "lbr_iiwa_link_0")
    torch.testing.assert_close(base, torch.zeros(5, 3, dtype=torch.float64))


def test_a_gravity_compensated_arm_steps_as_its_model_without_gravity():
    """``gravity_compensated``: the sim adds the nominal URDF's gravity torques at every physics
    step (the robot's own controller), so the commands move the arm as the models built for it
    (gravity 0) say; a payload the nominal URDF lacks is left for the models to learn."""
    from mbrl_control.core.builders import build_model
    from mbrl_control.core.robot import robot_spec
    from mbrl_control.sim.randomization import apply_payload

    p = {"state_joints": IIWA_JOINTS, "command_joints": IIWA_JOINTS, "control_rate": 1.0 / (PHYSICS_DT * SUBSTEPS)}
    spec = robot_spec(p | {"gravity_compensated": True}, urdf=IIWA)
    assert spec.model_gravity == 0.0 and robot_spec(p, urdf=IIWA).model_gravity == 9.81
    model = build_model(spec, integrator="euler", substeps=SUBSTEPS).double()
    q, qd, _ = _states(7, 10, seed=7)
    u = np.random.default_rng(8).uniform(-20, 20, (10, 7))
    predicted = model.step(torch.tensor(np.hstack([q, qd])), torch.tensor(u)).numpy()
    sim = BulletRobot(IIWA, PHYSICS_DT)
    sim.compensate_gravity(IIWA, 9.81)
    loaded = BulletRobot(IIWA, PHYSICS_DT)
    loaded.reload(apply_payload(IIWA.read_text(), "lbr_iiwa_link_7", 2.0, (0.0, 0.0, 0.05)))
    loaded.compensate_gravity(IIWA, 9.81)
    try:
        for i in range(len(q)):
            sim.reset(q[i], qd[i])
            sim.step(u[i], SUBSTEPS)
            s = sim.state()
            assert _relative(predicted[i], np.concatenate([s.position, s.velocity])) < 1e-5  # 1e-2 uncompensated
        still = np.array([0.0, 0.6, 0.0, -1.2, 0.0, 0.8, 0.0])
        sim.reset(still, np.zeros(7))
        sim.step(np.zeros(7), 40)  # zero command: held by the robot's own compensation
        assert np.abs(sim.state().position - still).max() < 1e-9
        assert np.abs(sim.holding_effort(still)).max() < 1e-9  # braked, the joints carry nothing on top
        loaded.reset(still, np.zeros(7))
        loaded.step(np.zeros(7), 40)  # the payload's weight is not compensated: the arm sags
        assert np.abs(loaded.state().position - still).max() > 1e-2
        assert np.abs(loaded.holding_effort(still)).max() > 1.0
    finally:
        sim.close()
        loaded.close()
