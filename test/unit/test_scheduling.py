"""Nodes on the control path ask for SCHED_FIFO, background nodes for a higher niceness; a refused
real-time priority leaves the node running on the normal scheduler with a warning."""

import os
import subprocess
import sys

from mbrl_control.nodes import scheduling


def run_in_child(code: str) -> str:
    # Niceness only goes up and FIFO sticks to the process: never change the test runner's own.
    out = subprocess.run([sys.executable, "-c", "from mbrl_control.nodes.scheduling import *\n" + code],
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


def test_background_nodes_get_the_niceness_asked_for_counting_what_they_inherited():
    assert run_in_child("print(apply_scheduling({'scheduling.nice': 7, 'scheduling.priority': 0})[0])") == "SCHED_OTHER nice 7"
    inherited = "import os; os.nice(3); print(apply_scheduling({'scheduling.nice': 5, 'scheduling.priority': 0})[0])"
    assert run_in_child(inherited) == "SCHED_OTHER nice 5"


def test_refused_real_time_priority_warns_and_leaves_every_thread_on_the_normal_scheduler(monkeypatch):
    calls = []

    def refuse(tid, policy, param):
        calls.append(policy)
        if policy == os.SCHED_FIFO:
            raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(scheduling.os, "sched_setscheduler", refuse)
    state, warning = scheduling.apply_scheduling({"scheduling.priority": 50, "scheduling.nice": 0})
    assert warning is not None and "scheduling.priority 50" in warning and "Operation not permitted" in warning
    assert state == scheduling.describe() and state.startswith("SCHED_OTHER")
    assert calls[0] == os.SCHED_FIFO and set(calls[1:]) == {os.SCHED_OTHER}


def test_real_time_priority_covers_every_thread_or_none():
    """Where the system grants it (root, CAP_SYS_NICE, an rtprio limit) every thread runs FIFO;
    where it refuses, every thread stays on the normal scheduler and the state says so."""
    code = """
import threading, os
threading.Thread(target=lambda: __import__('time').sleep(2), daemon=True).start()
state, warning = apply_scheduling({'scheduling.priority': 10, 'scheduling.nice': 0})
tids = [int(t) for t in os.listdir(f'/proc/{os.getpid()}/task')]
print(len(tids), state, warning is None, sorted({os.sched_getscheduler(t) for t in tids}), sep="|")
"""
    threads, state, granted, policies = run_in_child(code).split("|")
    assert int(threads) >= 2
    if granted == "True":
        assert state == "SCHED_FIFO 10" and policies == f"[{os.SCHED_FIFO}]"
    else:
        assert state.startswith("SCHED_OTHER") and policies == f"[{os.SCHED_OTHER}]"
