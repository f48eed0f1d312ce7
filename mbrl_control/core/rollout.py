"""Batched open-loop rollouts and their cost: the hot path every sampling planner shares."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

from mbrl_control.core.dynamics.base import DynamicsModel
from mbrl_control.core.tasks.base import Task
from mbrl_control.core.util import module_device

log = logging.getLogger(__name__)


class TrajectoryEvaluator(torch.nn.Module):
    """``(x0[nx], actions[B,T,nu]) -> (cost[B], states[B,T+1,nx])`` for one model and task.

    With ``compile=True`` the whole rollout and its cost go through ``torch.compile``: the
    cart-pole's per-sample arithmetic fuses into a few vectorised C++ loops instead of thousands
    of small eager ops (on CUDA, the graph is also captured as a CUDA graph: see
    ``compile_or_eager``). Machines without a working compiler fall back to eager on the first
    call. Actions stored time-major with the batch fastest (a ``[T, nu, B]`` buffer viewed as
    ``[B, T, nu]``) are read contiguously; any other layout is correct, only slower.

    ``device``: where to evaluate; the model and the task are moved there (in place, as
    ``Module.to`` does). None: where the model is. A model that samples (it has a
    ``draw(batch, steps)`` method, like the learned ensemble) has its random numbers drawn
    before the compiled graph and passed to ``model.rollout(x0, actions, draws)``, so the graph
    itself is free of random number generation.

    ``threads`` (CPU): a model that threads its own rollout (the ensemble's fused kernel) is
    given them. Otherwise the batch is cut into this many contiguous shares (multiples of the
    ensemble's members), evaluated at the same time, one by the calling thread and each other
    by a worker of a pool kept for the evaluator's life, each with its own draws (drawn in
    order by the caller, so a seed still gives the same results). A compiled share runs as one
    C++ call that releases the GIL (inductor's C++ wrapper), so two shares really use two cores;
    torch's own intra-op threads should then be 1 (the controller's ``torch_threads``).
    Rollouts are independent per sample, so this parallelism needs no synchronisation inside a
    rollout, unlike intra-op threads, which meet at every kernel of every step.

    ``particles`` (PETS): each sequence is rolled out by this many particles of a sampling model
    (with TS1, each particle draws its own members), its cost the particles' mean and its states
    their mean trajectory.
    """

    def __init__(self, model: DynamicsModel, task: Task, compile: bool = False,
                 device: torch.device | str | None = None, threads: int = 1, particles: int = 1) -> None:
        super().__init__()
        if threads < 1 or particles < 1:
            raise ValueError("need threads >= 1 and particles >= 1")
        self.particles = particles
        self.model = model
        self.task = task
        if device is not None:
            self.to(device)
        self.threads = threads if self.device.type == "cpu" else 1  # a GPU parallelises by itself
        if self.threads > 1 and getattr(model, "threads_itself", lambda: False)():
            # The ensemble's fused rollout threads itself, over the whole population (one set of
            # draws, no share boundaries): hand it the threads rather than cutting shares.
            model.rollout_threads, self.threads = self.threads, 1
        self._fn = self._evaluate
        self._compile_pending = compile
        # Models whose whole-horizon graph is too big to compile (rigid bodies) compile one step,
        # looped eagerly, and the cost on its own: ``_step`` is then set.
        self._step = None
        self._cost = task.trajectory_cost
        self._draw = getattr(model, "draw", None)
        # Shares cut at multiples of the particles a sampling model pads one sequence to (TS1:
        # its members), so that no share pads.
        self._align = model.particles(1) if hasattr(model, "particles") else 1
        self._pool = None
        if self.threads > 1:
            intra_op = torch.get_num_threads()
            self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="rollout",
                                            initializer=torch.set_num_threads, initargs=(intra_op,))

    @property
    def device(self) -> torch.device:
        return module_device(self.model)

    def _evaluate(self, x0: Tensor, actions: Tensor, draws: tuple[Tensor, ...] | None) -> tuple[Tensor, Tensor]:
        B, P = actions.shape[0], self.particles
        if P > 1:
            actions = actions.repeat_interleave(P, dim=0)  # particle p of sequence b at b * P + p
        x = x0.unsqueeze(0).expand(actions.shape[0], -1)
        if self._step is not None:
            steps = [x]
            for t in range(actions.shape[1]):
                steps.append(self._step(steps[-1], actions[:, t]))
            states = torch.stack(steps, dim=1)
        else:
            states = self.model.rollout(x, actions) if draws is None else self.model.rollout(x, actions, draws)
        costs = self._cost(states, actions)
        if P > 1:
            return costs.view(B, P).mean(1), states.view(B, P, *states.shape[1:]).mean(1)
        return costs, states

    def _draws(self, batch: int, steps: int) -> tuple[Tensor, ...] | None:
        return None if self._draw is None else self._draw(batch * self.particles, steps)

    def forward(self, x0: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        B, T = actions.shape[0], actions.shape[1]
        if self._pool is None or B < 2 * self._align:
            args = (x0, actions, self._draws(B, T))
            self._compile(args)
            return self._fn(*args)
        shares = [(x0, actions[lo:hi], self._draws(hi - lo, T)) for lo, hi in self._shares(B)]
        with torch.no_grad():  # the same grad mode (part of a compiled graph's guards) in every thread
            self._compile(shares[0])
            others = [self._pool.submit(self._no_grad_fn, *share) for share in shares[1:]]
            results = [self._fn(*shares[0])] + [f.result() for f in others]
        return torch.cat([r[0] for r in results]), torch.cat([r[1] for r in results])

    def _no_grad_fn(self, *args) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            return self._fn(*args)

    def _shares(self, batch: int) -> list[tuple[int, int]]:
        """``threads`` contiguous ranges of the batch, all but the last a multiple of ``_align``."""
        size = max(self._align, batch // self.threads // self._align * self._align)
        bounds = [min(batch, k * size) for k in range(self.threads)] + [batch]
        return [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]

    def _compile(self, example_args: tuple) -> None:
        if self._compile_pending:
            self._compile_pending = False
            if self.model.compile_rollout:
                self._fn = compile_or_eager(self._evaluate, example_args, self.device, cpp_wrapper=self._pool is not None)
            else:  # one compiled step, looped; the cost compiled on its own
                x0, actions = example_args[0], example_args[1]
                x = x0.unsqueeze(0).expand(actions.shape[0] * self.particles, -1)
                self._step = compile_or_eager(self.model.step, (x, actions[:, 0].repeat_interleave(self.particles, 0)),
                                              self.device, cuda_graphs=False)
                states = torch.stack([x] * (actions.shape[1] + 1), dim=1)
                self._cost = compile_or_eager(self.task.trajectory_cost,
                                              (states, actions.repeat_interleave(self.particles, 0)), self.device)


def compile_or_eager(fn, example_args: tuple, device: torch.device | str = "cpu", cpp_wrapper: bool = False,
                     cuda_graphs: bool = True):
    """``torch.compile(fn)`` if it compiles and runs on ``example_args`` here, else ``fn``.

    On CUDA the compiled graph is replayed as a CUDA graph (what ``mode="reduce-overhead"``
    does): a planner's tick is many small kernels, which a GPU otherwise spends launching.
    Outputs of a replayed graph are overwritten by its next replay: callers copy what they
    keep. ``cpp_wrapper``: the graph's kernels are called from C++, without the GIL (for
    graphs run by several threads at once). ``cuda_graphs=False`` for a function called in an
    eager loop whose outputs feed its next call (a replay would overwrite them).
    """
    graphs = torch.device(device).type == "cuda" and cuda_graphs
    # mode="reduce-overhead", not options={"triton.cudagraphs": True}: measured on an H200 (torch
    # 2.11), the option alone left every partition "non-cudagraphable" (1.5 ms a rollout, launch-bound).
    settings = {"mode": "reduce-overhead"} if graphs else {"options": {"cpp_wrapper": True}} if cpp_wrapper else {}
    try:
        compiled = torch.compile(fn, dynamic=False, fullgraph=True, **settings)
        compiled(*example_args)
        return compiled
    except Exception as exc:  # no C++ compiler, unsupported op, ...: eager still works
        log.warning("torch.compile unavailable (%s: %s); using eager mode", type(exc).__name__, exc)
        return fn


class FeedbackRollout(torch.nn.Module):
    """Closed-loop rollouts of a time-varying affine policy at several step sizes, in one batch.

    ``(x0[nx], x_ref[T+1,nx], u_ref[T,nu], feedforward[T,nu], gains[T,nu,nx], step_sizes[S])
    -> (cost[S], states[S,T+1,nx], actions[S,T,nu])`` with
    ``u_t = clip(u_ref_t + step * feedforward_t + gains_t (x_t - x_ref_t))``: the forward pass and
    parallel line search of iLQR/DDP. The feedback product is unrolled over the state entries into
    pointwise operations, which a compiled graph fuses with the dynamics (a batched matmul or a
    reduction per step splits it into many small kernels: 2x slower for the cart-pole).
    """

    def __init__(self, model: DynamicsModel, task: Task, compile: bool = False) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self._fn = self._rollout
        self._compile_pending = compile
        self._feedback_step = self._step_with_feedback  # compiled alone for models with big step graphs
        self._cost = task.trajectory_cost

    def _step_with_feedback(self, x: Tensor, x_ref: Tensor, u_ref: Tensor, feedforward: Tensor, gains: Tensor,
                            step: Tensor) -> tuple[Tensor, Tensor]:
        dx = x - x_ref
        feedback = sum(dx[:, i : i + 1] * gains[:, i] for i in range(dx.shape[-1]))
        u = torch.clamp(u_ref + step * feedforward + feedback, self.task.action_low, self.task.action_high)
        return self.model.step(x, u), u

    def _rollout(
        self, x0: Tensor, x_ref: Tensor, u_ref: Tensor, feedforward: Tensor, gains: Tensor, step_sizes: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        x = x0.unsqueeze(0).expand(step_sizes.shape[0], -1)
        step = step_sizes.unsqueeze(-1)
        states, actions = [x], []
        for t in range(u_ref.shape[0]):
            x, u = self._feedback_step(x, x_ref[t], u_ref[t], feedforward[t], gains[t], step)
            states.append(x)
            actions.append(u)
        states_b, actions_b = torch.stack(states, dim=1), torch.stack(actions, dim=1)
        return self._cost(states_b, actions_b), states_b, actions_b

    def forward(
        self, x0: Tensor, x_ref: Tensor, u_ref: Tensor, feedforward: Tensor, gains: Tensor, step_sizes: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        args = (x0, x_ref, u_ref, feedforward, gains, step_sizes)
        if self._compile_pending:
            self._compile_pending = False
            if self.model.compile_rollout:
                self._fn = compile_or_eager(self._rollout, args, module_device(self.model))
            else:  # one compiled feedback step, looped; the cost compiled on its own
                device = module_device(self.model)
                x = x0.unsqueeze(0).expand(step_sizes.shape[0], -1)
                step = step_sizes.unsqueeze(-1)
                # cpp_wrapper: the looped step's graph is called once per step, and the C++ wrapper
                # halves what each call costs besides its kernels (the arm: 356 -> 199 us a step).
                self._feedback_step = compile_or_eager(self._step_with_feedback,
                                                       (x, x_ref[0], u_ref[0], feedforward[0], gains[0], step), device,
                                                       cpp_wrapper=True, cuda_graphs=False)
                states = torch.stack([x] * (u_ref.shape[0] + 1), dim=1)
                actions = u_ref.unsqueeze(0).expand(step_sizes.shape[0], -1, -1)
                self._cost = compile_or_eager(self.task.trajectory_cost, (states, actions), device)
        return self._fn(*args)
