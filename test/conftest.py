"""Suite-wide rules.

- In CI (CI=true) a skipped test is a failure: a missing dependency must break the build, not hide.
- Tests that need a full ROS 2 install (launch, launch_ros, the ros2 CLI) carry the ``ros2_install``
  marker; CI deselects them by name (-m "not ros2_install"), it never skips them silently.
"""

from __future__ import annotations

import os

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ros2_install: needs a ROS 2 install (launch, launch_ros, ros2 CLI)")
    config.addinivalue_line("markers", "slow: takes more than ~30 s")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One torch thread, as the controller and the estimator run (``torch_threads`` 1): their small
    batched ops only lose to threads on a shared machine, and a compiled graph is keyed on the
    thread count, so with one the tests compile the nodes' own graphs, which ``make test``'s
    warm-up has in the compiler's cache (with torch's default of one per core, the core tests
    compiled every rollout afresh: 53 s of test_cem's 76)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI", "").lower() == "true" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which counts as a failure: {report.longrepr}"
