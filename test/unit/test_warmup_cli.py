"""`mbrl-control warmup`: several robots at once (`make test` warms every robot the tests run),
each named when its parameter file is missing, the worst exit code returned."""

import subprocess
import sys


def test_warmup_of_several_robots_names_each_missing_one_and_fails():
    result = subprocess.run([sys.executable, "-m", "mbrl_control.cli", "warmup", "--robot", "nope", "--robot", "nope2"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    for robot in ("nope", "nope2"):
        assert f"robot '{robot}': no parameter file" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
