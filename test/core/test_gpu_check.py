"""bench/gpu_check.py, the prepared check for a GPU machine, runs here on the CPU at small sizes:
every check completes, the CPU-against-itself equality holds, and it runs this source tree
without loading ROS (a GPU session only has to run it)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_runs_on_the_cpu_and_reports_every_figure():
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--ticks", "8"],
                            capture_output=True, text=True, timeout=1200, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["device"] == "cpu" and not report["full_sizes"]
    assert Path(report["source"]) == ROOT / "mbrl_control" and report["ros_modules_loaded"] == []
    for name in ("analytic_cem", "pets_budget", "training", "equality", "rigid_body"):
        assert "error" not in report[name], report[name]
    for name in ("analytic_cem", "pets_budget"):
        assert report[name]["compiled"] and report[name]["tick_ms_p99"] > 0
    assert report["pets_budget"]["rollouts"] == report["pets_budget"]["population"] * report["pets_budget"]["particles"]
    assert all(row["transitions_per_s"] > 0 for row in report["training"]["rows"])
    assert report["equality"]["ok"] and report["equality"]["training_weights_max_abs"] == 0.0
