"""Process scheduling of a node: the control path ahead of background work.

On a robot computer the control loop shares the CPUs with learning, recording and monitoring.
ros2_control's controller manager runs its loop at SCHED_FIFO priority 50 and only warns when the
system refuses it; we do the same for the nodes on the control path (``scheduling.priority``) and
let background nodes run at a higher niceness (``scheduling.nice``), so a training round never
delays a tick. A real-time priority needs CAP_SYS_NICE or an rtprio limit
(``/etc/security/limits.conf``: ``@realtime - rtprio 99``); without it the node says so and runs
on the normal scheduler. The kernel's RT throttling (``sched_rt_runtime_us``, 95 % by default)
keeps a runaway real-time process from locking the machine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mbrl_control.nodes.params import ParamSpec

SCHEDULING_PARAMS = [
    ParamSpec("scheduling.priority", 0, "SCHED_FIFO priority of every thread of the node (ros2_control uses 50); "
              "0: the normal scheduler. Refused without CAP_SYS_NICE / rtprio: a warning, normal scheduling", 0, 99),
    ParamSpec("scheduling.nice", 0, "niceness of the node (background work: higher, so it yields to control)", 0, 19),
]


def apply_scheduling(p: dict[str, Any]) -> tuple[str, str | None]:
    """Apply ``scheduling.*`` to this process: (what is in effect, a warning or None).

    The priority is set on every thread the process has now (rclpy's executor, the DDS
    middleware's receive threads, torch's); threads started later inherit it from their creator.
    Call it after start-up work (compiling a planner) that must not run at real-time priority."""
    warning = None
    nice = int(p.get("scheduling.nice", 0))
    if nice > 0:
        os.nice(max(0, nice - os.nice(0)))  # raising niceness needs no privilege
    priority = int(p.get("scheduling.priority", 0))
    if priority > 0:
        try:
            for tid in _threads():
                os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(priority))
        except (PermissionError, OSError) as exc:
            for tid in _threads():  # all or nothing: one class of thread ahead of the others helps nobody
                try:
                    os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
                except OSError:
                    pass
            warning = (f"scheduling.priority {priority}: SCHED_FIFO refused ({exc.strerror or exc}); running on the "
                       "normal scheduler (grant CAP_SYS_NICE or an rtprio limit for real-time priority)")
    return describe(), warning


def describe() -> str:
    """This process's scheduling, e.g. ``SCHED_FIFO 50`` or ``SCHED_OTHER nice 10``."""
    policy = os.sched_getscheduler(0)
    if policy == os.SCHED_FIFO:
        return f"SCHED_FIFO {os.sched_getparam(0).sched_priority}"
    return f"SCHED_OTHER nice {os.nice(0)}"


def _threads() -> list[int]:
    try:
        return sorted(int(t.name) for t in Path(f"/proc/{os.getpid()}/task").iterdir())
    except OSError:  # no /proc (not Linux): the calling thread only
        return [0]
