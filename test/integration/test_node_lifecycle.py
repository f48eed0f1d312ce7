"""Nodes start and stop like ROS nodes should: bad parameters stop them at start with a message
naming the parameter; the pip-only launcher stops every node cleanly on Ctrl-C."""

import dataclasses
import os
import signal
import subprocess
import sys
import time

from rosutil import kill_launch, launcher_children, node_env

from mbrl_control.graph import mpc_graph
from mbrl_control.launcher import node_command


def _run_node(spec_name, overrides, domain, tmp_path, timeout=120):
    """Start one node of the graph as the launchers do, with ``overrides`` on top of its config."""
    spec = next(s for s in mpc_graph({}) if s.name == spec_name)
    spec = dataclasses.replace(spec, parameters=[*spec.parameters, overrides])
    cmd = node_command(spec, tmp_path)
    return subprocess.run(cmd, env=node_env(domain), capture_output=True, text=True, timeout=timeout)


def test_out_of_range_parameter_stops_the_controller_naming_it(domain, tmp_path):
    result = _run_node("mpc_controller", {"control_rate": 5000.0}, domain, tmp_path)
    assert result.returncode == 2
    assert "control_rate" in result.stderr and "1.0" in result.stderr and "1000.0" in result.stderr


def test_offset_free_mpc_on_the_analytic_model_stops_the_controller_naming_it(domain, tmp_path):
    result = _run_node("mpc_controller", {"model_offset.time_constant": 0.2}, domain, tmp_path)
    assert result.returncode == 2
    assert "model_offset.time_constant" in result.stderr and "model:=analytic" in result.stderr, result.stderr[-2000:]


def test_bad_choice_and_wrong_type_stop_the_sim_naming_them(domain, tmp_path):
    result = _run_node("sim", {"mode": "fast"}, domain, tmp_path)
    assert result.returncode == 2 and "'mode'" in result.stderr and "lockstep" in result.stderr
    result = _run_node("sim", {"physics_rate": "fast"}, domain, tmp_path)
    assert result.returncode == 2 and "physics_rate" in result.stderr and "float" in result.stderr


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose; /proc says which.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def test_launcher_stops_all_nodes_on_ctrl_c(domain, probe):
    # Started as a script's background job starts it: with SIGINT ignored (`trap "" INT`; exec keeps
    # it). An explicit SIGINT must still stop the launcher and every node.
    cmd = ["sh", "-c", 'trap "" INT; exec "$0" "$@"', sys.executable, "-m", "mbrl_control.cli", "launch", "mpc",
           "mode:=realtime"]
    proc = subprocess.Popen(cmd, env=node_env(domain), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children = []
    try:
        # The nodes are up (in the ROS graph; the controller may still be warming up).
        nodes = {"sim", "estimator", "mpc_controller"}
        assert probe.spin_until(lambda: nodes <= set(probe.node.get_node_names()) or proc.poll() is not None, 120)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        children = launcher_children(proc)
        assert len(children) == 3, children
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        kill_launch(proc, children)
    assert proc.returncode == 130
    assert not [pid for pid in children if _alive(pid)]
    assert "Traceback" not in err, err[-3000:]


def test_a_node_that_cannot_start_ends_the_launch(domain, tmp_path):
    """One node refusing its parameters leaves no half-running stack behind: the launch stops the
    others and exits with the node's code, saying which node and pointing at its reason."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("sim:\n  ros__parameters:\n    physics_rate: 1.0e9\n")
    cmd = [sys.executable, "-m", "mbrl_control.cli", "launch", "mpc", "mode:=realtime", f"overrides:={bad}"]
    proc = subprocess.Popen(cmd, env=node_env(domain), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children = []
    try:
        for _ in range(300):  # the nodes' processes, while they are there to be found
            children = launcher_children(proc)
            if len(children) == 3 or proc.poll() is not None:
                break
            time.sleep(0.1)
        _, err = proc.communicate(timeout=120)  # long before the run would end (it runs until Ctrl-C)
    finally:
        kill_launch(proc, children)
    assert proc.returncode == 2, err[-3000:]
    assert "physics_rate" in err and "[launch] sim could not start" in err, err[-3000:]
    assert not [pid for pid in children if _alive(pid)]
