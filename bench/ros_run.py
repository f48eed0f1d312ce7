"""Running the launch graph from a benchmark: one isolated run, its summary back."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Iterator

import yaml

from mbrl_control.graph import GRAPHS
from mbrl_control.launcher import Launch, default_environment


@contextlib.contextmanager
def claimed_domain() -> Iterator[int]:
    """A ROS domain id held for the duration: locked like the integration tests' (so a test run
    never shares it) and used by no running process's ROS_DOMAIN_ID (a benchmark started with
    ``private_domain``)."""
    in_use = set()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            for item in environ.read_bytes().split(b"\0"):
                if item.startswith(b"ROS_DOMAIN_ID="):
                    in_use.add(item.split(b"=", 1)[1].decode(errors="replace"))
        except OSError:
            continue
    ids = [d for d in range(1, 101) if str(d) not in in_use]
    random.shuffle(ids)
    for domain in ids:
        handle = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"mbrl_control_test_domain_{domain}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        try:
            yield domain
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        return
    raise RuntimeError("no free ROS domain id")


def private_domain(salt: object = None) -> int:
    """A ROS domain id in 1..101 unlikely to be shared with a parallel run."""
    return random.Random(os.getpid() ^ hash(str(salt))).randint(102, 200) % 101 + 1


def run_graph(args: dict[str, str], overrides: dict | None = None, timeout: float = 600.0,
              keep_dir: Path | None = None, graph: str = "mpc", domain: int | None = None) -> dict:
    """Run a launch graph (``mpc`` with a run monitor, or ``learn``) on a private ROS domain
    (localhost only) and return its summary; ``overrides`` is a parameter-file dict
    ({node: {ros__parameters: {...}}}) applied on top."""
    work = Path(tempfile.mkdtemp(prefix="mbrl_bench_")) if keep_dir is None else keep_dir
    work.mkdir(parents=True, exist_ok=True)
    if overrides:
        (work / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        args = args | {"overrides": str(work / "overrides.yaml")}
    env = default_environment()
    env["ROS_DOMAIN_ID"] = str(private_domain(work) if domain is None else domain)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    if graph == "mpc":
        summary_path = work / "summary.json"
        args = args | {"summary_path": str(summary_path)}
    else:
        summary_path = work / "learning_curve.json"
        args = args | {"output_dir": str(work)}
    launch = Launch(GRAPHS[graph][1](args), log_dir=work / "logs", env=env, output=open(os.devnull, "w"))
    code = launch.wait(timeout)
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {"success": False}
    summary["exit_code"] = code
    summary["work_dir"] = str(work)
    return summary
