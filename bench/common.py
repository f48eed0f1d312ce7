"""Shared bits of the benchmark scripts: machine facts, tables, the closing JSON line."""

from __future__ import annotations

import json
import os
import platform
import sys

import numpy as np
import torch


def machine() -> dict[str, object]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def percentiles_ms(seconds: np.ndarray) -> tuple[float, float]:
    return float(np.percentile(seconds, 50) * 1e3), float(np.percentile(seconds, 99) * 1e3)


def print_table(headers: list[str], rows: list[list[object]]) -> None:
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def emit_json(figures: dict) -> None:
    """The figures as one JSON object: always the very last line on stdout."""
    sys.stdout.flush()
    print(json.dumps(figures), flush=True)
