"""Running the launch graph from a benchmark: one isolated run, its summary back."""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path

import yaml

from mbrl_control.graph import mpc_graph
from mbrl_control.launcher import Launch, default_environment


def run_graph(args: dict[str, str], overrides: dict | None = None, timeout: float = 600.0,
              keep_dir: Path | None = None) -> dict:
    """Run ``mpc.launch.py``'s graph with a run monitor on a private ROS domain (localhost only);
    ``overrides`` is a parameter-file dict ({node: {ros__parameters: {...}}}) applied on top."""
    work = Path(tempfile.mkdtemp(prefix="mbrl_bench_")) if keep_dir is None else keep_dir
    work.mkdir(parents=True, exist_ok=True)
    if overrides:
        (work / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        args = args | {"overrides": str(work / "overrides.yaml")}
    summary_path = work / "summary.json"
    env = default_environment()
    env["ROS_DOMAIN_ID"] = str(random.Random(os.getpid() ^ hash(str(work))).randint(102, 200) % 101 + 1)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    launch = Launch(mpc_graph(args | {"summary_path": str(summary_path)}), log_dir=work / "logs", env=env,
                    output=open(os.devnull, "w"))
    code = launch.wait(timeout)
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {"success": False}
    summary["exit_code"] = code
    summary["work_dir"] = str(work)
    return summary
