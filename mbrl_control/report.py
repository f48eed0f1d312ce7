"""The run report: one PNG of a recorded run (state, command, cost, tick latency, summary)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mbrl_control.recording.run_data import RunData, load_run  # noqa: E402


def _continuous(angle: np.ndarray) -> np.ndarray:
    """Unwrapped, shifted by whole turns so it ends within [-pi, pi): full swings stay readable."""
    a = np.unwrap(angle)
    return a - 2 * math.pi * np.round(a[-1] / (2 * math.pi))


def plot_report(run: RunData, out: Path, title: str = "mbrl_control run", period_ms: float | None = None) -> Path:
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
    (ax_pos, ax_vel, ax_cmd), (ax_cost, ax_tick, ax_text) = axes
    t = run.state_time
    if len(t):
        ax_pos.plot(t, run.position[:, 0], label=f"{run.joints[0]} [m]")
        if run.position.shape[1] > 1:
            ax_pos.plot(t, _continuous(run.position[:, 1]), label=f"{run.joints[1]} [rad]")
            ax_pos.axhspan(-0.2, 0.2, color="green", alpha=0.1, label="upright band")
        for i, name in enumerate(run.joints):
            ax_vel.plot(t, run.velocity[:, i], label=name)
    if len(run.command_time):
        for ax in (ax_pos, ax_vel):
            ax.axvline(run.command_time[0], color="k", lw=0.8, ls=":", label="first command")
    ax_pos.set(title="joint positions", xlabel="robot time [s]")
    ax_vel.set(title="joint velocities", xlabel="robot time [s]")
    if len(run.command):
        ax_cmd.plot(run.command_time, run.command[:, 0], lw=0.8)
    ax_cmd.set(title="effort command", xlabel="robot time [s]", ylabel="[N]")
    cost = run.timing.get("plan_cost")
    if cost is not None and np.isfinite(cost).any():
        ax_cost.semilogy(run.timing_time, np.clip(cost, 1e-6, None), lw=0.8)
    ax_cost.set(title="planned trajectory cost", xlabel="robot time [s]")
    tick = run.timing.get("tick_ms")
    if tick is not None and len(tick):
        ax_tick.hist(tick, bins=60, color="tab:purple")
        p50, p99 = np.percentile(tick, [50, 99])
        ax_tick.axvline(p99, color="k", ls="--", label=f"p99 {p99:.2f} ms")
        ax_tick.axvline(p50, color="grey", ls=":", label=f"p50 {p50:.2f} ms")
        if period_ms:
            ax_tick.axvline(period_ms, color="red", label=f"period {period_ms:.0f} ms")
    ax_tick.set(title="controller tick time", xlabel="[ms]", ylabel="ticks")
    for ax in (ax_pos, ax_vel, ax_tick):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    ax_text.axis("off")
    lines = [f"{k}: {v}" for k, v in run.summary.items() if not isinstance(v, (list, dict))]
    lines += ["", "messages recorded:"] + [f"  {k}: {v}" for k, v in sorted(run.counts.items())]
    ax_text.text(0, 1, "\n".join(lines), va="top", family="monospace", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def make_report(recording: str | Path, out: str | Path | None = None, summary: dict | None = None, **kwargs) -> Path:
    """Plot ``recording`` to ``out`` (default: report.png beside it); ``summary`` overrides the
    one found in the recording (the run monitor's)."""
    recording = Path(recording)
    run = load_run(recording)
    if summary:
        run.summary = summary
    return plot_report(run, Path(out) if out else recording.with_name("report.png"), **kwargs)


def plot_learning_curve(runs: list[dict], out: Path, labels: list[str] | None = None) -> Path:
    """Return and success per episode of one or more learning runs (episode manager summaries)."""
    fig, (ax_ret, ax_up) = plt.subplots(1, 2, figsize=(13, 4.5))
    for i, run in enumerate(runs):
        curve = run["curve"]
        episodes = [r["episode"] + 1 for r in curve]
        label = labels[i] if labels else None
        line = ax_ret.plot(episodes, [r["return"] for r in curve], marker="o", label=label)[0]
        ax_up.plot(episodes, [r["upright_fraction"] for r in curve], marker="o", color=line.get_color(), label=label)
        wins = [(e, r["return"]) for e, r in zip(episodes, curve) if r["success"]]
        if wins:
            ax_ret.scatter(*zip(*wins), s=120, facecolors="none", edgecolors=line.get_color(), linewidths=2)
    ax_ret.set(title="return per episode (circled: success)", xlabel="episode", ylabel="sum of rewards")
    ax_up.set(title="fraction of the episode upright", xlabel="episode", ylim=(-0.05, 1.05))
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
