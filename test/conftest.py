"""Suite-wide rules.

- In CI (CI=true) a skipped test is a failure: a missing dependency must break the build, not hide.
- Tests that need a full ROS 2 install (launch, launch_ros, the ros2 CLI) carry the ``ros2_install``
  marker; CI deselects them by name (-m "not ros2_install"), it never skips them silently.
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ros2_install: needs a ROS 2 install (launch, launch_ros, ros2 CLI)")
    config.addinivalue_line("markers", "slow: takes more than ~30 s")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI", "").lower() == "true" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which counts as a failure: {report.longrepr}"
