# The front door: `make demo` runs the swing-up demo, `make test` runs the tests.
# Both set up .venv first (idempotent: a second run skips what is done).

PYTHON   ?= python3
VENV     ?= .venv
PY       := $(VENV)/bin/python
CLI      := $(VENV)/bin/mbrl-control
STAMP    := $(VENV)/.installed
DURATION ?= 20
MODE     ?= realtime
PLANNER  ?= cem
PYTEST_ARGS ?=

# Tests needing a full ROS 2 install (launch, launch_ros, the ros2 CLI and a colcon-built, sourced
# workspace) carry the ros2_install marker: `make test` (and CI) deselect them by name, `make
# test-ros2` runs them on a ROS 2 machine.
ROS2_SELECT := -m "not ros2_install"

.PHONY: setup demo test test-ros2 warmup bench clean

setup: $(STAMP)

$(STAMP): requirements.txt setup.py package.xml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

warmup: setup
	$(CLI) warmup

demo: setup
	$(CLI) demo --duration $(DURATION) --mode $(MODE) --planner $(PLANNER)

test: setup warmup
	$(PY) -m pytest $(ROS2_SELECT) $(PYTEST_ARGS)

test-ros2: setup
	$(PY) -m pytest -m ros2_install $(PYTEST_ARGS)

bench: setup
	$(PY) bench/planner_latency.py

clean:
	rm -rf $(VENV) build install log runs .pytest_cache
