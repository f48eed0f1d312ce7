"""Rigid-body dynamics from a URDF for the sampling planners: which library, how exact, what it costs.

The 7-DoF KUKA iiwa (pybullet_data kuka_iiwa/model.urdf), one torch thread, ``--batch`` states
(one step of a CEM population):

1. Candidates: forward dynamics ``qdd = M^-1 (tau - h)``, the mass matrix, the bias (Coriolis +
   gravity), gravity alone and end-effector FK, each for the whole batch; and whether a one-step
   model built on it goes through ``torch.func`` (jacrev under vmap, as DynamicsModel.jacobians)
   and ``torch.compile``. adam-robotics (its batched torch backend), Pinocchio (C++, one call per
   sample from Python), pytorch-kinematics (kinematics only), and RigidBodyDynamics (this project,
   eager and compiled). A library that is not installed gets a row saying so.
2. Accuracy against PyBullet itself, the judge: mass matrix and inverse dynamics at random states
   (relative to PyBullet's own figures, float32 and float64), end-effector position, and one control
   period (8 physics steps at 400 Hz, semi-implicit Euler) against the sim's stepSimulation.
3. Rollout cost, ``batch x horizon`` on the arm, per integrator (the PyBullet-exact Euler at the
   physics rate, RK4 with the substeps its stiffness needs, Euler with implicit damping at one step
   per period), eager and with the step compiled; and the Jacobians of a horizon for iLQR.

Times are medians of ``--reps`` calls, wall and CPU time of the calling thread (other processes on
a shared machine inflate the first, less the second). Prints tables, then one JSON line.

  python bench/rigid_body.py [--batch 500] [--horizon 30] [--reps 20] [--no-compile] [--quick]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pybullet_data
import torch
from common import emit_json, machine, print_table

from mbrl_control.core.dynamics import RigidBodyDynamics
from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.sim.bullet_robot import BulletRobot

URDF = Path(pybullet_data.getDataPath()) / "kuka_iiwa" / "model.urdf"
JOINTS = [f"lbr_iiwa_joint_{i}" for i in range(1, 8)]
END_LINK = "lbr_iiwa_link_7"
GRAVITY = 9.81
PHYSICS_DT, SUBSTEPS = 1.0 / 400.0, 8  # the sim's physics step and steps per 50 Hz control period
QUANTITIES = ("forward_dynamics", "mass_matrix", "bias", "gravity", "fk")
# (label, integrator, substeps per 20 ms period): PyBullet's own scheme at its rate; RK4 at the
# fewest substeps the last joint's damping allows (<= 5.5 ms); Euler with implicit damping, 1 step.
INTEGRATORS = [
    ("euler@400Hz", "euler", 8),
    ("rk4x4", "rk4", 4),
    ("euler_implicit_damping", "euler_implicit_damping", 1),
]


def timed(fn: Callable[[], object], reps: int) -> tuple[float, float]:
    """Median wall and thread-CPU milliseconds of ``fn()`` after one warm-up call."""
    fn()
    wall, cpu = [], []
    for _ in range(reps):
        w, c = time.perf_counter(), time.thread_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.thread_time() - c)
    return float(np.median(wall) * 1e3), float(np.median(cpu) * 1e3)


def differentiable(step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> str:
    """Whether ``step`` (batch-first, one sample as a batch of one) survives jacrev under vmap."""

    def single(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return step(x.unsqueeze(0), u.unsqueeze(0)).squeeze(0)

    try:
        a, b = torch.func.vmap(torch.func.jacrev(single, argnums=(0, 1)))(torch.rand(2, 14) * 0.5, torch.rand(2, 7))
        return "yes" if bool(torch.isfinite(a).all() and torch.isfinite(b).all()) else "non-finite"
    except Exception as exc:  # a library that cannot: say why, briefly
        return f"no ({type(exc).__name__})"


def semi_implicit(qdd: Callable, dt: float = 0.0025) -> Callable:
    def step(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        q, qd = x[:, :7], x[:, 7:]
        qd = qd + dt * qdd(q, qd, u)
        return torch.cat([q + dt * qd, qd], dim=1)

    return step


def adam_candidate(q, qd, tau) -> dict | None:
    try:
        from adam.pytorch import KinDynComputationsBatch
    except ImportError:
        return None
    kd = KinDynComputationsBatch(
        str(URDF), JOINTS, device=torch.device("cpu"), dtype=torch.float32,
        gravity=torch.tensor([0.0, 0.0, -GRAVITY, 0.0, 0.0, 0.0]),
    )
    base = torch.eye(4)  # fixed base: identity base pose, zero base velocity, joint blocks only

    def qdd(q, qd, tau):
        h = torch.eye(4).expand(q.shape[0], 4, 4)
        mass = kd.mass_matrix(h, q).reshape(q.shape[0], 13, 13)[:, 6:, 6:]
        bias = kd.bias_force(h, q, torch.zeros(q.shape[0], 6), qd).reshape(q.shape[0], 13)[:, 6:]
        return torch.linalg.solve(mass, tau - bias)

    hb = base.expand(q.shape[0], 4, 4)
    zero = torch.zeros(q.shape[0], 6)
    return {
        "forward_dynamics": lambda: qdd(q, qd, tau),
        "mass_matrix": lambda: kd.mass_matrix(hb, q),
        "bias": lambda: kd.bias_force(hb, q, zero, qd),
        "gravity": lambda: kd.gravity_term(hb, q),
        "fk": lambda: kd.forward_kinematics(END_LINK, hb, q),
        "torch_func": lambda: differentiable(semi_implicit(qdd)),
        "compile": "not measured",
    }


def pinocchio_candidate(q, qd, tau) -> dict | None:
    try:
        import pinocchio as pin
    except ImportError:
        return None
    model = pin.buildModelFromUrdf(str(URDF))
    model.gravity.linear[:] = [0.0, 0.0, -GRAVITY]
    data = model.createData()
    frame = model.getFrameId(END_LINK)

    def per_sample(fn, width):
        def run():
            out = np.empty((q.shape[0], *width))
            qn, qdn, tn = q.double().numpy(), qd.double().numpy(), tau.double().numpy()
            for i in range(q.shape[0]):
                out[i] = fn(qn[i], qdn[i], tn[i])
            return torch.from_numpy(out).float()

        return run

    def fk(qi, _qd, _tau):
        pin.framesForwardKinematics(model, data, qi)
        return data.oMf[frame].translation

    def qdd(q_, qd_, tau_):
        return torch.from_numpy(
            np.stack([pin.aba(model, data, a, b, c) for a, b, c in zip(q_.double().numpy(), qd_.double().numpy(),
                                                                      tau_.double().numpy())])
        ).float()

    return {
        "forward_dynamics": per_sample(lambda a, b, c: pin.aba(model, data, a, b, c), (7,)),
        "mass_matrix": per_sample(lambda a, b, c: pin.crba(model, data, a), (7, 7)),
        "bias": per_sample(lambda a, b, c: pin.nonLinearEffects(model, data, a, b), (7,)),
        "gravity": per_sample(lambda a, b, c: pin.computeGeneralizedGravity(model, data, a), (7,)),
        "fk": per_sample(fk, (3,)),
        "torch_func": lambda: differentiable(semi_implicit(qdd)),
        "compile": "no (C++ calls on numpy)",
    }


def pytorch_kinematics_candidate(q, qd, tau) -> dict | None:
    try:
        import pytorch_kinematics as pk
    except ImportError:
        return None
    chain = pk.build_serial_chain_from_urdf(URDF.read_bytes(), END_LINK).to(dtype=torch.float32)

    def fk_single(x, u):  # a "model" whose output is its FK, to see if torch.func passes through
        return torch.cat([chain.forward_kinematics(x[:, :7]).get_matrix()[:, :3, 3], x[:, 3:]], dim=1)

    return {
        "forward_dynamics": "no dynamics",
        "mass_matrix": "no dynamics",
        "bias": "no dynamics",
        "gravity": "no dynamics",
        "fk": lambda: chain.forward_kinematics(q).get_matrix(),
        "torch_func": lambda: differentiable(fk_single),
        "compile": "not measured",
    }


def own_candidate(q, qd, tau, compile_: bool) -> tuple[dict, dict | None]:
    model = RigidBodyDynamics(URDF, JOINTS, dt=PHYSICS_DT, integrator="euler", gravity=GRAVITY)
    eager = {
        "forward_dynamics": lambda: model.forward_dynamics(q, qd, tau),
        "mass_matrix": lambda: model.mass_matrix(q),
        "bias": lambda: model.bias(q, qd),
        "gravity": lambda: model.gravity_torques(q),
        "fk": lambda: model.forward_kinematics(q, END_LINK),
        "torch_func": lambda: differentiable(model.step),
        "compile": "yes" if compile_ else "not measured",
    }
    if not compile_:
        return eager, None
    # Compiling takes minutes here: only what a planner calls per step (dynamics, and FK for costs).
    compiled: dict[str, object] = {"mass_matrix": "not measured", "bias": "not measured", "gravity": "not measured",
                                   "torch_func": "n/a", "compile": "yes"}
    for name, fn, args in [
        ("forward_dynamics", model.forward_dynamics, (q, qd, tau)),
        ("fk", lambda q_: model.forward_kinematics(q_, END_LINK), (q,)),
    ]:
        f = torch.compile(fn, fullgraph=True, dynamic=False)
        start = time.perf_counter()
        f(*args)
        compiled[f"{name}_compile_s"] = time.perf_counter() - start
        compiled[name] = lambda f=f, args=args: f(*args)
    return eager, compiled


def compare_candidates(batch: int, reps: int, compile_: bool) -> tuple[list[list[object]], dict]:
    g = torch.Generator().manual_seed(0)
    q = torch.rand(batch, 7, generator=g) * 4.0 - 2.0
    qd = torch.rand(batch, 7, generator=g) * 4.0 - 2.0
    tau = torch.rand(batch, 7, generator=g) * 40.0 - 20.0
    own, own_compiled = own_candidate(q, qd, tau, compile_)
    candidates = {
        "adam-robotics (torch batch)": adam_candidate(q, qd, tau),
        "pinocchio (per sample)": pinocchio_candidate(q, qd, tau),
        "pytorch-kinematics": pytorch_kinematics_candidate(q, qd, tau),
        "RigidBodyDynamics eager": own,
        "RigidBodyDynamics compiled": own_compiled,
    }
    rows, figures = [], {}
    with torch.no_grad():
        for name, funcs in candidates.items():
            if funcs is None:
                why = "skipped (--no-compile)" if name.endswith("compiled") else "not installed"
                rows.append([name, *([why] * (len(QUANTITIES) + 2))])
                figures[name] = why
                continue
            entry: dict[str, object] = {}
            for quantity in QUANTITIES:
                fn = funcs[quantity]
                if callable(fn):
                    wall, cpu = timed(fn, reps)
                    entry[quantity] = {"wall_ms": wall, "cpu_ms": cpu}
                else:
                    entry[quantity] = fn
            with torch.enable_grad():
                tf = funcs["torch_func"]
                entry["torch_func"] = tf() if callable(tf) else tf
            entry["compile"] = funcs["compile"]
            entry.update({k: v for k, v in funcs.items() if k.endswith("_compile_s")})
            figures[name] = entry
            cells = [
                f"{e['wall_ms']:.2f} / {e['cpu_ms']:.2f}" if isinstance(e, dict) else e
                for e in (entry[k] for k in QUANTITIES)
            ]
            rows.append([name, *cells, entry["torch_func"], entry["compile"]])
    return rows, figures


def accuracy(samples: int) -> tuple[list[list[object]], dict]:
    sim = BulletRobot(URDF, PHYSICS_DT, gravity=GRAVITY)
    client, body = sim._client, sim.body
    link = next(j for j in range(client.getNumJoints(body)) if client.getJointInfo(body, j)[12].decode() == END_LINK)
    rng = np.random.default_rng(1)
    q, qd, qdd = (rng.uniform(-2.0, 2.0, (samples, 7)) for _ in range(3))
    u = rng.uniform(-30.0, 30.0, (samples, 7))
    rows, figures = [], {}
    for dtype in (torch.float64, torch.float32):
        model = RigidBodyDynamics(URDF, JOINTS, dt=PHYSICS_DT * SUBSTEPS, substeps=SUBSTEPS, integrator="euler",
                                  gravity=GRAVITY, dtype=dtype)
        to = lambda a: torch.tensor(a, dtype=dtype)  # noqa: E731
        mass = model.mass_matrix(to(q)).double().numpy()
        torque = model.inverse_dynamics(to(q), to(qd), to(qdd)).double().numpy()
        ee, _ = model.forward_kinematics(to(q), END_LINK)
        stepped = model.step(to(np.hstack([q, qd])), to(u)).double().numpy()
        err = {"mass_matrix": 0.0, "inverse_dynamics": 0.0, "ee_position_m": 0.0, "one_period": 0.0}
        for i in range(samples):
            m_ref = np.array(client.calculateMassMatrix(body, q[i].tolist()))
            t_ref = np.array(client.calculateInverseDynamics(body, q[i].tolist(), qd[i].tolist(), qdd[i].tolist()))
            err["mass_matrix"] = max(err["mass_matrix"], np.abs(mass[i] - m_ref).max() / np.abs(m_ref).max())
            err["inverse_dynamics"] = max(
                err["inverse_dynamics"], np.abs(torque[i] - t_ref).max() / np.abs(t_ref).max()
            )
            sim.reset(q[i], qd[i])
            frame = client.getLinkState(body, link, computeForwardKinematics=True)
            err["ee_position_m"] = max(err["ee_position_m"], float(np.abs(ee[i].double().numpy() - frame[4]).max()))
            sim.step(u[i], SUBSTEPS)
            s = sim.state()
            reached = np.concatenate([s.position, s.velocity])
            err["one_period"] = max(err["one_period"], np.abs(stepped[i] - reached).max() / np.abs(reached).max())
        name = str(dtype).removeprefix("torch.")
        figures[name] = err
        rows.append([name, f"{err['mass_matrix']:.1e}", f"{err['inverse_dynamics']:.1e}",
                     f"{err['ee_position_m']:.1e}", f"{err['one_period']:.1e}"])
    sim.close()
    return rows, figures


def rollout_cost(batch: int, horizon: int, reps: int, compile_: bool) -> tuple[list[list[object]], dict]:
    g = torch.Generator().manual_seed(2)
    x0 = torch.cat([torch.rand(batch, 7, generator=g) * 2.0 - 1.0, torch.zeros(batch, 7)], dim=1)
    model0 = RigidBodyDynamics(URDF, JOINTS, gravity=GRAVITY)
    hold = model0.gravity_torques(x0[:, :7])
    actions = hold.unsqueeze(1) + torch.randn(batch, horizon, 7, generator=g) * 5.0
    rows, figures = [], {}
    with torch.no_grad():
        for label, integrator, substeps in INTEGRATORS:
            model = RigidBodyDynamics(URDF, JOINTS, dt=0.02, substeps=substeps, integrator=integrator, gravity=GRAVITY)
            states = model.rollout(x0, actions)
            entry: dict[str, object] = {"finite": bool(torch.isfinite(states).all())}
            entry["eager_wall_ms"], entry["eager_cpu_ms"] = timed(lambda: model.rollout(x0, actions), max(3, reps // 4))
            if compile_:
                # One substep compiled (the graph grows with every unrolled substep, and so does the
                # compile time); the substeps and the horizon loop in Python.
                sub = RigidBodyDynamics(URDF, JOINTS, dt=0.02 / substeps, integrator=integrator, gravity=GRAVITY)
                step = torch.compile(sub.step, fullgraph=True, dynamic=False)
                start = time.perf_counter()
                step(x0, actions[:, 0])
                entry["compile_s"] = time.perf_counter() - start

                def compiled_rollout() -> torch.Tensor:
                    x, out = x0, [x0]
                    for t in range(horizon):
                        for _ in range(substeps):
                            x = step(x, actions[:, t])
                        out.append(x)
                    return torch.stack(out, dim=1)

                entry["compiled_wall_ms"], entry["compiled_cpu_ms"] = timed(compiled_rollout, max(3, reps // 4))
                entry["compiled_max_diff"] = float((compiled_rollout() - states).abs().max())
            figures[label] = entry
            eager = f"{entry['eager_wall_ms']:.1f} / {entry['eager_cpu_ms']:.1f}"
            rows.append([label, substeps, entry["finite"], eager,
                         f"{entry['compiled_wall_ms']:.1f} / {entry['compiled_cpu_ms']:.1f}" if compile_ else "-",
                         f"{entry['compile_s']:.0f}" if compile_ else "-"])
        # iLQR linearises the horizon: Jacobians at horizon states, by torch.func (DynamicsModel.jacobians)
        model = RigidBodyDynamics(URDF, JOINTS, dt=0.02, integrator="euler_implicit_damping", gravity=GRAVITY)
        xs, us = x0[:horizon], actions[:horizon, 0]
    with torch.enable_grad():
        wall, cpu = timed(lambda: DynamicsModel.jacobians(model, xs, us), max(3, reps // 4))
    figures["jacobians_euler_implicit_damping"] = {"states": horizon, "wall_ms": wall, "cpu_ms": cpu}
    rows.append([f"jacobians x{horizon} (jacrev/vmap)", 1, True, f"{wall:.1f} / {cpu:.1f}", "-", "-"])
    return rows, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--horizon", type=int, default=30)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--samples", type=int, default=100, help="random states for the accuracy check")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (minutes of compiling)")
    parser.add_argument("--quick", action="store_true", help="small sizes, no compile: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.horizon, args.reps, args.samples, args.no_compile = 50, 5, 3, 10, True
    torch.set_num_threads(1)
    compile_ = not args.no_compile

    print(f"iiwa ({URDF.name}), batch {args.batch}, 1 thread; ms = median wall / thread CPU")
    rows, candidates = compare_candidates(args.batch, args.reps, compile_)
    print_table(["candidate", *QUANTITIES, "torch.func", "torch.compile"], rows)
    print()
    rows, accurate = accuracy(args.samples)
    print(f"max relative error against PyBullet over {args.samples} random states (ee: metres)")
    print_table(["dtype", "mass matrix", "inverse dynamics", "ee position", "one period (8 steps)"], rows)
    print()
    rows, rollouts = rollout_cost(args.batch, args.horizon, args.reps, compile_)
    print(f"rollout {args.batch} x {args.horizon} at 50 Hz (ms wall / CPU); "
          "compiled: one substep compiled, loops in Python")
    print_table(["integrator", "substeps", "finite", "eager", "compiled", "compile s"], rows)
    emit_json({
        "bench": "rigid_body", "robot": "iiwa", "batch": args.batch, "horizon": args.horizon,
        "machine": machine(), "load_average": os.getloadavg()[0],
        "candidates": candidates, "accuracy_vs_pybullet": accurate, "rollout": rollouts,
    })


if __name__ == "__main__":
    main()
