"""The run report: one PNG of a recorded run (task error, joints against their limits, efforts,
tick latency, summary)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mbrl_control.recording.run_data import RunData, load_run  # noqa: E402

if TYPE_CHECKING:
    from mbrl_control.core.tasks.residual import ResidualTask


def _continuous(angle: np.ndarray) -> np.ndarray:
    """Unwrapped, shifted by whole turns so it ends within [-pi, pi): full swings stay readable."""
    a = np.unwrap(angle)
    return a - 2 * math.pi * np.round(a[-1] / (2 * math.pi))


def task_error(task: ResidualTask, run: RunData) -> np.ndarray:
    """Per recorded state, the task's error: for a hold task the judged joints' deviation from the
    posture, for a reach task the distance of its point to the goal in force at that time."""
    states = np.concatenate([run.position, np.nan_to_num(run.velocity)], axis=1)
    if not task.has_goal or not len(run.goals):
        return task.error(states)
    error = np.full(len(states), np.nan)
    for i, (t0, goal) in enumerate(zip(run.goal_time, run.goals)):
        t1 = run.goal_time[i + 1] if i + 1 < len(run.goals) else np.inf
        inside = (run.state_time >= t0) & (run.state_time < t1)
        if inside.any():
            error[inside] = task.error(states[inside], task.clamp_goal(goal)[0])
    return error


def plot_report(run: RunData, out: Path, title: str = "mbrl_control run", period_ms: float | None = None,
                task: ResidualTask | None = None) -> Path:
    """Task error, joint positions against their limits, efforts against theirs, velocities, tick
    time and the summary; ``task`` (the robot's, from its config) gives the error and the limits."""
    fig, axes = plt.subplots(2, 3, figsize=(17, 8.5))
    (ax_err, ax_pos, ax_cmd), (ax_vel, ax_tick, ax_text) = axes
    t = run.state_time
    spec = task.spec if task is not None and task.spec.nq == run.position.shape[1] else None
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if len(t) and task is not None and spec is not None:
        ax_err.plot(t, task_error(task, run), lw=0.9)
        ax_err.axhline(task.success_config.tolerance, color="green", ls="--", label=f"tolerance {task.success_config.tolerance:g}")
        for g in run.goal_time:
            ax_err.axvline(g, color="grey", lw=0.6, ls=":")
        unit = "m" if task.success_config.kind == "reach" else "rad or m"
        ax_err.set(title=f"task error ({task.config.name})", xlabel="robot time [s]", ylabel=f"[{unit}]")
        ax_err.set_yscale("symlog", linthresh=task.success_config.tolerance)
    for i, name in enumerate(run.joints):
        if not len(t):
            break
        c = colours[i % len(colours)]
        angle = spec is not None and i in spec.angle_dims
        ax_pos.plot(t, _continuous(run.position[:, i]) if angle else run.position[:, i], color=c, lw=0.9, label=name)
        if spec is not None and np.isfinite(spec.position_lower[i]):
            for limit in (spec.position_lower[i], spec.position_upper[i]):
                ax_pos.axhline(limit, color=c, lw=0.6, ls=":")
        ax_vel.plot(t, run.velocity[:, i], color=c, lw=0.8, label=name)
    if len(run.command_time):
        for ax in (ax_pos, ax_vel):
            ax.axvline(run.command_time[0], color="k", lw=0.8, ls=":")
    ax_pos.set(title="joint positions (dotted: URDF limits)", xlabel="robot time [s]", ylabel="[rad or m]")
    ax_vel.set(title="joint velocities", xlabel="robot time [s]")
    if len(run.command):
        for k in range(run.command.shape[1]):
            c = colours[(spec.command_index[k] if spec is not None else k) % len(colours)]
            ax_cmd.plot(run.command_time, run.command[:, k], lw=0.7, color=c)
            if spec is not None and k < len(spec.effort_limit):
                for sign in (-1, 1):
                    ax_cmd.axhline(sign * spec.effort_limit[k], color=c, lw=0.6, ls=":")
    ax_cmd.set(title="effort commands (dotted: URDF limits)", xlabel="robot time [s]", ylabel="[N or N m]")
    tick = run.timing.get("tick_ms")
    if tick is not None and len(tick):
        ax_tick.hist(tick, bins=60, color="tab:purple")
        p50, p99 = np.percentile(tick, [50, 99])
        ax_tick.axvline(p99, color="k", ls="--", label=f"p99 {p99:.2f} ms")
        ax_tick.axvline(p50, color="grey", ls=":", label=f"p50 {p50:.2f} ms")
        if period_ms:
            ax_tick.axvline(period_ms, color="red", label=f"period {period_ms:.0f} ms")
    ax_tick.set(title="controller tick time", xlabel="[ms]", ylabel="ticks")
    for ax in (ax_err, ax_pos, ax_vel, ax_tick):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    ax_text.axis("off")
    lines = [f"{k}: {v}" for k, v in run.summary.items() if not isinstance(v, dict) and not (isinstance(v, list) and len(v) > 7)]
    lines += ["", "messages recorded:"] + [f"  {k}: {v}" for k, v in sorted(run.counts.items())]
    ax_text.text(0, 1, "\n".join(lines), va="top", family="monospace", fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def make_report(recording: str | Path, out: str | Path | None = None, summary: dict | None = None,
                robot: str | Path | None = None, **kwargs) -> Path:
    """Plot ``recording`` to ``out`` (default: report.png beside it); ``summary`` overrides the
    one found in the recording (the run monitor's); ``robot``: its config (a name under config/ or
    a parameter file), for the task's error and the joints' limits (default: the default robot's)."""
    from mbrl_control.core.builders import robot_parameters, task_from_params
    from mbrl_control.paths import DEFAULT_ROBOT

    recording = Path(recording)
    run = load_run(recording)
    if summary:
        run.summary = summary
    task = task_from_params(robot_parameters(robot or DEFAULT_ROBOT, "run_monitor"))
    return plot_report(run, Path(out) if out else recording.with_name("report.png"), task=task, **kwargs)


def plot_learning_curve(runs: list[dict], out: Path, labels: list[str] | None = None) -> Path:
    """Return and success per episode of one or more learning runs (episode manager summaries)."""
    fig, (ax_ret, ax_up) = plt.subplots(1, 2, figsize=(13, 4.5))
    for i, run in enumerate(runs):
        curve = run["curve"]
        episodes = [r["episode"] + 1 for r in curve]
        label = labels[i] if labels else None
        line = ax_ret.plot(episodes, [r["return"] for r in curve], marker="o", label=label)[0]
        ax_up.plot(episodes, [r["in_tolerance_fraction"] for r in curve], marker="o", color=line.get_color(), label=label)
        wins = [(e, r["return"]) for e, r in zip(episodes, curve) if r["success"]]
        if wins:
            ax_ret.scatter(*zip(*wins), s=120, facecolors="none", edgecolors=line.get_color(), linewidths=2)
    ax_ret.set(title="return per episode (circled: success)", xlabel="episode", ylabel="sum of rewards")
    ax_up.set(title="fraction of the episode within the task's tolerance", xlabel="episode", ylim=(-0.05, 1.05))
    for ax in (ax_ret, ax_up):
        ax.grid(alpha=0.3)
        if labels:
            ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
