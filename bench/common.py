"""Shared bits of the benchmark scripts: machine facts, tables, the closing JSON line.

Every benchmark imports this first (``python bench/<name>.py`` from anywhere, or from bench/): it
puts the repository root on ``sys.path`` for ``mbrl_control_testing``, the harness the tests share
(beside ``mbrl_control`` in the source tree, not installed). Appended, so an installed
``mbrl_control`` in site-packages still comes first.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPOSITORY = Path(__file__).resolve().parents[1]
if str(REPOSITORY) not in sys.path:
    sys.path.append(str(REPOSITORY))

from mbrl_control.core.planners import Plan, Planner  # noqa: E402  (the source tree is importable now)


def machine() -> dict[str, object]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


# A p99 from fewer samples rests on fewer than 10 beyond it: below this count only p95 and the max.
MIN_P99_SAMPLES = 1000


def percentiles_ms(seconds: np.ndarray) -> tuple[float, float]:
    return float(np.percentile(seconds, 50) * 1e3), float(np.percentile(seconds, 99) * 1e3)


def latency(seconds: np.ndarray, scale: float = 1e3, digits: int = 4) -> dict[str, float | int | None]:
    """Durations (in seconds) as ``{n, p50, p95, p99, max}`` in ``1/scale`` s (default ms); p99 is
    None from fewer than MIN_P99_SAMPLES samples."""
    values = np.asarray(seconds, dtype=np.float64) * scale
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"n": int(values.size), "p50": round(float(p50), digits), "p95": round(float(p95), digits),
            "p99": round(float(p99), digits) if values.size >= MIN_P99_SAMPLES else None,
            "max": round(float(values.max()), digits)}


def print_table(headers: list[str], rows: list[list[object]]) -> None:
    cells = [[f"{v:.3f}" if isinstance(v, float) else "-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def emit_json(figures: dict) -> None:
    """The figures as one JSON object: always the very last line on stdout."""
    sys.stdout.flush()
    print(json.dumps(figures), flush=True)


class CpuTimedPlanner(Planner):
    """A planner whose ticks are also timed in CPU time of the calling thread."""

    def __init__(self, planner: Planner) -> None:
        self.planner, self.horizon, self.cpu_s = planner, planner.horizon, []

    def reset(self) -> None:
        self.planner.reset()

    def plan(self, x0: torch.Tensor, deadline: float | None = None) -> Plan:
        start = time.thread_time()
        plan = self.planner.plan(x0, deadline)
        self.cpu_s.append(time.thread_time() - start)
        return plan
